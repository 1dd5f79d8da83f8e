"""Video in and out with PyAV (the ``video`` extra: ``pip install -e ".[video]"`` in the repository).

``read_frames`` decodes a video's frames upright (a phone's rotation applied) as RGB arrays, each
with its timestamp; ``Mp4Writer`` encodes RGB frames into an mp4 written atomically: H.264
(``libx264``, which browsers play) where the PyAV build has it, else MPEG-4 part 2; yuv 4:2:0,
tagged BT.709, so an odd width or height gains one column or row copied from the edge. Each frame
keeps the timestamp it is given (a variable-frame-rate clip stays in step with its source), in the
source's time base where given. The mp4 records what it was made from (``video_made``: the video,
its content, the model and options). Every problem with a video is a one-line DataError naming it.
"""

from __future__ import annotations

import contextlib
import glob
from collections.abc import Iterator
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import ConfigError, DataError
from .atomic import atomic_path
from .fingerprint import Made, readable
from .predictions import VIDEO_SUFFIXES, _inside, distinct_names

VIDEO_TAIL = "_depth.mp4"  # the output of a video named N: N_depth.mp4 (no image output ends in .mp4)
INSTALL_HINT = 'pip install -e ".[video]" in the clipdepth repository'
DEFAULT_FPS = Fraction(30)  # for a stream that states no frame rate
CRF = "18"  # libx264's constant quality: visually lossless for colour maps, small files
# 3x the encoding speed of the default preset on colour depth (143 against 48 fps at 640 x 480 on 2
# cores) at about the same size: the encoder must not hold a GPU's frames back.
PRESET = "veryfast"
MPEG4_BITS_PER_PIXEL = 0.5  # MPEG-4 part 2 has no constant-quality mode here: a generous bit rate
MPEG4_MAX_TIME_BASE = 65535  # MPEG-4 part 2 takes time bases of 1/65535 s or coarser
SOURCE_KEY = "comment"  # the mp4 metadata key that names the source video as text (an mp4 muxer keeps it)
MADE_KEY = "description"  # ... and the one that records what it was made from (io.fingerprint.Made)


def require_av() -> Any:
    """The ``av`` module; ConfigError (one line, how to install it) when PyAV is missing."""
    try:
        import av
    except ImportError:
        raise ConfigError(f"video needs PyAV, which is not installed: {INSTALL_HINT}") from None
    return av


def is_video(item: str | Path) -> bool:
    """Whether an input (a file or a glob) is a video, by its suffix (``VIDEO_SUFFIXES``)."""
    return Path(item).suffix.lower() in VIDEO_SUFFIXES


@dataclass(frozen=True)
class VideoInfo:
    """A video's first stream as stored: frame size (before any rotation), rate, frame count (0
    unknown), and the time base its timestamps count in (seconds)."""

    width: int
    height: int
    fps: Fraction
    frames: int
    time_base: Fraction


def _unreadable(path: Path, exc: BaseException) -> DataError:
    reason = getattr(exc, "strerror", None) or " ".join(str(exc).split()) or type(exc).__name__  # without errno and path
    return DataError(f"{path}: not a readable video ({reason})")


def probe_video(path: str | Path) -> VideoInfo:
    """Open ``path``'s header; DataError naming it when it is missing, unreadable or has no video stream."""
    av = require_av()
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: no such video")
    try:
        with av.open(str(path)) as container:
            if not container.streams.video:
                raise DataError(f"{path}: has no video stream")
            stream = container.streams.video[0]
            fps = stream.average_rate or stream.guessed_rate or DEFAULT_FPS
            return VideoInfo(
                stream.codec_context.width, stream.codec_context.height, Fraction(fps), stream.frames, Fraction(stream.time_base)
            )
    except av.error.FFmpegError as exc:
        raise _unreadable(path, exc) from None


def video_made(path: str | Path) -> Made | None:
    """What an mp4 of ``Mp4Writer`` records it was made from; for one of a clipdepth that recorded
    only the source video, that source alone (``Made(source)``); None without either (or for a
    file that cannot be read)."""
    av = require_av()
    try:
        with av.open(str(path)) as container:
            metadata = container.metadata
    except av.error.FFmpegError:
        return None
    made = Made.parse(metadata.get(MADE_KEY))
    return made if made is not None or SOURCE_KEY not in metadata else Made(metadata[SOURCE_KEY])


def upright(frame: np.ndarray, rotation: int) -> np.ndarray:
    """(H, W, 3) ``frame`` as a player shows it: ``rotation`` is the display matrix's angle in
    degrees counterclockwise (PyAV's ``VideoFrame.rotation``), which FFmpeg's players undo by
    turning the frame clockwise by it."""
    return np.ascontiguousarray(np.rot90(frame, k=round(rotation / 90) % 4))


def read_frames(path: str | Path) -> Iterator[tuple[np.ndarray, Fraction | None]]:
    """(frame, time) of ``path``'s first video stream: (H, W, 3) uint8 RGB, upright, and its
    presentation time in seconds (None where the stream gives none). DataError naming the video
    when it cannot be decoded (also part way through)."""
    av = require_av()
    path = Path(path)
    try:
        with av.open(str(path)) as container:
            stream = container.streams.video[0]
            stream.thread_type = "AUTO"  # decoding on several threads: frames come out in order all the same
            for frame in container.decode(stream):
                time = None if frame.pts is None else frame.pts * Fraction(frame.time_base)
                yield upright(frame.to_ndarray(format="rgb24"), frame.rotation), time
    except av.error.FFmpegError as exc:
        raise _unreadable(path, exc) from None


def video_codec() -> str:
    """``libx264`` where PyAV has it (browsers play H.264), else ``mpeg4``."""
    return "libx264" if "libx264" in require_av().codecs_available else "mpeg4"


class Mp4Writer:
    """Encode (H, W, 3) uint8 RGB frames, all of one size, at ``fps`` into an mp4 at ``path``,
    atomically (the file appears whole when the ``with`` block ends without error). ``made``
    (what it shows) is recorded for ``video_made``. ``codec``: None for ``video_codec()``.
    ``time_base``: the seconds timestamps count in (the source's, so that its times carry over
    exactly; MPEG-4 part 2 rounds it to ``MPEG4_MAX_TIME_BASE``), default 1 / ``fps``."""

    def __init__(
        self, path: str | Path, fps: Fraction, made: Made | None = None, codec: str | None = None, time_base: Fraction | None = None
    ) -> None:
        self.path, self.fps, self.made = Path(path), Fraction(fps), made
        self.codec = codec or video_codec()
        self.time_base = Fraction(time_base) if time_base else 1 / self.fps
        if self.codec != "libx264":
            finest = Fraction(1, MPEG4_MAX_TIME_BASE)
            self.time_base = max(self.time_base, finest).limit_denominator(MPEG4_MAX_TIME_BASE)
        self.frames = 0
        self._pts: int | None = None  # the last frame's timestamp, in time_base
        self._stack = contextlib.ExitStack()
        self.shape: tuple[int, ...] | None = None
        self._container: Any = None
        self._stream: Any = None

    def __enter__(self) -> Mp4Writer:
        self._tmp = self._stack.enter_context(atomic_path(self.path))
        return self

    def _open(self, height: int, width: int) -> None:
        av = require_av()
        container = self._stack.enter_context(
            av.open(str(self._tmp), "w", format="mp4", options={"movflags": "+faststart"})
        )  # playable while loading
        if self.made is not None:  # FFmpeg takes UTF-8 only: the exact name is in the record's ASCII escapes
            container.metadata[SOURCE_KEY] = readable(self.made.source)
            container.metadata[MADE_KEY] = self.made.text()
        stream = container.add_stream(self.codec, rate=self.fps, options={"crf": CRF, "preset": PRESET} if self.codec == "libx264" else {})
        stream.width, stream.height, stream.pix_fmt = width + width % 2, height + height % 2, "yuv420p"
        if self.codec != "libx264":
            stream.bit_rate = max(1_000_000, int(stream.width * stream.height * self.fps * MPEG4_BITS_PER_PIXEL))
        # BT.709 both in the conversion and in the stream's tags, so that players invert it exactly.
        context = stream.codec_context
        context.time_base = self.time_base
        context.colorspace = context.color_primaries = context.color_trc = 1  # AVCOL_*_BT709
        context.color_range = 1  # AVCOL_RANGE_MPEG (limited), what players expect of H.264
        self._container, self._stream = container, stream

    def write(self, rgb: np.ndarray, time: Fraction | None = None) -> None:
        """Add a frame shown at ``time`` seconds (default: 1 / ``fps`` after the last)."""
        av = require_av()
        if self._container is None:
            self._open(*rgb.shape[:2])
            self.shape = rgb.shape
        if rgb.shape != self.shape:
            raise DataError(
                f"{self.path}: frame {self.frames} is {rgb.shape[1]}x{rgb.shape[0]}, the video's "
                f"{self.shape[1]}x{self.shape[0]}; an mp4 keeps one size"
            )
        even = np.pad(rgb, ((0, rgb.shape[0] % 2), (0, rgb.shape[1] % 2), (0, 0)), mode="edge")
        frame = av.VideoFrame.from_ndarray(even, format="rgb24").reformat(format="yuv420p", dst_colorspace="ITU709", dst_color_range="MPEG")
        if self._pts is None:
            pts = 0 if time is None else round(time / self.time_base)
        elif time is None:
            pts = self._pts + max(1, round(1 / (self.fps * self.time_base)))
        else:  # timestamps must increase: a repeated one (a damaged source) moves on by one tick
            pts = max(round(time / self.time_base), self._pts + 1)
        frame.pts = self._pts = pts
        frame.time_base = self.time_base
        for packet in self._stream.encode(frame):
            self._container.mux(packet)
        self.frames += 1

    def __exit__(self, exc_type: Any, exc: Any, traceback: Any) -> bool:
        if exc_type is not None:  # the temporary is removed
            return self._stack.__exit__(exc_type, exc, traceback)
        with self._stack:  # closes the mp4, then renames it into place (removes it on an error here)
            if self._container is None:
                raise DataError(f"{self.path}: no frames to write")
            for packet in self._stream.encode():  # what the encoder held back
                self._container.mux(packet)
        return False


def collect_videos(inputs: list[str], out: Path | None = None) -> list[tuple[Path, Path]]:
    """(video, output name as a relative path without suffix) per video of ``inputs`` (files or
    globs, ``is_video``); names are made distinct as images' are (``distinct_names``). Videos under
    ``out`` are skipped. DataError naming a missing video, or when none is found; one that cannot
    be read is reported when its turn comes (``predict_videos``), so that it does not stop the others."""
    found: list[Path] = []
    for item in inputs:
        path = Path(item)
        if glob.has_magic(item) and not path.is_file():
            found += [
                Path(p)
                for p in sorted(glob.glob(item, recursive=True))
                if is_video(p) and Path(p).is_file() and (out is None or not _inside(Path(p), out))
            ]
        elif not path.is_file():
            raise DataError(f"{item}: no such video")
        else:
            found.append(path)
    if not found:
        raise DataError(f"no videos found in {' '.join(inputs)}")
    unique: dict[Path, Path] = {}
    for video in found:
        unique.setdefault(video.resolve(), video)
    return distinct_names([(video, Path(video.stem)) for video in unique.values()])
