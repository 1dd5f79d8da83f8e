"""What a training step optimises, per model: its optimisers, learning-rate schedule and losses.

The trainer (epochs, validation, checkpoints, resume, DDP) is shared; an objective is the part
that differs between PureCLIP-Depth's alternating phases and TR2M's single AdamW. Each model's
spec (``clipdepth.registry``) names its objective; a zero-shot model's is ``ZeroShotObjective``.
"""

from __future__ import annotations

from ...config import Config
from ...registry import model_spec, specs
from .base import Objective
from .learned_prompts import LearnedPromptsObjective
from .pureclip import PureCLIPObjective
from .rsa import RSAObjective
from .tr2m import TR2MObjective
from .zero_shot import ZeroShotObjective


def objective_class(model: str) -> type[Objective]:
    """The objective of a registered model (``ModelSpec.objective``); ConfigError for an unknown model."""
    return model_spec(model).objective_class() or ZeroShotObjective


def check_model_config(cfg: Config) -> None:
    objective_class(cfg.model).check_config(cfg)


OBJECTIVES: dict[str, type[Objective]] = {name: objective_class(name) for name in specs()}

__all__ = [
    "OBJECTIVES",
    "LearnedPromptsObjective",
    "Objective",
    "PureCLIPObjective",
    "RSAObjective",
    "TR2MObjective",
    "check_model_config",
    "objective_class",
]
