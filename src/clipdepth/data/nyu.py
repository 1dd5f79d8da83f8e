"""NYU Depth V2: the BTS "sync" layout loader and the converter from the official labeled .mat.

The loader reads split lists in the BTS format (RGB .jpg/.png and a 16-bit depth PNG in
millimetres per line, paths relative to ``data.root``). ``prepare_nyu_mat`` turns the official
``nyu_depth_v2_labeled.mat`` and ``splits.mat`` into that layout: the 795 training and 654 test
images of the official split (docs/protocol.md, "Splits").
"""

from __future__ import annotations

import os
from pathlib import Path

import h5py
import numpy as np
from PIL import Image
from torch.utils.data import Dataset
from tqdm import tqdm

from ..config import DataConfig
from ..errors import DataError
from ..io.atomic import atomic_path, clean_stale, write_text_atomic
from ..io.depth_io import read_depth, read_rgb, write_depth_png
from ..io.fingerprint import RECORD_FOLDER, Made, file_digest, read_record, write_record
from . import register_dataset
from .splits import SplitEntry, check_files, split_entries
from .sample import RGBDSample

__all__ = ["NYU_DEPTH_SCALE", "NYU_INTRINSICS", "NYUDepthV2", "prepare_nyu_mat", "read_nyu_splits"]

NYU_INTRINSICS = (518.8579, 519.46961, 325.58245, 253.73617)  # fx, fy, cx, cy at 480 x 640
NYU_DEPTH_SCALE = 1000.0  # depth PNG value / 1000 = metres
SPLIT_KEYS = {"train": "trainNdxs", "test": "testNdxs"}


class NYUDepthV2(Dataset):
    """Samples of a BTS-format NYU split list; ``name`` is the relative path as one stem.

    Lines whose depth is ``None`` are counted (``n_without_gt``), not yielded, as every reader does.
    """

    def __init__(self, root: str | os.PathLike, entries: list[SplitEntry], name_prefix: str = "") -> None:
        self.root = Path(root)
        self.n_listed = len(entries)
        self.entries = [e for e in entries if e.depth is not None]
        self.n_without_gt = self.n_listed - len(self.entries)
        self.name_prefix = name_prefix

    def __len__(self) -> int:
        return len(self.entries)

    def intrinsics(self, entry: SplitEntry) -> np.ndarray:
        fx, fy, cx, cy = NYU_INTRINSICS
        if entry.focal is not None:
            # A list gives one focal length; keep NYU's fy/fx ratio and principal point.
            fx, fy = entry.focal, entry.focal * fy / fx
        return np.array([fx, fy, cx, cy], dtype=np.float32)

    @property
    def names(self) -> list[str]:
        """Frame names without decoding any file (cache keys use them)."""
        return [self.name(e) for e in self.entries]

    def name(self, entry: SplitEntry) -> str:
        # Scenes reuse frame numbers ("bathroom/rgb_00045", "kitchen/rgb_00045"): keep the folders.
        stem = Path(entry.rgb.lstrip("/")).with_suffix("")
        return self.name_prefix + "_".join(stem.parts)

    def files(self, index: int) -> list[Path]:
        """The files frame ``index`` is read from (the feature cache keys on their size and time)."""
        entry = self.entries[index]
        return [entry.rgb_path(self.root), entry.depth_path(self.root)]

    def __getitem__(self, index: int) -> RGBDSample:
        entry = self.entries[index]
        image = read_rgb(entry.rgb_path(self.root))
        depth_path = entry.depth_path(self.root)
        depth = read_depth(depth_path, NYU_DEPTH_SCALE)
        if depth.shape != image.shape[:2]:
            raise DataError(f"{depth_path}: depth is {depth.shape} but its image is {image.shape[:2]}")
        return RGBDSample(image, depth, self.intrinsics(entry), self.name(entry))


@register_dataset("nyu", protocol="nyu")
def nyu_dataset(cfg: DataConfig, split: str) -> Dataset:
    root, entries, list_path = split_entries(cfg, split)
    check_files(entries, root, list_path)
    return NYUDepthV2(root, entries)


# --------------------------------------------------------------------------- official .mat files


def _require_file(path: Path, what: str) -> None:
    if not path.is_file():
        raise DataError(f"{path}: {what} not found")


def _as_indices(values: np.ndarray, path: Path, key: str) -> np.ndarray:
    values = np.asarray(values).ravel()  # MATLAB column (N, 1); h5py sees it as (1, N)
    if values.size == 0 or not np.issubdtype(values.dtype, np.number) or np.any(values != np.round(values)):
        raise DataError(f"{path}: {key} must be a non-empty list of integer (1-based) frame indices")
    return values.astype(np.int64)


def read_nyu_splits(path: str | os.PathLike) -> dict[str, np.ndarray]:
    """1-based frame indices {"train": ..., "test": ...} from the official splits.mat.

    The official file is MATLAB v5 and needs scipy; an HDF5 (v7.3) copy is read with h5py.
    """
    path = Path(path)
    _require_file(path, "splits file")
    if h5py.is_hdf5(path):
        with h5py.File(path, "r") as handle:
            arrays = {key: handle[key][()] for key in SPLIT_KEYS.values() if key in handle}
    else:
        with open(path, "rb") as handle:
            if not handle.read(6) == b"MATLAB":
                raise DataError(f"{path}: not a MATLAB .mat file; expected the official NYU splits.mat")
        try:
            import scipy.io
        except ImportError:
            raise DataError(f"{path}: a MATLAB v5 splits.mat needs scipy (pip install scipy), or save it as v7.3/HDF5") from None
        try:
            arrays = scipy.io.loadmat(path, variable_names=list(SPLIT_KEYS.values()))
        except (ValueError, OSError, scipy.io.matlab.MatReadError) as exc:
            raise DataError(f"{path}: not a readable .mat file ({' '.join(str(exc).split())})") from None
    missing = [key for key in SPLIT_KEYS.values() if key not in arrays]
    if missing:
        raise DataError(f"{path}: lacks {', '.join(missing)}; expected the official NYU splits.mat")
    return {split: _as_indices(arrays[key], path, key) for split, key in SPLIT_KEYS.items()}


def _open_labeled_mat(path: Path) -> h5py.File:
    _require_file(path, "labeled .mat file")
    if not h5py.is_hdf5(path):
        raise DataError(f"{path}: not an HDF5 (MATLAB v7.3) file; expected nyu_depth_v2_labeled.mat")
    try:
        handle = h5py.File(path, "r")
    except OSError as exc:
        raise DataError(f"{path}: not a readable HDF5 file ({' '.join(str(exc).split())})") from None
    try:
        missing = [key for key in ("images", "depths") if not isinstance(handle.get(key), h5py.Dataset)]
        if missing:
            raise DataError(f"{path}: lacks {' and '.join(missing)}; expected nyu_depth_v2_labeled.mat")
        images, depths = handle["images"], handle["depths"]
        # h5py sees MATLAB arrays transposed: images (N, 3, W, H), depths (N, W, H).
        shapes_match = images.ndim == 4 and images.shape[1] == 3 and depths.shape == (images.shape[0], *images.shape[2:])
        if not shapes_match or images.dtype != np.uint8:
            raise DataError(
                f"{path}: images {images.shape} {images.dtype} and depths {depths.shape} are not (N, 3, W, H) uint8 and (N, W, H)"
            )
    except BaseException:
        handle.close()
        raise
    return handle


def _frame_paths(split: str, index: int) -> tuple[str, str]:
    """The (rgb, depth) paths of a frame relative to the output folder, as its split list writes them."""
    return f"/{split}/rgb_{index:05d}.png", f"/{split}/sync_depth_{index:05d}.png"


def _read_frame(images: h5py.Dataset, depths: h5py.Dataset, index: int, mat_path: Path) -> tuple[np.ndarray, np.ndarray]:
    """Frame ``index`` (1-based) as (H, W, 3) uint8 RGB and (H, W) metres."""
    try:
        return images[index - 1].transpose(2, 1, 0), depths[index - 1].T
    except OSError as exc:  # a truncated or corrupt .mat fails only when the frame is read
        raise DataError(f"{mat_path}: frame {index} is unreadable ({' '.join(str(exc).split())})") from None


def prepare_nyu_mat(
    mat_path: str | os.PathLike, splits_path: str | os.PathLike, out_dir: str | os.PathLike, progress: bool = True
) -> dict[str, Path]:
    """Write the official split as ``out_dir/{train,test}/rgb_XXXXX.png`` + ``sync_depth_XXXXX.png``.

    XXXXX is the 1-based frame index of the .mat. Resumable: every file is written atomically, so
    an existing one is complete and is kept; the split lists ``nyu_{train,test}.txt`` are written
    last, so their presence means the conversion finished. Which .mat and splits file (their
    content's digest) the frames are converted from is recorded in ``out_dir/.clipdepth/nyu.json``
    first: the frames of other files' content (a .mat rewritten in place, or another one) are
    removed and converted again, never kept. Returns the split list per split.
    """
    mat_path, out_dir = Path(mat_path), Path(out_dir)
    clean_stale(out_dir)  # what a killed run left half-written
    with _open_labeled_mat(mat_path) as handle:
        images, depths = handle["images"], handle["depths"]
        split_indices = read_nyu_splits(splits_path)
        for split, indices in split_indices.items():
            bad = indices[(indices < 1) | (indices > len(images))]
            if bad.size:
                raise DataError(f"{splits_path}: {SPLIT_KEYS[split]} index {bad[0]} is outside 1..{len(images)} of {mat_path}")
        frames = [(split, int(index)) for split, indices in split_indices.items() for index in indices]
        made = Made(
            str(mat_path.resolve()), {"mat": file_digest(mat_path), "splits": file_digest(splits_path)}, {"depth_scale": NYU_DEPTH_SCALE}
        )
        record = out_dir / RECORD_FOLDER / "nyu.json"
        earlier = read_record(record)
        if earlier is not None and made.compare(earlier) != "same":  # removed before the new record: also after a kill
            for split, index in frames:
                for relative in _frame_paths(split, index):
                    (out_dir / relative.lstrip("/")).unlink(missing_ok=True)
            for split in split_indices:
                (out_dir / f"nyu_{split}.txt").unlink(missing_ok=True)
        if earlier != made:
            write_record(record, made)
        for split, index in tqdm(frames, desc="NYU frames", unit="frame", disable=not progress):
            rgb_path, depth_path = (out_dir / relative.lstrip("/") for relative in _frame_paths(split, index))
            if rgb_path.is_file() and depth_path.is_file():
                continue  # written by an earlier, interrupted run; atomic writes make it complete
            image, depth = _read_frame(images, depths, index, mat_path)
            if not rgb_path.is_file():
                with atomic_path(rgb_path) as tmp:
                    Image.fromarray(image).save(tmp, format="PNG")
            if not depth_path.is_file():
                write_depth_png(depth_path, depth, NYU_DEPTH_SCALE)
    lists = {}
    for split, indices in split_indices.items():
        lists[split] = out_dir / f"nyu_{split}.txt"
        paths = (_frame_paths(split, int(index)) for index in indices)
        write_text_atomic(lists[split], "".join(f"{rgb} {depth} {NYU_INTRINSICS[0]}\n" for rgb, depth in paths))
    return lists
