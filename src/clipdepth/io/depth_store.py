"""Depth maps kept compactly beside the encoder outputs: what training and scoring read, no more.

- **Training frames** keep the depth at the model input size as 16-bit integers with a scale per
  frame (metres = value / scale, 0 = invalid, exactly where the float map was 0). The scale is the
  ground truth's own (NYU 1000 per metre, KITTI 256) when its range fits in 16 bits, else the
  finest that does: rounding then changes a depth by at most half a unit of the dataset's own
  precision (synthetic scenes: half of max / 65535).
- **Scored frames** keep the full-resolution ground truth losslessly: as the 16-bit values it was
  decoded from, with their scale, when it is exactly such values (NYU, KITTI, SUN RGB-D, TUM),
  else as float32.

On disk both are PNG-compressed (16-bit greyscale, as the datasets' own depth files) into one
byte array per shard with offsets per frame: about 0.9 bytes per pixel for NYU depth at 336 x 336
instead of 4 for float32 (``benchmarks/cache_size.py``).
"""

from __future__ import annotations

import io
import zlib
from concurrent.futures import ThreadPoolExecutor
from collections.abc import Sequence

import numpy as np
import torch
from PIL import Image

from ..device import usable_cpus

U16_MAX = 65535
# Scales (units per metre) that depth files are stored in: millimetres (NYU, SUN RGB-D, most
# sensors), KITTI's 1/256 m, TUM's 1/5000 m.
FILE_SCALES = (1000.0, 256.0, 5000.0)
FLOAT32 = 0.0  # scale recorded for a map stored as float32


def file_scale(depth: np.ndarray) -> float | None:
    """The ``FILE_SCALES`` entry at which ``depth`` (float32 metres) is exactly ``uint16 / scale``
    as decoded, or None."""
    depth = np.asarray(depth, dtype=np.float32)
    for scale in FILE_SCALES:
        # A sparse sample first: a map that is not on this grid almost always shows it there.
        if _on_grid(depth.reshape(-1)[::97], scale) and _on_grid(depth, scale):
            return scale
    return None


def _on_grid(depth: np.ndarray, scale: float) -> bool:
    """Whether ``depth`` is exactly ``uint16 / scale`` as decoded (NaN, inf and < 0 are not)."""
    units = np.rint(depth * np.float32(scale))  # the candidate integers; exactness is checked below
    with np.errstate(invalid="ignore"):
        if not (units.size == 0 or (np.all(units >= 0) and units.max() <= U16_MAX)):
            return False
    return np.array_equal(_from_units(units.astype(np.float64), scale), depth)


def _from_units(units: np.ndarray, scale: float) -> np.ndarray:
    return (units / scale).astype(np.float32)


def quantize(depth: torch.Tensor, scale_cap: float | None = None, out: torch.Tensor | None = None) -> tuple[torch.Tensor, float]:
    """A depth map of any shape, metres, 0 = invalid (NaN, inf and < 0 count as 0) -> (torch.uint16
    values of the same shape, scale): ``round(d * scale)``, at least 1 where d > 0 so that validity
    is exact; metres = value / scale. The scale is ``scale_cap`` (the GT's own, ``file_scale``)
    when the largest depth fits in 16 bits with it, else ``65535 / max`` (then a depth moves by at
    most max / 131070). ``out``: a uint16 tensor of the same shape the values are written into
    (a row of a preallocated split) and returned."""
    depth = torch.nan_to_num(depth.float(), nan=0.0, posinf=0.0, neginf=0.0).clamp_min(0)
    largest = float(depth.max()) if depth.numel() else 0.0
    fits = U16_MAX / largest if largest > 0 else 1.0
    scale = scale_cap if scale_cap and round(largest * scale_cap) <= U16_MAX else fits
    units = (depth.double() * scale).round().clamp(0, U16_MAX)
    units = torch.where(depth > 0, units.clamp_min(1), torch.zeros_like(units)).to(torch.int32).to(torch.uint16)
    if out is None:
        return units, float(scale)
    return out.copy_(units), float(scale)


def dequantize(units: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    """(B, H, W) uint16 and (B,) scales -> (B, H, W) float32 metres, on their device."""
    return units.float() / scale.float().view(-1, *[1] * (units.ndim - 1))


def encode_png16(units: np.ndarray) -> bytes:
    """(H, W) uint16 -> 16-bit greyscale PNG bytes (lossless)."""
    buffer = io.BytesIO()
    Image.fromarray(np.ascontiguousarray(units, dtype=np.uint16)).save(buffer, format="PNG", compress_level=6)
    return buffer.getvalue()


def decode_png16(data: bytes | np.ndarray) -> np.ndarray:
    with Image.open(io.BytesIO(bytes(data))) as image:
        return np.asarray(image, dtype=np.uint16)


def encode_gt(depth: np.ndarray) -> tuple[bytes, float]:
    """Full-resolution GT (float32 metres) -> (bytes, scale) that ``decode_gt`` turns back into the
    identical array. The scale is found by ``file_scale``: a PNG of the 16-bit values with that
    scale, or, where the map is not such values, zlib of float32 with scale 0 (``FLOAT32``)."""
    depth = np.asarray(depth, dtype=np.float32)
    scale = file_scale(depth)
    if scale is None:
        return zlib.compress(depth.tobytes(), 1), FLOAT32
    return encode_png16(np.round(depth.astype(np.float64) * scale).astype(np.uint16)), scale


def decode_gt(data: bytes | np.ndarray, scale: float, shape: Sequence[int]) -> np.ndarray:
    """``encode_gt``'s (bytes, scale) and the map's (H, W) -> float32 metres. Raises ValueError when
    the bytes do not hold a map of that shape."""
    if scale == FLOAT32:
        depth = np.frombuffer(zlib.decompress(bytes(data)), dtype=np.float32)
        if depth.size != int(np.prod(shape)):
            raise ValueError(f"stored depth has {depth.size} values, not {tuple(shape)}")
        return depth.reshape(tuple(shape)).copy()
    depth = _from_units(decode_png16(data).astype(np.float64), scale)
    if depth.shape != tuple(shape):
        raise ValueError(f"stored depth is {depth.shape}, not {tuple(shape)}")
    return depth


def pack(blobs: list[bytes]) -> tuple[np.ndarray, np.ndarray]:
    """Byte strings -> (one uint8 array, int64 offsets of length n + 1)."""
    offsets = np.cumsum([0, *(len(b) for b in blobs)], dtype=np.int64)
    return np.frombuffer(b"".join(blobs), dtype=np.uint8), offsets


class PackedBlobs:
    """Per-frame byte strings in one (memory-mapped) uint8 array, several shards seen as one."""

    def __init__(self, parts: list[tuple[np.ndarray, np.ndarray]]) -> None:
        self.parts = parts
        self.starts = np.cumsum([0, *(len(offsets) - 1 for _, offsets in parts)])

    def __len__(self) -> int:
        return int(self.starts[-1])

    def __getitem__(self, index: int) -> np.ndarray:
        if not 0 <= index < len(self):
            raise IndexError(index)
        part = int(np.searchsorted(self.starts, index, side="right") - 1)
        data, offsets = self.parts[part]
        i = index - self.starts[part]
        return data[offsets[i] : offsets[i + 1]]


class TrainingDepth:
    """Input-size depth of training frames: 16-bit values with a scale per frame, either decoded
    in memory (a uint16 tensor on any device, e.g. the GPU) or as PNG bytes decoded per batch."""

    def __init__(self, scale: torch.Tensor, units: torch.Tensor | None = None, packed: PackedBlobs | None = None) -> None:
        if (units is None) == (packed is None):
            raise ValueError("give the decoded units or the packed PNGs, one of them")
        self.scale, self.units, self.packed = scale.float(), units, packed

    def __len__(self) -> int:
        return len(self.scale)

    @classmethod
    def empty(cls, frames: int, shape: Sequence[int]) -> "TrainingDepth":
        """Room for ``frames`` maps of ``shape`` (H, W), allocated once at its final size and filled
        frame by frame with ``put``: a split's depth never exists twice (as a list and stacked)."""
        return cls(torch.zeros(frames), units=torch.empty((frames, *shape), dtype=torch.uint16))

    def put(self, index: int, depth: torch.Tensor, scale_cap: float | None = None) -> None:
        """Frame ``index`` from its (H, W) metres, through ``quantize`` (``scale_cap``: the GT's own scale)."""
        self.scale[index] = quantize(depth, scale_cap, out=self.units[index])[1]

    @classmethod
    def from_maps(cls, maps: Sequence[tuple[torch.Tensor, float]]) -> "TrainingDepth":
        """From ``quantize`` results, (H, W) uint16 each, copied into one preallocated (N, H, W) array."""
        depth = cls.empty(len(maps), maps[0][0].shape if maps else (0, 0))
        for i, (units, scale) in enumerate(maps):
            depth.units[i], depth.scale[i] = units, scale
        return depth

    @classmethod
    def from_float(cls, depth: torch.Tensor, scale_cap: float | None = None) -> "TrainingDepth":
        """From (N, H, W) metres, each frame through ``quantize``."""
        out = cls.empty(len(depth), depth.shape[1:])
        for i, d in enumerate(depth):
            out.put(i, d, scale_cap)
        return out

    def unpacked(self, device: torch.device | str = "cpu") -> "TrainingDepth":
        """Every frame decoded into one uint16 tensor on ``device`` (read once, indexed there)."""
        if self.units is None:
            with ThreadPoolExecutor(max_workers=min(usable_cpus(), 8)) as pool:  # PNG decoding releases the GIL
                maps = list(pool.map(lambda i: decode_png16(self.packed[i]), range(len(self))))
            units = torch.from_numpy(np.stack(maps))
        else:
            units = self.units
        return TrainingDepth(self.scale.to(device), units=units.to(device))

    def units_of(self, index: torch.Tensor) -> torch.Tensor:
        if self.units is not None:
            return self.units[index.to(self.units.device)]
        return torch.from_numpy(np.stack([decode_png16(self.packed[int(i)]) for i in index]))

    def rows(self, index: torch.Tensor) -> torch.Tensor:
        """(B, H, W) float32 metres of frames ``index``, on the device the values live on."""
        units = self.units_of(index)
        return dequantize(units, self.scale.to(units.device)[index.to(units.device)])

    def loaded_nbytes(self) -> int:
        """Bytes of the decoded uint16 values and scales (what ``unpacked`` holds)."""
        if len(self) == 0:
            return 0
        units = self.units[0] if self.units is not None else decode_png16(self.packed[0])
        return len(self) * (units.numel() if isinstance(units, torch.Tensor) else units.size) * 2 + len(self) * 4


class ScoringGT(Sequence):
    """Full-resolution GT of scored frames, decoded on access (``split.gt[i]``, slices, iteration)."""

    def __init__(self, blobs: PackedBlobs, scales: np.ndarray, shapes: np.ndarray) -> None:
        self.blobs, self.scales, self.shapes = blobs, scales, shapes

    def __len__(self) -> int:
        return len(self.blobs)

    def __getitem__(self, index):  # type: ignore[override]
        if isinstance(index, slice):
            return [self[i] for i in range(*index.indices(len(self)))]
        if index < 0:
            index += len(self)
        return decode_gt(self.blobs[index], float(self.scales[index]), self.shapes[index])
