"""`clipdepth demo`: its artefacts, and the acceptance bar on the real demo recipe."""

import json

import numpy as np
import pytest

from clipdepth.cli.main import main
from clipdepth.evaluation.metrics import METRIC_NAMES
from clipdepth.models import load_model

from .conftest import TINY_ENCODER


def test_demo_writes_metrics_table_panels_and_a_loadable_model(tmp_path, capsys):
    out = tmp_path / "demo"
    overrides = [f"clip.{k}={v}" for k, v in TINY_ENCODER.items()] + [
        "data.train_size=6",
        "data.val_size=2",
        "data.test_size=3",
        "data.height=48",
        "data.width=64",
        "train.max_epochs=2",
        "train.batch_size=3",
    ]
    assert main(["demo", "--out", str(out), *overrides]) == 0
    printed = capsys.readouterr().out
    assert "RANDOM weights" in printed and "mean depth" in printed
    metrics = json.loads((out / "metrics.json").read_text())
    for key in ("head", "mean_baseline"):
        assert set(METRIC_NAMES) <= set(metrics[key]) and metrics[key]["n_images"] == 3
    assert "| model |" in (out / "results.md").read_text()
    assert len(list((out / "panels").glob("*.png"))) == 3
    assert load_model(out / "model").infer(np.zeros((48, 64, 3), np.uint8))["depth"].shape == (1, 48, 64)


@pytest.mark.slow
def test_demo_recipe_beats_the_mean_depth_predictor_by_20_percent(tmp_path):
    """The issue's bar, on the real demo recipe (a few minutes on 2 cores)."""
    assert main(["demo", "--out", str(tmp_path / "demo")]) == 0
    metrics = json.loads((tmp_path / "demo" / "metrics.json").read_text())
    for m in ("abs_rel", "rmse"):
        assert metrics["head"][m] <= 0.8 * metrics["mean_baseline"][m], (m, metrics["head"][m], metrics["mean_baseline"][m])


def test_the_tr2m_demo_trains_its_variants_and_rsa_from_one_cache_folder(tmp_path, capsys):
    from .conftest import TINY_TR2M

    out = tmp_path / "demo"
    overrides = [o for o in TINY_TR2M if not o.startswith("model=")] + [
        "data.train_size=4",
        "data.val_size=2",
        "data.test_size=2",
        "data.height=48",
        "data.width=64",
        "train.max_epochs=1",
        "train.batch_size=2",
    ]
    assert main(["demo", "--config", "demo_tr2m", "--out", str(out), *overrides]) == 0
    assert "ORACLE" in capsys.readouterr().out
    metrics = json.loads((out / "metrics.json").read_text())
    for key in ("tr2m", "global_factor", "rsa", "mean_baseline"):
        assert set(METRIC_NAMES) <= set(metrics[key]) and metrics[key]["n_images"] == 2
    # the first variant's gain is measured against the second, as the report says
    expected = 1.0 - metrics["tr2m"]["abs_rel"] / metrics["global_factor"]["abs_rel"]
    assert metrics["relative_improvement"]["abs_rel"] == pytest.approx(expected)
    assert metrics["relative_improvement_of"] == "tr2m over global_factor"
    assert (out / "feature_cache" / "train").is_dir()  # one cache: the TR2M variants differ only in the head
    assert (out / "feature_cache" / "rsa" / "train").is_dir()  # RSA's own arrays beside it
    per_pixel, global_factor = load_model(out / "tr2m" / "model"), load_model(out / "global_factor" / "model")
    assert not per_pixel.cfg.tr2m.global_factor and global_factor.cfg.tr2m.global_factor
    rsa = load_model(out / "rsa" / "model")
    assert rsa.architecture == "rsa" and rsa.cfg.rsa.relative == per_pixel.cfg.tr2m.relative  # the same oracle
    assert metrics["frozen_parts"] == per_pixel.encoder.description  # the first variant's
    assert "| RSA, one scale and shift per image from the caption alone |" in (out / "results.md").read_text()
    assert len(list((out / "panels").glob("*.png"))) == 2


def tiny_tr2m_demo() -> list[str]:
    """Overrides of the demo_tr2m recipe: two epochs of one step each."""
    from .conftest import TINY_TR2M

    return [o for o in TINY_TR2M if not o.startswith("model=")] + [
        "data.train_size=2",
        "data.val_size=1",
        "data.test_size=1",
        "data.height=48",
        "data.width=64",
        "train.max_epochs=2",
        "train.batch_size=2",
    ]


def tr2m_demo(out) -> list[str]:
    return ["demo", "--config", "demo_tr2m", "--out", str(out), *tiny_tr2m_demo()]


@pytest.fixture
def epochs_trained(monkeypatch):
    """(run folder name, epoch) for every epoch a trainer finishes."""
    from clipdepth.training.trainer import Trainer

    done, original = [], Trainer._save_resume_state

    def recorded(self, epoch, *args):
        original(self, epoch, *args)
        done.append((self.out_dir.name, epoch))

    monkeypatch.setattr(Trainer, "_save_resume_state", recorded)
    return done


def metrics_of(out):
    return {k: v for k, v in json.loads((out / "metrics.json").read_text()).items() if k != "checkpoints"}


def test_a_rerun_resumes_an_interrupted_demo_and_gives_the_uninterrupted_numbers(tmp_path, capsys, epochs_trained):
    import dataclasses

    from clipdepth.config import load_config
    from clipdepth.training.run import Experiment
    from clipdepth.training.trainer import Trainer

    assert main(tr2m_demo(tmp_path / "whole")) == 0
    epochs_trained.clear()

    validate = Trainer.validate

    def killed_in_the_second_epoch(self):
        if epochs_trained:
            raise KeyboardInterrupt
        return validate(self)

    with pytest.MonkeyPatch.context() as m:
        m.setattr(Trainer, "validate", killed_in_the_second_epoch)
        assert main(tr2m_demo(tmp_path / "cut")) == 130
    assert epochs_trained == [("tr2m", 1)]
    capsys.readouterr()

    epochs_trained.clear()
    assert main(tr2m_demo(tmp_path / "cut")) == 0
    assert epochs_trained == [("tr2m", 2), ("global_factor", 1), ("global_factor", 2), ("rsa", 1), ("rsa", 2)]  # epoch 1 not again
    assert f"{tmp_path / 'cut'} holds earlier runs: resuming tr2m (after epoch 1 of 2)" in capsys.readouterr().out
    assert metrics_of(tmp_path / "cut") == metrics_of(tmp_path / "whole")

    epochs_trained.clear()
    assert main(tr2m_demo(tmp_path / "cut")) == 0
    assert epochs_trained == []
    assert "holds earlier runs: kept tr2m, global_factor, rsa (finished with this config)" in capsys.readouterr().out
    assert metrics_of(tmp_path / "cut") == metrics_of(tmp_path / "whole")

    # What decides: the config as the run saved it (a field added since: the value it was made with) and its epochs.
    from clipdepth.training.demo import DEMO_VARIANTS, RerunStep, rerun_step

    cfg = load_config("demo_tr2m", [*tiny_tr2m_demo(), f"output_dir={tmp_path / 'cut'}"])
    variant = DEMO_VARIANTS["tr2m"](cfg).variants[0]
    exp, run = Experiment.create(variant.cfg), tmp_path / "cut" / "tr2m"
    longer = dataclasses.replace(variant.cfg, train=dataclasses.replace(variant.cfg.train, max_epochs=3))
    assert rerun_step(exp, longer, run) == RerunStep("resume", "after epoch 2 of 3")
    shorter = dataclasses.replace(variant.cfg, train=dataclasses.replace(variant.cfg.train, max_epochs=1))
    assert rerun_step(exp, shorter, run) == RerunStep("redo", "it ran 2 epochs, train.max_epochs is 1 now")
    state = run / "checkpoints" / "resume" / "state.json"
    meta = json.loads(state.read_text())
    del meta["config"]["tr2m"]["head_init"]  # a run of a version before the field, which started from zero
    state.write_text(json.dumps(meta))
    assert rerun_step(exp, variant.cfg, run) == RerunStep("redo", "tr2m.head_init was 'zero', is 'released' now")


def test_a_rerun_trains_again_what_changed_and_refuses_a_run_no_demo_wrote(tmp_path, capsys, epochs_trained):
    tiny = [f"clip.{k}={v}" for k, v in TINY_ENCODER.items()] + [
        "data.train_size=4",
        "data.val_size=2",
        "data.test_size=2",
        "data.height=48",
        "data.width=64",
        "train.max_epochs=1",
        "train.batch_size=2",
    ]
    demo = tmp_path / "demo"
    assert main(["demo", "--out", str(demo), *tiny]) == 0
    (demo / "demo.json").unlink(missing_ok=True)  # as a demo before demo.json left it: its metrics.json names its run
    epochs_trained.clear()
    capsys.readouterr()
    assert main(["demo", "--out", str(demo), *tiny, "seed=1"]) == 0
    assert epochs_trained == [("demo", 1)]
    assert f"{demo} holds earlier runs: training again head (seed was 0, is 1 now)" in capsys.readouterr().out
    assert json.loads((demo / "demo.json").read_text()) == {"runs": ["."]}

    mine = tmp_path / "mine"  # a run `train` wrote: the demo may keep it, never replace it
    assert main(["train", "--config", "demo", "--out", str(mine), *tiny]) == 0
    capsys.readouterr()
    assert main(["demo", "--out", str(mine), *tiny]) == 0
    assert f"{mine} holds earlier runs: kept head" in capsys.readouterr().out
    assert json.loads((mine / "demo.json").read_text()) == {"runs": []}  # kept, so still not the demo's
    before = {p: p.stat().st_mtime_ns for p in mine.rglob("*")}
    assert main(["demo", "--out", str(mine), *tiny, "seed=1"]) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and f"{mine}: holds a training run that no demo wrote" in err and "seed was 0" in err
    assert err.endswith("(--out)")
    assert before == {p: p.stat().st_mtime_ns for p in mine.rglob("*")}


def test_a_demo_training_a_run_again_keeps_the_users_files_in_it(tmp_path, capsys):
    tiny = [f"clip.{k}={v}" for k, v in TINY_ENCODER.items()] + [
        "data.train_size=4",
        "data.val_size=2",
        "data.test_size=2",
        "data.height=48",
        "data.width=64",
        "train.max_epochs=1",
        "train.batch_size=2",
    ]
    demo = tmp_path / "demo"
    assert main(["demo", "--out", str(demo), *tiny]) == 0
    mine = {
        demo / "model" / "notes.txt": "model",
        demo / "checkpoints" / "notes.txt": "checkpoints",
        demo / "checkpoints" / "last" / "notes.txt": "last",
    }
    for path, text in mine.items():
        path.write_text(text)
    assert main(["demo", "--out", str(demo), *tiny, "seed=1"]) == 0
    assert "training again head (seed was 0, is 1 now)" in capsys.readouterr().out
    assert {path: path.read_text() for path in mine} == mine
    for folder in ("model", "checkpoints/last"):
        assert json.loads((demo / folder / "config.json").read_text())["config"]["seed"] == 1, folder
