"""Model registry: a config's ``model`` name -> the class that builds and loads it."""
from __future__ import annotations

from pathlib import Path

from ..config import Config
from ..errors import ConfigError
from .pureclip_depth import PureCLIPDepth, PureCLIPDepthHead, read_checkpoint_meta

MODELS = {"pureclip_depth": PureCLIPDepth}


def _model_class(name: str) -> type[PureCLIPDepth]:
    if name not in MODELS:
        raise ConfigError(f"unknown model {name!r}; available: {sorted(MODELS)}")
    return MODELS[name]


def build_model(cfg: Config) -> PureCLIPDepth:
    return _model_class(cfg.model).build(cfg)


def load_model(directory: str | Path) -> PureCLIPDepth:
    """Load any checkpoint folder written by ``save_pretrained``, or a Hub id of one."""
    if not Path(directory).is_dir() and str(directory).count("/") == 1:
        return PureCLIPDepth.from_pretrained(directory)  # the Hub holds PureCLIP-Depth heads so far
    return _model_class(read_checkpoint_meta(directory).get("architecture", "")).from_pretrained(directory)


__all__ = ["MODELS", "PureCLIPDepth", "PureCLIPDepthHead", "build_model", "load_model"]
