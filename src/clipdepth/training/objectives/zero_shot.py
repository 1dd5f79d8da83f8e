"""Models with nothing to train (DepthCLIP): the trainer refuses them with what to run instead."""

from __future__ import annotations

from ...config import Config
from ...errors import ConfigError
from .base import Objective


class ZeroShotObjective(Objective):
    @classmethod
    def check_config(cls, cfg: Config) -> None:
        raise ConfigError(
            f"{cfg.model} has no trained weights: `clipdepth train` writes its checkpoint folder without training "
            "(clipdepth.training.zero_shot.write_zero_shot_run), then score it with `clipdepth evaluate`"
        )
