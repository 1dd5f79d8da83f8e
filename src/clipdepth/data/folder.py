"""A user's own RGB-D folder, and the manifest of real sample pairs in ../shared/data/rgbd-samples.

``DepthFolder`` pairs ``rgb/<stem>.<jpg|png>`` with ``depth/<stem>.<png|npy>`` under a root (or
reads a split list): ``.npy`` depth is metres, PNG depth is value / ``depth_scale``. An optional
``intrinsics.json`` beside ``rgb/`` maps stem -> [fx, fy, cx, cy].

The registered dataset "folder" reads PNG depth in millimetres (scale 1000) and defaults to the
"synthetic_indoor" protocol (1e-3..10 m, no crop) only because a folder's protocol depends on
its data: users pick ``--protocol`` explicitly.
"""

from __future__ import annotations

import functools
import json
import math
from pathlib import Path

import numpy as np
from torch.utils.data import Dataset

from ..config import DataConfig
from ..errors import DataError
from ..io.depth_io import read_depth, read_rgb
from . import register_dataset
from .kitti import read_calib, read_kitti_depth, read_velodyne, velodyne_to_depth
from .nyu import NYU_DEPTH_SCALE
from .splits import SplitEntry, read_split_list, required_setting, split_entries
from .listed import ListedRGBD
from .sample import RGBDSample
from .zeroshot import read_sun_rgbd_depth, read_tum_depth

__all__ = ["DepthFolder", "ManifestDataset"]

RGB_SUFFIXES = (".jpg", ".jpeg", ".png")
DEPTH_SUFFIXES = (".png", ".npy")
INTRINSICS_FILE = "intrinsics.json"


def _read_intrinsics(path: Path) -> dict[str, list[float]]:
    if not path.is_file():
        return {}
    try:
        mapping = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise DataError(f"{path}: not readable JSON ({' '.join(str(exc).split())})") from None
    if not isinstance(mapping, dict):
        raise DataError(f"{path}: expected an object mapping image stem -> [fx, fy, cx, cy]")
    for stem, values in mapping.items():
        if not (isinstance(values, list) and len(values) == 4 and all(isinstance(x, (int, float)) for x in values)):
            raise DataError(f"{path}: {stem!r} must map to four numbers [fx, fy, cx, cy], got {values!r}")
    return mapping


def _entries_by_stem(root: Path) -> list[SplitEntry]:
    """rgb/<stem>.* matched to depth/<stem>.*; one error naming the first unmatched image."""
    rgb_dir = root / "rgb"
    if not rgb_dir.is_dir():
        raise DataError(f"{rgb_dir}: folder not found (expected rgb/ and depth/ under {root}, or give a split list)")
    images = sorted(p for p in rgb_dir.iterdir() if p.suffix.lower() in RGB_SUFFIXES)
    if not images:
        raise DataError(f"{rgb_dir}: no {'/'.join(RGB_SUFFIXES)} images")
    entries, missing = [], []
    for number, image in enumerate(images, start=1):
        depth = next((root / "depth" / (image.stem + s) for s in DEPTH_SUFFIXES if (root / "depth" / (image.stem + s)).is_file()), None)
        if depth is None:
            missing.append(root / "depth" / f"{image.stem}{{{','.join(DEPTH_SUFFIXES)}}}")
            continue
        entries.append(SplitEntry(str(image.relative_to(root)), str(depth.relative_to(root)), None, number))
    if missing:
        raise DataError(f"{root}: {len(missing)} image(s) in rgb/ have no depth, first: {missing[0]} not found")
    return entries


class DepthFolder(ListedRGBD):
    """A user's RGB-D pairs, by stem (``rgb/`` + ``depth/``) or by split list; names are image stems."""

    def __init__(
        self,
        root: str | Path,
        list_path: str | Path | None = None,
        depth_scale: float = NYU_DEPTH_SCALE,
        entries: list[SplitEntry] | None = None,
    ) -> None:
        """``entries`` are parsed lines of ``list_path`` (e.g. one half of its train/val split)."""
        root = Path(root)
        if entries is None:
            entries = _entries_by_stem(root) if list_path is None else read_split_list(list_path)
        super().__init__(
            entries,
            root,
            list_path or root,
            functools.partial(read_depth, scale=depth_scale),  # picklable: workers may be spawned
            _read_intrinsics(root / INTRINSICS_FILE),
        )

    def sample_name(self, entry: SplitEntry) -> str:
        return Path(entry.rgb).stem


@register_dataset("folder", protocol="synthetic_indoor")
def depth_folder(cfg: DataConfig, split: str) -> Dataset:
    if split == "test" and not cfg.test_list:
        return DepthFolder(required_setting(cfg, "root"), depth_scale=cfg.depth_scale)
    root, entries, list_path = split_entries(cfg, split)
    return DepthFolder(root, list_path, depth_scale=cfg.depth_scale, entries=entries)


# --------------------------------------------------------------------------- shared samples

# Ground-truth files by the manifest's "dataset" field; "kitti_raw" is projected LiDAR instead.
MANIFEST_DEPTH_READERS = {
    "nyu": lambda path: read_depth(path, NYU_DEPTH_SCALE),
    "kitti": read_kitti_depth,
    "sun_rgbd": read_sun_rgbd_depth,
    "tum": read_tum_depth,
}
LIDAR_DATASET = "kitti_raw"


class ManifestDataset(Dataset):
    """The samples of an rgbd-samples ``manifest.json`` (paths relative to it), optionally of one dataset.

    Names are "<dataset>_<rgb stem>"; intrinsics come from the manifest, from P2 for LiDAR frames,
    or are NaN where the manifest has none.
    """

    def __init__(self, manifest_path: str | Path, dataset: str | None = None) -> None:
        self.manifest_path = Path(manifest_path)
        self.base = self.manifest_path.parent
        try:
            samples = json.loads(self.manifest_path.read_text())["samples"]
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise DataError(f"{self.manifest_path}: not a readable sample manifest ({' '.join(str(exc).split())})") from None
        known = set(MANIFEST_DEPTH_READERS) | {LIDAR_DATASET}
        unknown = sorted({s.get("dataset") for s in samples} - known, key=str)
        if unknown:
            raise DataError(f"{self.manifest_path}: no decoder for dataset(s) {unknown}; known: {sorted(known)}")
        self.samples = [s for s in samples if dataset is None or s["dataset"] == dataset]
        if not self.samples:
            raise DataError(f"{self.manifest_path}: no samples of dataset {dataset!r}")

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, index: int) -> RGBDSample:
        sample = self.samples[index]
        kind = sample["dataset"]
        image = read_rgb(self.base / sample["rgb"])
        if kind == LIDAR_DATASET:
            calib = read_calib(self.base / sample["calib"])
            depth = velodyne_to_depth(read_velodyne(self.base / sample["velodyne"]), calib, image.shape)
            p2 = calib["P2"]
            intrinsics = (p2[0, 0], p2[1, 1], p2[0, 2], p2[1, 2])
        else:
            depth = MANIFEST_DEPTH_READERS[kind](self.base / sample["depth"])
            intrinsics = sample.get("intrinsics_fx_fy_cx_cy") or (math.nan,) * 4
        name = f"{kind}_{Path(sample['rgb']).stem}"
        return RGBDSample(image, depth, np.asarray(intrinsics, dtype=np.float32), name)
