"""`clipdepth evaluate`: every image scored, per-image CSV, tiles, and a perfect predictor."""

import csv
import dataclasses
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
    oracle = lambda *args, **kwargs: lambda frames: [(f.sample.depth, f.sample.depth) for f in frames]  # noqa: E731
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
    split = EncodedSplit(
        [f"f{i}" for i in range(n)],
        {"tokens": tokens, "cls": tokens[:, 0, 0]},
        None,
        np.array([g.shape for g in gts]),
        TrainingDepth.from_float(depth, 1000.0),
        gts,
        tiles=k,
    )
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


def _metrics_by_hand(pred, gt, lo, hi):
    """abs_rel, rmse, d1 and silog of one frame with numpy: non-finite predictions replaced and
    clamped, valid where lo < g < hi."""
    pred = np.clip(np.nan_to_num(pred.astype(np.float64), nan=lo, posinf=hi, neginf=lo), lo, hi)
    mask = (gt > lo) & (gt < hi)
    p, g = pred[mask].astype(np.float64), gt[mask].astype(np.float64)
    e = np.log(p) - np.log(g)
    return {
        "abs_rel": np.mean(np.abs(g - p) / g),
        "rmse": np.sqrt(np.mean((g - p) ** 2)),
        "d1": np.mean(np.maximum(g / p, p / g) < 1.25),
        "silog": 100 * np.sqrt(np.mean(e**2) - np.mean(e) ** 2),
    }


def test_batched_scoring_on_the_device_matches_per_frame_numbers_worked_out_by_hand():
    from clipdepth.evaluation.evaluate import FrameScorer
    from clipdepth.evaluation.metrics import MetricAccumulator
    from clipdepth.evaluation.protocol import get_protocol

    rng = np.random.default_rng(0)
    gts = [rng.uniform(0.5, 9.5, (6, 8)).astype(np.float32) for _ in range(3)]
    gts[0][0, :3] = 0  # invalid pixels
    gts[2][5, 7] = 12.0  # beyond the cap: not scored
    preds = [(g * rng.uniform(0.7, 1.4, g.shape)).astype(np.float32) for g in gts]
    preds[0][1, 1], preds[0][2, 2] = np.nan, np.inf  # -> min and max
    empty = np.zeros((5, 7), np.float32)  # a frame of another size without a valid pixel: skipped
    scorer = FrameScorer(get_protocol("synthetic_indoor"), "cpu")
    scorer.add([torch.from_numpy(preds[0]), empty, preds[1]], [gts[0], empty, torch.from_numpy(gts[1])])  # sizes mixed
    scorer.add([preds[2]], [gts[2]])
    acc = MetricAccumulator.from_sums(scorer.sums())
    assert acc.n_images == 3 and acc.n_skipped == 1
    by_hand = [_metrics_by_hand(p, g, 1e-3, 10.0) for p, g in zip(preds, gts)]
    for frame, expected in zip(acc.per_image, by_hand):  # in the order the frames were added
        for metric, value in expected.items():
            assert frame[metric] == pytest.approx(value, rel=1e-12), metric
    assert acc.mean()["abs_rel"] == pytest.approx(np.mean([m["abs_rel"] for m in by_hand]), rel=1e-12)


def test_device_scoring_resizes_and_crops_as_the_host_road():
    from clipdepth.evaluation.evaluate import FrameScorer, ScoringTargets
    from clipdepth.evaluation.metrics import MetricAccumulator
    from clipdepth.evaluation.protocol import get_protocol, score_pair

    protocol = get_protocol("kitti")  # the Garg crop
    rng = np.random.default_rng(1)
    gts = [np.round(rng.uniform(1, 70, (40, 60)) * 256) / 256 for _ in range(2)] + [rng.uniform(1, 70, (30, 50))]
    gts = [g.astype(np.float32) for g in gts]
    preds = [torch.from_numpy(rng.uniform(1, 70, (12, 20)).astype(np.float32)) for _ in gts]  # resized to the GT
    host = MetricAccumulator()
    for p, g in zip(preds, gts):
        score_pair(p, g, protocol, accumulator=host)
    targets = ScoringTargets(gts, protocol, "cpu")
    # GT on KITTI's 1/256 m grid is kept as its 16-bit values, the rest as float32; both give back the map
    assert [m.dtype for m, _ in targets.maps] == [torch.uint16, torch.uint16, torch.float32]
    assert all(torch.equal(t, torch.from_numpy(g)) for t, g in zip(targets.gt(range(3)), gts))
    device = targets.score([preds[:2], preds[2:]])
    for ours, theirs in zip(device.per_image, host.per_image, strict=True):
        assert ours == pytest.approx(theirs, rel=1e-12)
    scorer = FrameScorer(protocol, "cpu")
    scorer.add(preds, gts)
    assert MetricAccumulator.from_sums(scorer.sums()).per_image == device.per_image


def test_evaluate_scores_on_the_model_device(checkpoint, tmp_path, monkeypatch):
    from clipdepth.evaluation import evaluate

    devices = []
    scorer = evaluate.FrameScorer
    monkeypatch.setattr(evaluate, "FrameScorer", lambda protocol, device: (devices.append(device), scorer(protocol, device))[1])
    # "cpu:0" stands for the model's accelerator: the scorer gets the model's device, not the default "cpu"
    monkeypatch.setattr(PureCLIPDepth, "device", property(lambda self: torch.device("cpu", 0)))
    assert main(["evaluate", "--checkpoint", str(checkpoint), "--out", str(tmp_path / "eval")]) == 0
    assert devices == [torch.device("cpu", 0)]


def test_validation_waits_for_the_device_only_to_read_its_table_back(tiny_cfg, tmp_path):
    """No per-frame scalar read (``.item()``, ``bool(t.any())``) nor data-dependent indexing
    (``t[mask]``, ``nonzero``) while scoring: on a GPU each is a host sync. The table itself is read
    back once at the end (``.cpu()``, invisible on the CPU)."""
    from torch.utils._python_dispatch import TorchDispatchMode

    from clipdepth.training.run import Experiment
    from clipdepth.training.trainer import Trainer

    syncing = ("aten._local_scalar_dense", "aten.nonzero", "aten.is_nonzero", "aten.equal", "aten.masked_select", "aten.index.Tensor")

    class Syncs(TorchDispatchMode):
        seen: list[str] = []

        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            if str(func).startswith(syncing):
                self.seen.append(str(func))
            return func(*args, **(kwargs or {}))

    cfg = dataclasses.replace(tiny_cfg, eval=dataclasses.replace(tiny_cfg.eval, batch_size=2))
    exp = Experiment.create(cfg)
    trainer = Trainer.single_dataset(
        exp.model, cfg, exp.encode("train", flip=False), exp.encode("val", flip=True), exp.preprocessor, exp.protocol, tmp_path / "run"
    )
    first, _ = trainer.validate()  # the first epoch decodes the GT and moves the crop masks
    with Syncs() as syncs:
        again, _ = trainer.validate()
    assert syncs.seen == [] and again == first


def test_an_earlier_evaluation_is_refused_before_the_model_is_loaded(checkpoint, tmp_path, monkeypatch, capsys):
    out = tmp_path / "eval"
    assert main(["evaluate", "--checkpoint", str(checkpoint), "--out", str(out)]) == 0
    capsys.readouterr()
    loaded = []
    monkeypatch.setattr("clipdepth.evaluation.checkpoint.load_model", lambda *a, **k: loaded.append(a))
    assert main(["evaluate", "--checkpoint", str(checkpoint), "--out", str(out)]) == 2
    assert "metrics.json" in capsys.readouterr().err and loaded == []


def test_data_that_cannot_be_read_is_refused_before_the_model_is_loaded(checkpoint, tmp_path, monkeypatch, capsys):
    loaded = []
    monkeypatch.setattr("clipdepth.evaluation.checkpoint.load_model", lambda *a, **k: loaded.append(a))
    args = ["evaluate", "--checkpoint", str(checkpoint), "--dataset", "nyu", "--data-root", str(tmp_path / "no_nyu")]
    assert main([*args, "--out", str(tmp_path / "eval")]) == 2
    assert "no_nyu" in capsys.readouterr().err and loaded == []
