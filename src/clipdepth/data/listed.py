"""RGB-D pairs listed in a BTS-format split list (``rgb depth|None focal``): KITTI, the zero-shot
sets and users' folders share this reader; each passes its own depth decoder."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Callable, Mapping, Sequence

import numpy as np
from torch.utils.data import Dataset

from ..errors import DataError
from ..io.depth_io import read_rgb
from .sample import RGBDSample
from .splits import SplitEntry, check_files

DepthReader = Callable[[Path], np.ndarray]
"""A depth file -> float32 metres, 0 = invalid; DataError naming the file for any problem."""


class ListedRGBD(Dataset):
    """RGB-D pairs from split-list entries; entries without ground truth are counted, not yielded.

    ``companions``: the files besides the listed depth file that ``read_depth_m`` reads (iBims-1's and
    DIODE's masks), so that ``files`` names every file a frame is read from.
    ``n_listed`` and ``n_without_gt`` let a report say e.g. "697 listed, 45 without ground truth,
    652 scored". Intrinsics: ``intrinsics_by_name`` if it has the sample, else (focal, focal,
    W/2, H/2) from the line's focal length, else NaN (unknown).
    """

    def __init__(
        self,
        entries: Sequence[SplitEntry],
        root: str | Path,
        list_path: str | Path,
        read_depth_m: DepthReader,
        intrinsics_by_name: Mapping[str, Sequence[float]] | None = None,
        companions: Callable[[Path], list[Path]] | None = None,
    ) -> None:
        self.root = Path(root)
        self.list_path = Path(list_path)
        self.read_depth_m = read_depth_m
        self.intrinsics_by_name = dict(intrinsics_by_name or {})
        self.companions = companions  # the other files read_depth_m reads for a depth file (masks)
        self.n_listed = len(entries)
        self.entries = [e for e in entries if e.depth is not None]
        self.n_without_gt = self.n_listed - len(self.entries)
        check_files(self.entries, self.root, self.list_path)

    def __len__(self) -> int:
        return len(self.entries)

    @property
    def names(self) -> list[str]:
        """Frame names without decoding any file (cache keys use them)."""
        return [self.sample_name(e) for e in self.entries]

    def files(self, index: int) -> list[Path]:
        """The files frame ``index`` is read from (the feature cache and benchmark key on their size and time)."""
        entry = self.entries[index]
        depth = entry.depth_path(self.root)
        # a missing companion is the decoder's one-line error when the frame is read, not here
        extra = [path for path in self.companions(depth) if path.is_file()] if self.companions else []
        return [entry.rgb_path(self.root), depth, *extra]

    def sample_name(self, entry: SplitEntry) -> str:
        """The rgb path without suffix, "/" -> "_": unique within a list."""
        return str(Path(entry.rgb.lstrip("/")).with_suffix("")).replace("/", "_")

    def __getitem__(self, index: int) -> RGBDSample:
        entry = self.entries[index]
        rgb_path, depth_path = entry.rgb_path(self.root), entry.depth_path(self.root)
        image, depth = read_rgb(rgb_path), self.read_depth_m(depth_path)
        if depth.shape != image.shape[:2]:
            raise DataError(
                f"{depth_path}: depth is {depth.shape[0]}x{depth.shape[1]} but {rgb_path.name} is {image.shape[0]}x{image.shape[1]}"
            )
        name = self.sample_name(entry)
        if name in self.intrinsics_by_name:
            intrinsics = self.intrinsics_by_name[name]
        elif entry.focal is not None:
            intrinsics = (entry.focal, entry.focal, image.shape[1] / 2, image.shape[0] / 2)
        else:
            intrinsics = (math.nan,) * 4
        return RGBDSample(image, depth, np.asarray(intrinsics, dtype=np.float32), name)
