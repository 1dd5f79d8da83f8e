"""KITTI: the Eigen split over the official depth layout, and LiDAR projection for raw frames.

Layout (paths as the split list gives them, relative to ``data.root``; the shipped BTS lists):
``<date>/<date>_drive_XXXX_sync/image_02/data/<frame>.png`` (RGB) and
``<date>_drive_XXXX_sync/proj_depth/groundtruth/image_02/<frame>.png`` (uint16 / 256 metres,
0 = no measurement). The Eigen test list has 697 lines, 45 with depth "None"; those are counted
and skipped, so 652 are scored.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from torch.utils.data import Dataset

from ..config import DataConfig
from ..errors import DataError
from ..io.depth_io import read_depth
from . import register_dataset
from .splits import SplitEntry, split_entries
from .listed import ListedRGBD

__all__ = ["KITTIEigen", "read_calib", "read_kitti_depth", "read_velodyne", "velodyne_to_depth"]

KITTI_SCALE = 256.0  # uint16 / 256 = metres (docs/protocol.md, "Caps and units")
CALIB_KEYS = ("P2", "R0_rect", "Tr_velo_to_cam")


def read_kitti_depth(path: str | Path) -> np.ndarray:
    """KITTI annotated depth PNG: uint16 / 256 metres, 0 = no measurement."""
    return read_depth(path, KITTI_SCALE)


class KITTIEigen(ListedRGBD):
    """KITTI frames from a split list; names are "<drive>_<frame>", e.g. "2011_09_26_drive_0002_sync_0000000069"."""

    def __init__(self, entries: list[SplitEntry], root: str | Path, list_path: str | Path) -> None:
        super().__init__(entries, root, list_path, read_kitti_depth)

    def sample_name(self, entry: SplitEntry) -> str:
        rgb = Path(entry.rgb.lstrip("/"))
        drive = next((part for part in rgb.parts if "_drive_" in part), rgb.parts[0])
        return f"{drive}_{rgb.stem}"


@register_dataset("kitti", protocol="kitti")
def kitti_eigen(cfg: DataConfig, split: str) -> Dataset:
    root, entries, list_path = split_entries(cfg, split)
    return KITTIEigen(entries, root, list_path)


# --------------------------------------------------------------------------- raw LiDAR frames


def read_velodyne(path: str | Path) -> np.ndarray:
    """(N, 4) float32 x, y, z, reflectance from a KITTI velodyne ``.bin``."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: velodyne file not found")
    values = np.fromfile(path, dtype=np.float32)
    if values.size == 0 or values.size % 4:
        raise DataError(f"{path}: expected float32 x,y,z,reflectance records, got {values.size} values")
    return values.reshape(-1, 4)


def read_calib(path: str | Path) -> dict[str, np.ndarray]:
    """KITTI object-format calibration: ``key: numbers`` lines, 12 numbers -> (3, 4), 9 -> (3, 3)."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: calibration file not found")
    calib = {}
    for number, line in enumerate(path.read_text().splitlines(), start=1):
        if not line.strip():
            continue
        key, _, numbers = line.partition(":")
        try:
            values = np.array(numbers.split(), dtype=np.float64)
        except ValueError:
            raise DataError(f"{path}:{number}: {key.strip()!r} has non-numeric values") from None
        if values.size not in (9, 12):
            raise DataError(f"{path}:{number}: {key.strip()!r} has {values.size} values, expected 9 or 12")
        calib[key.strip()] = values.reshape(3, -1)
    missing = [key for key in CALIB_KEYS if key not in calib]
    if missing:
        raise DataError(f"{path}: calibration lacks {', '.join(missing)}")
    return calib


def _homogeneous(matrix: np.ndarray) -> np.ndarray:
    """A (3, 3) or (3, 4) transform as 4x4, so the chain multiplies."""
    square = np.eye(4)
    square[: matrix.shape[0], : matrix.shape[1]] = matrix
    return square


def velodyne_to_depth(points: np.ndarray, calib: dict[str, np.ndarray], image_shape: tuple[int, ...]) -> np.ndarray:
    """(H, W) float32 sparse depth: LiDAR points projected with P2 @ R0_rect @ Tr_velo_to_cam.

    Depth is the projected z (as in KITTI's own depth maps); points with z <= 0 or outside the
    image are dropped; pixel (row v, column u) takes the points rounding to it, the nearest winning.
    """
    height, width = image_shape[:2]
    velo_to_image = calib["P2"] @ _homogeneous(calib["R0_rect"]) @ _homogeneous(calib["Tr_velo_to_cam"])
    homogeneous = np.concatenate([points[:, :3].astype(np.float64), np.ones((len(points), 1))], axis=1)
    projected = homogeneous @ velo_to_image.T
    z = projected[:, 2]
    in_front = z > 0
    z, projected = z[in_front], projected[in_front]
    u = np.round(projected[:, 0] / z).astype(np.int64)
    v = np.round(projected[:, 1] / z).astype(np.int64)
    inside = (u >= 0) & (u < width) & (v >= 0) & (v < height)
    nearest = np.full((height, width), np.inf)
    np.minimum.at(nearest, (v[inside], u[inside]), z[inside])
    return np.where(np.isfinite(nearest), nearest, 0.0).astype(np.float32)
