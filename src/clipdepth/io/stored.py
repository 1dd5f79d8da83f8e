"""Compact forms of the arrays a split keeps (in memory or in the feature cache), read back as rows.

A model's ``stored`` turns its encoder outputs into these (TR2M: ``tr2m.cache_image``,
``tr2m.cache_relative``, ``tr2m.cache_tokens``; docs/tr2m.md, "The feature cache"). Indexing one
with row indices gives those rows as the head computes with them, so ``EncodedSplit.features`` and
the flip augmentation read every kind alike, and ``to(device)`` loads all rows where they fit:

- ``EncodedRows``: one compressed byte string per row (a ragged array: bytes + offsets), decoded
  when rows are read, on a thread pool (Pillow's codecs release the GIL). RGB images as JPEG
  (lossy, at a quality) or PNG (lossless); fp16 maps as the bit patterns of a 16-bit PNG
  (lossless: a smooth positive map has smooth bit patterns, which PNG's filters predict).
- ``QuantizedRows``: int8 values with a float32 scale per vector of the last axis (absmax / 127),
  dequantised when rows are read; each value within scale / 2 = absmax / 254 of the original.
"""

from __future__ import annotations

import io
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Callable

import numpy as np
import torch
from PIL import Image

from ..device import usable_cpus
from .depth_store import PackedBlobs, pack

IMAGE_CODECS = ("jpeg", "png")  # (3, H, W) uint8 rows
MAP_CODECS = ("fp16_png",)  # (H, W) float16 rows, losslessly
CODECS = IMAGE_CODECS + MAP_CODECS
# zlib level of the PNGs: level 1 is several times faster to write than 6 for about 15 % more
# bytes on NYU-like maps (benchmarks/cache_size.py), and decoding costs the same.
PNG_LEVEL = 1


def _threads(work: Callable[[Any], Any], items: list) -> list:
    if len(items) < 2:
        return [work(item) for item in items]
    with ThreadPoolExecutor(max_workers=min(usable_cpus(), 8, len(items))) as pool:
        return list(pool.map(work, items))


def _encode(row: np.ndarray, codec: str, quality: int) -> bytes:
    buffer = io.BytesIO()
    if codec == "fp16_png":
        Image.fromarray(np.ascontiguousarray(row).view(np.uint16)).save(buffer, format="PNG", compress_level=PNG_LEVEL)
    elif codec == "png":
        Image.fromarray(np.ascontiguousarray(row.transpose(1, 2, 0))).save(buffer, format="PNG", compress_level=PNG_LEVEL)
    else:
        Image.fromarray(np.ascontiguousarray(row.transpose(1, 2, 0))).save(buffer, format="JPEG", quality=quality)
    return buffer.getvalue()


def _decode(data: np.ndarray, codec: str) -> np.ndarray:
    with Image.open(io.BytesIO(data.tobytes())) as image:
        if codec == "fp16_png":
            return np.asarray(image, dtype=np.uint16).view(np.float16)
        return np.asarray(image.convert("RGB")).transpose(2, 0, 1)


def _row_indices(index: torch.Tensor | slice | np.ndarray, length: int) -> np.ndarray:
    if isinstance(index, slice):
        return np.arange(length)[index]
    if isinstance(index, torch.Tensor):
        index = index.cpu()
    return np.asarray(index).reshape(-1)


class EncodedRows:
    """Rows kept as one compressed byte string each; ``rows[index]`` decodes the rows asked for.

    ``shape`` and ``dtype`` are those of the decoded rows ((N, 3, H, W) uint8 for the image codecs,
    (N, H, W) float16 for ``fp16_png``), so that a split's decoded size is known without decoding.
    ``parts`` are (bytes, offsets) pairs (``io.depth_store.pack``), one per batch or cache shard,
    seen as one array.
    """

    def __init__(self, codec: str, row_shape: tuple[int, ...], parts: list[tuple[np.ndarray, np.ndarray]]) -> None:
        if codec not in CODECS:
            raise ValueError(f"unknown codec {codec!r} (one of {CODECS})")
        self.codec, self.row_shape, self.parts = codec, tuple(int(s) for s in row_shape), parts
        self.blobs = PackedBlobs(parts)
        self.shape = (len(self.blobs), *self.row_shape)
        self.dtype = torch.uint8 if codec in IMAGE_CODECS else torch.float16

    @classmethod
    def encode(cls, rows: torch.Tensor, codec: str, quality: int = 90) -> "EncodedRows":
        """(N, 3, H, W) uint8 images (``jpeg`` at ``quality`` 1-95, ``png``) or (N, H, W) float16
        maps (``fp16_png``), each row compressed on a thread."""
        expected = (torch.uint8, 4) if codec in IMAGE_CODECS else (torch.float16, 3)
        if (rows.dtype, rows.dim()) != expected:
            raise ValueError(f"{codec} takes {expected[1]}-d {expected[0]} rows, got {rows.dim()}-d {rows.dtype}")
        arrays = list(rows.cpu().numpy())
        return cls(codec, rows.shape[1:], [pack(_threads(lambda row: _encode(row, codec, quality), arrays))])

    @classmethod
    def concat(cls, items: list["EncodedRows"]) -> "EncodedRows":
        """Rows of several, in order, without copying their bytes."""
        return cls(items[0].codec, items[0].row_shape, [part for item in items for part in item.parts])

    def __len__(self) -> int:
        return self.shape[0]

    def __getitem__(self, index: torch.Tensor | slice) -> torch.Tensor:
        rows = _row_indices(index, len(self))
        decoded = _threads(lambda i: _decode(self.blobs[int(i)], self.codec), list(rows))
        if any(d.shape != self.row_shape for d in decoded):
            raise ValueError(f"stored rows do not decode to {self.row_shape}")
        return torch.from_numpy(np.stack(decoded)) if decoded else torch.empty((0, *self.row_shape), dtype=self.dtype)

    def cpu(self) -> "EncodedRows":
        return self  # bytes live on the host

    def to(self, device: torch.device | str) -> torch.Tensor:
        """Every row decoded into one tensor on ``device``."""
        return self[slice(None)].to(device)

    @property
    def stored_nbytes(self) -> int:
        return sum(int(offsets[-1]) for _, offsets in self.parts)


class QuantizedRows:
    """int8 values and a float32 scale per vector of the last axis; ``rows[index]`` gives those rows
    dequantised to float32 on the values' device. ``shape`` is the values'; ``dtype`` int8."""

    dtype = torch.int8

    def __init__(self, values: Any, scale: Any) -> None:
        self.values, self.scale = values, scale  # (N, ..., D) int8 and (N, ..., 1) float32: tensors or ShardedRows
        self.shape = tuple(values.shape)

    @classmethod
    def quantize(cls, x: torch.Tensor) -> "QuantizedRows":
        """Symmetric absmax quantisation of each vector of the last axis (a token's channels):
        q = round(x / s), s = absmax / 127, so |q * s - x| <= s / 2."""
        scale = x.float().abs().amax(-1, keepdim=True) / 127
        values = (x.float() / scale.clamp_min(torch.finfo(torch.float32).tiny)).round().clamp(-127, 127)
        return cls(values.to(torch.int8), scale)

    @classmethod
    def concat(cls, items: list["QuantizedRows"]) -> "QuantizedRows":
        return cls(torch.cat([i.values for i in items]), torch.cat([i.scale for i in items]))

    def __len__(self) -> int:
        return self.shape[0]

    def __getitem__(self, index: torch.Tensor | slice) -> torch.Tensor:
        if isinstance(index, torch.Tensor) and isinstance(self.values, torch.Tensor):
            index = index.to(self.values.device)
        return self.values[index].float() * self.scale[index]

    def cpu(self) -> "QuantizedRows":
        return self.to("cpu")

    def to(self, device: torch.device | str) -> "QuantizedRows":
        """The int8 values and scales read into memory on ``device`` (dequantised per batch there)."""
        return QuantizedRows(self.values.to(device), self.scale.to(device))


def held_bytes(array: Any) -> int:
    """Bytes an array of a split holds where it is kept: a tensor's values, ``EncodedRows``'
    compressed bytes, ``QuantizedRows``' int8 values and scales."""
    if isinstance(array, EncodedRows):
        return array.stored_nbytes
    if isinstance(array, QuantizedRows):
        return held_bytes(array.values) + held_bytes(array.scale)
    return int(np.prod(array.shape)) * array.dtype.itemsize


def concat(items: list) -> Any:
    """Batches of one array (tensors, ``EncodedRows`` or ``QuantizedRows``) as one."""
    if isinstance(items[0], (EncodedRows, QuantizedRows)):
        return type(items[0]).concat(items)
    return torch.cat(items)
