"""Atomic file output: a reader never sees a half-written file, a kill never leaves one in place,
and a failed write is one line naming the file.

Every output is written under a temporary name beside its target and renamed onto it when
complete, with the permissions a plain ``open`` would give under the process umask (0644 files,
0755 folders under umask 022; ``tempfile`` itself creates 0600 / 0700). Temporary names carry the
host and process that made them (``.<name>.<host>-<pid>.<unique>.tmp<suffix>``), so that
``clean_stale`` can delete what a killed process left, and only that, when a later run writes
into the same folder. ``<name>`` is cut short where the whole would exceed the file system's
limit on a name (255 bytes on most), so that every name a file may have can be written.

Folders (``atomic_dir``) are written whole into a temporary folder first. A new folder is that
folder renamed into place. An existing folder may hold the user's own files beside clipdepth's
(notes beside a checkpoint), so it is never replaced as a whole: only the entries clipdepth wrote
there are. ``.clipdepth/written.json`` in the folder lists them; an entry of the new content that
exists but is not listed is someone else's, and the write is refused (DataError naming it) before
anything changes. The swap, under a lock (``.clipdepth/.written.json.lock``, so that two writers
and a recovery take turns):

1. the complete new content, with its own list, is renamed to ``.clipdepth/swap`` (with
   ``replaces.json``: the previous entries it removes): from here on the new content wins;
2. each previous entry is moved into ``.clipdepth/old``, then each new one out of the swap folder
   into place, then the new list onto ``written.json``;
3. the swap folder is renamed to a temporary name and removed, then ``.clipdepth/old``.

All of the previous entries leave before any new one arrives, so the folder never holds a mix of
two writes' files (a reader in between finds some missing). A kill at any point leaves either no
swap folder (the previous content is intact; the temporary is removed by ``clean_stale``) or one
from which ``recover`` (run by ``clean_stale`` and by readers) finishes steps 2 and 3: an entry of
the previous list still in place is moved out when its new one is still in the swap folder or the
new content has none. Only listed entries and ``.clipdepth`` itself are ever moved or removed.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import json
import os
import itertools
import re
import secrets
import shutil
import socket
import threading
import tempfile
from pathlib import Path
from typing import Callable, Iterator

from safetensors import SafetensorError

from ..errors import ClipdepthError, DataError

# A temporary made by this module: the target name (or its start), host, pid, a random part, ".tmp", the suffix.
_TEMP = re.compile(r"^\.(?P<name>.+)\.(?P<host>[^.]+)-(?P<pid>\d+)\.[^.]+\.tmp(\.[^.]+)?$")
RANDOM_CHARS = 8  # the random part: tempfile's (and secrets.token_hex(4) for a swap folder's, a count for a file's)
_TEMPORARIES = itertools.count()  # atomic_path's files: unique in this process, whose host and pid their names carry
NAME_MAX = 255  # bytes in a file name where the file system does not say (ext4, XFS, btrfs, tmpfs)
META = ".clipdepth"  # in each folder atomic_dir writes: what clipdepth keeps about it
MANIFEST = "written.json"  # in META: the names of the entries clipdepth wrote there
SWAP, OLD = "swap", "old"  # in META while a swap is under way: the new content, the entries it replaced
REPLACES = "replaces.json"  # in SWAP's META: the entries of the previous list the swap removes
# What writers raise when a write fails: OSError (numpy's "N requested and M written", Pillow's,
# PyAV's), safetensors' SafetensorError, torch.save's RuntimeError from its zip writer, which names
# its source file ("PytorchStreamWriter failed writing file ...", "unexpected pos 704 vs 598").
WRITE_ERRORS = (OSError, SafetensorError, RuntimeError)
TORCH_WRITER = "inline_container.cc"
FULL_ERRNOS = {errno.ENOSPC: "no space left on device", errno.EDQUOT: "disk quota exceeded"}
# A write that failed without an errno (numpy's, safetensors') with less than this left on the
# disk failed for lack of space.
FULL_BELOW_BYTES = 1 << 20


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


def _name_max(folder: str | os.PathLike | None) -> int:
    """The longest file name, in bytes, that ``folder``'s file system takes (``NAME_MAX`` where it does not say)."""
    try:
        return os.pathconf(folder, "PC_NAME_MAX") if folder is not None else NAME_MAX
    except (OSError, ValueError):
        return NAME_MAX


def temporary_prefix(name: str, suffix: str = ".tmp", folder: str | os.PathLike | None = None) -> str:
    """How a temporary for ``name`` made by this process begins: what ``clean_stale`` recognises
    (once this process is gone) and removes. The temporary is this prefix, ``RANDOM_CHARS`` random
    characters and ``suffix``; ``name`` is cut short (a character at a time, so never inside one)
    where the whole would be longer than the file system of ``folder`` takes, host and pid kept."""
    tail = f".{_host()}-{os.getpid()}."
    room = _name_max(folder) - len(os.fsencode(f".{tail}{suffix}")) - RANDOM_CHARS
    while len(name) > 1 and len(os.fsencode(name)) > room:
        name = name[:-1]
    return f".{name}{tail}"


def _within(name: str | os.PathLike, folder: str | os.PathLike) -> bool:
    return Path(os.path.abspath(name)).is_relative_to(os.path.abspath(folder))


def _free_bytes(folder: Path) -> int | None:
    """Bytes free to this user on the disk of ``folder`` (or of its nearest existing parent)."""
    folder = Path(os.path.abspath(folder))
    while not folder.exists() and folder != folder.parent:
        folder = folder.parent
    try:
        return shutil.disk_usage(folder).free
    except OSError:
        return None


def _named(name: Path, target: Path, temporary: Path | None) -> Path | None:
    """The file a write of ``target`` that failed on the (absolute) ``name`` is reported for: a file
    of a folder's by its final name, else ``target`` itself; None when ``name`` is about another file."""
    if temporary is not None and _within(name, temporary):
        return target / name.relative_to(os.path.abspath(temporary))
    if _within(name, target):  # a folder's entry or what this module keeps there
        inside = name.relative_to(os.path.abspath(target))
        return target if any(is_temporary(part) for part in inside.parts) else target / inside
    beside = name.parent == Path(os.path.abspath(target.parent)) and _TEMP.match(name.name)
    return target if beside or _within(target, name) else None  # its temporary, or a folder it is made in


def disk_full(exc: BaseException, folder: str | os.PathLike) -> str | None:
    """The cause ("no space left on device", "disk quota exceeded") when ``exc``, raised writing
    into ``folder``, failed for a full disk: by its errno or message, or, for an error without an
    errno (numpy's, safetensors'), by less than ``FULL_BELOW_BYTES`` left there; else None."""
    if isinstance(exc, ClipdepthError):  # an OSError without an errno, that says its own cause
        return None
    code = getattr(exc, "errno", None)
    free = _free_bytes(Path(folder)) if code is None else None
    if code in FULL_ERRNOS or "No space left on device" in str(exc) or (free is not None and free < FULL_BELOW_BYTES):
        return FULL_ERRNOS.get(code, FULL_ERRNOS[errno.ENOSPC])
    return None


def _failure(exc: BaseException, target: Path, temporary: Path | None) -> DataError | None:
    """A failed write of ``target`` (through the file or folder ``temporary``) as one line: the
    file, the cause (a full disk named as such) and what to do. None for an error that is not about
    writing it (an OSError naming another file, such as an input read on the way; a RuntimeError
    that is not torch.save's; clipdepth's own, already one line), which is raised as it is."""
    if isinstance(exc, ClipdepthError) or isinstance(exc, RuntimeError) and TORCH_WRITER not in str(exc):
        return None
    named = target
    if isinstance(exc, OSError) and exc.filename is not None:
        named = _named(Path(os.path.abspath(exc.filename)), target, temporary)
        if named is None:
            return None
    if (cause := disk_full(exc, target.parent)) is not None:
        return DataError(f"{named}: cannot write it: {cause}; free some space there, or write elsewhere")
    cause = (exc.strerror if isinstance(exc, OSError) and exc.strerror else None) or (
        str(exc).strip().splitlines() or [type(exc).__name__]
    )[0]
    return DataError(f"{named}: cannot write it: {cause}; write elsewhere")


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; on success it is renamed onto ``path``.

    The temporary keeps the target's suffix so writers that infer the format from it
    (Pillow, numpy, matplotlib) behave as for the real name. A write that fails (``WRITE_ERRORS``)
    is a DataError naming ``path`` and the cause ("no space left on device" for a full disk); the
    temporary is removed.
    """
    path = Path(path)
    tmp_path = None
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        suffix = f".tmp{path.suffix}"
        # A name no other writer takes (host, pid, this process's count), left for the writer to create: a file
        # made first (mkstemp) and truncated by the writer's open is flushed to disk when closed (ext4's
        # auto_da_alloc), which cost a 1 MB PNG 0.3 ms there and made its removal 4x slower.
        tmp_path = path.parent / f"{temporary_prefix(path.name, suffix, path.parent)}{next(_TEMPORARIES):0{RANDOM_CHARS}x}{suffix}"
        yield tmp_path
        os.chmod(tmp_path, 0o666 & ~_umask())
        os.replace(tmp_path, path)
        tmp_path = None  # renamed: nothing left to remove
    except WRITE_ERRORS as exc:
        if (error := _failure(exc, path, tmp_path)) is None:
            raise
        raise error from None
    finally:
        if tmp_path is not None:
            tmp_path.unlink(missing_ok=True)


@contextlib.contextmanager
def atomic_dir(path: str | os.PathLike, legacy: Callable[[Path], bool] | None = None) -> Iterator[Path]:
    """Yield an empty temporary folder; on success its entries become ``path``'s (see the module's
    doc): a new folder appears whole, an existing one gets the new entries in place of those
    clipdepth wrote there before, and keeps every other entry.

    DataError, with nothing changed, when an entry of the new content exists in ``path`` and was
    not written there by clipdepth, or when ``path`` is a file; a write that fails is a DataError
    naming the file and the cause, as in ``atomic_path``. ``legacy`` tells whether an existing folder
    without a list was written whole by an earlier clipdepth (which kept none); without it, such a
    folder counts as clipdepth's when it holds nothing but names the new content has.
    """
    path = Path(path)
    tmp = None
    try:
        if path.exists() and not path.is_dir():
            raise DataError(f"{path}: exists and is not a folder; move it, or write elsewhere")
        path.parent.mkdir(parents=True, exist_ok=True)
        # Inside a folder that exists: the renames stay within it, also where it is a mount point.
        into = path if path.is_dir() else path.parent
        tmp = Path(tempfile.mkdtemp(prefix=temporary_prefix(path.name, folder=into), suffix=".tmp", dir=into))
        yield tmp
        names = _seal(tmp)
        if not os.path.lexists(path):
            try:
                os.replace(tmp, path)
                return
            except OSError as exc:  # made meanwhile by another writer: swapped into as any existing folder
                if exc.errno not in (errno.ENOTEMPTY, errno.EEXIST):
                    raise
        recover(path)  # a swap a killed process left, first
        _owned(path, names, legacy)  # a refusal makes nothing, not even the lock
        with locked(path / META / MANIFEST):
            _finish_swap(path)  # one killed since
            previous = _owned(path, names, legacy)
            (tmp / META / REPLACES).write_text(json.dumps(sorted(previous)))
            os.replace(tmp, path / META / SWAP)
            _finish_swap(path)
    except WRITE_ERRORS as exc:
        if (error := _failure(exc, path, tmp)) is None:
            raise
        raise error from None
    finally:
        if tmp is not None:
            shutil.rmtree(tmp, ignore_errors=True)


def _seal(folder: Path) -> list[str]:
    """Give a finished temporary folder its list of entries and the umask's permissions; its entries' names."""
    shutil.rmtree(folder / META, ignore_errors=True)  # a copied folder's list is not this one's
    names = sorted(os.listdir(folder))
    (folder / META).mkdir()
    (folder / META / MANIFEST).write_text(json.dumps(names, indent=1) + "\n")
    # Libraries that write into the folder may create 0600 files themselves (safetensors does).
    mask = _umask()
    for directory, _, files in os.walk(folder):
        os.chmod(directory, 0o777 & ~mask)
        for name in files:
            os.chmod(os.path.join(directory, name), 0o666 & ~mask)
    return names


def _listed(path: Path) -> list[str]:
    """The names a list file of this module holds; none when it is unreadable."""
    try:
        names = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
        return []
    return [n for n in names if isinstance(n, str) and n and "/" not in n and n not in (".", "..", META)] if isinstance(names, list) else []


def _owned(folder: Path, names: list[str], legacy: Callable[[Path], bool] | None) -> set[str]:
    """The entries of ``folder`` clipdepth wrote; DataError naming the first entry of ``names``
    that exists there and is not one of them."""
    present = {n for n in os.listdir(folder) if n != META and not _TEMP.match(n)}
    if (folder / META / MANIFEST).is_file():
        owned = set(_listed(folder / META / MANIFEST)) & present
    elif legacy(folder) if legacy is not None else present <= set(names):
        owned = present & set(names)
    else:
        owned = set()
    foreign = sorted(present & set(names) - owned)
    if foreign:
        raise DataError(f"{folder / foreign[0]}: exists and was not written there by clipdepth; move it, or write elsewhere")
    return owned


def _finish_swap(folder: Path) -> bool:
    """Steps 2 and 3 of a swap (the module's doc) in ``folder``, from wherever they stopped;
    whether there was one. The caller holds the folder's lock."""
    meta = folder / META
    swap, old = meta / SWAP, meta / OLD
    if os.path.lexists(swap):
        staged = swap / META / MANIFEST
        if staged.exists():  # entries still to move
            new = set(_listed(staged))
            old.mkdir(exist_ok=True)
            for name in _listed(swap / META / REPLACES):
                # still the previous entry: its new one is still in the swap folder, or there is none
                if os.path.lexists(folder / name) and (name not in new or os.path.lexists(swap / name)):
                    os.replace(folder / name, old / name)
            for name in sorted(new):
                if not os.path.lexists(swap / name):
                    continue  # moved before the kill
                if os.path.lexists(folder / name):  # made by someone else since the swap began
                    raise DataError(
                        f"{folder / name}: exists and was not written there by clipdepth; move it, "
                        "and run again to finish writing this folder"
                    )
                os.replace(swap / name, folder / name)
            os.replace(staged, meta / MANIFEST)
        retired = meta / f"{temporary_prefix(SWAP)}{secrets.token_hex(4)}.tmp"
        os.replace(swap, retired)
        shutil.rmtree(retired, ignore_errors=True)
    elif not os.path.lexists(old):
        return False
    shutil.rmtree(old, ignore_errors=True)
    return True


def recover(folder: str | os.PathLike) -> int:
    """Finish a swap of ``atomic_dir`` that a killed process left in ``folder`` (not recursive),
    so that it holds the new content; 1 when there was one, else 0. Waits for a swap under way in
    another process. Cheap when there is none (readers call it before reading a folder)."""
    folder = Path(folder)
    if not (os.path.lexists(folder / META / SWAP) or os.path.lexists(folder / META / OLD)):
        return 0
    with locked(folder / META / MANIFEST):
        return int(_finish_swap(folder))


def written(folder: str | os.PathLike) -> list[str]:
    """The entries of the ``atomic_dir`` folder ``folder`` that clipdepth wrote (its list; none
    without one), whether or not they are still there."""
    return _listed(Path(folder) / META / MANIFEST)


def remove_written(folder: str | os.PathLike, legacy_names: tuple[str, ...] = ()) -> None:
    """Remove what clipdepth wrote in the ``atomic_dir`` folder ``folder``: the entries its list
    names and what this module keeps there, then ``folder`` itself when nothing else is left in it.
    Every other entry (the user's) stays. A folder without a list was written by an earlier
    clipdepth, which kept none: its entries named in ``legacy_names`` count as clipdepth's. A swap
    a killed process left is finished first (``recover``); a missing folder is fine."""
    folder = Path(folder)
    if not folder.is_dir():
        return
    recover(folder)
    for name in written(folder) if (folder / META / MANIFEST).is_file() else legacy_names:
        entry = folder / name
        if entry.is_dir() and not entry.is_symlink():
            shutil.rmtree(entry)
        elif os.path.lexists(entry):
            entry.unlink()
    shutil.rmtree(folder / META, ignore_errors=True)
    with contextlib.suppress(OSError):  # not empty: the user's files stay, and their folder
        folder.rmdir()


@contextlib.contextmanager
def locked(path: str | os.PathLike) -> Iterator[None]:
    """Hold the exclusive lock of ``path`` for the duration, across processes and threads: a
    ``flock`` on the folder ``path`` itself when it is one (no file is made in a user's folder), else
    on ``.<name>.lock`` beside it (made when missing, and kept: removing it while another process
    waits on it would let a third lock a new one). For a record that several runs update (read,
    merge, write)."""
    path = Path(path)
    if path.is_dir():
        fd = os.open(path, os.O_RDONLY)
    else:
        lock = path.with_name(f".{path.name}.lock")
        lock.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(lock, os.O_RDWR | os.O_CREAT, 0o666)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # releases the lock


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
    ``folder`` (recursively), and finish the folder swaps killed processes left (``recover``).
    Returns how many entries were removed or swaps finished. A missing folder is fine."""
    folder = Path(folder)
    if not folder.is_dir():
        return 0
    host, count = _host(), 0
    for directory, subdirs, files in os.walk(folder):
        here = Path(directory)
        if META in subdirs:
            count += recover(here)
        for name in [*subdirs, *files]:
            entry = here / name
            temp = _TEMP.match(name)
            if temp and temp["host"] == host and not _alive(int(temp["pid"])):
                if entry.is_dir():
                    shutil.rmtree(entry, ignore_errors=True)
                else:
                    entry.unlink(missing_ok=True)
                count += 1
        subdirs[:] = [d for d in subdirs if (here / d).is_dir()]
    return count


def is_temporary(name: str) -> bool:
    """Whether a file or folder name is one of this module's temporaries, or the folder where it
    keeps what it wrote (and a swap under way)."""
    return name == META or bool(_TEMP.match(name))
