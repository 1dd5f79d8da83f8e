"""Each image's camera (pinhole intrinsics in pixels) for its point cloud, and where it came from.

Per image, the first of these that gives one (``CameraSources.camera``):

1. ``given``: fx, fy, cx, cy given for every image (``ply_intrinsics`` fills the rest);
2. ``file``: an intrinsics file (JSON) naming the image;
3. ``folder``: ``intrinsics.json`` in the image's own folder, naming it (or one camera for all);
4. ``exif``: the EXIF 35 mm-equivalent focal length (FocalLengthIn35mmFilm), converted as Depth
   Pro does: f = f35 * sqrt(W^2 + H^2) / sqrt(36^2 + 24^2) pixels, principal point at the centre;
5. ``default``: a 60 degree horizontal field of view (``pointcloud.default_intrinsics``).

An intrinsics file is a JSON object mapping image names to cameras, or one camera for every image.
A camera is ``[fx, fy, cx, cy]``, a 3x3 matrix ``K`` (a list of rows) or an object with the keys
fx, fy, cx, cy (other keys are ignored, so a ``cameras.json`` record reads back as a file). A
name is a path (with ``/``) that the image's path ends with, whole components compared: ``a.jpg``,
``sub/a.jpg`` and ``/data/sub/a.jpg`` name ``/data/sub/a.jpg``, and so do ``a`` and ``sub/a``
(the stem). Where several names fit, the one with more components wins, then the one with the
extension. Names are case-sensitive.

``CameraRecord`` keeps each image's camera and source in ``cameras.json`` in the output folder.
"""

from __future__ import annotations

import json
import math
import os
import time
from dataclasses import asdict, dataclass
from pathlib import Path, PurePosixPath
from typing import Any

from PIL import ExifTags

from ..errors import ClipdepthError, DataError
from .atomic import locked, write_text_atomic
from .depth_io import open_header
from .pointcloud import DEFAULT_HORIZONTAL_FOV_DEG, as_intrinsics, default_intrinsics
from .predictions import ply_intrinsics

FOLDER_FILE = "intrinsics.json"  # beside the images it names
RECORD_FILE = "cameras.json"  # in the output folder: no image output ends in .json (predictions.OUTPUT_KINDS)
FULL_FRAME_DIAGONAL_MM = math.hypot(36.0, 24.0)  # the 35 mm film frame the EXIF focal length refers to
SOURCES = ("given", "file", "folder", "exif", "default")  # in order of precedence
# The record is rewritten at most this often while images are written (and once at the end), so
# that a killed run loses at most these seconds of it.
RECORD_EVERY_S = 10.0


@dataclass(frozen=True)
class Camera:
    """Pinhole intrinsics in pixels (x right, y down) of an image ``width`` x ``height`` (as shown)
    and where they came from: ``source`` one of ``SOURCES``, ``origin`` the file it was read from
    (``file``, ``folder``) or the EXIF focal length in mm (``exif``)."""

    fx: float
    fy: float
    cx: float
    cy: float
    width: int
    height: int
    source: str
    origin: str = ""

    @property
    def intrinsics(self) -> tuple[float, float, float, float]:
        return self.fx, self.fy, self.cx, self.cy

    def describe(self) -> str:
        """Where the camera came from, for a summary: one text per file, one per other source."""
        return {
            "given": "the given fx/fy/cx/cy",
            "file": f"the intrinsics file {self.origin}",
            "folder": f"{self.origin}",
            "exif": "the EXIF 35 mm-equivalent focal length",
            "default": f"the default {DEFAULT_HORIZONTAL_FOV_DEG:g} degree horizontal field of view",
        }[self.source]


def _camera_entry(value: Any, where: str) -> tuple[float, float, float, float]:
    """A camera of an intrinsics file; DataError naming ``where`` (the file and entry) otherwise."""
    try:
        if isinstance(value, dict):
            if "K" in value:
                return as_intrinsics(value["K"])
            missing = [k for k in ("fx", "fy", "cx", "cy") if k not in value]
            if missing:
                raise ValueError(f"an object needs fx, fy, cx, cy (or K); this one has no {', '.join(missing)}")
            value = [value[k] for k in ("fx", "fy", "cx", "cy")]
        return as_intrinsics(value)
    except (ClipdepthError, ValueError, TypeError) as exc:
        raise DataError(f"{where} is not a camera: {exc}") from None


def _is_one_camera(data: Any) -> bool:
    return isinstance(data, list) or (isinstance(data, dict) and ("K" in data or "fx" in data))


def _where(image: Path) -> Path:
    """The image's absolute path as the user sees it: '..' removed, links not followed (an
    intrinsics.json beside a link is the link's folder's)."""
    return Path(os.path.abspath(image))


def _key(name: str) -> str:
    return PurePosixPath(name.replace("\\", "/")).as_posix()


def read_intrinsics_file(path: Path) -> dict[str, tuple[float, float, float, float]] | tuple[float, float, float, float]:
    """The cameras of an intrinsics file: {name: (fx, fy, cx, cy)}, or one (fx, fy, cx, cy) for
    every image. DataError naming the file (and the entry) when it is missing, not JSON, or holds
    something that is not a camera."""
    try:
        data = json.loads(path.read_text(encoding="utf-8-sig"))
    except FileNotFoundError:
        raise DataError(f"{path}: no such intrinsics file") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise DataError(f"{path}: cannot read the intrinsics file ({exc})") from None
    except json.JSONDecodeError as exc:
        raise DataError(f"{path}: not valid JSON (line {exc.lineno} column {exc.colno}: {exc.msg})") from None
    if _is_one_camera(data):
        return _camera_entry(data, f"{path}")
    if not isinstance(data, dict):
        raise DataError(f"{path}: expected an object mapping image names to cameras, or one camera; got {type(data).__name__}")
    return {_key(name): _camera_entry(value, f"{path}: entry {name!r}") for name, value in data.items()}


def lookup(cameras: dict[str, tuple[float, float, float, float]], image: Path) -> tuple[float, float, float, float] | None:
    """The camera of ``cameras`` (names as in the module's doc) that names ``image``, None if none."""
    parts = _where(image).parts
    for count in range(len(parts), 0, -1):  # more components first
        tail = PurePosixPath(*parts[-count:])
        for key in (tail.as_posix(), tail.with_name(tail.stem).as_posix()):
            if key in cameras:
                return cameras[key]
    return None


def exif_focal_35mm(path: Path) -> float | None:
    """The image's EXIF FocalLengthIn35mmFilm in mm, None without one (or 0, which means unknown)."""
    try:
        with open_header(path) as image:  # whatever the image's size: predict's --max-pixels is the limit
            exif = image.getexif()
            value = exif.get_ifd(ExifTags.IFD.Exif).get(ExifTags.Base.FocalLengthIn35mmFilm) or exif.get(
                ExifTags.Base.FocalLengthIn35mmFilm
            )
        return float(value) if value and float(value) > 0 else None
    except (OSError, SyntaxError, ValueError, TypeError):  # no readable EXIF: the next source
        return None


def exif_intrinsics(focal_35mm: float, height: int, width: int) -> tuple[float, float, float, float]:
    """Depth Pro's conversion: the 35 mm-equivalent focal length over the frame's diagonal, in
    pixels of an image ``width`` x ``height`` (as shown); principal point at the centre."""
    focal = focal_35mm * math.hypot(width, height) / FULL_FRAME_DIAGONAL_MM
    return focal, focal, (width - 1) / 2, (height - 1) / 2


class CameraSources:
    """Where each image's camera comes from, in the module's order of precedence.

    ``given``: an object with attributes fx, fy, cx, cy (None where not given), or None; it
    applies when any of them is given. ``file``: an intrinsics file for every image, or None.
    ``images``: the images to come, whose folders' ``intrinsics.json`` are read now, so that a
    malformed one is a DataError (naming it and the entry) before any work; given values that are
    not finite or a focal length that is not positive are a ConfigError then too.
    """

    def __init__(self, given: Any = None, file: Path | None = None, images: list[Path] = ()) -> None:
        self.given = given if given is not None and any(getattr(given, k) is not None for k in ("fx", "fy", "cx", "cy")) else None
        if self.given is not None:  # checked now (NaN, inf, fx <= 0); what is not given comes from each image's size
            as_intrinsics([1.0 if getattr(self.given, k) is None else getattr(self.given, k) for k in ("fx", "fy", "cx", "cy")])
        self.file = file
        self.file_cameras = read_intrinsics_file(file) if file is not None else None
        folders = {_where(image).parent for image in images}
        self.folder_cameras = {
            folder: read_intrinsics_file(folder / FOLDER_FILE) for folder in sorted(folders) if (folder / FOLDER_FILE).is_file()
        }

    @staticmethod
    def _from(cameras: Any, image: Path) -> tuple[float, float, float, float] | None:
        return cameras if isinstance(cameras, tuple) else lookup(cameras, image)

    def camera(self, image: Path, height: int, width: int) -> Camera:
        """The camera of ``image``, as shown (EXIF orientation applied) ``width`` x ``height`` pixels."""
        size = (width, height)
        if self.given is not None:
            return Camera(*ply_intrinsics(self.given, height, width), *size, "given")
        if self.file_cameras is not None and (found := self._from(self.file_cameras, image)) is not None:
            return Camera(*found, *size, "file", str(self.file))
        folder = _where(image).parent
        if folder in self.folder_cameras and (found := self._from(self.folder_cameras[folder], image)) is not None:
            return Camera(*found, *size, "folder", str(folder / FOLDER_FILE))
        if (focal := exif_focal_35mm(image)) is not None:
            return Camera(*exif_intrinsics(focal, height, width), *size, "exif", f"{focal:g} mm")
        return Camera(*default_intrinsics(height, width), *size, "default")


def _record_entry(value: Any) -> bool:
    return (
        isinstance(value, dict)
        and all(isinstance(value.get(k), (int, float)) for k in ("fx", "fy", "cx", "cy"))
        and value.get("source") in SOURCES
    )


class CameraRecord:
    """``cameras.json`` in an output folder: {output name: {image, width, height, fx, fy, cx, cy,
    source, origin}} of every point cloud written there, merged over runs (an image written again
    gets its new entry) and written atomically. Runs writing into one folder at the same time each
    add their own: every save reads the file again and merges into it under a lock
    (``io.atomic.locked``). DataError naming the file when it exists and is not such a record
    (nothing of another's is replaced)."""

    def __init__(self, folder: Path) -> None:
        self.path = folder / RECORD_FILE
        self.entries = self._read()  # a file that is not a record stops the run before any work
        self.added: dict[str, dict[str, Any]] = {}  # this run's, not saved yet
        self.saved_at = time.monotonic()

    def _read(self) -> dict[str, dict[str, Any]]:
        if not self.path.exists():
            return {}
        try:
            data = json.loads(self.path.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise DataError(f"{self.path}: not a readable camera record ({exc}); move it, or write elsewhere") from None
        bad = next((k for k, v in data.items() if not _record_entry(v)), None) if isinstance(data, dict) else "(top level)"
        if bad is not None:
            raise DataError(f"{self.path}: not a clipdepth camera record (entry {bad!r}); move it, or write elsewhere")
        return data

    def add(self, name: Path, image: Path, camera: Camera) -> None:
        self.added[name.as_posix()] = {"image": str(image.resolve()), **asdict(camera)}

    def save(self, every: float = 0.0) -> None:
        """Merge this run's new entries into the record if there are any and ``every`` seconds have
        passed since the last write (what another run saved meanwhile is kept)."""
        if self.added and time.monotonic() - self.saved_at >= every:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            with locked(self.path.parent):  # the output folder: no lock file beside the outputs
                self.entries = {**self._read(), **self.added}
                write_text_atomic(self.path, json.dumps(dict(sorted(self.entries.items())), indent=1) + "\n")
            self.added, self.saved_at = {}, time.monotonic()


def describe_cameras(used: dict[str, list[str]], record: Path, shown: int = 5) -> list[str]:
    """Summary lines: how many point clouds took each source (``used``: description -> output
    names), naming them when there are at most ``shown``."""
    lines = [f"point cloud intrinsics (each image's in {record}):"]
    for description, names in used.items():
        listed = ", ".join(names[:shown]) + (f" and {len(names) - shown} more" if len(names) > shown else "")
        lines.append(f"  {len(names)} from {description}: {listed}")
    return lines
