"""Checks, before any work, that an output folder or file can be written where it is asked for."""

from __future__ import annotations

import os
from pathlib import Path

from ..errors import DataError


def _read_only(folder: Path) -> bool:
    """Whether ``folder`` is on a file system mounted read-only (where nobody, root included, may write)."""
    try:
        return bool(os.statvfs(folder).f_flag & os.ST_RDONLY)
    except (OSError, AttributeError):  # AttributeError: no statvfs (Windows)
        return False


def _writable_ancestor(path: Path) -> Path:
    """The nearest existing folder at or above ``path``; DataError unless this process may write in it
    (a read-only file system named as such, not as a permission)."""
    probe = path
    while not probe.exists():
        if probe.parent == probe:
            break
        probe = probe.parent
    if probe.exists() and not probe.is_dir():
        raise DataError(f"{path}: {probe} is a file, so the folder cannot be made")
    if _read_only(probe):
        raise DataError(f"{path}: cannot write there ({probe} is on a read-only file system); write elsewhere")
    if not os.access(probe, os.W_OK | os.X_OK):
        raise DataError(f"{path}: cannot write there (no write permission on {probe})")
    return probe


def output_folder(path: str | os.PathLike, flag: str = "--out") -> Path:
    """Check, before any work, that ``path`` is a folder that exists or can be made and written."""
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise DataError(f"{path}: exists and is not a folder ({flag} takes a folder)")
    _writable_ancestor(path)
    return path


def output_file(path: str | os.PathLike, flag: str) -> Path:
    """Check, before any work, that ``path`` can be written as a file."""
    path = Path(path)
    if path.is_dir():
        raise DataError(f"{path}: is a folder ({flag} takes a file name)")
    _writable_ancestor(path.parent)
    return path
