"""The point cloud as a browser's 3-D viewer takes it: a GLB file (binary glTF, written by trimesh)."""
from __future__ import annotations

import math
import os

import numpy as np

from ..io.atomic import atomic_path
from ..io.pointcloud import backproject

# A browser draws this many points smoothly; the PLY download keeps every pixel.
VIEW_POINTS = 200_000
# Camera axes (x right, y down, z forward) -> glTF's (x right, y up, the camera looking along -z).
GLTF_AXES = np.array([1.0, -1.0, -1.0], dtype=np.float32)


def view_step(height: int, width: int, max_points: int = VIEW_POINTS) -> int:
    """Every k-th row and column are kept: the smallest k that leaves at most ``max_points`` pixels."""
    step = max(1, math.ceil(math.sqrt(height * width / max_points)))
    while math.ceil(height / step) * math.ceil(width / step) > max_points:
        step += 1
    return step


def view_points(
    depth: np.ndarray, image: np.ndarray, intrinsics: tuple[float, float, float, float], max_points: int = VIEW_POINTS,
) -> tuple[np.ndarray, np.ndarray]:
    """(N, 3) float32 points in glTF axes (metres) and (N, 3) uint8 colours of every k-th row and
    column (``view_step``) of ``depth`` (H, W) metres and ``image`` (H, W, 3), back-projected with
    ``intrinsics`` fx fy cx cy (pixels of the full image); pixels without a positive finite depth
    are left out."""
    step = view_step(*depth.shape, max_points)
    fx, fy, cx, cy = intrinsics
    # pixel (i, j) of the subsampled grid is (i * step, j * step) of the full one
    points = backproject(depth[::step, ::step], (fx / step, fy / step, cx / step, cy / step))
    sub = depth[::step, ::step]
    valid = np.isfinite(sub) & (sub > 0)
    return points[valid] * GLTF_AXES, image[::step, ::step][valid]


def write_view_glb(
    path: str | os.PathLike, depth: np.ndarray, image: np.ndarray, intrinsics: tuple[float, float, float, float],
    max_points: int = VIEW_POINTS,
) -> int:
    """Atomically write ``view_points`` as a coloured GLB point cloud; returns its point count."""
    import trimesh  # the `serve` extra

    points, colours = view_points(depth, image, intrinsics, max_points)
    rgba = np.concatenate([colours, np.full((len(colours), 1), 255, np.uint8)], axis=1)
    data = trimesh.PointCloud(points, colors=rgba).export(file_type="glb")
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)
    return len(points)
