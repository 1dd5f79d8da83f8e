"""What is checked of a run's config before any work: values that would only break it later."""

from __future__ import annotations

import torch

from ..config import Config
from ..data import DATASETS
from ..device import run_device
from ..errors import ConfigError
from ..evaluation.metrics import ALL_METRIC_NAMES
from .objectives import check_model_config, objective_class
from .tracking import check_trackers


def check_config(cfg: Config) -> None:
    """Fail before any work on a value that would only break the run later."""
    if cfg.data.dataset not in DATASETS:
        raise ConfigError(f"unknown dataset {cfg.data.dataset!r}; available: {sorted(DATASETS)}")
    for name, metrics in (("select_metric", [cfg.train.select_metric]), ("improve_metrics", cfg.train.improve_metrics)):
        unknown = [m for m in metrics if m not in ALL_METRIC_NAMES]
        if unknown:
            raise ConfigError(f"train.{name}: unknown metric {unknown[0]!r}; choose from {list(ALL_METRIC_NAMES)}")
    if not cfg.train.improve_metrics:
        raise ConfigError("train.improve_metrics is empty: no validation metric could ever count as improved")
    check_model_config(cfg)
    check_cuda_graph(cfg, run_device(cfg))
    if cfg.precision == "fp16":  # fp16 gradients underflow without loss scaling, which the trainer has not
        raise ConfigError("precision=fp16 would train the head in fp16 without loss scaling: use bf16 (or fp32)", setting="precision")
    check_trackers(cfg)
    if cfg.mixture and not objective_class(cfg.model).mixes_datasets:
        raise ConfigError(f"{cfg.model} trains on one dataset at a time: remove `mixture` (TR2M trains on mixtures)")


def check_cuda_graph(cfg: Config, device: torch.device | str) -> None:
    """ConfigError unless ``train.cuda_graph`` can replay the head's step: a CUDA device, and one
    batch shape for every step (``train.drop_last``, a single input size)."""
    if not cfg.train.cuda_graph:
        return
    problem = None
    if torch.device(device).type != "cuda":
        problem = f"CUDA graphs need a CUDA device, and this run trains on {device}"
    elif not cfg.train.drop_last:
        problem = "the last partial batch of each epoch has another shape: set train.drop_last=true"
    elif len({tuple(e.input_size) if e.input_size else None for e in cfg.mixture}) > 1:
        problem = "the mixture's datasets have different input sizes"
    if problem:
        raise ConfigError(f"train.cuda_graph: {problem}; or set train.cuda_graph=false")
