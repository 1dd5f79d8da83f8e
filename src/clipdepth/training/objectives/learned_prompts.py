"""Training the learned depth prompts (Auty & Mikolajczyk, ICCV 2023; docs/baselines.md).

As the authors' release (``modules/MainRunnerLM.py``, ``main.py``, ``params/*.yaml``):
- loss: "silog" with coefficient 1, the release's ``losses/SILogLoss.py`` (the AdaBins paper's form):
  10 * sqrt(mean(g^2) - 0.85 * mean(g)^2) = 10 * sqrt(var(g) + 0.15 * mean(g)^2), variance over n,
  g = log(pred) - log(gt), on pixels with GT > min_depth (no upper limit in training), the
  per-location prediction upsampled to the GT (here the input size) bilinearly with align_corners;
- AdamW (lr 3.57e-4, weight decay 0.1) on the learned tokens only; CLIP is never in an optimiser;
- torch's OneCycleLR over the whole run, stepped every step (cosine, div_factor 25,
  final_div_factor 100, pct_start 0.3, beta1 cycled 0.95 -> 0.85 -> 0.95); its length is the run's
  real step count (``plan``), as Lightning's ``estimated_stepping_batches`` over the release's loader
  (``drop_last=False``: ceil(frames / batch) steps an epoch);
- gradient norm clipped at 0.1 (Lightning's gradient_clip_val, over the optimiser's parameters).
"""

from __future__ import annotations

import warnings
from typing import Any

import torch

from ...config import Config
from ...data.transforms import Preprocessor
from ...errors import ConfigError
from ...features.memory import TrainBatch
from ...losses.common import silog_loss
from ...models.learned_prompts import LearnedPrompts
from .base import Objective

TRAIN = "train"
BASE_MOMENTUM, MAX_MOMENTUM = 0.85, 0.95  # OneCycleLR's defaults, as the release sets them


def one_cycle_schedule(
    total: int, max_lr: float, div_factor: float, final_div_factor: float, pct_start: float
) -> list[tuple[float, float]]:
    """(lr, beta1) of each of ``total`` steps under torch's OneCycleLR (cosine, two phases,
    cycle_momentum 0.95 -> 0.85 -> 0.95, as the release sets it), read off the scheduler stepped on a
    throwaway AdamW: the table gives any step's values from its number alone, so a resumed run needs no
    scheduler state (about a second for 100,000 steps)."""
    optimizer = torch.optim.AdamW([torch.nn.Parameter(torch.zeros(1))], lr=max_lr)
    scheduler = torch.optim.lr_scheduler.OneCycleLR(
        optimizer,
        max_lr=max_lr,
        total_steps=total,
        pct_start=pct_start,
        div_factor=div_factor,
        final_div_factor=final_div_factor,
        base_momentum=BASE_MOMENTUM,
        max_momentum=MAX_MOMENTUM,
    )
    group, table = optimizer.param_groups[0], []
    with warnings.catch_warnings():  # the scheduler steps without optimiser steps: that is the point here
        warnings.simplefilter("ignore", UserWarning)
        for step in range(total):
            table.append((group["lr"], group["betas"][0]))
            if step + 1 < total:
                scheduler.step()
    return table


class LearnedPromptsObjective(Objective):
    model: LearnedPrompts

    def __init__(self, model: LearnedPrompts, cfg: Config, trained_head: torch.nn.Module, preprocessor: Preprocessor) -> None:
        super().__init__(model, cfg, trained_head, preprocessor)
        p = cfg.prompts
        self.parameters = [q for q in model.head.parameters() if q.requires_grad]
        self.optimizers = {TRAIN: torch.optim.AdamW(self.parameters, lr=p.lr, weight_decay=p.weight_decay)}
        self.one_cycle: list[tuple[float, float]] | None = None  # set by plan(); until then the peak lr, unscheduled

    @classmethod
    def check_config(cls, cfg: Config) -> None:
        if cfg.data.tiles != 1:
            raise ConfigError("learned prompts take whole frames: data.tiles must be 1")
        patch, name = (32, "the RN50 stride") if cfg.prompts.backbone == "resnet" else (cfg.clip.patch_size, "clip.patch_size")
        if cfg.prompts.input_height % patch or cfg.prompts.input_width % patch:
            raise ConfigError(
                f"prompts.input_height/input_width must be multiples of {name}={patch}, "
                f"got {cfg.prompts.input_height} x {cfg.prompts.input_width}"
            )

    def plan(self, steps_per_epoch: int, max_epochs: int) -> None:
        """The one-cycle schedule's length: ``steps_per_epoch`` (the trainer's count for this run:
        ceil(frames / batch) without ``train.drop_last``) times ``max_epochs``."""
        p = self.cfg.prompts
        self.one_cycle = one_cycle_schedule(max(1, steps_per_epoch * max_epochs), p.lr, p.div_factor, p.final_div_factor, p.pct_start)

    def lr_factor(self, epoch: int, since_improvement: int) -> float:
        return 1.0  # the schedule is per step (schedule()); the trainer's per-epoch factor does not apply

    def start_epoch(self, epoch: int, since_improvement: int) -> None:
        pass

    def schedule(self, step: int) -> tuple[float, float]:
        """(lr, beta1) of a global step; steps past the schedule's end keep its last values."""
        if self.one_cycle is None:
            return self.cfg.prompts.lr, 0.9
        return self.one_cycle[min(step, len(self.one_cycle) - 1)]

    def step(self, batch: TrainBatch, step: int, generator: torch.Generator) -> dict[str, Any]:
        p, head = self.cfg.prompts, self.model.head
        optimizer = self.optimizers[TRAIN]
        lr, beta1 = self.schedule(step)
        for group in optimizer.param_groups:
            group["lr"] = lr
            group["betas"] = (beta1, group["betas"][1])
        head.train()
        out = self.trained_head(batch.features["tokens"])
        pred = self.model.depth_at_input(out.depth).float()
        depth = batch.depth
        loss = p.silog_scale * silog_loss(pred, depth, depth > p.min_depth, p.silog_variance_focus)
        head.zero_grad(set_to_none=True)
        loss.backward()
        if p.grad_clip > 0:
            torch.nn.utils.clip_grad_norm_(self.parameters, p.grad_clip)
        optimizer.step()
        return {"phase": TRAIN, "loss": loss.detach(), "lr": lr}
