"""Training RSA (Zeng et al., NeurIPS 2024; docs/baselines.md "RSA"), as the release's ``train_3d.py``:

- a random caption line per frame and step (``random.randint(0, 14)``; line 0 at test), its CLIP
  embedding through the MLP to one scale and shift, depth = 1 / (scale * relative + shift), not
  clamped (the release adds 1e-8 to the denominator; here it is floored at 1e-6, ``to_metric``);
- the loss of ``losses/rsa.py`` (Huber, delta 1, in the released configs) on GT in
  (min_depth, max_depth), divided by its own detached value (``--norm_loss``);
- Adam (torch's defaults, no weight decay) on the MLP, the learning rate decayed polynomially per
  step from ``rsa.lr`` to ``rsa.end_lr`` (power 0.9) over the run's steps, the gradient norm clipped
  at ``rsa.grad_clip``.
"""

from __future__ import annotations

from typing import Any

import torch

from ...config import Config
from ...data.captions import pick_embeddings
from ...data.transforms import Preprocessor
from ...encoders.relative import RELATIVE_SOURCES
from ...errors import ConfigError
from ...features.memory import TrainBatch
from ...losses.rsa import rsa_depth_loss
from ...models.rsa import RSA
from .base import Objective

TRAIN = "train"
NORM_EPS = 1e-8  # the release's EPS in loss / (torch.norm(loss).detach() + EPS)


def poly_lr(step: int, total: int, lr: float, end_lr: float, power: float) -> float:
    """The release's schedule: (lr - end_lr) * (1 - step / total) ** power + end_lr for step
    0 .. total (step 0 is the first step, at ``lr``), ``end_lr`` from ``total`` on."""
    done = min(step, total) / max(total, 1)
    return (lr - end_lr) * (1.0 - done) ** power + end_lr


class RSAObjective(Objective):
    model: RSA
    mixes_datasets = True  # the release trains one model on NYU, KITTI and VOID

    def __init__(self, model: RSA, cfg: Config, trained_head: torch.nn.Module, preprocessor: Preprocessor) -> None:
        super().__init__(model, cfg, trained_head, preprocessor)
        self.parameters = list(model.head.parameters())
        # fused: one kernel for the whole MLP (the same update as the release's per-tensor Adam, up to rounding)
        self.optimizers = {TRAIN: torch.optim.Adam(self.parameters, lr=cfg.rsa.lr, fused=True)}
        self.total_steps = 0  # set by plan(); until then the lr stays rsa.lr

    @classmethod
    def check_config(cls, cfg: Config) -> None:
        if cfg.rsa.relative.source not in RELATIVE_SOURCES:
            raise ConfigError(f"rsa.relative.source must be one of {sorted(RELATIVE_SOURCES)}, got {cfg.rsa.relative.source!r}")
        if cfg.data.tiles != 1:
            raise ConfigError("RSA takes whole frames: data.tiles must be 1")

    def plan(self, steps_per_epoch: int, max_epochs: int) -> None:
        """The schedule's length: the run's steps (the release: its epochs times the NYU loader's length)."""
        self.total_steps = steps_per_epoch * max_epochs

    def lr_factor(self, epoch: int, since_improvement: int) -> float:
        return 1.0  # the schedule is per step (``poly_lr``); the trainer's per-epoch factor does not apply

    def start_epoch(self, epoch: int, since_improvement: int) -> None:
        pass

    def step(self, batch: TrainBatch, step: int, generator: torch.Generator) -> dict[str, Any]:
        r, head = self.cfg.rsa, self.model.head
        lr = poly_lr(step, self.total_steps, r.lr, r.end_lr, r.lr_power) if self.total_steps else r.lr
        optimizer = self.optimizers[TRAIN]
        for group in optimizer.param_groups:
            group["lr"] = lr
        text = pick_embeddings(batch.features["text"], batch.features["text_lines"], generator)
        head.train()
        pred, _ = self.model.metric(batch.features, text, clamp=False)
        depth = batch.depth
        loss = rsa_depth_loss(pred, depth, (depth > r.min_depth) & (depth < r.max_depth), r.loss, r.huber_delta)
        objective = loss / (loss.detach().abs() + NORM_EPS) if r.normalize_loss else loss
        head.zero_grad(set_to_none=True)
        objective.backward()
        if r.grad_clip > 0:
            torch.nn.utils.clip_grad_norm_(self.parameters, r.grad_clip)
        optimizer.step()
        return {"phase": TRAIN, "loss": loss.detach(), "lr": lr}
