"""`clipdepth train` for a model with nothing to train (DepthCLIP): the run folder gets the recipe's
``config.yaml`` and the checkpoint ``model/`` (config and frozen-weight fingerprint, no trained
weights), as a trained run's; no steps, no validation (score it with ``clipdepth evaluate``)."""

from __future__ import annotations

from pathlib import Path

from ..config import Config, config_to_yaml
from ..device import run_device
from ..io.atomic import write_text_atomic
from ..models import build_model
from .run_folder import check_run_folder, start_run_folder


def write_zero_shot_run(cfg: Config, overwrite: bool = False) -> Path:
    """Write ``<output_dir>/config.yaml`` and ``<output_dir>/model/``; returns the latter. An
    earlier run in the folder is refused unless ``overwrite`` (CheckpointError)."""
    out = Path(cfg.output_dir)
    check_run_folder(out, resume=False, overwrite=overwrite)
    model = build_model(cfg).to(run_device(cfg))  # the text embeddings are checked here
    start_run_folder(out)
    write_text_atomic(out / "config.yaml", config_to_yaml(cfg))
    return model.save_pretrained(out / "model", extra={"zero_shot": True})
