"""Point clouds from metric depth: back-projection with pinhole intrinsics, binary PLY output."""
from __future__ import annotations

import math
from pathlib import Path

import numpy as np

from .atomic import atomic_path

DEFAULT_HORIZONTAL_FOV_DEG = 60.0  # used when no intrinsics are given; stated in the README


def default_intrinsics(height: int, width: int, fov_deg: float = DEFAULT_HORIZONTAL_FOV_DEG) -> tuple[float, float, float, float]:
    """fx = fy from a horizontal field of view, principal point at the image centre."""
    focal = 0.5 * width / math.tan(math.radians(fov_deg) / 2)
    return focal, focal, (width - 1) / 2, (height - 1) / 2


def backproject(depth: np.ndarray, intrinsics: tuple[float, float, float, float]) -> np.ndarray:
    """(H, W) planar depth -> (H, W, 3) camera coordinates (x right, y down, z forward), metres."""
    fx, fy, cx, cy = intrinsics
    v, u = np.indices(depth.shape, dtype=np.float32)
    return np.stack([(u - cx) * depth / fx, (v - cy) * depth / fy, depth], axis=-1)


def write_ply(path: str | Path, points: np.ndarray, colours: np.ndarray) -> None:
    """Binary little-endian PLY of (N, 3) float points with (N, 3) uint8 colours, atomically."""
    vertex = np.empty(len(points), dtype=[("x", "<f4"), ("y", "<f4"), ("z", "<f4"), ("red", "u1"), ("green", "u1"), ("blue", "u1")])
    for i, axis in enumerate("xyz"):
        vertex[axis] = points[:, i]
    for i, channel in enumerate(("red", "green", "blue")):
        vertex[channel] = colours[:, i]
    header = (
        "ply\nformat binary_little_endian 1.0\ncomment clipdepth: metres, camera frame (x right, y down, z forward)\n"
        f"element vertex {len(points)}\nproperty float x\nproperty float y\nproperty float z\n"
        "property uchar red\nproperty uchar green\nproperty uchar blue\nend_header\n"
    )
    with atomic_path(path) as tmp:
        with tmp.open("wb") as f:
            f.write(header.encode("ascii"))
            f.write(vertex.tobytes())


def depth_to_ply(path: str | Path, depth: np.ndarray, image: np.ndarray, intrinsics: tuple[float, float, float, float]) -> int:
    """Write the measured (depth > 0) pixels as a coloured point cloud; returns the point count."""
    valid = depth > 0
    points = backproject(depth, intrinsics)[valid]
    write_ply(path, points, image[valid])
    return int(valid.sum())
