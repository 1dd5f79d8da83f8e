"""Helpers every frozen model shares: quiet loading, short error lines, a weight fingerprint, and
telling untrained weights from trained ones."""

from __future__ import annotations

import contextlib
import hashlib
from collections.abc import Iterator

import transformers
from huggingface_hub.utils import logging as hub_logging
from torch import nn

FINGERPRINT_SAMPLES_PER_TENSOR = 4096
# Normalisation layers and the values torch's and transformers' initialisation give their weights
# and running statistics (BatchNorm*, InstanceNorm* and SyncBatchNorm share _NormBase).
NORM_LAYERS = (nn.LayerNorm, nn.GroupNorm, nn.RMSNorm, nn.modules.batchnorm._NormBase)
NORM_INITIAL = {"weight": 1.0, "bias": 0.0, "running_mean": 0.0, "running_var": 1.0}


@contextlib.contextmanager
def quiet_transformers() -> Iterator[None]:
    """Silence transformers' loading warnings and progress bars, and huggingface_hub's retry lines
    (dozens of them when the Hub cannot be reached); failures surface as one error line."""
    verbosity = transformers.logging.get_verbosity()
    hub_verbosity = hub_logging.get_verbosity()
    progress_bars = transformers.logging.is_progress_bar_enabled()
    transformers.logging.set_verbosity_error()
    hub_logging.set_verbosity_error()
    transformers.logging.disable_progress_bar()
    try:
        yield
    finally:
        transformers.logging.set_verbosity(verbosity)
        hub_logging.set_verbosity(hub_verbosity)
        if progress_bars:
            transformers.logging.enable_progress_bar()


def first_line(exc: BaseException) -> str:
    """The first non-empty line of an error message (transformers' messages span many)."""
    return next((line.strip() for line in str(exc).splitlines() if line.strip()), type(exc).__name__)


def weights_fingerprint(module: nn.Module) -> str:
    """Short id of a module's weights; a strided sample per tensor keeps it well under a second for ViT-L."""
    digest = hashlib.sha256()
    for name, tensor in sorted(module.state_dict().items()):
        flat = tensor.detach().reshape(-1)
        sample = flat[:: max(1, flat.numel() // FINGERPRINT_SAMPLES_PER_TENSOR)]
        digest.update(f"{name}|{tuple(tensor.shape)}|{tensor.dtype};".encode())
        digest.update(sample.float().cpu().numpy().tobytes())
    return digest.hexdigest()[:16]


def at_initialisation(module: nn.Module) -> bool:
    """Whether ``module``'s weights are untrained: it has normalisation layers and every one of
    them is still exactly at its initial state (scale 1, shift 0; batch norm also running mean 0
    and variance 1). Random initialisation (``random_init``, or any model built from a config and
    saved without training) leaves them there and training moves them, so this tells random weights
    from trained ones whatever folder or file they were loaded from. A module without normalisation
    layers is never called untrained (nothing to tell by)."""
    values = [
        (tensor, expected)
        for layer in module.modules()
        if isinstance(layer, NORM_LAYERS)
        for name, expected in NORM_INITIAL.items()
        if (tensor := getattr(layer, name, None)) is not None
    ]
    return bool(values) and all(bool((tensor == expected).all()) for tensor, expected in values)
