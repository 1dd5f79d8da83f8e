"""The models: each module below declares its model's ``ModelSpec`` and registers it
(``clipdepth.registry``); importing this package registers them all. ``MODELS`` maps a config's
``model`` name to the class that builds and loads it."""

from __future__ import annotations

from pathlib import Path

from ..config import Config
from ..registry import _SPECS, model_spec
from .base import DepthModel, FrameBatch, checkpoint_folder, read_checkpoint_meta

# Each import registers its model (the order is the registry's).
from .pureclip_depth import PureCLIPDepth, PureCLIPDepthHead
from .tr2m import TR2M
from .depthclip import DepthCLIP
from .learned_prompts import LearnedPrompts
from .rsa import RSA

MODELS: dict[str, type[DepthModel]] = {name: spec.model for name, spec in _SPECS.items()}


def model_class(name: str) -> type[DepthModel]:
    """The class of a registered model; ConfigError naming the registered ones for another name."""
    return model_spec(name).model


def build_model(cfg: Config) -> DepthModel:
    return model_class(cfg.model).build(cfg)


def load_model(directory: str | Path, overrides: list[str] | tuple[str, ...] = ()) -> DepthModel:
    """Load any checkpoint folder written by ``save_pretrained``, or a Hub id of one; its
    ``architecture`` picks the class. ``overrides`` may point the frozen parts elsewhere."""
    folder = checkpoint_folder(directory)
    return model_class(read_checkpoint_meta(folder).get("architecture", "")).from_pretrained(folder, overrides=overrides)


def read_checkpoint(checkpoint: str | Path) -> tuple[Path, dict, Config]:
    """(its folder, config.json, its Config) of a checkpoint folder or Hub id (resolved, downloaded
    once), without building the model or loading its frozen parts (``DepthModel.read_folder``).
    CheckpointError for a folder that is not a checkpoint."""
    folder = checkpoint_folder(checkpoint)
    meta, _, cfg = model_class(read_checkpoint_meta(folder).get("architecture", "")).read_folder(folder)
    return folder, meta, cfg


def predicts_from_images(directory: str | Path) -> bool:
    """Whether the checkpoint folder's model can predict on images alone (not one that reads each
    frame's ground truth: ``DepthModel.needs_ground_truth``). CheckpointError for a folder that
    is not a checkpoint."""
    _, meta, cfg = read_checkpoint(directory)
    return not model_class(meta.get("architecture", "")).needs_ground_truth(cfg)


__all__ = [
    "MODELS",
    "DepthCLIP",
    "DepthModel",
    "FrameBatch",
    "LearnedPrompts",
    "PureCLIPDepth",
    "PureCLIPDepthHead",
    "RSA",
    "TR2M",
    "build_model",
    "load_model",
    "predicts_from_images",
    "read_checkpoint",
]
