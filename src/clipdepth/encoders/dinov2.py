"""Frozen DINOv2 encoder for TR2M: last-layer patch tokens after the final norm, without CLS.

In ``transformers``' ``Dinov2Model`` the ``last_hidden_state`` is already taken through the final
``layernorm`` (unlike CLIP's vision tower), so it is used as is (tr2m.md, "Components").
The position embeddings are interpolated to the input grid, so any multiple of the patch size works.

The loading helpers here (``load_pretrained``, ``weights_fingerprint``) are shared with the
relative-depth sources of ``relative.py``.
"""
from __future__ import annotations

import hashlib
from pathlib import Path
from typing import TypeVar

import torch
from huggingface_hub.utils import HFValidationError, validate_repo_id
from safetensors import SafetensorError
from torch import nn
from transformers import Dinov2Config, Dinov2Model, PreTrainedModel
from transformers.image_utils import IMAGENET_DEFAULT_MEAN, IMAGENET_DEFAULT_STD

from ..config import DINOv2Config
from ..errors import EncoderLoadError
from .clip import FINGERPRINT_SAMPLES_PER_TENSOR, _first_line, _quiet_transformers

DINOV2_HINT = "DINOv2 weights (e.g. facebook/dinov2-large, or a folder saved by Dinov2Model.save_pretrained)"

ModelT = TypeVar("ModelT", bound=PreTrainedModel)


def weights_fingerprint(module: nn.Module) -> str:
    """Short id of a module's weights; a strided sample per tensor keeps it well under a second for ViT-L."""
    digest = hashlib.sha256()
    for name, tensor in sorted(module.state_dict().items()):
        flat = tensor.detach().reshape(-1)
        sample = flat[:: max(1, flat.numel() // FINGERPRINT_SAMPLES_PER_TENSOR)]
        digest.update(f"{name}|{tuple(tensor.shape)}|{tensor.dtype};".encode())
        digest.update(sample.float().cpu().numpy().tobytes())
    return digest.hexdigest()[:16]


def imagenet_normalizer() -> tuple[torch.Tensor, torch.Tensor]:
    """(1, 3, 1, 1) mean and std of ImageNet, the statistics DINOv2 and Depth Anything were trained with."""
    mean = torch.tensor(IMAGENET_DEFAULT_MEAN, dtype=torch.float32).view(1, 3, 1, 1)
    std = torch.tensor(IMAGENET_DEFAULT_STD, dtype=torch.float32).view(1, 3, 1, 1)
    return mean, std


def load_pretrained(model_class: type[ModelT], name_or_path: str, hint: str) -> ModelT:
    """``model_class.from_pretrained`` whose every failure is a one-line EncoderLoadError naming the source.

    ``hint`` says what to supply instead (the kind of weights, an example id, the saved-folder form).
    """
    what = f"cannot load {model_class.__name__} weights '{name_or_path}'"
    is_dir = Path(name_or_path).is_dir()
    if not is_dir:
        # A path that is neither a folder nor a possible hub id would reach the Hub as a confusing id error.
        try:
            validate_repo_id(name_or_path)
        except HFValidationError:
            raise EncoderLoadError(f"{what}: no such folder; pass {hint}") from None
    with _quiet_transformers():
        try:
            model, loading_info = model_class.from_pretrained(name_or_path, output_loading_info=True)
        except (OSError, ValueError, RuntimeError, SafetensorError) as exc:
            where = "" if is_dir else "run once with network access so it is cached, or "
            raise EncoderLoadError(f"{what} ({_first_line(exc)}): {where}pass {hint}") from None
    # transformers fills weights absent from the checkpoint with random values, silently.
    missing = loading_info["missing_keys"]
    if missing:
        raise EncoderLoadError(
            f"{what}: the checkpoint lacks {len(missing)} tensors (e.g. {min(missing)}), "
            f"so it is not a full {model_class.__name__}; pass {hint}"
        )
    return model


class DINOv2Encoder(nn.Module):
    """Frozen DINOv2: ``forward`` maps images in [0, 1] to a (B, H/p, W/p, D) grid of patch tokens."""

    def __init__(self, model: Dinov2Model, description: str) -> None:
        super().__init__()
        self.model = model.eval().requires_grad_(False)
        self.description = description
        self.embed_dim: int = model.config.hidden_size
        self.patch_size: int = model.config.patch_size
        mean, std = imagenet_normalizer()
        # Buffers so that the normalisation follows the module across devices.
        self.register_buffer("pixel_mean", mean, persistent=False)
        self.register_buffer("pixel_std", std, persistent=False)

    @classmethod
    def from_config(cls, cfg: DINOv2Config) -> DINOv2Encoder:
        if not cfg.random_init:
            return cls.from_pretrained(cfg.name)
        config = Dinov2Config(
            hidden_size=cfg.hidden_size,
            num_hidden_layers=cfg.num_layers,
            num_attention_heads=cfg.num_heads,
            patch_size=cfg.patch_size,
            mlp_ratio=4,
        )
        # Weights are a function of cfg.seed alone; the caller's RNG stream is left untouched.
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(cfg.seed)
            model = Dinov2Model(config)
        return cls(model, f"random-weight DINOv2 ViT, seed {cfg.seed} (untrained; for tests and the demo)")

    @classmethod
    def from_pretrained(cls, name_or_path: str) -> DINOv2Encoder:
        """DINOv2 weights from a Hugging Face Hub id or a folder saved by ``Dinov2Model.save_pretrained``."""
        return cls(load_pretrained(Dinov2Model, name_or_path, DINOV2_HINT), name_or_path)

    def train(self, mode: bool = True) -> DINOv2Encoder:
        # Frozen: a parent's .train() must not switch the encoder out of eval mode.
        return super().train(False)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """(B, 3, H, W) images in [0, 1], H and W multiples of the patch size -> (B, H/p, W/p, D)."""
        batch, channels, height, width = images.shape
        if channels != 3 or height % self.patch_size or width % self.patch_size:
            raise ValueError(
                f"expected images of shape (B, 3, H, W) with H and W multiples of {self.patch_size}, "
                f"got {tuple(images.shape)}"
            )
        pixel_values = (images - self.pixel_mean) / self.pixel_std
        hidden = self.model(pixel_values=pixel_values).last_hidden_state  # (B, prefix + h*w, D), normed
        grid_h, grid_w = height // self.patch_size, width // self.patch_size
        # The patch tokens are the last h*w: this drops CLS and any register tokens before them.
        return hidden[:, -grid_h * grid_w :].reshape(batch, grid_h, grid_w, self.embed_dim)

    def fingerprint(self) -> str:
        return weights_fingerprint(self.model)
