"""Split lists in the BTS / AdaBins / ZoeDepth format, and the fixed train/validation split.

One sample per line: ``<rgb path> <depth path or None> <focal length>``, paths relative to the
dataset root (NYU's training list writes them with a leading "/", which is still relative). The
list paths themselves (``data.train_list``, ``data.test_list``, ``data.val_split_dir``) are read
from ``data.root`` too when relative, so that one root places a list and what it lists. A list
name found nowhere under ``data.root`` that is the name of a list shipped in ``data/splits/`` (the
standard NYU and KITTI Eigen lists of BTS, see its README.md) reads the shipped one
(``shipped_list``). A list whose name ends in ``.gz`` is read through gzip.
"""

from __future__ import annotations

import gzip
import hashlib
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np

from ..config import DataConfig
from ..errors import ConfigError, DataError
from ..io.atomic import write_text_atomic

SHIPPED_LISTS = Path(__file__).parent / "splits"  # the standard lists (README.md there: sources, line counts)


@dataclass(frozen=True)
class SplitEntry:
    rgb: str  # relative to the dataset root
    depth: str | None  # None: no ground truth (e.g. 45 of KITTI's 697 Eigen test frames)
    focal: float | None
    line: int  # 1-based line in the list, for error messages

    def rgb_path(self, root: Path) -> Path:
        return root / self.rgb.lstrip("/")

    def depth_path(self, root: Path) -> Path | None:
        return None if self.depth is None else root / self.depth.lstrip("/")


def shipped_list(value: str | Path) -> Path | None:
    """The list shipped in ``data/splits/`` that a list setting names (a bare file name such as
    ``nyudepthv2_test_files_with_gt.txt``, shipped as is or gzipped), else None."""
    name = Path(value)
    if name.name != str(value) or name.name in ("", ".", ".."):
        return None
    return next((p for p in (SHIPPED_LISTS / name, SHIPPED_LISTS / f"{name}.gz") if p.is_file()), None)


def is_shipped(path: str | Path) -> bool:
    """Whether ``path`` is one of the lists shipped in ``data/splits/``."""
    return Path(path).parent.resolve() == SHIPPED_LISTS.resolve()


def list_bytes(path: str | Path) -> bytes:
    """The content of a split list, decompressed when its name ends in ``.gz`` (DataError if it is not gzip)."""
    path = Path(path)
    data = path.read_bytes()
    if path.suffix != ".gz":
        return data
    try:
        return gzip.decompress(data)
    except (OSError, EOFError) as exc:
        raise DataError(f"{path}: not a readable gzip file ({' '.join(str(exc).split())})") from None


def read_split_list(path: str | Path) -> list[SplitEntry]:
    """Parse a split list (gzipped when its name ends in ``.gz``); a malformed line, or a focal length
    that is not a finite number > 0 (pixels), is a DataError naming the file and line."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: split list not found")
    entries = []
    try:  # utf-8-sig drops a byte-order mark; splitlines() takes CRLF and LF alike
        text = list_bytes(path).decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise DataError(f"{path}: split list is not UTF-8 text ({exc.reason} at byte {exc.start})") from None
    for number, raw in enumerate(text.splitlines(), start=1):
        fields = raw.split()
        if not fields:
            continue
        if len(fields) not in (2, 3):
            raise DataError(f"{path}:{number}: expected 'rgb depth|None [focal]', got {raw.strip()!r}")
        try:
            focal = float(fields[2]) if len(fields) == 3 else None
        except ValueError:
            raise DataError(f"{path}:{number}: focal length {fields[2]!r} is not a number") from None
        if focal is not None and not (math.isfinite(focal) and focal > 0):
            raise DataError(
                f"{path}:{number}: focal length {fields[2]!r} is not a finite number > 0; give the "
                "camera's focal length in pixels (518.8579 for NYU's Kinect, as the BTS lists have it)"
            )
        depth = None if fields[1] == "None" else fields[1]
        entries.append(SplitEntry(fields[0], depth, focal, number))
    if not entries:
        raise DataError(f"{path}: split list is empty")
    return entries


def check_files(entries: list[SplitEntry], root: str | Path, list_path: str | Path) -> None:
    """One error naming the first missing file and how many are missing, before any work."""
    root = Path(root)
    if not root.is_dir():
        raise DataError(f"{root}: dataset root folder not found (given for {list_path})")
    missing = [p for e in entries for p in (e.rgb_path(root), e.depth_path(root)) if p is not None and not p.is_file()]
    if missing:
        raise DataError(
            f"{list_path}: {len(missing)} listed file(s) missing under {root}, first: {missing[0]} "
            "(is data.root the folder the list's paths are relative to?)",
            setting="data.root",
        )


def train_val_split(
    entries: list[SplitEntry], list_path: str | Path, out_dir: str | Path | None, val_fraction: float = 0.1, seed: int = 0
) -> tuple[list[SplitEntry], list[SplitEntry]]:
    """The fixed train/validation split of a training list (``held_out_split``), keyed by the list's
    content (decompressed), written in ``out_dir``, else beside the list; a shipped list
    (``shipped_list``) is never written beside: without ``out_dir`` its split is only computed."""
    list_path = Path(list_path)
    content = hashlib.sha256(list_bytes(list_path)).hexdigest()[:12]
    folder = Path(out_dir) if out_dir else None if is_shipped(list_path) else list_path.parent
    return held_out_split(entries, str(list_path), content, folder, val_fraction, seed, unit="lines")


def held_out_split(
    entries: list[SplitEntry],
    source: str,
    content: str,
    folder: Path | None,
    val_fraction: float = 0.1,
    seed: int = 0,
    unit: str = "frames",
) -> tuple[list[SplitEntry], list[SplitEntry]]:
    """The fixed train/validation split of ``entries``: made once, written, then reused.

    ``source`` is the path the entries come from (a list file, a folder; ``unit``: what its entries
    are, for messages); ``content`` is a hex digest of what they are. The permutation comes from
    numpy's PCG64 seeded by ``seed`` and ``content``, so the same entries give the same split on
    every machine; the two halves are written as split lists (paths relative to the dataset root)
    ``<source's stem>.<content>.val<fraction>.seed<seed>.{train,val}.txt`` in ``folder`` and read
    back on later runs (``folder`` None: computed, not written). ConfigError naming
    ``data.val_fraction`` (before anything is written) when either half would be empty.
    """
    n_val = int(round(val_fraction * len(entries)))
    if not 0 < n_val < len(entries):
        empty = "validation" if n_val == 0 else "training"
        raise ConfigError(
            f"{source}: data.val_fraction={val_fraction:g} of its {len(entries)} {unit} leaves no {empty} frame; "
            "change data.val_fraction, or set data.val_source=test_list to validate on data.test_list",
            setting="data.val_fraction",
        )
    stem = f"{Path(Path(source).name.removesuffix('.gz')).stem}.{content}.val{val_fraction:g}.seed{seed}"
    files = (folder / f"{stem}.train.txt", folder / f"{stem}.val.txt") if folder else None
    if files and all(f.is_file() for f in files):
        return read_split_list(files[0]), read_split_list(files[1])
    order = np.random.default_rng([seed, int(content, 16)]).permutation(len(entries))
    val_ids = set(order[:n_val].tolist())
    halves = [e for i, e in enumerate(entries) if i not in val_ids], [e for i, e in enumerate(entries) if i in val_ids]
    for path, half in zip(files or (), halves):
        write_text_atomic(path, "".join(f"{e.rgb} {e.depth or 'None'}{'' if e.focal is None else f' {e.focal!r}'}\n" for e in half))
    return (read_split_list(files[0]), read_split_list(files[1])) if files else halves


def required_setting(cfg: DataConfig, field: str) -> str:
    """A path setting of ``data`` that must be set and exist, else a ConfigError naming it."""
    value = getattr(cfg, field)
    if not value:
        raise ConfigError(f"data.{field} is not set; dataset {cfg.dataset!r} needs it", setting=f"data.{field}")
    if not Path(value).exists():
        raise ConfigError(f"data.{field}={value!r} does not exist")
    return value


def under_root(root: str | Path, value: str | Path) -> Path:
    """A path setting as the file it names: absolute as given, relative under ``root``."""
    return Path(value) if Path(value).is_absolute() else Path(root) / value


def list_file(cfg: DataConfig, field: str, why: str = "") -> Path:
    """The split list a ``data`` field names (``under_root``), which must exist; a name that is not
    there reads the shipped list of that name (``shipped_list``). ConfigError naming the field when
    it is unset (``why``: what needs it), missing, or missing under ``data.root`` while a file of that
    name is in the current folder: lists are never read from there, since the same setting must mean
    the same file from any folder."""
    root = required_setting(cfg, "root")
    value, setting = getattr(cfg, field), f"data.{field}"
    if not value:
        raise ConfigError(f"{setting} is not set; {why or f'dataset {cfg.dataset!r} needs it'}", setting=setting)
    path = under_root(root, value)
    if path.is_file():
        return path
    if not Path(value).is_absolute() and Path(value).is_file():
        raise ConfigError(
            f"{setting}={value!r}: not under data.root ({path} does not exist); split lists are read relative to "
            f"data.root, not the current folder: give the absolute path {Path(value).resolve()}",
            setting=setting,
        )
    shipped = shipped_list(value)
    if shipped is not None:
        return shipped
    raise ConfigError(
        f"{setting}={value!r}: {path} does not exist (a relative list path is read from data.root; shipped lists: "
        f"{', '.join(shipped_names())})",
        setting=setting,
    )


def shipped_names() -> list[str]:
    """The names that read a shipped list (``shipped_list``)."""
    return sorted(p.name.removesuffix(".gz") for p in SHIPPED_LISTS.glob("*.txt*"))


def listed_path(cfg: DataConfig, field: str) -> Path | None:
    """The file a list setting names, as ``list_file`` finds it, without checking that it exists
    (None when it or ``data.root`` is unset)."""
    value = getattr(cfg, field)
    if not (value and cfg.root):
        return None
    path = under_root(cfg.root, value)
    return path if path.is_file() else shipped_list(value) or path


ListReader = Callable[[Path, str], list[SplitEntry]]  # (list file, data.root) -> its entries


def _read_bts_list(path: Path, root: str) -> list[SplitEntry]:
    return read_split_list(path)


def split_entries(cfg: DataConfig, split: str, read: ListReader = _read_bts_list) -> tuple[str, list[SplitEntry], Path]:
    """(root, entries, list file) of ``split``, lists found by ``list_file`` and parsed by ``read``.

    "test": data.test_list. "train" and "val" follow ``data.val_source``: "held_out" splits
    data.train_list once into training frames and a data.val_fraction for validation
    (``train_val_split``); "test_list" trains on the whole data.train_list and validates on
    data.test_list, as the learned-prompts release (PromptLearningCLIP-MDE: its
    ``datasets/dataloader.py`` reads ``filenames_file_train`` whole and validates on
    ``filenames_file_eval``).
    """
    root = required_setting(cfg, "root")
    held_out = cfg.val_source == "held_out"
    if split == "test" or (split == "val" and not held_out):
        why = "data.val_source=test_list validates on it (or set data.val_source=held_out)" if split == "val" else ""
        test_list = list_file(cfg, "test_list", why)
        return root, read(test_list, root), test_list
    if split in ("train", "val"):
        train_list = list_file(cfg, "train_list")
        entries = read(train_list, root)
        if not held_out:
            return root, entries, train_list
        out_dir = under_root(root, cfg.val_split_dir) if cfg.val_split_dir else None
        train, val = train_val_split(entries, train_list, out_dir, cfg.val_fraction, cfg.seed)
        return root, (train if split == "train" else val), train_list
    raise ConfigError(f"unknown split {split!r}; choose train, val or test")
