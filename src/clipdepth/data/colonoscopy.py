"""Colonoscopy sets of TR2M: C3VD (a training set) and SimCol (zero-shot), as the release reads them
(``dataloaders/dataset_c3vd.py``, ``dataset_simcol.py``; docs/tr2m.md, "Data and captions").

Both store depth in **millimetres** at a fixed 16-bit full scale; clipdepth works in metres, so
the readers return metres (0..0.1 m for C3VD, 0..~0.2 m for SimCol) and the ``c3vd`` and
``simcol`` protocols cap at 1e-4 < d < 0.1 m, the release's 0.1 .. 100 mm. A table beside the
paper's millimetre numbers converts (RMSE and AbsDiff x 1000) and says so.

- **C3VD**: ``<root>/<colon>_t<k>_<x>/NNNN_color.png`` and ``NNNN_depth.tiff`` (16-bit, x 100 /
  65535 mm). The sequences are the root's entries in sorted order, taken by the release's fixed
  indices (``C3VD_TRAIN``, ``C3VD_TEST``); a frame needs both files. Frames are resized to
  480 x 640 as released (RGB bilinear, depth nearest) and scored there. Captions are templated
  from the sequence name, as released (its spelling and double space included).
- **SimCol**: ``<root>/misc/test_file.txt`` lists ``<sequence>/<frames folder>`` lines; each
  folder's ``FrameBuffer_NNNN.png`` with ``Depth_NNNN.png`` (16-bit, x 200 / (255 x 256) mm).
  One fixed caption for every frame, as released. Frames keep their native size (the release
  resizes the RGB to 480 x 640 before its network input; here the model's own resize does it once).
"""

from __future__ import annotations

import math
import re
from pathlib import Path

import numpy as np
from PIL import Image
from torch.utils.data import Dataset

from ..config import DataConfig
from ..errors import DataError
from ..io.depth_io import read_depth, read_rgb
from . import register_dataset
from .sample import RGBDSample
from .splits import required_setting

# Units per metre of the 16-bit files: C3VD value x 100 / 65535 = mm, SimCol value x 200 / (255 x 256) = mm.
C3VD_SCALE = 65535.0 / 0.1
SIMCOL_SCALE = 255.0 * 256.0 / 0.2
C3VD_TRAIN = (1, 3, 4, 6, 7, 8, 10, 11, 13, 14, 15, 17, 18, 20, 22)  # indices into the sorted root entries
C3VD_TEST = (0, 2, 5, 9, 12, 16, 19, 21)
C3VD_FRAME_SHAPE = (480, 640)  # released: every frame resized to this and scored at it
C3VD_COLONS = {"cecum": "cecum", "desc": "descending colon", "sigmoid": "sigmoid colon", "trans": "transcending colon"}
C3VD_TEXTURES = {"1": "one", "2": "two", "3": "three", "4": "four"}
SIMCOL_CAPTION = "The image shows a medical scene of a cecum with texture type one."


def read_c3vd_depth(path: str | Path) -> np.ndarray:
    """C3VD ``NNNN_depth.tiff``: uint16 x 100 / 65535 mm, returned in metres (0 = no depth).
    A multi-channel file gives its first channel, as the release reads it. DataError naming the file."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: file not found")
    try:
        with Image.open(path) as image:
            array = np.asarray(image)
    except (OSError, ValueError) as exc:
        raise DataError(f"{path}: not a readable TIFF ({' '.join(str(exc).split())[:120]})") from None
    if array.ndim == 3:
        array = array[..., 0]
    if array.dtype != np.uint16 or array.ndim != 2:
        raise DataError(f"{path}: expected a 16-bit depth TIFF, got {array.dtype} of shape {array.shape}")
    return (array / C3VD_SCALE).astype(np.float32)


def read_simcol_depth(path: str | Path) -> np.ndarray:
    """SimCol ``Depth_NNNN.png``: uint16 x 200 / (255 x 256) mm, returned in metres. DataError naming the file."""
    return read_depth(path, SIMCOL_SCALE)


def c3vd_caption(sequence: str) -> str:
    """The release's caption of every frame of a C3VD sequence ``<colon>_t<k>_<x>``; DataError for
    a name not of that form (the release raises KeyError)."""
    match = re.fullmatch(r"(cecum|desc|sigmoid|trans)_t([1-4])_\w+", sequence)
    if match is None:
        raise DataError(f"{sequence}: a C3VD sequence folder is named <colon>_t<k>_<x>, colon one of {sorted(C3VD_COLONS)}")
    colon, texture = match.groups()
    # The release builds " texture type one" with a leading space, hence the double space.
    return f"The image shows a medical scene of {C3VD_COLONS[colon]} with  texture type {C3VD_TEXTURES[texture]}."


def _resized(array: np.ndarray, shape: tuple[int, int], resample: int) -> np.ndarray:
    if array.shape[:2] == shape:
        return array
    mode = "F" if array.dtype == np.float32 else None
    return np.asarray(Image.fromarray(array, mode=mode).resize((shape[1], shape[0]), resample))


class _FramePairs(Dataset):
    """(rgb path, depth path, name, captions) frames, decoded on access."""

    def __init__(self, frames: list[tuple[Path, Path, str, list[str]]]) -> None:
        self.frames = frames

    def __len__(self) -> int:
        return len(self.frames)

    @property
    def names(self) -> list[str]:
        return [name for _, _, name, _ in self.frames]

    def files(self, index: int) -> list[Path]:
        return [self.frames[index][0], self.frames[index][1]]


class C3VD(_FramePairs):
    def __init__(self, root: str | Path, split: str) -> None:
        root = Path(root)
        if not root.is_dir():
            raise DataError(f"{root}: C3VD root folder not found")
        entries = sorted(p.name for p in root.iterdir())
        picked = C3VD_TEST if split == "test" else C3VD_TRAIN
        frames = []
        for index in picked:
            if index >= len(entries):  # the release's folder held at least 23 entries (docs/tr2m.md)
                continue
            sequence = entries[index]
            caption = c3vd_caption(sequence)
            for colour in sorted((root / sequence).glob("*_color.png")):
                depth = colour.with_name(f"{colour.name[:4]}_depth.tiff")
                if depth.is_file():
                    frames.append((colour, depth, f"{sequence}_{colour.name[:4]}", [caption]))
        if not frames:
            raise DataError(f"{root}: no C3VD frames (<sequence>/NNNN_color.png with NNNN_depth.tiff) in the {split} sequences")
        super().__init__(frames)

    def __getitem__(self, index: int) -> RGBDSample:
        colour, depth_path, name, captions = self.frames[index]
        image = _resized(read_rgb(colour), C3VD_FRAME_SHAPE, Image.BILINEAR)
        depth = _resized(read_c3vd_depth(depth_path), C3VD_FRAME_SHAPE, Image.NEAREST)
        return RGBDSample(image, depth, np.full(4, math.nan, np.float32), name, captions)


class SimCol(_FramePairs):
    def __init__(self, root: str | Path) -> None:
        root = Path(root)
        listing = root / "misc" / "test_file.txt"
        if not listing.is_file():
            raise DataError(f"{listing}: SimCol test list not found (data.root must be the SimCol root)")
        frames = []
        for line in (raw.strip().rstrip("/,") for raw in listing.read_text().splitlines()):
            if not line:
                continue
            folder = root / line
            if not folder.is_dir():
                raise DataError(f"{listing}: lists {line}, but {folder} is not a folder")
            for colour in sorted(folder.glob("FrameBuffer_*.png")):
                depth = colour.with_name(colour.name.replace("FrameBuffer_", "Depth_"))
                if depth.is_file():
                    frames.append((colour, depth, f"{line.replace('/', '_')}_{colour.stem[len('FrameBuffer_') :]}", [SIMCOL_CAPTION]))
        super().__init__(frames)

    def __getitem__(self, index: int) -> RGBDSample:
        colour, depth_path, name, captions = self.frames[index]
        image, depth = read_rgb(colour), read_simcol_depth(depth_path)
        if depth.shape != image.shape[:2]:
            raise DataError(
                f"{depth_path}: depth is {depth.shape[0]}x{depth.shape[1]} but {colour.name} is {image.shape[0]}x{image.shape[1]}"
            )
        return RGBDSample(image, depth, np.full(4, math.nan, np.float32), name, captions)


@register_dataset("c3vd", protocol="c3vd")
def c3vd_dataset(cfg: DataConfig, split: str) -> Dataset:
    """The release's fixed sequence split: test, or the training sequences (for "train"; "val" is
    its test sequences too, as the release validates on them)."""
    return C3VD(required_setting(cfg, "root"), "test" if split in ("test", "val") else "train")


@register_dataset("simcol", protocol="simcol")
def simcol_dataset(cfg: DataConfig, split: str) -> Dataset:
    if split != "test":
        raise DataError(f"SimCol is a zero-shot test set: it has no {split} split")
    return SimCol(required_setting(cfg, "root"))
