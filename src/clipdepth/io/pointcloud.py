"""Point clouds from metric depth: back-projection with pinhole intrinsics, binary PLY output."""
from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..errors import ConfigError
from .atomic import atomic_path

DEFAULT_HORIZONTAL_FOV_DEG = 60.0  # used when no intrinsics are given; stated in the README


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
        raise ConfigError(f"intrinsics: {', '.join(bad)}: not finite (a camera's values must be finite numbers)",
                          setting="intrinsics")
    if min(values[0], values[1]) <= 0:
        raise ConfigError(f"intrinsics: the focal lengths fx, fy must be positive, got {values[0]:g}, {values[1]:g}", setting="intrinsics")
    return tuple(float(v) for v in values)  # type: ignore[return-value]


def points_from_depth(depth: torch.Tensor, intrinsics: tuple[float, float, float, float]) -> torch.Tensor:
    """(..., H, W) planar depth -> (..., H, W, 3) camera coordinates (x right, y down, z forward),
    metres; pixel (u, v) at its centre's integer coordinates, as OpenCV's K."""
    fx, fy, cx, cy = intrinsics
    height, width = depth.shape[-2:]
    v = torch.arange(height, dtype=depth.dtype, device=depth.device)[:, None]
    u = torch.arange(width, dtype=depth.dtype, device=depth.device)[None, :]
    return torch.stack([(u - cx) * depth / fx, (v - cy) * depth / fy, depth], dim=-1)


def backproject(depth: np.ndarray, intrinsics: tuple[float, float, float, float]) -> np.ndarray:
    """(H, W) planar depth -> (H, W, 3) camera coordinates (x right, y down, z forward), metres."""
    return points_from_depth(torch.from_numpy(np.asarray(depth, dtype=np.float32)), intrinsics).numpy()


VERTEX = np.dtype([("x", "<f4"), ("y", "<f4"), ("z", "<f4"), ("red", "u1"), ("green", "u1"), ("blue", "u1")])
ROWS_PER_CHUNK = 256  # rows of the depth map back-projected at a time: memory stays small for any size


def _header(count: int) -> bytes:
    return (
        "ply\nformat binary_little_endian 1.0\ncomment clipdepth: metres, camera frame (x right, y down, z forward)\n"
        f"element vertex {count}\nproperty float x\nproperty float y\nproperty float z\n"
        "property uchar red\nproperty uchar green\nproperty uchar blue\nend_header\n"
    ).encode("ascii")


def _vertices(points: np.ndarray, colours: np.ndarray) -> bytes:
    vertex = np.empty(len(points), dtype=VERTEX)
    for i, axis in enumerate("xyz"):
        vertex[axis] = points[:, i]
    for i, channel in enumerate(("red", "green", "blue")):
        vertex[channel] = colours[:, i]
    return vertex.tobytes()


def write_ply(path: str | Path, points: np.ndarray, colours: np.ndarray) -> None:
    """Binary little-endian PLY of (N, 3) float points with (N, 3) uint8 colours, atomically."""
    with atomic_path(path) as tmp, tmp.open("wb") as f:
        f.write(_header(len(points)))
        f.write(_vertices(points, colours))


def depth_to_ply(path: str | Path, depth: np.ndarray, image: np.ndarray, intrinsics: tuple[float, float, float, float]) -> int:
    """Write the measured (depth > 0) pixels as a coloured point cloud, a block of rows at a time;
    returns the point count."""
    fx, fy, cx, cy = intrinsics
    count = int(np.count_nonzero(depth > 0))
    with atomic_path(path) as tmp, tmp.open("wb") as f:
        f.write(_header(count))
        for top in range(0, depth.shape[0], ROWS_PER_CHUNK):
            rows = depth[top : top + ROWS_PER_CHUNK]
            # the block's points in the full frame: shift cy by the block's first row
            points = backproject(rows, (fx, fy, cx, cy - top))
            valid = rows > 0
            f.write(_vertices(points[valid], image[top : top + ROWS_PER_CHUNK][valid]))
    return count
