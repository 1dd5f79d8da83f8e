"""A model's predictions as files a user can use: their names and their writing, shared by
``clipdepth predict`` (``clipdepth.inference.predict_to_folder``) and the web demo.

Per image named N: ``N.png`` 16-bit depth (metres = value / the scale in its ``depth_scale`` text
chunk: millimetres when the model's range fits, else KITTI's 1/256 m; its ``made`` chunk records
what it was made from, ``io.fingerprint``), ``N_color.png`` the depth in colour at the image's exact
size, and on request ``N.npy`` (float32 metres), ``N.ply`` (a coloured point cloud),
``N_uncertainty.png`` / ``.npy`` (models that give one) and ``N_side.png`` (the image and its colour
depth side by side). The web demo's colour image with a metre scale beside it is ``colour_image``. N
is the image's stem (its path inside a folder given as input); images that would claim a common file
keep their folders, then their extension, then a number, so that no output is written twice.
"""

from __future__ import annotations

import functools
import glob
import math
import os
import struct
import threading
import zlib
from pathlib import Path
from typing import Any, Callable

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from ..errors import ConfigError, DataError
from .atomic import atomic_path
from .depth_io import PNG_COMPRESS_LEVEL, depth_png_scale, write_depth_png, write_exr, write_npy, write_tiff
from .fingerprint import Made

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp", ".gif", ".heic", ".heif")  # HEIC: the heic extra
VIDEO_SUFFIXES = (".mp4", ".mov", ".m4v", ".mkv", ".avi", ".webm")  # read by io.video, when named
# Every file an image named N may get is N + one of these tails (-> what it holds, see
# write_prediction): names are chosen so that no two images claim one file, whatever options a
# later run adds.
OUTPUT_KINDS = {
    ".png": "depth",
    "_color.png": "color_map",
    ".npy": "npy",
    ".tiff": "tiff",
    ".exr": "exr",
    "_uncertainty.png": "uncertainty",
    "_uncertainty.npy": "uncertainty_npy",
    ".ply": "ply",
    "_side.png": "side",
}
OUTPUT_TAILS = tuple(OUTPUT_KINDS)
# `predict --format`: the depth files by name, float32 metres but the 16-bit PNG (always written).
DEPTH_FORMATS = {"png16": ".png", "npy": ".npy", "tiff": ".tiff", "exr": ".exr"}


# -- naming ---------------------------------------------------------------------------------------
def _inside(path: Path, folder: Path) -> bool:
    try:
        path.resolve().relative_to(folder.resolve())
    except ValueError:
        return False
    return True


def collect_inputs(inputs: list[str], out: Path | None = None) -> list[tuple[Path, Path]]:
    """(image path, output name as a relative path without suffix) per image of ``inputs``: images,
    folders (recursive, sub-folders kept in the names), globs, and ``.txt`` lists of paths (relative
    ones from the list's folder).

    Anything under ``out`` is skipped (a rerun must not read its own outputs); the same file given
    twice is one image. Raises DataError naming an input that is none of these, or when no image is found.
    """
    found: list[tuple[Path, Path]] = []
    for item in inputs:
        path = Path(item)
        if path.is_dir():
            files = sorted(p for p in path.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file())
            found += [(p, p.relative_to(path).with_name(p.stem)) for p in files if out is None or not _inside(p, out)]
        elif path.suffix.lower() == ".txt" and path.is_file():
            lines = [line.strip() for line in path.read_text(encoding="utf-8-sig").splitlines() if line.strip()]
            found += [(path.parent / line, Path(Path(line).stem)) for line in lines]
        elif path.is_file():
            found.append((path, Path(path.stem)))
        elif glob.has_magic(item):
            found += [
                (Path(p), Path(Path(p).stem))
                for p in sorted(glob.glob(item, recursive=True))
                if Path(p).suffix.lower() in IMAGE_SUFFIXES and (out is None or not _inside(Path(p), out))
            ]
        else:
            raise DataError(f"{item}: no such image, folder, glob match or list")
    if not found:
        videos = any(Path(item).is_dir() and any(p.suffix.lower() in VIDEO_SUFFIXES for p in Path(item).rglob("*")) for item in inputs)
        raise DataError(
            f"no images found in {' '.join(inputs)}" + (" (videos in a folder are not read: name each, e.g. clip.mp4)" if videos else "")
        )
    unique: dict[Path, tuple[Path, Path]] = {}
    for image, name in found:
        unique.setdefault(image.resolve(), (image, name))
    return distinct_names(list(unique.values()))


def _conflicts(named: list[tuple[Path, Path]]) -> list[list[int]]:
    """Groups of images (indices) that claim a common output file."""
    owners: dict[Path, list[int]] = {}
    for i, (_, name) in enumerate(named):
        for tail in OUTPUT_TAILS:
            owners.setdefault(name.parent / f"{name.name}{tail}", []).append(i)
    parent = list(range(len(named)))

    def root(i: int) -> int:
        while parent[i] != i:
            i = parent[i]
        return i

    for members in owners.values():
        for other in members[1:]:
            parent[root(other)] = root(members[0])
    groups: dict[int, list[int]] = {}
    for i in range(len(named)):
        groups.setdefault(root(i), []).append(i)
    return [g for g in groups.values() if len(g) > 1]


def _keep_folders(named: list[tuple[Path, Path]], group: list[int]) -> None:
    images = [named[i][0].resolve() for i in group]
    parent = Path(os.path.commonpath([str(p.parent) for p in images]))
    for i, image in zip(group, images):
        relative = image.relative_to(parent)
        named[i] = (named[i][0], relative.with_name(relative.stem))


def _keep_extension(named: list[tuple[Path, Path]], group: list[int]) -> None:
    for i in group:
        image, name = named[i]
        named[i] = (image, name.with_name(name.name + image.suffix) if not name.name.endswith(image.suffix) else name)


def _number(named: list[tuple[Path, Path]], group: list[int]) -> None:
    for k, i in enumerate(group[1:], start=2):
        image, name = named[i]
        named[i] = (image, name.with_name(f"{name.name}~{k}"))


def distinct_names(jobs: list[tuple[Path, Path]]) -> list[tuple[Path, Path]]:
    """(image, name) pairs renamed so that no two images claim one output file: images whose
    outputs would meet keep their folders (relative to their common parent), then their
    extensions, then a number."""
    named = list(jobs)
    for rule in (_keep_folders, _keep_extension, _number):
        while groups := _conflicts(named):
            before = list(named)
            for group in groups:
                rule(named, group)
            if named == before:  # this rule cannot tell them apart: the next one
                break
    return named


# -- colour images --------------------------------------------------------------------------------
COLOURMAP = "turbo"
# The colour image with a metre scale (colour_image, the web demo's) is for looking at: a larger
# depth map is shown every k-th pixel there, so that its file stays small.
MAX_COLOUR_PIXELS = 4_000_000
INVALID_COLOUR = 255  # NaN and infinite pixels are white, as the background of matplotlib's figures


@functools.cache
def colour_lut(name: str) -> np.ndarray:
    """(256, 3) uint8: the colours of matplotlib's colormap ``name``, as it gives them as bytes."""
    import matplotlib  # about 0.3 s, and only the first colour image needs it

    return matplotlib.colormaps[name](np.linspace(0.0, 1.0, 256), bytes=True)[:, :3]


def colourise(values: np.ndarray, vmax: float, name: str = COLOURMAP, *, vmin: float = 0.0) -> np.ndarray:
    """(H, W, 3) uint8 colours of (H, W) ``values`` over ``vmin``..``vmax`` (vmin < vmax), binned as
    matplotlib's ``colormaps[name](Normalize(vmin, vmax)(values))``: ``vmin`` and below the first
    colour, ``vmax`` and above the last; NaN and +-inf white."""
    values = np.asarray(values)
    values = values.astype(np.result_type(values.dtype, np.float32), copy=False)
    # As matplotlib's Normalize: in place, each step in float64 rounded to the values' own precision,
    # so that a value on a bin edge falls alike (the ufuncs cast a block at a time: no float64 copy).
    scaled = np.subtract(values, np.float64(vmin), out=np.empty_like(values)) if vmin else values  # v - 0 is v
    scaled = np.divide(scaled, np.float64(vmax) - np.float64(vmin), out=scaled if vmin else np.empty_like(values))
    scaled *= 256
    np.fmax(scaled, 0, out=scaled)  # fmax, unlike clip, also turns NaN into 0: any colour, made white below
    np.fmin(scaled, 255, out=scaled)
    rgb = np.take(colour_lut(name), scaled.astype(np.uint8), axis=0)  # the truncation is matplotlib's binning
    invalid = ~np.isfinite(values)
    if invalid.any():
        rgb[invalid] = INVALID_COLOUR
    return rgb


def colour_range(depth: np.ndarray, max_depth: float, vmin: float | None = None, vmax: float | None = None) -> tuple[float, float]:
    """The metres (low, high) a depth map is coloured over: ``vmin`` (default 0) to ``vmax``
    (default the map's largest value up to ``max_depth``; ``max_depth`` for a map whose largest
    value is 0 or not finite, and above ``vmin`` where the map lies wholly below it)."""
    low = 0.0 if vmin is None else float(vmin)
    if vmax is not None:
        high = float(vmax)
    else:
        largest = float(np.max(depth))
        high = min(max_depth, largest) if np.isfinite(largest) and largest > 0 else max_depth
        if high <= low:  # every pixel at or below vmin: the first colour whatever the top
            high = max(max_depth, low + 1.0)
    if not high > low:
        raise ConfigError(f"vmin {low:g} must be below vmax {high:g} (metres)", setting="vmin")
    return low, high


def colour_map(depth: np.ndarray, max_depth: float, *, vmin: float | None = None, vmax: float | None = None) -> np.ndarray:
    """(H, W, 3) uint8: ``depth`` (H, W) metres in colour at its own size, over ``colour_range``."""
    low, high = colour_range(depth, max_depth, vmin, vmax)
    return colourise(depth, high, vmin=low)


def side_by_side(image: np.ndarray, colours: np.ndarray) -> np.ndarray:
    """(H, 2W, 3) uint8: the (H, W, 3) ``image`` at the left, its (H, W, 3) ``colours`` at the right."""
    if image.shape != colours.shape:
        raise DataError(f"side by side needs one size, got the image {image.shape} and its colours {colours.shape}")
    return np.concatenate([image, colours], axis=1)


def _ticks(low: float, high: float, most: int) -> list[float]:
    """The multiples of a round step (1, 2 or 5 times a power of ten) from ``low`` to ``high``, at
    most ``most`` (>= 2) values; ``low`` and ``high`` where fewer than two fit."""
    least_step = (high - low) / (most - 1)
    power = 10.0 ** math.floor(math.log10(least_step))
    step = next(m * power for m in (1, 2, 5, 10) if m * power >= least_step)
    # The tolerance keeps an end that is a multiple of the step despite rounding.
    ticks = [k * step for k in range(math.ceil(low / step - 1e-9), math.floor(high / step + 1e-9) + 1)]
    return ticks if len(ticks) > 1 else [low, high]


# The metre scale beside a colour image: a bar BAR_WIDTH pixels wide, BAR_GAP from the image,
# labels every TICK_SPACING pixels at least, in FONT_SIZE pixel text.
BAR_GAP, BAR_WIDTH, TICK_LENGTH, FONT_SIZE, TICK_SPACING = 10, 12, 4, 11, 40


_FONTS = threading.local()


def _font() -> ImageFont.FreeTypeFont:
    """The scale's font, one per thread: FreeType faces must not be shared by threads drawing at
    once, and loading one costs about a millisecond, as much as colouring a 480 x 640 map."""
    if not hasattr(_FONTS, "font"):
        _FONTS.font = ImageFont.load_default(size=FONT_SIZE)
    return _FONTS.font


@functools.lru_cache(maxsize=4096)
def _label_length(label: str) -> float:
    """The advance width of ``label`` in the scale's font, pixels."""
    return _font().getlength(label)


@functools.lru_cache(maxsize=4096)
def _label_ink(label: str) -> np.ndarray:
    """(h, w) uint8 coverage (255: black) of ``label`` in the scale's font, from its ink's top row:
    drawn once per label (the same round numbers recur from image to image), then pasted as it is."""
    _, top, right, bottom = _font().getbbox(label)
    mask = Image.new("L", (max(1, right), max(1, bottom - top)), 0)
    ImageDraw.Draw(mask).text((0, -top), label, fill=255, font=_font())
    ink = np.asarray(mask)
    ink.flags.writeable = False  # shared by every thread drawing a scale
    return ink


def colour_image(depth: np.ndarray, max_depth: float, *, vmin: float | None = None, vmax: float | None = None) -> np.ndarray:
    """(H', W', 3) uint8: ``depth`` (H, W) metres in colour over ``colour_range`` (by default
    0..min(``max_depth``, its max)), with a bar giving the colours' metres at its right. Beyond
    ``MAX_COLOUR_PIXELS`` every k-th pixel is shown."""
    return _rows_rgb(_colour_rows(depth, max_depth, vmin, vmax))


def _colour_rows(depth: np.ndarray, max_depth: float, vmin: float | None, vmax: float | None) -> np.ndarray:
    """``colour_image`` drawn straight into the rows of its PNG (``_png_rows``): a written colour
    image is not copied again to be framed."""
    step = max(1, int(np.ceil(np.sqrt(depth.size / MAX_COLOUR_PIXELS))))
    depth = depth[::step, ::step]
    low, high = colour_range(depth, max_depth, vmin, vmax)
    height, width = depth.shape
    values = _ticks(low, high, max(2, height // TICK_SPACING))
    labels = [f"{value:.4g} m" for value in values]
    pad = FONT_SIZE // 2 + 1  # the labels at the bar's ends stick out by half a line
    label_x = BAR_GAP + BAR_WIDTH + TICK_LENGTH + 2
    rows = _png_rows(height + 2 * pad, width + label_x + math.ceil(max(map(_label_length, labels))) + 4)
    canvas = _rows_rgb(rows)
    canvas[:pad] = 255
    canvas[pad + height :] = 255
    canvas[pad : pad + height, :width] = colourise(depth, high, vmin=low)
    # The scale, in numpy too (a Pillow strip cost as much as colouring the map): white, the bar, the ticks
    scale = canvas[:, width:]
    scale[pad : pad + height] = 255
    scale[pad : pad + height, BAR_GAP : BAR_GAP + BAR_WIDTH] = colourise(np.linspace(high, low, height)[:, None], high, vmin=low)
    for value in values:
        scale[pad + round((high - value) / (high - low) * (height - 1)), BAR_GAP + BAR_WIDTH : BAR_GAP + BAR_WIDTH + TICK_LENGTH] = 0
    for value, label in zip(values, labels):  # each label's ink centred on its tick, in black
        ink = _label_ink(label)
        y = pad + round((high - value) / (high - low) * (height - 1)) - len(ink) // 2
        area = canvas[y : y + ink.shape[0], width + label_x : width + label_x + ink.shape[1]]
        # Pillow's blend of black over the pixels, as its draw.text gave (exactly, where labels overlap too)
        blend = -area.astype(np.int32) * ink[: len(area), : area.shape[1], None] + 128
        area[...] = area + ((blend + (blend >> 8)) >> 8)  # never below 0: at most the pixel's own value is taken
    return rows


def _png_chunk(kind: bytes, data: bytes) -> list[bytes]:
    # in pieces: a megabyte of stored pixels is not copied to be framed
    return [struct.pack(">I", len(data)), kind, data, struct.pack(">I", zlib.crc32(data, zlib.crc32(kind)))]


def _png_rows(height: int, width: int) -> np.ndarray:
    """(height, 1 + 3 * width) uint8: the rows of an RGB PNG's image data, each led by its filter
    type 0 (None); the pixels (``_rows_rgb``) are left to be filled."""
    rows = np.empty((height, 1 + 3 * width), np.uint8)
    rows[:, 0] = 0
    return rows


def _rows_rgb(rows: np.ndarray) -> np.ndarray:
    """The (H, W, 3) pixels of ``_png_rows``' rows, as a view."""
    return rows[:, 1:].reshape(rows.shape[0], -1, 3)


def _png_parts(rows: np.ndarray, level: int) -> list[bytes]:
    """The bytes of the PNG of ``_png_rows``' filled rows in pieces, to be written one after the other without joining them."""
    header = struct.pack(">IIBBBBB", (rows.shape[1] - 1) // 3, rows.shape[0], 8, 2, 0, 0, 0)  # 8 bits, truecolour, no interlace
    return [b"\x89PNG\r\n\x1a\n", *_png_chunk(b"IHDR", header), *_png_chunk(b"IDAT", zlib.compress(rows, level)), *_png_chunk(b"IEND", b"")]


def _rgb_png_parts(rgb: np.ndarray, level: int) -> list[bytes]:
    """``rgb_png``'s bytes in pieces."""
    height, width, channels = rgb.shape
    if channels != 3 or rgb.dtype != np.uint8:
        raise DataError(f"an RGB PNG needs (H, W, 3) uint8, got {rgb.shape} {rgb.dtype}")
    rows = _png_rows(height, width)
    _rows_rgb(rows)[...] = rgb
    return _png_parts(rows, level)


def rgb_png(rgb: np.ndarray, level: int = PNG_COMPRESS_LEVEL) -> bytes:
    """The bytes of an 8-bit RGB PNG of (H, W, 3) uint8 ``rgb``: every row with filter type 0 (None),
    deflated at zlib ``level`` (0: stored as it is; PNG specification, sections 11.2.2 IHDR and 9.2).

    Pillow tries the five filters on every row and keeps the best; for colour maps (runs of a
    few hundred colours) no filter is as small or smaller (an NYU frame's: 125 KB against
    Pillow's 142 KB at level 1) and the whole PNG is ~3.5x faster (480 x 640: 1.8 ms against 6.4).
    DataError for an array that is not (H, W, 3) uint8.
    """
    return b"".join(_rgb_png_parts(rgb, level))


def write_rgb(path: str | os.PathLike, rgb: np.ndarray, level: int = PNG_COMPRESS_LEVEL) -> None:
    """Atomically write an (H, W, 3) uint8 array as an RGB PNG (``rgb_png`` at zlib ``level``)."""
    _write_parts(path, _rgb_png_parts(rgb, level))


def _write_parts(path: str | os.PathLike, parts: list[bytes]) -> None:
    with atomic_path(path) as tmp, tmp.open("wb") as f:
        f.writelines(parts)


def write_depth_colour(
    path: str | os.PathLike,
    depth: np.ndarray,
    max_depth: float,
    *,
    vmin: float | None = None,
    vmax: float | None = None,
    level: int = PNG_COMPRESS_LEVEL,
) -> None:
    """Atomically write ``colour_image(depth, max_depth, vmin=vmin, vmax=vmax)`` as an RGB PNG at zlib ``level``."""
    _write_parts(path, _png_parts(_colour_rows(depth, max_depth, vmin, vmax), level))


# -- writing --------------------------------------------------------------------------------------
def output_paths(out: Path, name: Path, tails: list[str]) -> list[Path]:
    """The files of the image named ``name`` under ``out``, one per tail of ``OUTPUT_TAILS``."""
    return [out / name.parent / f"{name.name}{tail}" for tail in tails]


def ply_intrinsics(given: Any, height: int, width: int) -> tuple[float, float, float, float]:
    """fx, fy, cx, cy (pixels) from ``given``'s attributes of those names: fy = fx and the image
    centre where not given, a 60 degree horizontal field of view without any."""
    from .pointcloud import default_intrinsics  # imports torch: not needed to collect a command's inputs

    fx, fy, cx, cy = default_intrinsics(height, width)
    fx = given.fx if given.fx is not None else (given.fy if given.fy is not None else fx)
    fy = given.fy if given.fy is not None else fx
    return fx, fy, cx if given.cx is None else given.cx, cy if given.cy is None else given.cy


def write_prediction(
    files: dict[str, Path],
    depth: np.ndarray,
    image: np.ndarray,
    max_depth: float,
    *,
    uncertainty: np.ndarray | None = None,
    intrinsics: tuple[float, float, float, float] | None = None,
    made: Made | None = None,
    vmin: float | None = None,
    vmax: float | None = None,
    ply_stride: int = 1,
) -> int:
    """Write one image's prediction: ``files`` maps each kind wanted to its path. Kinds: ``depth``
    (16-bit PNG, scale from ``max_depth``, ``made`` recorded: ``write_depth_png``), ``color``
    (colour PNG with a metre scale, ``colour_image``), ``color_map`` (colour PNG at the image's
    size, ``colour_map``), ``side`` (the image | ``color_map``, ``side_by_side``), ``npy``, ``tiff``
    and ``exr`` (float32 metres), ``uncertainty`` (16-bit PNG),
    ``uncertainty_npy``, ``uncertainty_color`` (colour PNG over 0..its max) and ``ply``
    (``intrinsics`` fx fy cx cy, default a 60 degree field of view; every ``ply_stride``-th pixel
    of every ``ply_stride``-th row). The depth's colours span
    ``vmin``..``vmax`` metres (``colour_range``: by default 0 to the map's max, up to ``max_depth``).

    ``depth`` and ``uncertainty`` are (H, W) metres, ``image`` (H, W, 3) uint8. Each file is
    written atomically. Returns the number of points in the PLY (0 without one). ConfigError for
    ``vmin`` not below ``vmax``.
    """
    from .pointcloud import default_intrinsics, depth_to_ply  # imports torch: not needed to collect a command's inputs

    scale = depth_png_scale(max_depth)
    colours = functools.cache(lambda: colour_map(depth, max_depth, vmin=vmin, vmax=vmax))  # color_map and side share it
    writers: dict[str, Callable[[Path], Any]] = {
        "depth": lambda path: write_depth_png(path, depth, scale, made=made),
        "color": lambda path: write_depth_colour(path, depth, max_depth, vmin=vmin, vmax=vmax),
        "color_map": lambda path: write_rgb(path, colours()),
        "side": lambda path: write_rgb(path, side_by_side(image, colours())),
        "npy": lambda path: write_npy(path, depth.astype(np.float32)),
        "tiff": lambda path: write_tiff(path, depth),
        "exr": lambda path: write_exr(path, depth),
        "uncertainty": lambda path: write_depth_png(path, uncertainty, scale),
        "uncertainty_npy": lambda path: write_npy(path, uncertainty.astype(np.float32)),
        "uncertainty_color": lambda path: write_depth_colour(path, uncertainty, float(uncertainty.max()) or 1.0),
        "ply": lambda path: depth_to_ply(path, depth, image, intrinsics or default_intrinsics(*depth.shape), ply_stride),
    }
    points = 0
    for kind, path in files.items():
        written = writers[kind](path)
        points = written if kind == "ply" else points
    return points
