"""Point clouds from metric depth: back-projection with pinhole intrinsics, binary PLY output."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..errors import ConfigError
from .atomic import atomic_path

DEFAULT_HORIZONTAL_FOV_DEG = 60.0  # used when no intrinsics are given; stated in docs/predict.md


def default_intrinsics(height: int, width: int, fov_deg: float = DEFAULT_HORIZONTAL_FOV_DEG) -> tuple[float, float, float, float]:
    """fx = fy from a horizontal field of view, principal point at the image centre."""
    focal = 0.5 * width / math.tan(math.radians(fov_deg) / 2)
    return focal, focal, (width - 1) / 2, (height - 1) / 2


def as_intrinsics(intrinsics: Any) -> tuple[float, float, float, float]:
    """(fx, fy, cx, cy) in pixels from those four numbers or a 3x3 camera matrix K (list, array or
    tensor). ConfigError for another shape, a value that is not finite (NaN, inf; anywhere in K) or
    a focal length that is not positive."""
    given = np.asarray(intrinsics.detach().cpu() if isinstance(intrinsics, torch.Tensor) else intrinsics, dtype=np.float64)
    values = given[[0, 1, 0, 1], [0, 1, 2, 2]] if given.shape == (3, 3) else given
    if values.shape != (4,):
        raise ConfigError(f"intrinsics must be fx fy cx cy or a 3x3 matrix K, got shape {given.shape}", setting="intrinsics")
    labels = [f"K[{i}][{j}]" for i in range(3) for j in range(3)] if given.ndim == 2 else ["fx", "fy", "cx", "cy"]
    bad = [f"{label} {value:g}" for label, value in zip(labels, given.ravel()) if not np.isfinite(value)]
    if bad:
        raise ConfigError(f"intrinsics: {', '.join(bad)}: not finite (a camera's values must be finite numbers)", setting="intrinsics")
    if min(values[0], values[1]) <= 0:
        raise ConfigError(f"intrinsics: the focal lengths fx, fy must be positive, got {values[0]:g}, {values[1]:g}", setting="intrinsics")
    return tuple(float(v) for v in values)  # type: ignore[return-value]


def _camera_xy(depth: Any, intrinsics: tuple[float, float, float, float], v: Any, u: Any) -> tuple[Any, Any]:
    """x, y (metres) of ``depth`` at rows ``v`` (H, 1) and columns ``u`` (W,): the one back-projection
    formula of tensors and numpy arrays alike, step by step in their own dtype."""
    fx, fy, cx, cy = intrinsics
    return (u - cx) * depth / fx, (v - cy) * depth / fy


def _pixel_coordinates(depth: Any) -> tuple[Any, Any]:
    """Rows (H, 1) and columns (W,) of ``depth``'s last two axes, as its own kind, dtype and device."""
    height, width = depth.shape[-2:]
    if isinstance(depth, np.ndarray):
        return np.arange(height, dtype=depth.dtype)[:, None], np.arange(width, dtype=depth.dtype)
    return (
        torch.arange(height, dtype=depth.dtype, device=depth.device)[:, None],
        torch.arange(width, dtype=depth.dtype, device=depth.device),
    )


def points_from_depth(depth: torch.Tensor | np.ndarray, intrinsics: tuple[float, float, float, float]) -> torch.Tensor | np.ndarray:
    """(..., H, W) planar depth, a tensor or a numpy array -> (..., H, W, 3) of the same kind and dtype:
    camera coordinates (x right, y down, z forward), metres; pixel (u, v) at its centre's integer
    coordinates, as OpenCV's K. A numpy array is back-projected by numpy (no torch), bit for bit alike."""
    stack = np.stack if isinstance(depth, np.ndarray) else torch.stack
    return stack([*_camera_xy(depth, intrinsics, *_pixel_coordinates(depth)), depth], -1)


def backproject(depth: np.ndarray, intrinsics: tuple[float, float, float, float]) -> np.ndarray:
    """(H, W) planar depth -> (H, W, 3) float32 camera coordinates (x right, y down, z forward), metres."""
    return points_from_depth(np.asarray(depth, dtype=np.float32), intrinsics)


VERTEX = np.dtype([("x", "<f4"), ("y", "<f4"), ("z", "<f4"), ("red", "u1"), ("green", "u1"), ("blue", "u1")])
# VERTEX's bytes seen as a colour at byte 12: the three channels are filled in one assignment
_COLOUR = np.dtype({"names": ["rgb"], "formats": [("u1", (3,))], "offsets": [12], "itemsize": VERTEX.itemsize})
ROWS_PER_CHUNK = 256  # rows of the depth map back-projected at a time: memory stays small for any size


def _header(count: int) -> bytes:
    return (
        "ply\nformat binary_little_endian 1.0\ncomment clipdepth: metres, camera frame (x right, y down, z forward)\n"
        f"element vertex {count}\nproperty float x\nproperty float y\nproperty float z\n"
        "property uchar red\nproperty uchar green\nproperty uchar blue\nend_header\n"
    ).encode("ascii")


def vertex_grid(depth: np.ndarray, image: np.ndarray, intrinsics: tuple[float, float, float, float]) -> np.ndarray:
    """(H, W) ``VERTEX`` records: every pixel's point (``points_from_depth`` of (H, W) ``depth``,
    metres, float32 steps) and its colour from (H, W, 3) uint8 ``image``, measured or not."""
    depth = np.asarray(depth, dtype=np.float32)
    grid = np.empty(depth.shape, VERTEX)
    # written field by field: no (H, W, 3) array of points_from_depth to copy in afterwards
    grid["x"], grid["y"] = _camera_xy(depth, intrinsics, *_pixel_coordinates(depth))
    grid["z"] = depth
    grid.view(_COLOUR)["rgb"] = image
    return grid


def _write_vertices(f: Any, vertices: np.ndarray) -> None:
    f.write(np.ascontiguousarray(vertices).reshape(-1).view(np.uint8))  # the records' own bytes, no copy


def write_ply(path: str | Path, points: np.ndarray, colours: np.ndarray) -> None:
    """Binary little-endian PLY of (N, 3) float points with (N, 3) uint8 colours, atomically."""
    vertices = np.empty(len(points), VERTEX)
    for i, axis in enumerate("xyz"):
        vertices[axis] = points[:, i]
    vertices.view(_COLOUR)["rgb"] = colours
    with atomic_path(path) as tmp, tmp.open("wb") as f:
        f.write(_header(len(points)))
        _write_vertices(f, vertices)


def depth_to_ply(
    path: str | Path, depth: np.ndarray, image: np.ndarray, intrinsics: tuple[float, float, float, float], stride: int = 1
) -> int:
    """Write the measured (depth > 0) pixels of (H, W) ``depth`` (metres) with their colours from
    (H, W, 3) uint8 ``image`` as a binary PLY point cloud (``vertex_grid``), row-major, atomically,
    ``ROWS_PER_CHUNK`` rows at a time; returns the point count. ``stride`` > 1 keeps pixel (v, u)
    for v and u multiples of it: the same points as the full cloud has there (the camera scaled
    by 1 / stride on the subsampled grid), about stride**2 times fewer."""
    if stride > 1:  # pixel j of the subsampled grid is pixel j * stride: (j * s - c) / f = (j - c / s) / (f / s)
        depth, image = depth[::stride, ::stride], image[::stride, ::stride]
        intrinsics = tuple(value / stride for value in intrinsics)
    fx, fy, cx, cy = intrinsics
    measured = depth > 0
    count = int(np.count_nonzero(measured))
    with atomic_path(path) as tmp, tmp.open("wb") as f:
        f.write(_header(count))
        for top in range(0, depth.shape[0], ROWS_PER_CHUNK):
            rows = slice(top, top + ROWS_PER_CHUNK)
            # the block's points in the full frame: shift cy by the block's first row
            vertices = vertex_grid(depth[rows], image[rows], (fx, fy, cx, cy - top)).reshape(-1)
            if count < depth.size:
                vertices = np.compress(measured[rows].reshape(-1), vertices)  # ~8x faster than a boolean index here
            _write_vertices(f, vertices)
    return count
