"""Helpers every frozen transformers model shares: quiet loading, short error lines, a weight fingerprint."""
from __future__ import annotations

import contextlib
import hashlib
from collections.abc import Iterator

import transformers
from torch import nn

FINGERPRINT_SAMPLES_PER_TENSOR = 4096


@contextlib.contextmanager
def quiet_transformers() -> Iterator[None]:
    """Silence transformers' loading warnings and progress bars; failures surface as EncoderLoadError."""
    verbosity = transformers.logging.get_verbosity()
    progress_bars = transformers.logging.is_progress_bar_enabled()
    transformers.logging.set_verbosity_error()
    transformers.logging.disable_progress_bar()
    try:
        yield
    finally:
        transformers.logging.set_verbosity(verbosity)
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
