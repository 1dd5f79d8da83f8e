"""What a training step optimises, per model: its optimisers, learning-rate schedule and losses.

The trainer (epochs, validation, checkpoints, resume, DDP) is shared; an objective is the part
that differs between PureCLIP-Depth's alternating phases and TR2M's single AdamW.
"""
from __future__ import annotations

from ...config import Config
from ...errors import ConfigError
from .base import Objective
from .learned_prompts import LearnedPromptsObjective
from .pureclip import PureCLIPObjective
from .tr2m import TR2MObjective
from .zero_shot import ZeroShotObjective

OBJECTIVES: dict[str, type[Objective]] = {
    "pureclip_depth": PureCLIPObjective,
    "tr2m": TR2MObjective,
    "depthclip": ZeroShotObjective,  # nothing to train (training/zero_shot.py writes its checkpoint)
    "learned_prompts": LearnedPromptsObjective,
}


def objective_class(model: str) -> type[Objective]:
    if model not in OBJECTIVES:
        raise ConfigError(f"unknown model {model!r}; available: {sorted(OBJECTIVES)}")
    return OBJECTIVES[model]


def check_model_config(cfg: Config) -> None:
    objective_class(cfg.model).check_config(cfg)


__all__ = ["OBJECTIVES", "LearnedPromptsObjective", "Objective", "PureCLIPObjective", "TR2MObjective", "check_model_config",
           "objective_class"]
