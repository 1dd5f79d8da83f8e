"""The interface between the shared trainer and a model's training step."""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from ...config import Config
from ...data.transforms import Preprocessor
from ...features.memory import TrainBatch
from ...models.base import DepthModel


class Objective:
    """Optimisers, learning-rate schedule and loss of one model type.

    ``trained_head`` is ``model.head``, or its DistributedDataParallel wrapper under torchrun:
    forward passes go through it so that gradients are averaged across ranks. ``preprocessor``
    is how the training frames were made from the full frames (crops, resize, tiles).
    """

    # Whether a step may take batches of several datasets (a ``mixture``): it reads nothing of the
    # data's geometry beyond the batch itself.
    mixes_datasets = False

    def __init__(self, model: DepthModel, cfg: Config, trained_head: nn.Module, preprocessor: Preprocessor) -> None:
        self.model, self.cfg, self.trained_head, self.preprocessor = model, cfg, trained_head, preprocessor
        self.optimizers: dict[str, torch.optim.Optimizer] = {}

    @classmethod
    def check_config(cls, cfg: Config) -> None:
        """Fail before any work on a value that would only break the run later."""

    def plan(self, steps_per_epoch: int, max_epochs: int) -> None:
        """The run's length, given once before its first step (a per-step schedule needs it)."""

    def lr_factor(self, epoch: int, since_improvement: int) -> float:
        """The learning rate of an epoch, relative to the configured one."""
        raise NotImplementedError

    def start_epoch(self, epoch: int, since_improvement: int) -> None:
        raise NotImplementedError

    def step(self, batch: TrainBatch, step: int, generator: torch.Generator) -> dict[str, Any]:
        """One optimisation step; returns a record with at least ``phase`` and ``loss``, the losses
        as detached 0-d tensors (read back to the host only when the trainer logs them)."""
        raise NotImplementedError

    def extra_state(self) -> dict[str, Any]:
        """Training state beyond the head and optimisers (e.g. an EMA network), for exact resume."""
        return {}

    def load_extra_state(self, state: dict[str, Any]) -> None:
        pass
