"""Alternating optimisation: the phase switch, what each phase trains, the LR schedule, a run."""
import dataclasses
import json

import numpy as np
import pytest
import torch

from clipdepth.config import TrainConfig
from clipdepth.data.transforms import Preprocessor
from clipdepth.evaluation.protocol import get_protocol
from clipdepth.features import EncodedSplit
from clipdepth.models import PureCLIPDepth
from clipdepth.training.run import Experiment
from clipdepth.training.objectives.pureclip import DEPTH, EMBEDDING, lr_factor, phase_at
from clipdepth.training.trainer import Trainer


def test_phase_switches_every_100_steps_embedding_first():
    assert [phase_at(s, 100) for s in (0, 99, 100, 199, 200, 350)] == [EMBEDDING, EMBEDDING, DEPTH, DEPTH, EMBEDDING, DEPTH]


def test_lr_constant_then_linear_decay_to_a_tenth():
    cfg = TrainConfig(decay_start=20, patience=50, final_lr_factor=0.1)
    assert [lr_factor(n, cfg) for n in (0, 20)] == [1.0, 1.0]
    assert lr_factor(35, cfg) == pytest.approx(0.55)  # halfway from 20 to 50
    assert lr_factor(50, cfg) == pytest.approx(0.1) and lr_factor(70, cfg) == pytest.approx(0.1)


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
        flipped_arrays=None, depth_input=depth, gt=[x.numpy() for x in depth],
    )


def make_trainer(tiny_cfg, tmp_path, **train_overrides) -> Trainer:
    cfg = dataclasses.replace(tiny_cfg, train=dataclasses.replace(tiny_cfg.train, phase_steps=2, **train_overrides))
    cfg.eval.tta = False
    torch.manual_seed(0)
    model = PureCLIPDepth.build(cfg)
    split = random_split(model, 8, 0)
    return Trainer(model, cfg, split, split, Preprocessor.create(model.input_size, None), get_protocol("synthetic_indoor"), tmp_path)


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
