"""The point cloud as a browser's 3-D viewer takes it: a GLB file (binary glTF 2.0), written here with numpy:
for 200,000 points about 3x faster than trimesh's export, timed side by side."""

from __future__ import annotations

import json
import math
import os
import struct

import numpy as np

from ..io.atomic import atomic_path
from ..io.pointcloud import backproject

# A browser draws this many points smoothly; the PLY download keeps every pixel.
VIEW_POINTS = 200_000


def view_step(height: int, width: int, max_points: int = VIEW_POINTS) -> int:
    """Every k-th row and column are kept: the smallest k that leaves at most ``max_points`` pixels."""
    step = max(1, math.ceil(math.sqrt(height * width / max_points)))
    while math.ceil(height / step) * math.ceil(width / step) > max_points:
        step += 1
    return step


def view_points(
    depth: np.ndarray, image: np.ndarray, intrinsics: tuple[float, float, float, float], max_points: int = VIEW_POINTS
) -> tuple[np.ndarray, np.ndarray]:
    """(N, 3) float32 points in glTF axes (metres) and (N, 3) uint8 colours of every k-th row and
    column (``view_step``) of ``depth`` (H, W) metres and ``image`` (H, W, 3), back-projected with
    ``intrinsics`` fx fy cx cy (pixels of the full image); pixels without a positive finite depth
    are left out."""
    step = view_step(*depth.shape, max_points)
    fx, fy, cx, cy = intrinsics
    depth, image = depth[::step, ::step], image[::step, ::step]
    # Pixel (i, j) of the subsampled grid is (i * step, j * step) of the full one. glTF's axes (x right, y up, the
    # camera looking along -z) are the camera's with y and z negated: back-projecting -depth with -fx does it
    # exactly (negation is exact) without a pass over the points.
    points = backproject(-depth, (-fx / step, fy / step, cx / step, cy / step)).reshape(-1, 3)
    colours = image.reshape(-1, 3)
    valid = (np.isfinite(depth) & (depth > 0)).reshape(-1)
    if valid.all():  # a model's depth: every pixel
        return points, colours
    return np.compress(valid, points, axis=0), np.compress(valid, colours, axis=0)  # ~5x faster than a boolean index


# glTF 2.0 constants (the specification's section 3.6, "Binary Data Storage", and 4.1, "GLB File Format")
GLB_MAGIC, GLB_VERSION, JSON_CHUNK, BIN_CHUNK = 0x46546C67, 2, 0x4E4F534A, 0x004E4942
FLOAT, UNSIGNED_BYTE, ARRAY_BUFFER, POINTS = 5126, 5121, 34962, 0


def glb_bytes(points: np.ndarray, colours: np.ndarray) -> bytes:
    """A GLB file of one point-cloud primitive (mode POINTS): (N, 3) ``points`` as float32 ``POSITION``
    (with the min and max the format requires) and (N, 3) uint8 ``colours`` as normalised RGBA ``COLOR_0``;
    no primitive where N is 0 (an accessor counts at least one element)."""
    return b"".join(_glb_parts(points, colours))


def _glb_parts(points: np.ndarray, colours: np.ndarray) -> list[bytes | memoryview]:
    """``glb_bytes``'s bytes in pieces, to be written one after the other without joining them."""
    positions = np.ascontiguousarray(points, dtype="<f4").reshape(-1, 3)
    count = len(positions)
    rgba = np.empty((count, 4), np.uint8)
    rgba[:, :3] = colours.reshape(-1, 3)
    rgba[:, 3] = 255
    # an empty scene where there is no point: glTF allows no empty arrays
    gltf: dict = {"asset": {"version": "2.0", "generator": "clipdepth"}, "scene": 0, "scenes": [{}]}
    if count:
        gltf.update(
            scenes=[{"nodes": [0]}],
            nodes=[{"mesh": 0}],
            meshes=[{"primitives": [{"attributes": {"POSITION": 0, "COLOR_0": 1}, "mode": POINTS}]}],
            buffers=[{"byteLength": 16 * count}],
            # 12 bytes a point, then 4 bytes a colour: every view and the chunk stay 4-byte aligned
            bufferViews=[
                {"buffer": 0, "byteOffset": 0, "byteLength": 12 * count, "target": ARRAY_BUFFER},
                {"buffer": 0, "byteOffset": 12 * count, "byteLength": 4 * count, "target": ARRAY_BUFFER},
            ],
            # the bounds axis by axis: numpy's min(axis=0) over (N, 3) took ~100x as long
            accessors=[
                {
                    "bufferView": 0,
                    "componentType": FLOAT,
                    "count": count,
                    "type": "VEC3",
                    "min": [float(axis.min()) for axis in positions.T],
                    "max": [float(axis.max()) for axis in positions.T],
                },
                {"bufferView": 1, "componentType": UNSIGNED_BYTE, "normalized": True, "count": count, "type": "VEC4"},
            ],
        )
    text = json.dumps(gltf, separators=(",", ":")).encode()
    text += b" " * (-len(text) % 4)  # the JSON chunk is padded to 4 bytes with spaces
    binary = [struct.pack("<II", 16 * count, BIN_CHUNK), positions.data, rgba.data] if count else []
    length = 12 + 8 + len(text) + (8 + 16 * count if count else 0)
    return [struct.pack("<III", GLB_MAGIC, GLB_VERSION, length), struct.pack("<II", len(text), JSON_CHUNK), text, *binary]


def write_view_glb(
    path: str | os.PathLike,
    depth: np.ndarray,
    image: np.ndarray,
    intrinsics: tuple[float, float, float, float],
    max_points: int = VIEW_POINTS,
) -> int:
    """Atomically write ``view_points`` as a coloured GLB point cloud (``glb_bytes``); returns its point count."""
    points, colours = view_points(depth, image, intrinsics, max_points)
    with atomic_path(path) as tmp, tmp.open("wb") as f:
        f.writelines(_glb_parts(points, colours))
    return len(points)
