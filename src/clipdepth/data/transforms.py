"""Model-input preprocessing and its inverse (pureclip-depth.md, "Data handling").

An RGB-D frame is optionally cropped (NYU: rows 40..470, cols 38..603 drop the white border),
then resized to the encoder's square input without keeping the aspect ratio: RGB bilinear,
depth mask-aware (resize(d * m) / resize(m), invalid where the resized mask < 0.5) so that
missing pixels never bleed into valid ones. ``restore`` maps a prediction at the input size back
onto the full GT frame, where the protocol scores it.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np
import torch
import torch.nn.functional as F


def resize_bilinear(x: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Bilinear resize of (..., C, H, W), antialiased when shrinking (as PIL's resize does)."""
    return F.interpolate(x, size=size, mode="bilinear", align_corners=False, antialias=True)


def resize_depth_masked(depth: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """(B, H, W) depth with 0 = invalid -> (B, *size), invalid (0) where resized mask < 0.5."""
    mask = (depth > 0) & torch.isfinite(depth)
    d = torch.where(mask, depth, torch.zeros_like(depth))[:, None]
    m = mask.float()[:, None]
    d_r, m_r = resize_bilinear(d, size)[:, 0], resize_bilinear(m, size)[:, 0]
    return torch.where(m_r >= 0.5, d_r / m_r.clamp_min(1e-6), torch.zeros_like(d_r))


@dataclass(frozen=True)
class Preprocessor:
    input_size: int
    crop: tuple[int, int, int, int] | None = None  # (top, bottom, left, right), numpy-slice ends

    @classmethod
    def create(cls, input_size: int, crop: Sequence[int] | None) -> "Preprocessor":
        return cls(input_size, tuple(int(c) for c in crop) if crop else None)  # type: ignore[arg-type]

    def _crop(self, x: torch.Tensor) -> torch.Tensor:
        if self.crop is None:
            return x
        top, bottom, left, right = self.crop
        if bottom > x.shape[-2] or right > x.shape[-1]:
            raise ValueError(f"input crop {self.crop} does not fit a {tuple(x.shape[-2:])} frame")
        return x[..., top:bottom, left:right]

    def images(self, images: np.ndarray | torch.Tensor) -> torch.Tensor:
        """(B, H, W, 3) uint8 -> (B, 3, S, S) float in [0, 1]."""
        x = torch.as_tensor(np.asarray(images)).permute(0, 3, 1, 2).float() / 255.0
        return resize_bilinear(self._crop(x), (self.input_size,) * 2).clamp(0, 1)

    def depths(self, depths: np.ndarray | torch.Tensor) -> torch.Tensor:
        """(B, H, W) metres, 0 = invalid -> (B, S, S) with the same convention."""
        d = torch.as_tensor(np.asarray(depths, dtype=np.float32))
        return resize_depth_masked(self._crop(d), (self.input_size,) * 2)

    def restore(self, pred: torch.Tensor, frame: tuple[int, int]) -> torch.Tensor:
        """(B, S, S) prediction -> (B, *frame) on the full frame the GT lives on.

        Without a crop this is the protocol's own resize. With one, the prediction is resized to
        the crop and the frame outside it is filled by edge replication (the crop can be a pixel
        smaller than an evaluation mask, e.g. NYU row 470).
        """
        if self.crop is None:
            return F.interpolate(pred[:, None], size=frame, mode="bilinear", align_corners=True)[:, 0]
        top, bottom, left, right = self.crop
        inner = F.interpolate(pred[:, None], size=(bottom - top, right - left), mode="bilinear", align_corners=True)
        pad = (left, frame[1] - right, top, frame[0] - bottom)
        return F.pad(inner, pad, mode="replicate")[:, 0]
