"""What an output was made from, so that "already done" is decided from content, not from names.

An output of ``predict`` (the depth PNG), of a video (the mp4) and of ``caption`` (beside the
caption files) records a ``Made``: the input it was made from (``source``, its path), digests of
that input's content (``inputs``: the image's bytes, its caption's text) and what else decides
the output (``settings``: the model's digest and the options that change the values). A rerun
compares the record with what it would make now (``Made.compare``):

- ``same``: the output is done (kept), also when the input has moved since (same content);
- ``inputs changed``: the input was rewritten in place (re-exported, edited): the output is
  clipdepth's own for this very input and out of date, so it is made again;
- ``other settings``, ``other source``, ``unknown``: the output is another result (another
  checkpoint or options, another input of other content, a file that does not say): it is
  neither kept nor replaced, one line says so (``refusal``) and ``--overwrite`` replaces it;
- ``unrecorded``: made by a clipdepth that recorded only the source: kept as before when that
  is this input.

Content is the SHA-256 of the bytes (``file_digest``), not size and modification time as the
feature cache takes for dataset frames: a rewrite of equal size within the file system's time
resolution, or a copy that keeps the time (``cp -p``, ``rsync -a``), changes the content and not
those, and a ``touch`` changes the time and not the content. Reading the file again costs about
1 ms per MB (about 1 GB/s), little beside decoding and predicting it.

A path is any ``str`` Python gives for a file name, also one whose bytes are not UTF-8 (an
undecodable byte ``b'\\xe9'`` becomes the surrogate ``'\\udce9'``, ``os.fsdecode``): the record is
JSON with ASCII escapes, which keep such a name exactly, and ``readable`` shows it as text any
reader takes (``\\xe9``).
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any

from ..config import ABSENT, first_difference
from ..errors import DataError
from .atomic import write_text_atomic

DIGEST_CHARS = 16  # hex characters kept of a SHA-256, as the feature cache's and checkpoint digests
# <folder>/.clipdepth/<name>.json: the records of outputs that cannot hold their own (caption files, a converted dataset)
RECORD_FOLDER = ".clipdepth"


def file_digest(path: str | os.PathLike) -> str:
    """The SHA-256 of a file's bytes (``DIGEST_CHARS`` hex characters), read in 1 MiB blocks;
    DataError naming a file that cannot be read."""
    digest = hashlib.sha256()
    try:
        with open(path, "rb") as handle:
            for block in iter(lambda: handle.read(1 << 20), b""):
                digest.update(block)
    except OSError as exc:
        raise DataError(f"{path}: cannot be read ({exc.strerror or exc})") from None
    return digest.hexdigest()[:DIGEST_CHARS]


def bytes_digest(data: bytes) -> str:
    """The SHA-256 of ``data`` (``DIGEST_CHARS`` hex characters), as ``file_digest`` of a file holding them."""
    return hashlib.sha256(data).hexdigest()[:DIGEST_CHARS]


def text_digest(text: str) -> str:
    """``bytes_digest`` of ``text`` as UTF-8."""
    return bytes_digest(text.encode("utf-8", "surrogatepass"))


def readable(path: str) -> str:
    """``path`` as valid Unicode text: the bytes of a file name that are not UTF-8 as ``\\xNN``
    (for people and other programs; ``Made`` keeps the exact name)."""
    return os.fsencode(path).decode("utf-8", "backslashreplace")


def _plain(value: Any) -> Any:
    """``value`` as it reads back from JSON (tuples as lists), so that a fresh record and a stored one compare equal."""
    return json.loads(json.dumps(value))


@dataclass(frozen=True)
class Made:
    """What an output was made from: ``source`` the input's path (``str(path.resolve())``),
    ``inputs`` digests of the inputs' content, ``settings`` the model's digest and the options that
    change the output (JSON values), ``written`` the digest of the output as written, for outputs
    a user may edit (caption files). ``inputs`` None: an output that records only its source."""

    source: str
    inputs: dict[str, Any] | None = None
    settings: dict[str, Any] | None = None
    written: str | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "inputs", None if self.inputs is None else _plain(self.inputs))
        object.__setattr__(self, "settings", None if self.settings is None else _plain(self.settings))

    def text(self) -> str:
        """The record as one line of ASCII JSON (any file name kept exactly)."""
        return json.dumps(asdict(self), sort_keys=True, ensure_ascii=True)

    @classmethod
    def parse(cls, text: str | None) -> Made | None:
        """The record ``text`` holds (fields it does not know ignored), None for no text or text that is not one."""
        try:
            data = json.loads(text) if text else None
        except ValueError:
            return None
        if not (isinstance(data, dict) and isinstance(data.get("source"), str)):
            return None
        return cls(**{f.name: data.get(f.name) for f in fields(cls)})

    def compare(self, earlier: Made | None) -> str:
        """How an earlier output's record ``earlier`` stands to this one (what would be made now):
        "same", "inputs changed", "other settings", "other source", "unrecorded" or "unknown" (no
        record at all); the module docstring says what each means."""
        if earlier is None:
            return "unknown"
        if earlier.inputs is None:
            return "unrecorded" if earlier.source == self.source else "other source"
        if earlier.source != self.source and earlier.inputs != self.inputs:
            return "other source"
        if earlier.settings != self.settings:
            return "other settings"
        return "same" if earlier.inputs == self.inputs else "inputs changed"

    def refusal(self, earlier: Made | None, output: Path, what: str) -> str | None:
        """The one line, after the input's name, for an earlier ``output`` that is another result
        (``compare``: "other settings", "other source", "unknown"), None otherwise; ``what`` names
        its content ("the depth", "the captions")."""
        state, shown = self.compare(earlier), readable(str(output))
        if state in ("unknown", "other source"):
            made_from = readable(earlier.source) if earlier else "another input (it does not say which)"
            return f"{shown} holds {what} of {made_from}; write elsewhere, or overwrite it"
        if state == "other settings":
            name, was, now = first_difference(earlier.settings, self.settings)
            return f"{shown} holds {what} made with {name}={_shown(was)} (this run: {name}={_shown(now)}); write elsewhere, or overwrite it"
        return None


def _shown(value: Any) -> str:
    return "none" if value is ABSENT else json.dumps(value)


def read_record(path: str | os.PathLike) -> Made | None:
    """The record ``write_record`` wrote at ``path``; None where there is none, or the file is not one."""
    try:
        return Made.parse(Path(path).read_text(encoding="utf-8", errors="replace"))
    except OSError:
        return None


def write_record(path: str | os.PathLike, made: Made) -> None:
    """Write ``made`` at ``path`` atomically, for ``read_record``."""
    write_text_atomic(path, made.text() + "\n")
