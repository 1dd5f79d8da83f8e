"""What every frozen transformers model (CLIP, DINOv2, Depth Anything) shares: loading with one-line
errors, seeded random weights for tests and demos, input normalisation, a weight fingerprint, whether
the weights are untrained, and staying frozen inside a model that trains.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable, ClassVar, Sequence, TypeVar

import torch
from huggingface_hub.utils import HFValidationError, validate_repo_id
from safetensors import SafetensorError
from torch import nn
from transformers import PreTrainedModel
from transformers.image_utils import IMAGENET_DEFAULT_MEAN, IMAGENET_DEFAULT_STD

from ..errors import EncoderLoadError
from .loading import at_initialisation, first_line, quiet_transformers, weights_fingerprint

ModelT = TypeVar("ModelT", bound=PreTrainedModel)


def load_pretrained(model_class: type[ModelT], name_or_path: str, hint: str, **kwargs: Any) -> ModelT:
    """``model_class.from_pretrained`` whose every failure is a one-line EncoderLoadError naming the source.

    ``hint`` says what to supply instead (the kind of weights, an example id, the saved-folder form);
    ``kwargs`` go to ``from_pretrained``.
    """
    what = f"cannot load {model_class.__name__} weights '{name_or_path}'"
    is_dir = Path(name_or_path).is_dir()
    if not is_dir:
        # A path that is neither a folder nor a possible hub id would reach the Hub as a confusing id error.
        try:
            validate_repo_id(name_or_path)
        except HFValidationError:
            raise EncoderLoadError(f"{what}: no such folder; pass {hint}") from None
    with quiet_transformers():
        try:
            model, loading_info = model_class.from_pretrained(name_or_path, output_loading_info=True, **kwargs)
        except (OSError, ValueError, RuntimeError, SafetensorError) as exc:
            where = "" if is_dir else "run once with network access so it is cached, or "
            raise EncoderLoadError(f"{what} ({first_line(exc)}): {where}pass {hint}") from None
    # transformers fills weights absent from the checkpoint with random values, silently.
    missing = loading_info["missing_keys"]
    if missing:
        raise EncoderLoadError(
            f"{what}: the checkpoint lacks {len(missing)} tensors (e.g. {min(missing)}), "
            f"so it is not a full {model_class.__name__}; pass {hint}"
        )
    return model


def random_weights(build: Callable[[], ModelT], seed: int) -> ModelT:
    """A model with random weights that are a function of ``seed`` alone; the caller's RNG stream
    is left untouched."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return build()


def untrained_parts(encoder: nn.Module) -> list[str]:
    """The config sections (``part``: ``clip``, ``depthclip``, ``tr2m.image_encoder``,
    ``tr2m.relative``) of the frozen parts in ``encoder`` whose weights are untrained
    (``loading.at_initialisation``, on the weights as they are now), in module order;
    checkpoints (config.json) and evaluations (metrics.json) record it as ``untrained_frozen_parts``."""
    return [m.part for m in encoder.modules() if getattr(m, "untrained", False)]


class FrozenImageModel(nn.Module):
    """A frozen transformers vision model fed images in [0, 1], normalised with ``mean`` / ``std``
    (default ImageNet's, as DINOv2 and Depth Anything were trained; CLIP passes its own).
    ``untrained``: its weights are at their random initialisation, wherever they came from."""

    part: ClassVar[str]  # the config section that names these weights

    def __init__(
        self,
        model: PreTrainedModel,
        description: str,
        mean: Sequence[float] = IMAGENET_DEFAULT_MEAN,
        std: Sequence[float] = IMAGENET_DEFAULT_STD,
        patch_size: int | None = None,
    ) -> None:
        super().__init__()
        self.model = model.eval().requires_grad_(False)
        self.description = description
        self.patch_size: int = patch_size or model.config.patch_size
        self.image_mean: tuple[float, ...] = tuple(mean)
        self.image_std: tuple[float, ...] = tuple(std)
        # Buffers so that the normalisation follows the module across devices.
        self.register_buffer("pixel_mean", torch.tensor(mean, dtype=torch.float32).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("pixel_std", torch.tensor(std, dtype=torch.float32).view(1, 3, 1, 1), persistent=False)

    def train(self, mode: bool = True) -> "FrozenImageModel":
        # Frozen: a parent's .train() must not switch it out of eval mode.
        return super().train(False)

    def normalize(self, images: torch.Tensor) -> torch.Tensor:
        return (images - self.pixel_mean) / self.pixel_std

    @property
    def untrained(self) -> bool:
        return at_initialisation(self.model)

    def fingerprint(self) -> str:
        return weights_fingerprint(self.model)
