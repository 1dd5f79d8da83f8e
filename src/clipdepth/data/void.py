"""VOID (void_1500): indoor and outdoor 480 x 640 frames with 16-bit PNG depth, one of TR2M's four
training sets (docs/tr2m.md, "Data and captions"; the release's ``dataloaders/datasets_void.py``).

The release lists a split in two files of the same length, ``<split>_image.txt`` and
``<split>_ground_truth.txt`` (``data_splits/void/``), one path per line relative to the VOID
root (or prefixed with it, as the release writes them). ``data.train_list`` / ``data.test_list``
name the image list; the ground-truth list is its sibling. Depth is uint16 / 256 metres, 0 = no
measurement; frames keep their native 480 x 640. Scored with the ``void`` protocol: 0.2 < d < 5 m
inside the NYU Eigen crop [45:471, 41:601], as the release scores it.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from torch.utils.data import Dataset

from ..config import DataConfig
from ..errors import DataError
from ..io.depth_io import read_depth
from . import register_dataset
from .listed import ListedRGBD
from .splits import SplitEntry, split_entries

VOID_SCALE = 256.0  # uint16 / 256 = metres


def read_void_depth(path: str | Path) -> np.ndarray:
    """VOID ground-truth PNG: uint16 / 256 metres, 0 = no measurement. DataError naming the file."""
    return read_depth(path, VOID_SCALE)


def _paths(list_path: Path, root: Path) -> list[str]:
    if not list_path.is_file():
        raise DataError(f"{list_path}: VOID list not found")
    prefix = str(root).rstrip("/") + "/"
    # The release writes each line as root + relative path; either form is read.
    return [
        line[len(prefix) :] if line.startswith(prefix) else line
        for line in (raw.strip() for raw in list_path.read_text().splitlines())
        if line
    ]


def void_entries(image_list: str | Path, root: str | Path) -> list[SplitEntry]:
    """Split entries from a VOID image list and its sibling ``*_ground_truth.txt``; DataError
    naming the list when the sibling is missing or the two lengths differ."""
    image_list, root = Path(image_list), Path(root)
    if not image_list.name.endswith("_image.txt"):
        raise DataError(f"{image_list}: a VOID split is named <split>_image.txt (beside <split>_ground_truth.txt)")
    gt_list = image_list.with_name(image_list.name.replace("_image.txt", "_ground_truth.txt"))
    images, depths = _paths(image_list, root), _paths(gt_list, root)
    if len(images) != len(depths):
        raise DataError(f"{gt_list}: {len(depths)} lines, but {image_list.name} has {len(images)}")
    return [SplitEntry(rgb=i, depth=d, focal=None, line=n) for n, (i, d) in enumerate(zip(images, depths), 1)]


@register_dataset("void", protocol="void")
def void_dataset(cfg: DataConfig, split: str) -> Dataset:
    root, entries, listing = split_entries(cfg, split, void_entries)
    return ListedRGBD(entries, root, listing, read_void_depth)
