"""Exact resume: a run killed after an epoch and resumed equals the run never interrupted."""

import argparse
import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from clipdepth.errors import CheckpointError, ClipdepthError, ConfigError
from clipdepth.features import EncodedSplit
from clipdepth.io.depth_store import TrainingDepth
from clipdepth.training.resume import RESUME_META, RESUME_TENSORS, resume_dir
from clipdepth.training.trainer import Trainer

from .test_training import make_trainer, random_split

RESUME = {"max_epochs": 4, "log_every": 1}  # 8 frames / batch 4: 2 steps an epoch, phases E E D D ...


def tiled_trainer(tiny_cfg, out: Path, **overrides) -> Trainer:
    """make_trainer, training on two tiles a frame so the tile generator matters."""
    trainer = make_trainer(tiny_cfg, out, **overrides)
    base = random_split(trainer.model, 16, 1)
    depth = base.depth.rows(torch.arange(16))
    trainer.sources[0].train = EncodedSplit(
        names=base.names[:8],
        arrays=base.arrays,
        flipped_arrays=None,
        shapes=base.shapes[:8],
        depth=TrainingDepth.from_float(torch.cat([depth[0::2], depth[1::2]], dim=-1)),
        gt=base.gt[:8],
        tiles=2,
    )
    return trainer


class Killed(RuntimeError):
    pass


def steps(out: Path) -> list[dict]:
    return [json.loads(line) for line in (out / "train_steps.jsonl").read_text().splitlines()]


def head_weights(out: Path) -> dict[str, torch.Tensor]:
    return load_file(str(out / "checkpoints" / "last" / "model.safetensors"))


def kill_on_validate(monkeypatch, call: int) -> None:
    """Make Trainer.validate raise on its ``call``-th call (the epoch after the last saved state)."""
    original, calls = Trainer.validate, [0]

    def validate(self):
        calls[0] += 1
        if calls[0] == call:
            raise Killed("simulated kill")
        return original(self)

    monkeypatch.setattr(Trainer, "validate", validate)


def interrupted_run(tiny_cfg, out: Path, monkeypatch, build=make_trainer) -> None:
    """Train until epoch 3's validation: epoch 2's resume state is the last one written."""
    with monkeypatch.context() as m:
        kill_on_validate(m, 3)
        with pytest.raises(Killed):
            build(tiny_cfg, out, **RESUME).fit()


def test_resumed_run_equals_uninterrupted_run(tiny_cfg, tmp_path, monkeypatch):
    assert tiny_cfg.pureclip.dropout > 0  # dropout draws from torch's global RNG: it must be restored
    out_a, out_b = tmp_path / "a", tmp_path / "b"
    result_a = tiled_trainer(tiny_cfg, out_a, **RESUME).fit()

    interrupted_run(tiny_cfg, out_b, monkeypatch, tiled_trainer)
    state = json.loads((resume_dir(out_b) / RESUME_META).read_text())
    assert (state["epoch"], state["step"]) == (2, 4)
    assert steps(out_b)[-1]["step"] == 6  # epoch 3's steps reached the log before the kill

    torch.manual_seed(1234)  # a fresh process: any global RNG state; resume must restore it
    result_b = tiled_trainer(tiny_cfg, out_b, **RESUME).fit(resume=True)

    log_a, log_b = steps(out_a), steps(out_b)
    assert [r["step"] for r in log_b] == list(range(1, 9))  # none lost, none duplicated
    assert {r["phase"] for r in log_a} == {"embedding", "depth"}
    assert log_b == log_a  # identical per-step losses, phases and epochs
    wa, wb = head_weights(out_a), head_weights(out_b)
    assert wa.keys() == wb.keys() and all(torch.equal(wa[k], wb[k]) for k in wa)
    assert result_b.history == result_a.history and result_b.best == result_a.best
    assert (out_b / "train_epochs.csv").read_text() == (out_a / "train_epochs.csv").read_text()
    assert (out_b / "best_metrics.json").read_text() == (out_a / "best_metrics.json").read_text()
    wa, wb = (load_file(str(o / "model" / "model.safetensors")) for o in (out_a, out_b))
    assert all(torch.equal(wa[k], wb[k]) for k in wa)


def test_resume_after_the_last_epoch_only_finishes(tiny_cfg, tmp_path):
    out = tmp_path / "run"
    result = make_trainer(tiny_cfg, out, max_epochs=1, log_every=1).fit()
    before = steps(out)
    again = make_trainer(tiny_cfg, out, max_epochs=1, log_every=1).fit(resume=True)
    assert again.history == result.history and steps(out) == before
    assert (out / "model" / "model.safetensors").is_file()


def test_resume_without_state_is_a_one_line_error(tiny_cfg, tmp_path):
    with pytest.raises(CheckpointError, match=r"no resume state") as exc:
        make_trainer(tiny_cfg, tmp_path / "run", **RESUME).fit(resume=True)
    assert "\n" not in str(exc.value)


def test_resume_errors_and_stale_state(tiny_cfg, tmp_path, monkeypatch):
    out, short = tmp_path / "run", {"max_epochs": 2, "log_every": 1}
    with monkeypatch.context() as m:  # killed in epoch 2: epoch 1's state is saved
        kill_on_validate(m, 2)
        with pytest.raises(Killed):
            make_trainer(tiny_cfg, out, **short).fit()

    # Another config: a one-line error naming the first differing field.
    with pytest.raises(ConfigError, match=r"pureclip\.depth_lr differs") as exc:
        make_trainer(tiny_cfg, out, **short, depth_lr=5e-4).fit(resume=True)
    assert "\n" not in str(exc.value)

    # An incomplete state: a one-line error naming what is missing.
    tensors = (resume_dir(out) / RESUME_TENSORS).read_bytes()
    (resume_dir(out) / RESUME_TENSORS).unlink()
    with pytest.raises(CheckpointError, match=rf"incomplete resume state \(missing {RESUME_TENSORS}\)") as exc:
        make_trainer(tiny_cfg, out, **short).fit(resume=True)
    assert "\n" not in str(exc.value)
    (resume_dir(out) / RESUME_TENSORS).write_bytes(tensors)

    # A fresh run in the same folder is refused unless asked to replace the old one ...
    with pytest.raises(CheckpointError, match="holds a training run .*--resume.*--overwrite") as exc:
        make_trainer(tiny_cfg, out, **short).fit()
    assert "\n" not in str(exc.value) and resume_dir(out).is_dir()
    # ... and then drops the old state at once: killed in its first epoch, it leaves nothing that
    # --resume could mistake for its own.
    with monkeypatch.context() as m:
        kill_on_validate(m, 1)
        with pytest.raises(Killed):
            make_trainer(tiny_cfg, out, **short).fit(overwrite=True)
    assert not resume_dir(out).exists()
    with pytest.raises(CheckpointError, match="no resume state"):
        make_trainer(tiny_cfg, out, **short).fit(resume=True)


def test_cli_resume_checks_before_any_work(tiny_cfg, tmp_path, monkeypatch):
    from clipdepth.cli import train as cli_train

    def no_work(*args, **kwargs):
        raise AssertionError("the model was built before the resume state was checked")

    monkeypatch.setattr("clipdepth.training.run.Experiment.create", no_work)
    args = argparse.Namespace(config=["demo"], out=str(tmp_path / "run"), overrides=[], resume=True, overwrite=False, workers=None)
    with pytest.raises(ClipdepthError, match="no resume state"):
        cli_train.run(args)
