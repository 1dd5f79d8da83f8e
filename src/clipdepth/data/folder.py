"""A user's own RGB-D folder, and the manifest of real sample pairs in ../shared/data/rgbd-samples.

``DepthFolder`` pairs ``rgb/<stem>.<jpg|png>`` with ``depth/<stem>.<png|tif|tiff|npy>`` under a
root (or reads a split list): 16-bit PNG depth is value / ``depth_scale`` metres, float TIFF and
``.npy`` depth are metres; 0 is no depth (sparse LiDAR or ToF depth keeps its zeros). An optional
``intrinsics.json`` beside ``rgb/`` maps stem -> [fx, fy, cx, cy]. docs/own-data.md is the guide.

The registered dataset "folder" reads PNG depth in millimetres (scale 1000) and defaults to the
"synthetic_indoor" protocol (1e-3..10 m, no crop) only because a folder's protocol depends on
its data: users pick ``--protocol`` explicitly. Without ``data.train_list`` it trains on the
folder's own pairs, a fixed ``data.val_fraction`` of them validating (``folder_split``); a
training run records that split in its folder.
"""

from __future__ import annotations

import functools
import hashlib
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
from .splits import SplitEntry, held_out_split, read_split_list, required_setting, split_entries, under_root
from .listed import ListedRGBD
from .sample import RGBDSample
from .zeroshot import read_sun_rgbd_depth, read_tum_depth

__all__ = ["DepthFolder", "ManifestDataset"]

RGB_SUFFIXES = (".jpg", ".jpeg", ".png")
DEPTH_SUFFIXES = (".png", ".tif", ".tiff", ".npy")
UNIT_CHECK_FRAMES = 8  # depth files a unit check reads, evenly spaced over the split
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


def _by_stem(folder: Path, suffixes: tuple[str, ...]) -> dict[str, Path]:
    """The files of ``folder`` with one of ``suffixes`` (any case) by stem; DataError naming two files
    of one stem (which of them is the frame would be a guess)."""
    found: dict[str, Path] = {}
    for path in sorted(folder.iterdir()) if folder.is_dir() else ():
        if path.suffix.lower() not in suffixes:
            continue
        if path.stem in found:
            raise DataError(f"{folder}: {found[path.stem].name} and {path.name} share a stem; keep one, so that each frame is one pair")
        found[path.stem] = path
    return found


def _entries_by_stem(root: Path) -> list[SplitEntry]:
    """rgb/<stem>.* matched to depth/<stem>.*, sorted by stem; one error naming the first unmatched
    image, or two files of one stem in either folder."""
    rgb_dir = root / "rgb"
    if not rgb_dir.is_dir():
        raise DataError(f"{rgb_dir}: folder not found (expected rgb/ and depth/ under {root}, or give a split list)")
    images = _by_stem(rgb_dir, RGB_SUFFIXES)
    if not images:
        raise DataError(f"{rgb_dir}: no {'/'.join(RGB_SUFFIXES)} images")
    depths = _by_stem(root / "depth", DEPTH_SUFFIXES)
    missing = [stem for stem in sorted(images) if stem not in depths]
    if missing:
        first = root / "depth" / f"{missing[0]}{{{','.join(DEPTH_SUFFIXES)}}}"
        raise DataError(f"{root}: {len(missing)} image(s) in rgb/ have no depth, first: {first} not found")
    return [
        SplitEntry(str(images[stem].relative_to(root)), str(depths[stem].relative_to(root)), None, number)
        for number, stem in enumerate(sorted(images), start=1)
    ]


def folder_split(root: Path, entries: list[SplitEntry], cfg: DataConfig) -> tuple[list[SplitEntry], list[SplitEntry]]:
    """The fixed train/validation split of a folder's own pairs (``splits.held_out_split``), keyed by
    ``data.seed`` and the sorted stems alone (not the files' order, suffixes or times), so that the
    same folder splits the same on every machine; written to ``data.val_split_dir`` when set (a
    training run sets it to its own folder: ``data.records_split``), else computed only."""
    stems = sorted(Path(e.rgb).stem for e in entries)
    blank = next((e for e in entries if len(f"{e.rgb} {e.depth}".split()) != 2), None)
    if blank is not None:  # the split is written as split lists, whose fields are blank-separated
        raise DataError(f"{root / blank.rgb}: a name with a blank cannot be in a split list; rename it (and its depth file)")
    content = hashlib.sha256("\n".join(stems).encode()).hexdigest()[:12]
    folder = under_root(root, cfg.val_split_dir) if cfg.val_split_dir else None
    return held_out_split(entries, str(root), content, folder, cfg.val_fraction, cfg.seed)


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
        self.depth_scale = depth_scale
        super().__init__(
            entries,
            root,
            list_path or root,
            functools.partial(read_depth, scale=depth_scale),  # picklable: workers may be spawned
            _read_intrinsics(root / INTRINSICS_FILE),
        )

    def sample_name(self, entry: SplitEntry) -> str:
        return Path(entry.rgb).stem

    def unit_warning(self, max_depth: float) -> str | None:
        """A warning line when the depth looks read in the wrong unit, else None: the first of up to
        ``UNIT_CHECK_FRAMES`` depth files (evenly spaced over the split) most of whose valid
        (non-zero) pixels lie beyond ``max_depth`` metres (the protocol's cap), as millimetres read
        as metres do. The line names that file and ``data.depth_scale``."""
        count = min(UNIT_CHECK_FRAMES, len(self.entries))
        for index in np.unique(np.linspace(0, len(self.entries) - 1, count).round().astype(int)):
            path = self.entries[index].depth_path(self.root)
            depth = self.read_depth_m(path)
            valid = depth[depth > 0]
            beyond = np.count_nonzero(valid > max_depth)
            if beyond > valid.size / 2:
                return (
                    f"warning: {path}: {beyond / valid.size:.0%} of its depth lies beyond {max_depth:g} m (median "
                    f"{np.median(valid):.4g} m) read with data.depth_scale={self.depth_scale:g}; is that the unit of its "
                    "values? (16-bit PNG: metres = value / data.depth_scale, 1000 for millimetres; float TIFF and .npy: metres)"
                )
        return None


@register_dataset("folder", protocol="synthetic_indoor", splits_without_list=True)
def depth_folder(cfg: DataConfig, split: str) -> Dataset:
    """``split`` of a folder. "test": data.test_list, else the whole folder. "train" and "val":
    data.train_list as every listed dataset reads it (``split_entries``), else the folder's own
    pairs, split by ``folder_split`` (with data.val_source=test_list: all of them train and
    data.test_list validates)."""
    listed = cfg.test_list if split == "test" else cfg.train_list or (split == "val" and cfg.val_source == "test_list")
    if not listed:
        root = Path(required_setting(cfg, "root"))
        entries = _entries_by_stem(root)
        if split != "test" and cfg.val_source == "held_out":
            entries = folder_split(root, entries, cfg)[split == "val"]
        return DepthFolder(root, depth_scale=cfg.depth_scale, entries=entries)
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
