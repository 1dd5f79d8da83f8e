"""Model-input preprocessing and its inverse (released ``utils/dataset7_NYU_KITTI.py`` of
PureCLIP-Depth; ``eval_indomain.py`` of TR2M).

An RGB-D frame is optionally cropped (NYU: rows 40..470, cols 38..603 drop the white border),
then resized to S x (tiles * S) for an encoder of square input S without keeping the aspect
ratio (KITTI: 336 x 1344, cut into four 336 x 336 tiles that are merged back): RGB bilinear,
depth mask-aware (resize(d * m) / resize(m), invalid where the resized mask < 0.5) so that
missing pixels never bleed into valid ones. The bilinear kernel is one of ``RESIZE_MODES``:
the PureCLIP-Depth release resizes with OpenCV's INTER_LINEAR (half-pixel centres, no
antialiasing), TR2M's with ``align_corners=True``. ``restore`` maps a prediction at the input
size back onto the full GT frame, where the protocol scores it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np
import torch
import torch.nn.functional as F

from ..config import RESIZE_MODES, DataConfig

KB_CROP = (352, 1216)  # KITTI benchmark crop (height, width)
# RESIZE_MODES: "linear" = OpenCV INTER_LINEAR (half-pixel centres, no antialiasing);
# "align_corners" = bilinear with corner pixels aligned; "antialias" = PIL-like when shrinking.
# A depth pixel takes part in the mask-aware resize when above this (metres), as in the release.
VALID_DEPTH_FLOOR = 1e-3


def resize_bilinear(x: torch.Tensor, size: tuple[int, int], mode: str = "linear") -> torch.Tensor:
    """Bilinear resize of (B, C, H, W) to ``size`` with one of ``RESIZE_MODES``.

    ``linear`` equals OpenCV's ``cv2.resize(..., interpolation=INTER_LINEAR)`` on float images
    (source coordinate (dst + 0.5) * in / out - 0.5, clamped at the borders). Raises ValueError
    for an unknown mode.
    """
    if mode not in RESIZE_MODES:
        raise ValueError(f"resize mode must be one of {RESIZE_MODES}, got {mode!r}")
    return F.interpolate(x, size=size, mode="bilinear", align_corners=mode == "align_corners", antialias=mode == "antialias")


def resize_depth_masked(depth: torch.Tensor, size: tuple[int, int], mode: str = "linear") -> torch.Tensor:
    """(B, H, W) metres, 0 = invalid -> (B, *size): resize(d * m) / resize(m) with the ``mode``
    kernel, invalid (0) where the resized mask is < 0.5; m = finite and > ``VALID_DEPTH_FLOOR``."""
    mask = (depth > VALID_DEPTH_FLOOR) & torch.isfinite(depth)
    d = torch.where(mask, depth, torch.zeros_like(depth))
    # d * m and m as two channels of one resize: channels are resized independently, so this is
    # the two resizes at once.
    d_r, m_r = resize_bilinear(torch.stack([d, mask.float()], dim=1), size, mode).unbind(1)
    return torch.where(m_r >= 0.5, d_r / m_r.clamp_min(1e-6), torch.zeros_like(d_r))


def resize_mask_nearest(mask: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """(B, H, W) bool -> (B, *size) bool by nearest neighbour (source index floor(dst * in / out),
    as torchvision's NEAREST, which the PureCLIP-Depth release resizes its Garg mask with)."""
    return F.interpolate(mask[:, None].float(), size=size, mode="nearest")[:, 0] > 0.5


@dataclass(frozen=True)
class Preprocessor:
    input_size: int | tuple[int, int]  # a model's input: S for square (CLIP), (H, W) otherwise (TR2M)
    crop: tuple[int, int, int, int] | None = None  # (top, bottom, left, right), numpy-slice ends
    tiles: int = 1  # side-by-side tiles the resized frame is cut into
    kb_crop: bool = False  # KITTI: the bottom 352 x central 1216 of each frame, whatever its size
    resize: str = "linear"  # one of RESIZE_MODES, for RGB and the mask-aware depth alike
    depth_resize: str = "masked"  # one of DEPTH_RESIZE_MODES

    @classmethod
    def create(
        cls,
        input_size: int | Sequence[int],
        crop: Sequence[int] | None,
        tiles: int = 1,
        kb_crop: bool = False,
        resize: str = "linear",
        depth_resize: str = "masked",
    ) -> "Preprocessor":
        size = input_size if isinstance(input_size, int) else (int(input_size[0]), int(input_size[1]))
        crop_box = tuple(int(c) for c in crop) if crop else None
        return cls(size, crop_box, tiles, kb_crop, resize, depth_resize)  # type: ignore[arg-type]

    @classmethod
    def for_data(cls, input_size: int | Sequence[int], data: DataConfig, resize: str) -> "Preprocessor":
        """The preprocessing a dataset config names (input crop or KB crop, tiles), with the
        ``resize`` mode already resolved (a model resolves ``data.resize: auto``)."""
        return cls.create(input_size, data.input_crop, data.tiles, data.kb_crop, resize, data.depth_resize)

    def crop_box(self, frame: tuple[int, int]) -> tuple[int, int, int, int] | None:
        """(top, bottom, left, right) of the crop in a frame of this size, or None."""
        return frame_crop_box(frame, self.crop, self.kb_crop)

    def part(self) -> str:
        """Which part of a frame is fed, in words."""
        if self.kb_crop:
            return f"KB crop (bottom {KB_CROP[0]} rows, central {KB_CROP[1]} columns)"
        if self.crop:
            top, bottom, left, right = self.crop
            return f"crop [{top}, {bottom}, {left}, {right}] (rows {top}:{bottom}, columns {left}:{right})"
        return "whole frame"

    def describe(self) -> str:
        """The geometry in words, for tables and summaries: which part of a frame is fed, at what size."""
        height, width = self.input_shape
        tiles = f" in {self.tiles} tiles" if self.tiles > 1 else ""
        return f"{self.part()} resized to {height}x{width}{tiles} ({self.resize})"

    @property
    def tile_shape(self) -> tuple[int, int]:
        return (self.input_size, self.input_size) if isinstance(self.input_size, int) else self.input_size

    @property
    def input_shape(self) -> tuple[int, int]:
        height, width = self.tile_shape
        return height, self.tiles * width

    def _fitting_box(self, frame: tuple[int, int]) -> tuple[int, int, int, int] | None:
        return fitting_crop_box(frame, self.crop, self.kb_crop)

    def _crop(self, x: torch.Tensor) -> torch.Tensor:
        box = self._fitting_box(tuple(x.shape[-2:]))
        if box is None:
            return x
        top, bottom, left, right = box
        return x[..., top:bottom, left:right]

    def images(self, images: np.ndarray | torch.Tensor) -> torch.Tensor:
        """(B, H, W, 3) uint8 -> (B, 3, S, tiles * S) float in [0, 1]: ``frames`` of the decoded
        frames, cropped while still uint8 (a quarter of the bytes; the same values)."""
        images = np.asarray(images)
        box = self._fitting_box(tuple(images.shape[1:3]))
        if box is not None:
            images = images[:, box[0] : box[1], box[2] : box[3]]
        x = torch.tensor(images).permute(0, 3, 1, 2).float() / 255.0  # copies: decoders give read-only arrays
        return self._resized(x)

    def frames(self, images: torch.Tensor) -> torch.Tensor:
        """(B, 3, H, W) float in [0, 1] on any device -> (B, 3, S, tiles * S): the crop, then the
        resize of ``images``; what ``DepthModel.infer`` feeds the model. ValueError for a crop
        that does not fit the frame."""
        return self._resized(self._crop(images))

    def _resized(self, x: torch.Tensor) -> torch.Tensor:
        return resize_bilinear(x, self.input_shape, self.resize).clamp(0, 1)

    def depths(self, depths: np.ndarray | torch.Tensor) -> torch.Tensor:
        """(B, H, W) metres, 0 = invalid -> (B, S, tiles * S) with the same convention."""
        d = self._crop(torch.as_tensor(np.asarray(depths, dtype=np.float32)))
        if self.depth_resize == "nearest":
            return F.interpolate(torch.nan_to_num(d, nan=0.0)[:, None], size=self.input_shape, mode="nearest")[:, 0]
        return resize_depth_masked(d, self.input_shape, self.resize)

    def region(self, mask: np.ndarray | torch.Tensor) -> torch.Tensor:
        """(B, H, W) bool mask on the full frames -> (B, S, tiles * S) bool at the input size:
        cropped like the frames, then resized by nearest neighbour (a region, e.g. the Garg crop
        that gates KITTI's patch targets, stays a hard mask)."""
        m = torch.as_tensor(np.asarray(mask, dtype=bool))
        return resize_mask_nearest(self._crop(m), self.input_shape)

    def restore(self, pred: torch.Tensor, frame: tuple[int, int]) -> torch.Tensor:
        """(B, S, tiles * S) prediction -> (B, *frame) on the full frame the GT lives on.

        Without a crop this is the protocol's own resize. With one, the prediction is resized to
        the crop and the frame outside it is filled by edge replication (the crop can be a pixel
        smaller than an evaluation mask, e.g. NYU row 470).
        """
        box = self.crop_box(frame)
        if box is None:
            return F.interpolate(pred[:, None], size=frame, mode="bilinear", align_corners=True)[:, 0]
        top, bottom, left, right = box
        inner = F.interpolate(pred[:, None], size=(bottom - top, right - left), mode="bilinear", align_corners=True)
        return fill_frame(inner[:, 0], box, frame)


def frame_crop_box(frame: tuple[int, int], crop: Sequence[int] | None, kb_crop: bool = False) -> tuple[int, int, int, int] | None:
    """(top, bottom, left, right) of the part of an (H, W) frame a model is fed: ``crop`` as given
    (``data.input_crop``), KITTI's KB crop (``data.kb_crop``: the bottom 352 rows and central 1216
    columns, whatever the frame's size), or None for the whole frame. ValueError for a frame
    smaller than the KB crop."""
    if not kb_crop:
        return None if crop is None else tuple(int(c) for c in crop)  # type: ignore[return-value]
    height, width = frame
    if height < KB_CROP[0] or width < KB_CROP[1]:
        raise ValueError(f"the KB crop needs frames of at least {KB_CROP[0]}x{KB_CROP[1]}, got {height}x{width}")
    top, left = height - KB_CROP[0], (width - KB_CROP[1]) // 2
    return top, height, left, left + KB_CROP[1]


def fitting_crop_box(frame: tuple[int, int], crop: Sequence[int] | None, kb_crop: bool = False) -> tuple[int, int, int, int] | None:
    """``frame_crop_box``, and ValueError for a crop that does not fit the frame too."""
    box = frame_crop_box(frame, crop, kb_crop)
    if box is not None and (box[1] > frame[0] or box[3] > frame[1]):
        raise ValueError(f"input crop {box} does not fit a {frame} frame")
    return box


def fill_frame(inner: torch.Tensor, box: tuple[int, int, int, int], frame: tuple[int, int]) -> torch.Tensor:
    """(B, h, w) predictions of the crop ``box`` -> (B, *frame), the frame outside the crop filled
    by edge replication (a crop can be a pixel smaller than an evaluation mask, e.g. NYU row 470)."""
    top, bottom, left, right = box
    pad = (left, frame[1] - right, top, frame[0] - bottom)
    return F.pad(inner[:, None], pad, mode="replicate")[:, 0]


def split_tiles(x: torch.Tensor, tile: int) -> torch.Tensor:
    """(B, ..., S, k * S) -> (B * k, ..., S, S): side-by-side square tiles, left to right."""
    k = x.shape[-1] // tile
    if x.shape[-1] != k * tile or x.shape[-2] != tile:
        raise ValueError(f"cannot cut {tuple(x.shape[-2:])} into {tile} x {tile} tiles")
    tiles = x.unflatten(-1, (k, tile)).movedim(-2, 1)  # (B, k, ..., S, S)
    return tiles.flatten(0, 1)


def merge_tiles(tiles: torch.Tensor, k: int) -> torch.Tensor:
    """Inverse of ``split_tiles``: (B * k, ..., S, S) -> (B, ..., S, k * S)."""
    x = tiles.unflatten(0, (-1, k)).movedim(1, -2)  # (B, ..., S, k, S)
    return x.flatten(-2, -1)
