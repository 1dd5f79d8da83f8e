"""Alternating Embedding/Depth optimisation of the PureCLIP-Depth head (paper sec. 2.5, 3).

- Two AdamW optimisers; the phase switches every ``phase_steps`` global steps, Embedding first.
  Embedding phase: L_align + lambda * L_InfoNCE. Depth phase: pixel RMSE on the upsampled map.
- Reference code: both optimisers hold phi, psi and W. Paper: W is frozen in the Depth phase.
- Validation on all nine metrics after every epoch; a head-only checkpoint is kept at the best of
  each metric. "Improved" means ANY metric improved. The LR stays constant until ``decay_start``
  epochs pass without improvement, then decays linearly to ``final_lr_factor`` at ``patience``
  epochs, where training stops.
"""
from __future__ import annotations

import csv
import json
import math
import shutil
from dataclasses import dataclass, field
from pathlib import Path

import torch
from tqdm.auto import tqdm

from ..config import Config, TrainConfig
from ..data import DATASETS
from ..errors import ConfigError
from ..evaluation.evaluate import evaluate_encoded
from ..evaluation.metrics import LOWER_IS_BETTER, METRIC_NAMES
from ..evaluation.protocol import Protocol
from ..data.transforms import Preprocessor
from ..features import EncodedSplit
from ..io.atomic import atomic_dir, atomic_path, write_text_atomic
from ..losses import PATCH_RULES, embedding_loss, patch_targets, rmse_loss
from ..models import PureCLIPDepth

EMBEDDING, DEPTH = "embedding", "depth"


def phase_at(step: int, phase_steps: int) -> str:
    """Phase of a 0-based global step: Embedding for steps [0, n), Depth for [n, 2n), ..."""
    return EMBEDDING if (step // phase_steps) % 2 == 0 else DEPTH


def lr_factor(epochs_without_improvement: int, cfg: TrainConfig) -> float:
    """1 until ``decay_start``, then linear down to ``final_lr_factor`` at ``patience``."""
    if epochs_without_improvement <= cfg.decay_start:
        return 1.0
    span = max(cfg.patience - cfg.decay_start, 1)
    progress = min((epochs_without_improvement - cfg.decay_start) / span, 1.0)
    return 1.0 - progress * (1.0 - cfg.final_lr_factor)


def check_config(cfg: Config) -> None:
    """Fail before any work on a value that would only break the run later."""
    if cfg.data.dataset not in DATASETS:
        raise ConfigError(f"unknown dataset {cfg.data.dataset!r}; available: {sorted(DATASETS)}")
    if cfg.train.select_metric not in METRIC_NAMES:
        raise ConfigError(f"train.select_metric must be one of {list(METRIC_NAMES)}, got {cfg.train.select_metric!r}")
    if cfg.loss.patch_rule not in PATCH_RULES:
        raise ConfigError(f"loss.patch_rule must be one of {list(PATCH_RULES)}, got {cfg.loss.patch_rule!r}")
    if cfg.head.phrase_style not in ("reference", "paper"):
        raise ConfigError(f"head.phrase_style must be 'reference' or 'paper', got {cfg.head.phrase_style!r}")
    if cfg.train.freeze_mlps and cfg.train.freeze_table_in_depth_phase:
        raise ConfigError("train.freeze_mlps with train.freeze_table_in_depth_phase leaves the Depth phase nothing to train")


def build_optimizers(model: PureCLIPDepth, cfg: TrainConfig) -> dict[str, torch.optim.AdamW]:
    head = model.head
    mlps = [] if cfg.freeze_mlps else [*head.phi.parameters(), *head.psi.parameters()]
    for p in [*head.phi.parameters(), *head.psi.parameters()]:
        p.requires_grad_(not cfg.freeze_mlps)
    depth_params = mlps if cfg.freeze_table_in_depth_phase else [*mlps, head.table]
    return {
        EMBEDDING: torch.optim.AdamW([*mlps, head.table], lr=cfg.embed_lr, weight_decay=cfg.embed_weight_decay),
        DEPTH: torch.optim.AdamW(depth_params, lr=cfg.depth_lr, weight_decay=cfg.depth_weight_decay),
    }


def is_better(metric: str, value: float, best: float | None) -> bool:
    if best is None or math.isnan(best):
        return not math.isnan(value)
    return value < best if LOWER_IS_BETTER[metric] else value > best


@dataclass
class TrainResult:
    best: dict[str, dict] = field(default_factory=dict)  # metric -> {"value", "epoch"}
    history: list[dict] = field(default_factory=list)
    model_dir: Path | None = None
    stopped_early: bool = False


class Trainer:
    def __init__(
        self,
        model: PureCLIPDepth,
        cfg: Config,
        train: EncodedSplit,
        val: EncodedSplit,
        preprocessor: Preprocessor,
        protocol: Protocol,
        out_dir: str | Path,
    ) -> None:
        check_config(cfg)
        self.model, self.cfg, self.train_split, self.val_split = model, cfg, train, val
        self.preprocessor, self.protocol = preprocessor, protocol
        self.out_dir = Path(out_dir)
        self.device = next(model.head.parameters()).device
        self.optimizers = build_optimizers(model, cfg.train)
        self.tile_generator = torch.Generator().manual_seed(cfg.seed + 1)
        self.step = 0

    def _set_lr(self, factor: float) -> None:
        base = {EMBEDDING: self.cfg.train.embed_lr, DEPTH: self.cfg.train.depth_lr}
        for phase, opt in self.optimizers.items():
            for group in opt.param_groups:
                group["lr"] = base[phase] * factor

    def train_step(self, index: torch.Tensor) -> dict[str, float]:
        """One optimisation step on the frames ``index`` of the training split."""
        cfg, head = self.cfg, self.model.head
        phase = phase_at(self.step, cfg.train.phase_steps)
        feats, depth = self.train_split.random_tiles(index, self.tile_generator, self.device)
        targets = patch_targets(
            depth, self.model.encoder.patch_size, cfg.head.min_depth, cfg.head.max_depth,
            cfg.head.num_bins, cfg.loss.patch_rule,
        )
        head.train()
        out = head(feats.patch_tokens, feats.cls)
        if phase == EMBEDDING:
            losses = embedding_loss(out.z, out.logits, head.normalized_table(), targets, cfg.loss.infonce_weight)
        else:
            losses = {"loss": rmse_loss(self.model.depth_at_input(out), depth, targets.pixel_valid)}
        # Zero every head gradient, not only the active optimiser's: a parameter the other
        # phase does not step (W, when frozen in the Depth phase) must not carry gradient over.
        head.zero_grad(set_to_none=True)
        losses["loss"].backward()
        self.optimizers[phase].step()
        self.step += 1
        return {"phase": phase, **{k: v.item() for k, v in losses.items()}}

    def validate(self) -> dict[str, float]:
        return evaluate_encoded(
            self.model, self.val_split, self.preprocessor, self.protocol,
            tta=self.cfg.eval.tta, batch_size=self.cfg.eval.batch_size,
        ).mean()

    def save(self, directory: Path, epoch: int, metrics: dict[str, float]) -> None:
        self.model.save_pretrained(directory, extra={"epoch": epoch, "step": self.step, "val_metrics": metrics})

    def fit(self) -> TrainResult:
        cfg = self.cfg.train
        result = TrainResult()
        self.out_dir.mkdir(parents=True, exist_ok=True)
        steps_log = (self.out_dir / "train_steps.jsonl").open("w")
        generator = torch.Generator().manual_seed(self.cfg.seed)
        since_improvement = 0
        n = len(self.train_split)
        steps_per_epoch = math.ceil(n / cfg.batch_size)
        bar = tqdm(total=cfg.max_epochs * steps_per_epoch, desc="train", unit="step", dynamic_ncols=True)
        try:
            for epoch in range(1, cfg.max_epochs + 1):
                self._set_lr(lr_factor(since_improvement, cfg))
                order = torch.randperm(n, generator=generator)
                sums: dict[str, list[float]] = {}
                for start in range(0, n, cfg.batch_size):
                    record = self.train_step(order[start : start + cfg.batch_size])
                    sums.setdefault(f"{record['phase']}_loss", []).append(record["loss"])
                    if self.step % cfg.log_every == 0:
                        steps_log.write(json.dumps({"step": self.step, "epoch": epoch, **record}) + "\n")
                    bar.set_postfix(phase=record["phase"][:5], loss=f"{record['loss']:.3f}", refresh=False)
                    bar.update(1)
                metrics = self.validate()
                improved = [m for m in METRIC_NAMES if is_better(m, metrics[m], result.best.get(m, {}).get("value"))]
                for m in improved:
                    result.best[m] = {"value": metrics[m], "epoch": epoch}
                    self.save(self.out_dir / "checkpoints" / f"best_{m}", epoch, metrics)
                since_improvement = 0 if improved else since_improvement + 1
                row = {
                    "epoch": epoch, "step": self.step, "lr_factor": lr_factor(since_improvement, cfg),
                    **{k: sum(v) / len(v) for k, v in sums.items()}, **{f"val_{k}": metrics[k] for k in METRIC_NAMES},
                    "improved": " ".join(improved),
                }
                result.history.append(row)
                self._write_history(result.history)
                bar.set_description(f"train (val abs_rel {metrics['abs_rel']:.3f})")
                if since_improvement >= cfg.patience:
                    result.stopped_early = True
                    break
            self.save(self.out_dir / "checkpoints" / "last", result.history[-1]["epoch"], metrics)
        finally:
            bar.close()
            steps_log.close()
        result.model_dir = self._publish_selected(cfg.select_metric, result.best)
        return result

    def _write_history(self, history: list[dict]) -> None:
        keys = list(dict.fromkeys(k for row in history for k in row))
        path = self.out_dir / "train_epochs.csv"
        with atomic_path(path) as tmp:
            with tmp.open("w", newline="") as f:
                writer = csv.DictWriter(f, fieldnames=keys)
                writer.writeheader()
                writer.writerows(history)

    def _publish_selected(self, metric: str, best: dict[str, dict]) -> Path:
        """``model/``: the checkpoint at the best validation ``metric``, the run's single result."""
        source = self.out_dir / "checkpoints" / f"best_{metric}"
        if not source.exists():
            source = self.out_dir / "checkpoints" / "last"
        target = self.out_dir / "model"
        with atomic_dir(target) as tmp:
            shutil.copytree(source, tmp, dirs_exist_ok=True)
        write_text_atomic(
            self.out_dir / "best_metrics.json",
            json.dumps({"select_metric": metric, "best_per_metric": best}, indent=2),
        )
        return target
