"""Frozen DINOv2 encoder for TR2M: last-layer patch tokens after the final norm, without CLS.

In ``transformers``' ``Dinov2Model`` the ``last_hidden_state`` is already taken through the final
``layernorm`` (unlike CLIP's vision tower), so it is used as is (docs/tr2m.md, "Components").
The position embeddings are interpolated to the input grid, so any multiple of the patch size works.

"""

from __future__ import annotations

import torch
from transformers import Dinov2Config, Dinov2Model

from ..config import DINOv2Config
from .frozen import FrozenImageModel, load_pretrained, random_weights

DINOV2_HINT = "DINOv2 weights (e.g. facebook/dinov2-large, or a folder saved by Dinov2Model.save_pretrained)"


class DINOv2Encoder(FrozenImageModel):
    """Frozen DINOv2: ``forward`` maps images in [0, 1] to a (B, H/p, W/p, D) grid of patch tokens."""

    part = "tr2m.image_encoder"

    def __init__(self, model: Dinov2Model, description: str) -> None:
        super().__init__(model, description)
        self.embed_dim: int = model.config.hidden_size

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
        model = random_weights(lambda: Dinov2Model(config), cfg.seed)
        return cls(model, f"random-weight DINOv2 ViT, seed {cfg.seed} (untrained; for tests and the demo)")

    @classmethod
    def from_pretrained(cls, name_or_path: str) -> DINOv2Encoder:
        """DINOv2 weights from a Hugging Face Hub id or a folder saved by ``Dinov2Model.save_pretrained``."""
        return cls(load_pretrained(Dinov2Model, name_or_path, DINOV2_HINT), name_or_path)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """(B, 3, H, W) images in [0, 1], H and W multiples of the patch size -> (B, H/p, W/p, D)."""
        batch, channels, height, width = images.shape
        if channels != 3 or height % self.patch_size or width % self.patch_size:
            raise ValueError(
                f"expected images of shape (B, 3, H, W) with H and W multiples of {self.patch_size}, got {tuple(images.shape)}"
            )
        hidden = self.model(pixel_values=self.normalize(images)).last_hidden_state  # (B, prefix + h*w, D), normed
        grid_h, grid_w = height // self.patch_size, width // self.patch_size
        # The patch tokens are the last h*w: this drops CLS and any register tokens before them.
        return hidden[:, -grid_h * grid_w :].reshape(batch, grid_h, grid_w, self.embed_dim)
