"""Split lists in the BTS / AdaBins / ZoeDepth format, and the fixed train/validation split.

One sample per line: ``<rgb path> <depth path or None> <focal length>``, paths relative to the
dataset root (NYU's training list writes them with a leading "/", which is still relative).
"""
from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

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
    """Parse a split list; a malformed line is an error naming the file and line."""
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
            "(is data.root the folder the list's paths are relative to?)", setting="data.root",
        )


def train_val_split(
    entries: list[SplitEntry], list_path: str | Path, out_dir: str | Path | None, val_fraction: float = 0.1, seed: int = 0
) -> tuple[list[SplitEntry], list[SplitEntry]]:
    """The fixed train/validation split of a training list: made once, written, then reused.

    The permutation comes from numpy's PCG64 seeded by ``seed`` and the list's content hash, so the
    same list gives the same split on every machine; the two halves are written as split lists
    beside the original (or in ``out_dir``) and read back on later runs.
    """
    list_path = Path(list_path)
    content = hashlib.sha256(list_path.read_bytes()).hexdigest()[:12]
    folder = Path(out_dir) if out_dir else list_path.parent
    stem = f"{list_path.stem}.{content}.val{val_fraction:g}.seed{seed}"
    train_file, val_file = folder / f"{stem}.train.txt", folder / f"{stem}.val.txt"
    if not (train_file.is_file() and val_file.is_file()):
        rng = np.random.default_rng([seed, int(content, 16)])
        order = rng.permutation(len(entries))
        n_val = int(round(val_fraction * len(entries)))
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


def split_entries(cfg: DataConfig, split: str) -> tuple[str, list[SplitEntry], str]:
    """(root, entries, list path) of ``split``: test_list for "test", else the fixed 9:1 split of train_list."""
    root = required_setting(cfg, "root")
    if split == "test":
        return root, read_split_list(required_setting(cfg, "test_list")), cfg.test_list
    if split in ("train", "val"):
        train_list = required_setting(cfg, "train_list")
        train, val = train_val_split(read_split_list(train_list), train_list, cfg.val_split_dir, cfg.val_fraction, cfg.seed)
        return root, (train if split == "train" else val), train_list
    raise ConfigError(f"unknown split {split!r}; choose train, val or test")
