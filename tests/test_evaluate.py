"""`clipdepth evaluate`: every image scored, per-image CSV, tiles, and a perfect predictor."""
import csv
import json

import numpy as np
import pytest
import torch

from clipdepth.cli.main import main
from clipdepth.data.transforms import merge_tiles, split_tiles
from clipdepth.models import PureCLIPDepth


def test_tiles_round_trip_exactly():
    x = torch.rand(2, 3, 8, 32)
    tiles = split_tiles(x, 8)
    assert tiles.shape == (8, 3, 8, 8)
    assert torch.equal(tiles[1], x[0, :, :, 8:16]) and torch.equal(tiles[4], x[1, :, :, 0:8])
    assert torch.equal(merge_tiles(tiles, 4), x)
    depth = torch.rand(2, 8, 32)
    assert torch.equal(merge_tiles(split_tiles(depth, 8), 4), depth)


@pytest.fixture
def checkpoint(tiny_cfg, tmp_path):
    tiny_cfg.data.test_size = 5
    torch.manual_seed(0)
    return PureCLIPDepth.build(tiny_cfg).save_pretrained(tmp_path / "ckpt")


def test_every_image_is_scored_when_n_is_not_a_multiple_of_the_batch(checkpoint, tmp_path):
    out = tmp_path / "eval"
    assert main(["evaluate", "--checkpoint", str(checkpoint), "--batch-size", "2", "--out", str(out)]) == 0
    summary = json.loads((out / "metrics.json").read_text())
    assert summary["n_images"] == 5 and summary["n_listed"] == 5 and summary["protocol"] == "synthetic_indoor"
    rows = list(csv.DictReader((out / "per_image.csv").open()))
    assert [r["name"] for r in rows] == [f"indoor_test_{i:05d}" for i in range(5)]
    mean_abs_rel = sum(float(r["abs_rel"]) for r in rows) / 5
    assert mean_abs_rel == pytest.approx(summary["abs_rel"], rel=1e-5)  # the per-image mean


def test_tiled_and_at_input_evaluation_run(checkpoint, tmp_path):
    out = tmp_path / "eval"
    args = ["evaluate", "--checkpoint", str(checkpoint), "--out", str(out), "--no-tta"]
    assert main([*args, "data.tiles=2"]) == 0
    first = (out / "metrics.json").read_text()
    assert main([*args, "--score-at-input"]) == 2  # the first run's results are not replaced silently
    assert (out / "metrics.json").read_text() == first
    assert main([*args, "--score-at-input", "--overwrite"]) == 0
    assert json.loads((out / "metrics.json").read_text())["scored_at"].startswith("encoder input")


def test_a_perfect_predictor_scores_abs_rel_0_and_d1_1(checkpoint, tmp_path, monkeypatch):
    oracle = lambda *args, **kwargs: (lambda frames: [(f.sample.depth, f.sample.depth) for f in frames])  # noqa: E731
    monkeypatch.setattr("clipdepth.evaluation.checkpoint.model_predictor", oracle)
    out = tmp_path / "eval"
    assert main(["evaluate", "--checkpoint", str(checkpoint), "--out", str(out)]) == 0
    summary = json.loads((out / "metrics.json").read_text())
    assert summary["abs_rel"] == 0.0 and summary["rmse"] == 0.0 and summary["d1"] == 1.0 and summary["n_images"] == 5


def test_bad_override_is_one_line(checkpoint, capsys):
    assert main(["evaluate", "--checkpoint", str(checkpoint), "data.tilez=2"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "tilez" in err


def test_random_tiles_pair_each_tile_with_its_own_depth():
    from clipdepth.features import EncodedSplit
    from clipdepth.io.depth_store import TrainingDepth

    n, k, s = 3, 4, 2
    tokens = torch.arange(n * k, dtype=torch.float16)[:, None, None, None].expand(n * k, 1, 1, 1)  # entry id
    depth = torch.arange(k, dtype=torch.float32).repeat_interleave(s).expand(n, s, k * s) + 10 * torch.arange(n)[:, None, None]
    gts = [np.zeros((5 + i, 9)) for i in range(n)]  # full frames of different sizes
    split = EncodedSplit([f"f{i}" for i in range(n)], {"tokens": tokens, "cls": tokens[:, 0, 0]}, None,
                         np.array([g.shape for g in gts]), TrainingDepth.from_float(depth, 1000.0), gts, tiles=k)
    batch = split.random_tiles(torch.tensor([2, 0]), torch.Generator().manual_seed(0))
    for row, frame in enumerate([2, 0]):
        entry = int(batch.features["tokens"][row, 0, 0, 0])
        assert entry // k == frame  # a tile of the right frame ...
        assert torch.all(batch.depth[row] == 10 * frame + entry % k)  # ... with that tile's depth
        assert batch.tile[row] == entry % k and batch.frame_shapes[row] == (5 + frame, 9)


def test_cached_and_on_the_fly_tiled_evaluation_agree(tiny_cfg):
    from clipdepth.data import get_dataset
    from clipdepth.data.transforms import Preprocessor
    from clipdepth.evaluation.evaluate import evaluate_dataset, evaluate_encoded, model_predictor
    from clipdepth.evaluation.protocol import get_protocol
    from clipdepth.features import encode_split

    torch.manual_seed(0)
    model = PureCLIPDepth.build(tiny_cfg).eval()
    dataset = get_dataset(tiny_cfg.data, "test")
    pre, protocol = Preprocessor.create(model.input_size, None, tiles=2), get_protocol("synthetic_indoor")
    cached = evaluate_encoded(model, encode_split(model, dataset, pre, 2, flip=True), pre, protocol, tta=True).mean()
    direct = evaluate_dataset(dataset, model_predictor(model, pre, tta=True), protocol, 2, pre)[0].mean()
    for m in ("abs_rel", "rmse", "d1"):
        assert cached[m] == pytest.approx(direct[m], rel=2e-3)  # the cache holds fp16 features
