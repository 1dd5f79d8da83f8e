"""TR2M's zero-shot test sets (SUN RGB-D, iBims-1, DIODE, HyperSim) and TUM RGB-D.

Each set stores depth its own way; ``read_<name>_depth(path)`` turns one file into float32 metres
with 0 = invalid, and every problem is a one-line DataError naming the file. The sets are read
from BTS-format split lists (``rgb depth|None focal``) by ``data.listed.ListedRGBD``, which KITTI
and user folders share. None of them has an evaluation protocol of its own in
``clipdepth.evaluation.protocol``: the indoor sets default to ``synthetic_indoor`` (1e-3..10 m,
no crop) and DIODE, which mixes indoor and outdoor scans, to ``synthetic_outdoor`` (1e-3..80 m, no
crop); pass ``--protocol`` to score differently.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Callable

import h5py
import numpy as np
from torch.utils.data import Dataset

from ..config import DataConfig
from ..errors import DataError
from ..io.depth_io import read_depth, read_mask
from . import register_dataset
from .listed import DepthReader, ListedRGBD
from .splits import split_entries

__all__ = [
    "HYPERSIM_HORIZONTAL_FOV_DEG",
    "IBIMS_SCALE",
    "hypersim_distance_to_depth",
    "read_diode_depth",
    "read_hypersim_depth",
    "read_ibims_depth",
    "read_sun_rgbd_depth",
    "read_tum_depth",
]

TUM_SCALE = 5000.0  # TUM RGB-D: uint16 / 5000 = metres
# iBims-1: 16-bit PNG depth, metres = value / 65535 * 50 (50 m full scale; docs/tr2m.md, "Data and captions").
IBIMS_SCALE = 65535.0 / 50.0
HYPERSIM_HORIZONTAL_FOV_DEG = 60.0  # every HyperSim camera: 1024x768, 60 degrees across the width


# --------------------------------------------------------------------------- decoders


def read_sun_rgbd_depth(path: str | Path) -> np.ndarray:
    """SUN RGB-D depth PNG: the uint16 value is bit-rotated, metres = rotr3(d) / 1000."""
    # Scale 1 returns the raw uint16 values as float32, which holds them exactly.
    raw = read_depth(path, 1.0).astype(np.uint32)
    rotated = ((raw >> 3) | (raw << 13)) & 0xFFFF
    return (rotated / 1000.0).astype(np.float32)


def read_tum_depth(path: str | Path) -> np.ndarray:
    """TUM RGB-D depth PNG: uint16 / 5000."""
    return read_depth(path, TUM_SCALE)


IBIMS_MASKS = ("mask_invalid", "mask_transp")  # 0 = not to be scored (invalid; transparent surface)


def _ibims_masks(path: Path) -> list[Path]:
    """The masks iBims-1's own layout keeps for a ``depth/<name>.png`` (none outside a ``depth/`` folder)."""
    return [path.parent.parent / folder / path.name for folder in IBIMS_MASKS] if path.parent.name == "depth" else []


def read_ibims_depth(path: str | Path) -> np.ndarray:
    """iBims-1 depth PNG: uint16 / 65535 * 50 (assumption stated at ``IBIMS_SCALE``).

    In iBims-1's own layout (``depth/<name>.png`` beside ``mask_invalid/`` and ``mask_transp/``)
    depth is zeroed where either mask is 0, as the released evaluation and iBims-1's own do; a
    missing mask file there is a DataError naming it. A depth PNG outside a ``depth/`` folder is
    read without masks."""
    path = Path(path)
    depth = read_depth(path, IBIMS_SCALE)
    if path.parent.name != "depth":
        return depth
    keep = np.ones(depth.shape, dtype=bool)
    for mask_path in _ibims_masks(path):
        if not mask_path.is_file():
            raise DataError(f"{mask_path}: iBims-1 mask not found (its layout has {' and '.join(IBIMS_MASKS)} beside depth/)")
        mask = read_mask(mask_path)
        if mask.shape != depth.shape:
            raise DataError(f"{mask_path}: mask is {mask.shape[0]}x{mask.shape[1]} but {path.name} is {depth.shape[0]}x{depth.shape[1]}")
        keep &= mask != 0
    return np.where(keep, depth, np.float32(0))


def _read_npy(path: Path) -> np.ndarray:
    if not path.is_file():
        raise DataError(f"{path}: file not found")
    try:
        return np.load(path, allow_pickle=False)
    except (OSError, ValueError, EOFError) as exc:
        raise DataError(f"{path}: not a readable .npy file ({' '.join(str(exc).split())})") from None


def _diode_mask(path: Path) -> list[Path]:
    """DIODE's validity mask beside a ``*_depth.npy``."""
    return [path.with_name(f"{path.stem}_mask.npy")]


def read_diode_depth(path: str | Path) -> np.ndarray:
    """DIODE ``*_depth.npy`` (H, W, 1) metres, zeroed where ``*_depth_mask.npy`` is 0."""
    path = Path(path)
    (mask_path,) = _diode_mask(path)
    depth, mask = _read_npy(path), _read_npy(mask_path)
    if depth.ndim == 3 and depth.shape[-1] == 1:
        depth = depth[..., 0]
    if depth.ndim != 2:
        raise DataError(f"{path}: expected an (H, W, 1) depth array, got shape {depth.shape}")
    if mask.shape != depth.shape:
        raise DataError(f"{mask_path}: mask shape {mask.shape} does not match depth {depth.shape} of {path.name}")
    return np.where(mask > 0, depth, 0.0).astype(np.float32)


def hypersim_distance_to_depth(distance: np.ndarray, horizontal_fov_deg: float = HYPERSIM_HORIZONTAL_FOV_DEG) -> np.ndarray:
    """Planar depth z from HyperSim's distance along each pixel's ray.

    f = 0.5 W / tan(fov / 2) (886.81 px at HyperSim's 1024 width) and the principal point is the
    image centre (W/2, H/2) in coordinates where pixel (row v, column u) has its centre at
    (u + 0.5, v + 0.5); so z = dist * f / sqrt(f^2 + (u + 0.5 - W/2)^2 + (v + 0.5 - H/2)^2).
    """
    height, width = distance.shape
    focal = 0.5 * width / math.tan(math.radians(horizontal_fov_deg) / 2)
    du = np.arange(width) + 0.5 - width / 2
    dv = np.arange(height) + 0.5 - height / 2
    ray_norm = np.sqrt(focal**2 + du[None, :] ** 2 + dv[:, None] ** 2)
    return (distance * (focal / ray_norm)).astype(np.float32)


def read_hypersim_depth(path: str | Path) -> np.ndarray:
    """HyperSim ``*.depth_meters.hdf5`` (key ``dataset``, ray distance in metres) as planar depth.

    NaN (no geometry, e.g. windows to nowhere) becomes 0.
    """
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: file not found")
    try:
        with h5py.File(path, "r") as handle:
            distance = np.asarray(handle["dataset"], dtype=np.float64)
    except KeyError:
        raise DataError(f"{path}: no 'dataset' array in this HDF5 file (not a HyperSim depth file?)") from None
    except OSError as exc:
        raise DataError(f"{path}: not a readable HDF5 file ({' '.join(str(exc).split())})") from None
    if distance.ndim != 2:
        raise DataError(f"{path}: expected an (H, W) distance map, got shape {distance.shape}")
    return hypersim_distance_to_depth(np.nan_to_num(distance, nan=0.0))


def _listed_factory(
    read_depth_m: DepthReader, companions: Callable[[Path], list[Path]] | None = None
) -> Callable[[DataConfig, str], Dataset]:
    def factory(cfg: DataConfig, split: str) -> Dataset:
        root, entries, list_path = split_entries(cfg, split)
        return ListedRGBD(entries, root, list_path, read_depth_m, companions=companions)

    return factory


register_dataset("sun_rgbd", protocol="synthetic_indoor")(_listed_factory(read_sun_rgbd_depth))
register_dataset("tum", protocol="synthetic_indoor")(_listed_factory(read_tum_depth))
register_dataset("ibims", protocol="synthetic_indoor")(_listed_factory(read_ibims_depth, _ibims_masks))
register_dataset("hypersim", protocol="synthetic_indoor")(_listed_factory(read_hypersim_depth))
register_dataset("diode", protocol="synthetic_outdoor")(_listed_factory(read_diode_depth, _diode_mask))
