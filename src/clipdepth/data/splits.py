"""Split lists in the BTS / AdaBins / ZoeDepth format, and the fixed train/validation split.

One sample per line: ``<rgb path> <depth path or None> <focal length>``, paths relative to the
dataset root (NYU's training list writes them with a leading "/", which is still relative). The
list paths themselves (``data.train_list``, ``data.test_list``, ``data.val_split_dir``) are read
from ``data.root`` too when relative, so that one root places a list and what it lists.
"""

from __future__ import annotations

import hashlib
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np

from ..config import DataConfig
from ..errors import ConfigError, DataError
from ..io.atomic import write_text_atomic


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


def read_split_list(path: str | Path) -> list[SplitEntry]:
    """Parse a split list; a malformed line, or a focal length that is not a finite number > 0
    (pixels), is a DataError naming the file and line."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: split list not found")
    entries = []
    try:  # utf-8-sig drops a byte-order mark; splitlines() takes CRLF and LF alike
        text = path.read_text(encoding="utf-8-sig")
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
    """The fixed train/validation split of a training list: made once, written, then reused.

    The permutation comes from numpy's PCG64 seeded by ``seed`` and the list's content hash, so the
    same list gives the same split on every machine; the two halves are written as split lists
    beside the original (or in ``out_dir``) and read back on later runs. ConfigError naming
    ``data.val_fraction`` (before anything is written) when either half would be empty.
    """
    list_path = Path(list_path)
    content = hashlib.sha256(list_path.read_bytes()).hexdigest()[:12]
    n_val = int(round(val_fraction * len(entries)))
    if not 0 < n_val < len(entries):
        empty = "validation" if n_val == 0 else "training"
        raise ConfigError(
            f"{list_path}: data.val_fraction={val_fraction:g} of its {len(entries)} lines leaves no {empty} frame; "
            "change data.val_fraction, or set data.val_source=test_list to validate on data.test_list",
            setting="data.val_fraction",
        )
    folder = Path(out_dir) if out_dir else list_path.parent
    stem = f"{list_path.stem}.{content}.val{val_fraction:g}.seed{seed}"
    train_file, val_file = folder / f"{stem}.train.txt", folder / f"{stem}.val.txt"
    if not (train_file.is_file() and val_file.is_file()):
        rng = np.random.default_rng([seed, int(content, 16)])
        order = rng.permutation(len(entries))
        val_ids = set(order[:n_val].tolist())

        def lines(keep_val: bool) -> str:
            chosen = [e for i, e in enumerate(entries) if (i in val_ids) == keep_val]
            return "".join(f"{e.rgb} {e.depth or 'None'}{'' if e.focal is None else f' {e.focal!r}'}\n" for e in chosen)

        write_text_atomic(train_file, lines(False))
        write_text_atomic(val_file, lines(True))
    return read_split_list(train_file), read_split_list(val_file)


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
    """The split list a ``data`` field names (``under_root``), which must exist. ConfigError naming
    the field when it is unset (``why``: what needs it), missing, or missing under ``data.root``
    while a file of that name is in the current folder: lists are never read from there, since the
    same setting must mean the same file from any folder."""
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
    raise ConfigError(f"{setting}={value!r}: {path} does not exist (a relative list path is read from data.root)", setting=setting)


def listed_path(cfg: DataConfig, field: str) -> Path | None:
    """``under_root`` of a list setting without checking it (None when it or ``data.root`` is unset)."""
    value = getattr(cfg, field)
    return under_root(cfg.root, value) if value and cfg.root else None


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
