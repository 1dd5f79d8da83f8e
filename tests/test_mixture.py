"""Mixture training (TR2M's NYU + KITTI + VOID + C3VD): single-dataset batches at each dataset's own
input size, drawn by weight or in turn, exactly resumable, validated per dataset and on the mean."""

from __future__ import annotations

import csv
import json
from collections import Counter
from pathlib import Path

import pytest
import torch

from clipdepth.config import load_config_dict, config_to_dict
from clipdepth.errors import ConfigError
from clipdepth.training.mixture import epoch_schedule, training_sources
from clipdepth.training.objectives.tr2m import TR2MObjective
from clipdepth.training.run import Experiment
from clipdepth.training.trainer import Trainer

# Three small synthetic sets, each with its own frame size and model input size.
MIXTURE = [
    {
        "name": "rooms",
        "data": {"dataset": "synthetic_indoor", "train_size": 10, "height": 48, "width": 64, "seed": 1},
        "input_size": [28, 42],
    },
    {"name": "streets", "data": {"dataset": "synthetic_outdoor", "train_size": 7, "height": 40, "width": 120}, "input_size": [28, 84]},
    {
        "name": "squares",
        "data": {"dataset": "synthetic_indoor", "train_size": 6, "height": 40, "width": 40, "seed": 2},
        "input_size": [42, 42],
        "weight": 3.0,
    },
]
INPUT_SIZES = {m["name"]: tuple(m["input_size"]) for m in MIXTURE}


def mixture_cfg(tiny_tr2m_cfg, out: Path, mixture=MIXTURE, **train):
    data = config_to_dict(tiny_tr2m_cfg)
    data["mixture"] = mixture
    data["train"] = {**data["train"], "batch_size": 2, "log_every": 1, **train}
    data["data"] = {**data["data"], "val_size": 2}
    data["output_dir"] = str(out)
    return load_config_dict(data)


def steps_log(out: Path) -> list[dict]:
    return [json.loads(line) for line in (out / "train_steps.jsonl").read_text().splitlines()]


def record_batches(monkeypatch) -> list[tuple[int, ...]]:
    """The (B, H, W) of every batch TR2M's step takes."""
    shapes: list[tuple[int, ...]] = []
    original = TR2MObjective.step

    def step(self, batch, step, generator):
        shapes.append(tuple(batch.depth.shape))
        return original(self, batch, step, generator)

    monkeypatch.setattr(TR2MObjective, "step", step)
    return shapes


def test_every_batch_is_one_datasets_at_its_own_input_size(tiny_tr2m_cfg, tmp_path, monkeypatch):
    cfg = mixture_cfg(tiny_tr2m_cfg, tmp_path / "run", max_epochs=2)
    shapes = record_batches(monkeypatch)
    Experiment.create(cfg).train(cfg.output_dir)
    log = steps_log(tmp_path / "run")
    # the weighted epoch is as long as the datasets' batches together: 10/2 + 7/2 (drop last) + 6/2 = 11
    assert len(log) == len(shapes) == 2 * 11
    for record, shape in zip(log, shapes):
        assert shape == (2, *INPUT_SIZES[record["source"]])
    assert {r["source"] for r in log} == set(INPUT_SIZES)


def test_validation_reports_each_dataset_and_the_mean_that_improved_uses(tiny_tr2m_cfg, tmp_path):
    cfg = mixture_cfg(tiny_tr2m_cfg, tmp_path / "run", max_epochs=2)
    result, _ = Experiment.create(cfg).train(cfg.output_dir)
    rows = list(csv.DictReader((tmp_path / "run" / "train_epochs.csv").open()))
    assert len(rows) == 2
    for row, history in zip(rows, result.history):
        for metric in ("abs_rel", "d1", "rmse"):
            per_dataset = [float(row[f"val_{name}_{metric}"]) for name in INPUT_SIZES]
            assert float(row[f"val_{metric}"]) == pytest.approx(sum(per_dataset) / 3, rel=1e-12)
    # the best checkpoint of a metric is the epoch with the best MEAN
    best_epoch = min(result.history, key=lambda h: h["val_abs_rel"])["epoch"]
    assert result.best["abs_rel"]["epoch"] == best_epoch
    # the per-dataset scores differ: each dataset was scored on its own frames and protocol
    assert len({float(rows[-1][f"val_{name}_abs_rel"]) for name in INPUT_SIZES}) == 3


def test_a_killed_and_resumed_mixture_run_draws_the_same_sequence(tiny_tr2m_cfg, tmp_path, monkeypatch):
    out_a, out_b = tmp_path / "a", tmp_path / "b"
    cfg_a = mixture_cfg(tiny_tr2m_cfg, out_a, max_epochs=3)
    Experiment.create(cfg_a).train(out_a)

    cfg_b = mixture_cfg(tiny_tr2m_cfg, out_b, max_epochs=3)
    original, calls = Trainer.validate, [0]

    def validate(self):
        calls[0] += 1
        if calls[0] == 2:
            raise KeyboardInterrupt  # killed in epoch 2's validation: epoch 1's state is the last saved
        return original(self)

    with monkeypatch.context() as m:
        m.setattr(Trainer, "validate", validate)
        with pytest.raises(KeyboardInterrupt):
            Experiment.create(cfg_b).train(out_b)
    torch.manual_seed(99)  # a fresh process: any global RNG state
    Experiment.create(cfg_b).train(out_b, resume=True)

    log_a, log_b = steps_log(out_a), steps_log(out_b)
    assert [r["source"] for r in log_b] == [r["source"] for r in log_a]
    assert log_b == log_a  # same datasets, same losses, step by step
    assert (out_a / "train_epochs.csv").read_text() == (out_b / "train_epochs.csv").read_text()


def test_weighted_draws_follow_the_weights_and_each_dataset_cycles_its_frames():
    sizes, weights = [40, 24, 10], [1.0, 2.0, 5.0]
    generator = torch.Generator().manual_seed(0)
    counts: Counter = Counter()
    seen: dict[int, list[int]] = {0: [], 1: [], 2: []}
    for _ in range(200):
        schedule = epoch_schedule(sizes, weights, 4, True, "weighted", generator)
        assert len(schedule) == 10 + 6 + 2  # batches of the three sets together
        for k, frames in schedule:
            assert len(frames) == 4 and int(frames.max()) < sizes[k]  # full batches of dataset k only
            counts[k] += 1
            seen[k] += frames.tolist()
    total = sum(counts.values())
    for k, w in enumerate(weights):
        assert counts[k] / total == pytest.approx(w / sum(weights), abs=0.015)  # 3600 draws: sd < 0.009
    # within each epoch a dataset's frames come from consecutive permutations: a frame repeats only
    # after all have been taken (checked on the first epoch's stream of the largest share)
    first = epoch_schedule(sizes, weights, 4, True, "weighted", torch.Generator().manual_seed(1))
    stream = [i for k, f in first if k == 2 for i in f.tolist()]
    for start in range(0, len(stream) - 9, 10):
        assert sorted(stream[start : start + 10]) == list(range(10))


def test_round_robin_takes_whole_batches_in_turn_until_the_largest_is_through():
    schedule = epoch_schedule([12, 4, 8], [1, 1, 1], 4, True, "round_robin", torch.Generator().manual_seed(0))
    assert [k for k, _ in schedule] == [0, 1, 2] * 3  # the largest has 3 batches
    assert sorted(i for k, f in schedule if k == 0 for i in f.tolist()) == list(range(12))


def test_one_dataset_keeps_the_single_dataset_order():
    # a permutation cut into batches, the last partial one dropped, as before mixtures existed
    generator = torch.Generator().manual_seed(5)
    order = torch.randperm(10, generator=torch.Generator().manual_seed(5))
    schedule = epoch_schedule([10], [10], 4, True, "weighted", generator)
    assert [f.tolist() for _, f in schedule] == [order[:4].tolist(), order[4:8].tolist()]


def test_each_dataset_is_cached_on_its_own_so_adding_one_reuses_the_others(tiny_tr2m_cfg, tmp_path):
    cache = tmp_path / "cache"
    two = mixture_cfg(tiny_tr2m_cfg, tmp_path / "a", mixture=MIXTURE[:2], max_epochs=1, feature_cache=str(cache))
    Experiment.create(two).train(two.output_dir)
    assert sorted(p.name for p in cache.iterdir()) == ["rooms", "streets"]
    written = {p: p.stat().st_mtime_ns for p in cache.rglob("*") if p.is_file()}

    three = mixture_cfg(tiny_tr2m_cfg, tmp_path / "b", max_epochs=1, feature_cache=str(cache))
    Experiment.create(three).train(three.output_dir)
    assert sorted(p.name for p in cache.iterdir()) == ["rooms", "squares", "streets"]
    assert {p: p.stat().st_mtime_ns for p in written} == written  # rooms and streets read, not rebuilt
    assert sorted(p.name for p in (cache / "squares").iterdir()) == ["train", "val"]


def test_mixture_settings_are_checked_before_any_work(tiny_tr2m_cfg, tiny_cfg, tmp_path):
    twice = [MIXTURE[0], {**MIXTURE[1], "name": "rooms"}]
    with pytest.raises(ConfigError, match=r"mixture\[1\]: a second dataset named 'rooms'"):
        training_sources(mixture_cfg(tiny_tr2m_cfg, tmp_path, mixture=twice))
    with pytest.raises(ConfigError, match=r"mixture\[0\].weight=-1.0: must be a positive number"):
        training_sources(mixture_cfg(tiny_tr2m_cfg, tmp_path, mixture=[{**MIXTURE[0], "weight": -1}]))
    with pytest.raises(ConfigError, match=r"mixture\[0\].data: .*no_such_field"):
        training_sources(mixture_cfg(tiny_tr2m_cfg, tmp_path, mixture=[{"data": {"no_such_field": 1}}]))
    with pytest.raises(ConfigError, match=r"mixture\[0\].data.dataset: unknown dataset 'nope'"):
        training_sources(mixture_cfg(tiny_tr2m_cfg, tmp_path, mixture=[{"data": {"dataset": "nope"}}]))
    pureclip = config_to_dict(tiny_cfg)
    pureclip["mixture"] = MIXTURE
    with pytest.raises(ConfigError, match="pureclip_depth trains on one dataset at a time"):
        Experiment.create(load_config_dict(pureclip))


def test_the_mixture_recipes_name_the_papers_and_the_releases_datasets():
    from clipdepth.config import load_config

    paper = load_config("tr2m_mixture", ["mixture.0.data.root=/data/nyu"])
    sources = training_sources(paper)
    assert [(s.name, s.protocol, s.input_size) for s in sources] == [
        ("nyu", "nyu", (434, 560)),
        ("kitti", "kitti", (350, 1204)),
        ("void", "void", (434, 560)),
        ("c3vd", "c3vd", (434, 560)),
    ]
    assert sources[0].data.root == "/data/nyu" and sources[1].data.kb_crop and paper.train.mixture_order == "weighted"
    assert all(s.weight is None for s in sources)  # drawn in proportion to their sizes
    released = load_config("tr2m_mixture_released")
    assert [s.name for s in training_sources(released)] == ["nyu", "kitti", "c3vd"]
    assert released.train.mixture_order == "round_robin"


def test_a_run_started_before_mixtures_and_augmentation_existed_resumes(tiny_tr2m_cfg, tmp_path):
    from clipdepth.training.resume import RESUME_META, read_resume_meta, resume_dir

    cfg = mixture_cfg(tiny_tr2m_cfg, tmp_path / "run", mixture=[], max_epochs=1)
    Experiment.create(cfg).train(cfg.output_dir)
    state = resume_dir(cfg.output_dir) / RESUME_META
    meta = json.loads(state.read_text())
    del meta["config"]["mixture"], meta["config"]["train"]["mixture_order"]  # as an older clipdepth saved it
    meta["config"]["data"] = {k: v for k, v in meta["config"]["data"].items() if not k.startswith("augment")}
    state.write_text(json.dumps(meta))
    assert read_resume_meta(cfg.output_dir, cfg)[1]["epoch"] == 1


def test_a_mixture_model_is_scored_on_each_dataset_at_the_size_it_trained_it(tiny_tr2m_cfg, tmp_path, monkeypatch):
    from clipdepth.evaluation import checkpoint as checkpoint_module
    from clipdepth.evaluation.checkpoint import evaluate_checkpoint

    cfg = mixture_cfg(tiny_tr2m_cfg, tmp_path / "run", max_epochs=1)
    result, _ = Experiment.create(cfg).train(cfg.output_dir)
    sizes = []
    original = checkpoint_module.model_predictor
    monkeypatch.setattr(
        checkpoint_module, "model_predictor", lambda model, pre, *a, **k: (sizes.append(pre.input_shape), original(model, pre, *a, **k))[1]
    )
    summary, _ = evaluate_checkpoint(result.model_dir, dataset="synthetic_outdoor", out=tmp_path / "eval")
    assert sizes == [INPUT_SIZES["streets"]]  # and the frames are that entry's: tiny_cfg's 3 test scenes
    assert summary["n_images"] == 3 and summary["dataset"] == "synthetic_outdoor"


def test_errors_inside_a_mixture_name_the_dataset_and_come_before_any_weights(tiny_tr2m_cfg, tmp_path, monkeypatch):
    import clipdepth.training.run as run
    from clipdepth.config import load_config
    from clipdepth.errors import DataError

    monkeypatch.setattr(run, "build_model", lambda cfg: pytest.fail("weights loaded before the data was checked"))
    missing = [MIXTURE[0], {"name": "nyu", "data": {"dataset": "nyu", "root": str(tmp_path / "absent"), "train_list": "x.txt"}}]
    with pytest.raises((ConfigError, DataError), match=r"^mixture dataset nyu: .*absent") as err:
        Experiment.create(mixture_cfg(tiny_tr2m_cfg, tmp_path / "run", mixture=missing), check_data=True)
    assert "\n" not in str(err.value)
    with pytest.raises(ConfigError, match=r"^mixture dataset rooms: unknown evaluation protocol 'nyuu'"):
        Experiment.create(mixture_cfg(tiny_tr2m_cfg, tmp_path / "run", mixture=[{**MIXTURE[0], "protocol": "nyuu"}, MIXTURE[1]]))
    with pytest.raises(ConfigError, match=r"mixture\[0\].input_size=\[30, 42\]: both sides must be multiples of the patch size 14"):
        Experiment.create(mixture_cfg(tiny_tr2m_cfg, tmp_path / "run", mixture=[{**MIXTURE[0], "input_size": [30, 42]}]))
    with pytest.raises(ConfigError, match=r"override mixture.5.data.root: mixture has 3 entries \(mixture.0 .. mixture.2\)"):
        load_config("tr2m_mixture_released", ["mixture.5.data.root=/x"])
