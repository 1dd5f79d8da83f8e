"""Atomic file output: a reader never sees a half-written file, a kill never leaves one in place.

Every output is written under a temporary name beside its target and renamed onto it when
complete, with the permissions a plain ``open`` would give under the process umask (0644 files,
0755 folders under umask 022; ``tempfile`` itself creates 0600 / 0700). Temporary names carry the
host and process that made them (``.<name>.<host>-<pid>.<random>.tmp<suffix>``), so that
``clean_stale`` can delete what a killed process left, and only that, when a later run writes
into the same folder.
"""
from __future__ import annotations

import contextlib
import os
import re
import shutil
import socket
import threading
import tempfile
from pathlib import Path
from typing import Iterator

from ..errors import DataError

# A temporary made by this module: the target name, host, pid, a random part, ".tmp", the suffix.
_TEMP = re.compile(r"^\.(?P<name>.+)\.(?P<host>[^.]+)-(?P<pid>\d+)\.[^.]+\.tmp(\.[^.]+)?$")
_OLD = re.compile(r"^\.(?P<name>.+)\.old$")


_UMASK_LOCK = threading.Lock()


def _umask() -> int:
    # Reading the umask means setting it: without the lock, two threads writing at once (predict
    # writes on a thread pool) could interleave, one reading the other's momentary 0 and leaving it
    # set. Every file made here is chmod-ed from the value read, so a momentary 0 changes none.
    with _UMASK_LOCK:
        mask = os.umask(0)
        os.umask(mask)
    return mask


def _host() -> str:
    return re.sub(r"[^A-Za-z0-9_]", "_", socket.gethostname()) or "host"


def _tag(name: str) -> str:
    return f".{name}.{_host()}-{os.getpid()}."


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; on success it is renamed onto ``path``.

    The temporary keeps the target's suffix so writers that infer the format from it
    (Pillow, numpy, matplotlib) behave as for the real name.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=_tag(path.name), suffix=f".tmp{path.suffix}", dir=path.parent)
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        os.chmod(tmp_path, 0o666 & ~_umask())
        os.replace(tmp_path, path)
    finally:
        tmp_path.unlink(missing_ok=True)


@contextlib.contextmanager
def atomic_dir(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary folder beside ``path``; on success it replaces ``path`` as a whole.

    A kill between the two renames of a replacement leaves the previous folder as
    ``.<name>.old``; ``clean_stale`` puts it back.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=_tag(path.name), suffix=".tmp", dir=path.parent))
    try:
        yield tmp
        # Libraries that write into the folder may create 0600 files themselves (safetensors does).
        mask = _umask()
        for directory, _, files in os.walk(tmp):
            os.chmod(directory, 0o777 & ~mask)
            for name in files:
                os.chmod(os.path.join(directory, name), 0o666 & ~mask)
        if path.exists():
            old = path.with_name(f".{path.name}.old")
            shutil.rmtree(old, ignore_errors=True)
            os.replace(path, old)
            os.replace(tmp, path)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, path)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def write_text_atomic(path: str | os.PathLike, text: str) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(text)


def refuse_existing(paths: list[Path], overwrite: bool) -> None:
    """An earlier run's results are never replaced silently: DataError naming the first of
    ``paths`` that exists (setting ``overwrite``), unless ``overwrite``."""
    if overwrite:
        return
    existing = next((p for p in map(Path, paths) if p.exists()), None)
    if existing is not None:
        raise DataError(f"{existing}: exists (an earlier run's); write elsewhere, or allow overwriting it", setting="overwrite")


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's live process
        return True
    return True


def clean_stale(folder: str | os.PathLike) -> int:
    """Remove the temporaries that processes of this host which are no longer running left under
    ``folder`` (recursively), and put back a ``.<name>.old`` folder whose replacement was cut
    short. Returns how many entries were removed or restored. A missing folder is fine."""
    folder = Path(folder)
    if not folder.is_dir():
        return 0
    host, count = _host(), 0
    for directory, subdirs, files in os.walk(folder):
        for name in [*subdirs, *files]:
            entry = Path(directory) / name
            temp = _TEMP.match(name)
            if temp and temp["host"] == host and not _alive(int(temp["pid"])):
                if entry.is_dir():
                    shutil.rmtree(entry, ignore_errors=True)
                else:
                    entry.unlink(missing_ok=True)
                count += 1
            old = _OLD.match(name)
            if old and entry.is_dir():
                target = entry.with_name(old["name"])
                if target.exists():
                    shutil.rmtree(entry, ignore_errors=True)
                else:
                    os.replace(entry, target)
                count += 1
        subdirs[:] = [d for d in subdirs if (Path(directory) / d).is_dir()]
    return count


def is_temporary(name: str) -> bool:
    """Whether a file or folder name is one of this module's temporaries or a ``.old`` folder."""
    return bool(_TEMP.match(name) or _OLD.match(name))
