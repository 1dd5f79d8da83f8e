"""Alternating optimisation: the phase switch, what each phase trains, the LR schedule, a run."""

import dataclasses
import json
from pathlib import Path

import numpy as np
import pytest
import torch

from clipdepth.config import PureCLIPConfig, TrainConfig
from clipdepth.data.transforms import Preprocessor
from clipdepth.errors import ConfigError
from clipdepth.evaluation.protocol import get_protocol
from clipdepth.features import EncodedSplit
from clipdepth.io.depth_store import TrainingDepth
from clipdepth.models import PureCLIPDepth
from clipdepth.training.run import Experiment
from clipdepth.training.objectives.pureclip import DEPTH, EMBEDDING, lr_factor, phase_at
from clipdepth.training.trainer import Trainer


def test_phase_switches_every_100_steps_embedding_first():
    assert [phase_at(s, 100) for s in (0, 99, 100, 199, 200, 350)] == [EMBEDDING, EMBEDDING, DEPTH, DEPTH, EMBEDDING, DEPTH]


def test_lr_constant_then_linear_decay_to_a_tenth():
    schedule = (20, 50, 0.1)  # decay_start, patience, final_lr_factor
    assert [lr_factor(n, *schedule) for n in (0, 20)] == [1.0, 1.0]
    assert lr_factor(35, *schedule) == pytest.approx(0.55)  # halfway from 20 to 50
    assert lr_factor(50, *schedule) == pytest.approx(0.1) and lr_factor(70, *schedule) == pytest.approx(0.1)


def random_split(model: PureCLIPDepth, n: int, seed: int) -> EncodedSplit:
    g = torch.Generator().manual_seed(seed)
    h, w = model.encoder.grid_size
    d = model.encoder.embed_dim
    size = model.input_size
    depth = torch.rand(n, size, size, generator=g) * 9 + 0.5
    return EncodedSplit(
        names=[f"f{i}" for i in range(n)],
        arrays={
            "tokens": torch.randn(n, h, w, d, generator=g).half(),
            "cls": torch.nn.functional.normalize(torch.randn(n, d, generator=g), dim=-1).half(),
        },
        flipped_arrays=None,
        shapes=np.array([[size, size]] * n),
        depth=TrainingDepth.from_float(depth),
        gt=[x.numpy() for x in depth],
    )


def make_trainer(tiny_cfg, tmp_path, **overrides) -> Trainer:
    """A trainer on random features; ``overrides`` are fields of the train or the pureclip section."""
    mine = {f.name for f in dataclasses.fields(PureCLIPConfig)}
    pureclip = {k: v for k, v in overrides.items() if k in mine}
    train = {k: v for k, v in overrides.items() if k not in mine}
    cfg = dataclasses.replace(
        tiny_cfg,
        train=dataclasses.replace(tiny_cfg.train, **train),
        pureclip=dataclasses.replace(tiny_cfg.pureclip, **{"phase_steps": 2, **pureclip}),
    )
    cfg.eval.tta = False
    torch.manual_seed(0)
    model = PureCLIPDepth.build(cfg)
    split = random_split(model, 8, 0)
    return Trainer.single_dataset(
        model, cfg, split, split, Preprocessor.create(model.input_size, None), get_protocol("synthetic_indoor"), tmp_path
    )


def run_steps(trainer: Trainer, n: int) -> list[str]:
    return [trainer.train_step(torch.arange(4))["phase"] for _ in range(n)]


@pytest.mark.parametrize("frozen", [True, False])
def test_table_frozen_in_depth_phase_only_when_asked(tiny_cfg, tmp_path, frozen):
    trainer = make_trainer(tiny_cfg, tmp_path, freeze_table_in_depth_phase=frozen)
    head = trainer.model.head
    table0 = head.table.detach().clone()
    assert run_steps(trainer, 2) == [EMBEDDING, EMBEDDING]
    table1, phi1 = head.table.detach().clone(), head.phi[1].weight.detach().clone()
    assert not torch.equal(table0, table1)  # W trains in the Embedding phase either way
    assert run_steps(trainer, 2) == [DEPTH, DEPTH]
    assert torch.equal(head.table.detach(), table1) == frozen
    assert not torch.equal(head.phi[1].weight.detach(), phi1)  # phi trains in the Depth phase


def test_frozen_mlps_train_only_the_table(tiny_cfg, tmp_path):
    trainer = make_trainer(tiny_cfg, tmp_path, freeze_mlps=True)
    head = trainer.model.head
    before = {k: v.clone() for k, v in head.state_dict().items()}
    run_steps(trainer, 4)
    after = head.state_dict()
    changed = {k for k in before if not torch.equal(before[k], after[k])}
    assert changed == {"table"}


def test_training_run_writes_best_checkpoints_logs_and_model(tiny_cfg):
    result, _ = Experiment.create(tiny_cfg).train(tiny_cfg.output_dir)
    out = result.model_dir.parent
    assert (result.model_dir / "model.safetensors").is_file()
    assert {p.name for p in (out / "checkpoints").iterdir()} >= {"best_abs_rel", "best_d1", "last"}
    rows = (out / "train_epochs.csv").read_text().splitlines()
    assert len(rows) == 1 + tiny_cfg.train.max_epochs and "val_abs_rel" in rows[0]
    best = json.loads((out / "best_metrics.json").read_text())
    assert best["select_metric"] == "abs_rel" and best["best_per_metric"]["abs_rel"]["epoch"] >= 1
    meta = json.loads((result.model_dir / "config.json").read_text())
    assert meta["epoch"] == best["best_per_metric"]["abs_rel"]["epoch"]
    assert np.isfinite(meta["val_metrics"]["rmse"])


def test_training_stops_after_patience_epochs_without_improvement(tiny_cfg, tmp_path):
    # With zero learning rates nothing changes after the first validation: epoch 1 sets every
    # best, epochs 2 and 3 improve nothing, and patience 2 stops the run there.
    trainer = make_trainer(tiny_cfg, tmp_path, embed_lr=0.0, depth_lr=0.0, patience=2, decay_start=1, max_epochs=10)
    result = trainer.fit()
    assert result.stopped_early and [row["epoch"] for row in result.history] == [1, 2, 3]
    assert [row["improved"] != "" for row in result.history] == [True, False, False]
    assert result.history[-1]["lr_factor"] == pytest.approx(0.1)  # decayed to the floor at patience


def test_training_on_tiles_runs(tiny_cfg):
    tiny_cfg.data.tiles = 2
    tiny_cfg.train.max_epochs = 1
    result, train = Experiment.create(tiny_cfg).train(tiny_cfg.output_dir)
    assert train.arrays["tokens"].shape[0] == 2 * len(train) and result.history[0]["epoch"] == 1


def test_each_training_tile_is_gated_by_its_own_part_of_the_garg_crop(tiny_cfg):
    from clipdepth.features.memory import TrainBatch
    from clipdepth.losses import patch_targets
    from clipdepth.training.objectives.pureclip import PureCLIPObjective

    cfg = dataclasses.replace(tiny_cfg, pureclip=dataclasses.replace(tiny_cfg.pureclip, patch_region="garg"))
    model = PureCLIPDepth.build(cfg)
    objective = PureCLIPObjective(model, cfg, model.head, Preprocessor.create(336, None, tiles=4))
    batch = TrainBatch({}, torch.zeros(2, 336, 336), [(375, 1242), (375, 1242)], torch.tensor([0, 3]), 4)
    region = objective.patch_region(batch)
    # On the 336 x 1344 input the Garg crop of a 375 x 1242 frame is rows 138..332, cols 48..1295
    # (test_transforms.py). Patches of 14: rows 140..321 are whole, 126..139 has 2 rows inside (out),
    # 322..335 has 11 (in) -> patch rows 10..23. Tile 0 (cols 0..335): cols 42..55 have 8 inside
    # (in) -> patch cols 3..23. Tile 3 (cols 1008..1343, inside up to local 287): 280..293 has 8
    # (in) -> patch cols 0..20. Where the partial row and column meet, 11 x 8 = 88 of 196 pixels
    # are inside: not more than half, so that corner patch is out.
    mask = patch_targets(torch.full((2, 336, 336), 5.0), 14, 1e-3, 30.0, 15, region=region).mask
    expected = torch.zeros(2, 24, 24, dtype=torch.bool)
    expected[0, 10:24, 3:24] = True
    expected[1, 10:24, 0:21] = True
    expected[0, 23, 3] = expected[1, 23, 20] = False
    assert torch.equal(mask, expected)
    # a frame of another size gets its own region: 352 rows put the crop's first row 143 at input row 137
    other = objective.patch_region(TrainBatch({}, torch.zeros(1, 336, 336), [(352, 1216)], torch.tensor([0]), 4))
    assert other[0, 137].any() and not region[0, 137].any()


def test_the_embedding_step_uses_the_region_gated_targets(tiny_cfg):
    from clipdepth.features.memory import TrainBatch
    from clipdepth.losses import embedding_loss, patch_targets
    from clipdepth.training.objectives.pureclip import PureCLIPObjective

    cfg = dataclasses.replace(tiny_cfg, pureclip=dataclasses.replace(tiny_cfg.pureclip, patch_region="garg", dropout=0.0))
    torch.manual_seed(0)
    model = PureCLIPDepth.build(cfg)
    objective = PureCLIPObjective(model, cfg, model.head, Preprocessor.create(model.input_size, None))
    split = random_split(model, 2, 0)
    features = {k: v.float() for k, v in split.arrays.items()}
    batch = TrainBatch(features, split.depth.rows(torch.arange(len(split))), [(8, 8), (8, 8)], torch.zeros(2, dtype=torch.long), 1)
    # Garg on 8 x 8: rows 3..6, cols 0..6; nearest to 56 x 56 (source floor(i / 7)): rows 21..48,
    # cols 0..48. Patches of 14 more than half inside: patch row 2 (28..41) x patch cols 0..2 only.
    region = torch.zeros(2, 56, 56, dtype=torch.bool)
    region[:, 21:49, 0:49] = True
    targets = patch_targets(
        split.depth.rows(torch.arange(len(split))), 14, cfg.pureclip.min_depth, cfg.pureclip.max_depth, 15, region=region
    )
    assert targets.mask.sum().item() == 2 * 3
    with torch.no_grad():
        out = model.head(features["tokens"], features["cls"])
        expected = embedding_loss(out.z, out.logits, model.head.normalized_table(), targets, 1.0)["loss"].item()
        ungated = patch_targets(split.depth.rows(torch.arange(len(split))), 14, cfg.pureclip.min_depth, cfg.pureclip.max_depth, 15)
        without = embedding_loss(out.z, out.logits, model.head.normalized_table(), ungated, 1.0)["loss"].item()
    record = objective.step(batch, 0, torch.Generator())
    assert record["phase"] == EMBEDDING and record["loss"] == pytest.approx(expected, rel=1e-5)
    assert abs(expected - without) > 1e-3


def test_the_last_partial_batch_is_dropped_unless_asked(tiny_cfg, tmp_path):
    from clipdepth.training.trainer import steps_per_epoch

    assert steps_per_epoch(10, 4, drop_last=True) == 2 and steps_per_epoch(10, 4, drop_last=False) == 3
    trainer = make_trainer(tiny_cfg, tmp_path / "a", batch_size=3, max_epochs=1)  # 8 frames: 2 full batches
    trainer.fit()
    assert trainer.step == 2
    trainer = make_trainer(tiny_cfg, tmp_path / "b", batch_size=3, max_epochs=1, drop_last=False)
    trainer.fit()
    assert trainer.step == 3


def test_improvement_is_judged_on_the_released_metric_set(tiny_cfg, tmp_path):
    from clipdepth.errors import ConfigError
    from clipdepth.training.checks import check_config

    assert TrainConfig().improve_metrics == ["d1", "d2", "d3", "abs_diff", "abs_rel", "log10", "rmse"]
    # Zero learning rates: epoch 1 sets every best, nothing improves after, patience 1 stops at 2.
    trainer = make_trainer(
        tiny_cfg, tmp_path, embed_lr=0.0, depth_lr=0.0, patience=1, max_epochs=5, improve_metrics=["abs_diff"], select_metric="silog"
    )
    result = trainer.fit()
    assert [row["epoch"] for row in result.history] == [1, 2] and result.history[0]["improved"] == "abs_diff"
    assert "val_abs_diff" in result.history[0]
    # checkpoints: the improvement set and the selected metric, nothing else
    assert {p.name for p in (tmp_path / "checkpoints").iterdir()} == {"best_abs_diff", "best_silog", "last", "resume"}
    for bad in (["d4"], []):
        cfg = dataclasses.replace(tiny_cfg, train=dataclasses.replace(tiny_cfg.train, improve_metrics=bad))
        with pytest.raises(ConfigError, match="improve_metrics"):
            check_config(cfg)


def scripted_validation(monkeypatch, abs_rel: list[float]) -> None:
    """Trainer.validate returning ``abs_rel[epoch - 1]`` (every other metric 0): epoch 1 is the best here."""
    from clipdepth.evaluation.metrics import ALL_METRIC_NAMES

    calls = []

    def validate(self):
        calls.append(1)
        metrics = {m: 0.0 for m in ALL_METRIC_NAMES} | {"abs_rel": abs_rel[len(calls) - 1]}
        return metrics, {"synthetic_indoor": metrics}

    monkeypatch.setattr(Trainer, "validate", validate)


@pytest.mark.parametrize("publish, epoch, checkpoint", [("best", 1, "best_abs_rel"), ("last", 3, "last")])
def test_train_publish_puts_the_best_or_the_final_epoch_in_model(tiny_cfg, tmp_path, monkeypatch, publish, epoch, checkpoint):
    from safetensors.torch import load_file

    scripted_validation(monkeypatch, [0.1, 0.5, 0.9])
    trainer = make_trainer(tiny_cfg, tmp_path, max_epochs=3, improve_metrics=["abs_rel"], publish=publish)
    result = trainer.fit()
    assert result.best["abs_rel"] == {"value": 0.1, "epoch": 1} and result.published_epoch == epoch
    weights = {
        name: load_file(str(tmp_path / name / "model.safetensors")) for name in ("model", "checkpoints/last", "checkpoints/best_abs_rel")
    }
    assert json.loads((tmp_path / "model" / "config.json").read_text())["epoch"] == epoch
    assert all(torch.equal(weights["model"][k], weights[f"checkpoints/{checkpoint}"][k]) for k in weights["model"])
    assert not all(torch.equal(weights["checkpoints/last"][k], weights["checkpoints/best_abs_rel"][k]) for k in weights["model"])
    published = json.loads((tmp_path / "best_metrics.json").read_text())["published"]
    assert published == {"checkpoint": checkpoint, "epoch": epoch}


def test_an_empty_validation_split_says_what_fills_it(tiny_cfg):
    from clipdepth.errors import ConfigError

    tiny_cfg.data.val_size = 0
    with pytest.raises(
        ConfigError,
        match=r"the val split of synthetic_indoor is empty: no frame with ground truth \(a larger "
        r"data.val_fraction, or data.val_source=test_list to validate on data.test_list; "
        r"built-in scenes: data.val_size\)$",
    ):
        Experiment.create(tiny_cfg).train(tiny_cfg.output_dir)
    tiny_cfg.data.val_source, tiny_cfg.data.test_size = "test_list", 0
    with pytest.raises(
        ConfigError,
        match=r"the val split .* \(a data.test_list with ground truth, or "
        r"data.val_source=held_out .*; built-in scenes: data.test_size\)$",
    ):
        Experiment.create(tiny_cfg).train(tiny_cfg.output_dir)


def test_evaluate_scores_a_checkpoint_with_the_protocol_and_frames_its_run_validated_on(tiny_cfg, tmp_path):
    """With data.val_source=test_list and train.publish=last, the run's last validation and
    `clipdepth evaluate` of model/ score the same frames with the same protocol: the same numbers.
    The protocol here is not the dataset's own (synthetic_indoor), as prompts_kitti's is not kitti's."""
    from clipdepth.evaluation.checkpoint import evaluate_checkpoint

    tiny_cfg.eval.protocol, tiny_cfg.data.val_source, tiny_cfg.train.publish = "synthetic_outdoor", "test_list", "last"
    result, _ = Experiment.create(tiny_cfg).train(tiny_cfg.output_dir)
    summary, _ = evaluate_checkpoint(result.model_dir, out=tmp_path / "eval")
    validated = json.loads((result.model_dir / "config.json").read_text())["val_metrics"]
    assert summary["protocol"] == "synthetic_outdoor" and summary["n_images"] == tiny_cfg.data.test_size
    assert [summary[m] for m in ("abs_rel", "rmse", "d1")] == [validated[m] for m in ("abs_rel", "rmse", "d1")]
    summary, _ = evaluate_checkpoint(result.model_dir, protocol="synthetic_indoor", out=tmp_path / "eval", overwrite=True)
    assert summary["protocol"] == "synthetic_indoor"  # --protocol still wins


def test_train_overwrite_removes_only_what_clipdepth_wrote(tmp_path, capsys):
    """`train --overwrite` replaces the old run but keeps the user's files in its folders: the old
    checkpoints leave (best_rmse/, which the new run does not write, too), the new run's arrive."""
    from clipdepth.cli.main import main

    from .conftest import TINY_ENCODER

    run = tmp_path / "run"
    tiny = [
        "--config",
        "demo",
        "--out",
        str(run),
        *(f"clip.{k}={v}" for k, v in TINY_ENCODER.items()),
        "data.train_size=4",
        "data.val_size=2",
        "data.test_size=2",
        "data.height=48",
        "data.width=64",
        "train.max_epochs=1",
        "train.batch_size=2",
    ]
    assert main(["train", *tiny, "train.improve_metrics=[abs_rel,rmse]"]) == 0
    board = run / "tensorboard"
    board.mkdir(exist_ok=True)
    (board / "events.out.tfevents.1700000000.host.1.0").write_bytes(b"old run")  # as SummaryWriter names them
    checkpoints = run / "checkpoints"
    mine = {
        run / "model" / "notes.txt": "model",
        run / "model" / "data" / "x.txt": "data",
        checkpoints / "notes.txt": "checkpoints",
        checkpoints / "best_abs_rel" / "notes.txt": "best",
        checkpoints / "best_rmse" / "notes.txt": "rmse",
        board / "notes.txt": "board",
    }
    for path, text in mine.items():
        path.parent.mkdir(exist_ok=True)
        path.write_text(text)

    assert main(["train", "--overwrite", *tiny, "train.improve_metrics=[abs_rel]", "seed=1"]) == 0
    capsys.readouterr()
    assert {path: path.read_text() for path in mine} == mine
    assert not (board / "events.out.tfevents.1700000000.host.1.0").exists()
    assert sorted(p.name for p in (run / "checkpoints" / "best_rmse").iterdir()) == ["notes.txt"]
    for folder in ("model", "checkpoints/best_abs_rel", "checkpoints/last"):
        assert json.loads((run / folder / "config.json").read_text())["config"]["seed"] == 1, folder
    assert sorted(p.name for p in (run / "model").iterdir()) == [
        ".clipdepth",
        "README.md",
        "config.json",
        "data",
        "model.safetensors",
        "notes.txt",
        "preprocessor_config.json",
    ]
    assert json.loads((run / "checkpoints" / "resume" / "state.json").read_text())["config"]["seed"] == 1


def test_a_new_run_removes_a_checkpoint_saved_without_the_list_and_keeps_the_users_files(tmp_path):
    from clipdepth.training.run_folder import start_run_folder

    checkpoint = ["README.md", "config.json", "model.safetensors", "preprocessor_config.json"]
    resume = ["head.safetensors", "training_state.pt", "state.json"]
    for folder, names in (("model", checkpoint), ("checkpoints/last", checkpoint), ("checkpoints/resume", resume)):
        (tmp_path / folder).mkdir(parents=True)  # as a clipdepth before the lists left them
        for name in names:
            (tmp_path / folder / name).write_text("old")
    (tmp_path / "model" / "notes.txt").write_text("mine")
    (tmp_path / "train_epochs.csv").write_text("epoch\n1\n")
    start_run_folder(tmp_path)
    assert [p.name for p in tmp_path.rglob("*")] == ["model", "notes.txt"]


def test_a_run_trains_the_same_whatever_the_process_drew_since_its_head_was_built(tiny_cfg, tmp_path):
    """Training (dropout draws from torch's global generator) starts from the state right after the
    head was built, as a standalone `clipdepth train` does: the demo builds every variant first."""
    alone = Experiment.create(dataclasses.replace(tiny_cfg, output_dir=str(tmp_path / "a")))
    weights_alone = alone.train(tmp_path / "a")[0]
    later = Experiment.create(dataclasses.replace(tiny_cfg, output_dir=str(tmp_path / "b")))
    torch.rand(1000)  # another variant built, or anything else that draws, in between
    weights_later = later.train(tmp_path / "b")[0]
    assert weights_alone.history == weights_later.history
    for key, value in alone.model.head.state_dict().items():
        torch.testing.assert_close(later.model.head.state_dict()[key], value, rtol=0, atol=0)


@pytest.mark.parametrize(
    "device, overrides, says", [("cpu", [], "need a CUDA device"), ("cuda", ["train.drop_last=false"], "train.drop_last=true")]
)
def test_cuda_graph_is_refused_where_it_cannot_replay_in_one_line(tiny_cfg, device, overrides, says):
    from clipdepth.config import config_to_dict, load_config_dict
    from clipdepth.training.checks import check_cuda_graph

    cfg = load_config_dict(config_to_dict(tiny_cfg), ["train.cuda_graph=true", *overrides])
    with pytest.raises(ConfigError) as err:
        check_cuda_graph(cfg, device)
    message = str(err.value)
    assert says in message and message.startswith("train.cuda_graph:") and "\n" not in message
    check_cuda_graph(load_config_dict(config_to_dict(cfg), ["train.cuda_graph=false"]), device)  # off: nothing to check


def test_train_checks_everything_once_before_any_work_and_resumes(tiny_cfg, monkeypatch):
    """`clipdepth.training.train`, the one road of `clipdepth train`: the config, the run folder and a resumed
    run's state are each checked or read once per run, and a resumed run continues where the first stopped."""
    import clipdepth.training.checks as checks_module
    import clipdepth.training.run as run_module
    import clipdepth.training.run_folder as run_folder_module
    from clipdepth.training import train

    calls: dict[str, int] = {}

    def counted(module, name):
        original = getattr(module, name)

        def spy(*args, **kwargs):
            calls[name] = calls.get(name, 0) + 1
            return original(*args, **kwargs)

        monkeypatch.setattr(module, name, spy)

    counted(checks_module, "check_config")
    for name in ("check_run_folder", "read_resume_meta", "read_resume_tensors"):
        counted(run_folder_module, name)
    monkeypatch.setattr(run_module, "check_config", checks_module.check_config)  # the name run.py imported

    tiny_cfg.train.max_epochs = 1
    first = train(tiny_cfg)
    assert calls == {"check_config": 1, "check_run_folder": 1} and [row["epoch"] for row in first.history] == [1]
    calls.clear()
    tiny_cfg.train.max_epochs = 2  # a larger max_epochs continues a finished run
    resumed = train(tiny_cfg, resume=True)
    assert calls == {"check_config": 1, "check_run_folder": 1, "read_resume_meta": 1, "read_resume_tensors": 1}
    assert [row["epoch"] for row in resumed.history] == [1, 2] and resumed.history[0] == first.history[0]
    assert resumed.trained and resumed.first_epoch == 2
    assert "max_epochs: 2" in (Path(tiny_cfg.output_dir) / "config.yaml").read_text()  # the run's config, as resumed
    # a finished run resumed again: nothing is built, encoded or rewritten
    monkeypatch.setattr(run_module.Experiment, "create", lambda *a, **k: pytest.fail("built a model for a finished run"))
    again = train(tiny_cfg, resume=True)
    assert not again.trained and again.history == resumed.history and again.published_epoch == resumed.published_epoch
    with pytest.raises(ConfigError, match="give one"):
        train(tiny_cfg, resume=True, overwrite=True)


def test_a_run_opens_each_split_of_its_datasets_once(tiny_cfg, monkeypatch):
    import clipdepth.training.run as run_module
    from clipdepth.training import train

    opened = []
    real = run_module.get_dataset
    monkeypatch.setattr(run_module, "get_dataset", lambda data, split: (opened.append((data.dataset, split)), real(data, split))[1])
    tiny_cfg.train.max_epochs = 1
    train(tiny_cfg)
    assert sorted(opened) == [("synthetic_indoor", "train"), ("synthetic_indoor", "val")]
