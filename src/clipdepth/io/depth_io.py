"""Reading and writing RGB images and metric depth maps.

Depth files are 16-bit PNGs (metres = value / scale, 0 = no depth; docs/protocol.md "Caps and units")
or ``.npy`` arrays (or float TIFFs) in metres. Every problem with an input file is a one-line DataError that names
the file and says what is wrong.
"""

from __future__ import annotations

import os
import threading
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, ImageOps, PngImagePlugin

from ..errors import ConfigError, DataError
from .atomic import atomic_path
from .fingerprint import Made, readable

SCALE_TEXT_KEY = "depth_scale"
# Pixels one photo may have (a 10000 x 10000 image needs gigabytes downstream); checked from the
# file's header before decoding. read_rgb(max_pixels=...) changes it (predict: --max-pixels).
MAX_PHOTO_PIXELS = 50_000_000
# zlib level of the PNGs clipdepth writes (depth and colour): only the file size depends on it, never a
# pixel (benchmarks/png_write.py measures the levels).
PNG_COMPRESS_LEVEL = 1
UINT16_DEPTH_MODES = ("I;16", "I;16B", "I;16L")
EIGHT_BIT_MODES = ("1", "L", "LA", "P", "PA", "RGB", "RGBA", "CMYK", "YCbCr", "LAB", "HSV")


def _one_line(exc: BaseException) -> str:
    return " ".join(str(exc).split()) or type(exc).__name__


def _require_file(path: Path) -> None:
    if not path.exists():
        raise DataError(f"{path}: file not found")
    if not path.is_file():
        raise DataError(f"{path}: is not a file")


# Pillow's decompression-bomb guard is a process-wide setting; it is lifted only while a file's
# header is read, under this lock, because clipdepth's own ``max_pixels`` is the limit that applies.
_PIL_LIMIT_LOCK = threading.Lock()


def open_header(path: str | os.PathLike) -> Image.Image:
    """``Image.open`` of a file: its header read (mode, size, text chunks, EXIF), its pixels not
    decoded; use it as a context manager. Pillow's decompression-bomb guard does not apply, so that
    what a header tells never fails for the image's size (the limits that apply are clipdepth's
    own, such as ``max_pixels``). Raises what ``Image.open`` raises for a file that is not an image
    (OSError, SyntaxError, ValueError)."""
    with _PIL_LIMIT_LOCK:
        limit, Image.MAX_IMAGE_PIXELS = Image.MAX_IMAGE_PIXELS, None
        try:
            return Image.open(path)
        finally:
            Image.MAX_IMAGE_PIXELS = limit


def _open_image(path: Path, max_pixels: int | None = None) -> Image.Image:
    """The fully decoded image (so truncated files fail here, not later); one over ``max_pixels``
    is refused from its header, before any decoding. ``max_pixels`` is the only pixel limit:
    Pillow's own decompression-bomb guard does not apply (``open_header``; it refused 200 MP
    before any limit a user set could)."""
    _require_file(path)
    try:
        with open_header(path) as image:
            width, height = image.size
            if max_pixels is not None and width * height > max_pixels:
                raise DataError(
                    f"{path}: {width}x{height} is {width * height / 1e6:.1f} megapixels, over the limit of "
                    f"{max_pixels / 1e6:g} (downscale it, or raise the max_pixels limit)"
                )
            image.load()
            return image.copy()  # detached from the file, which the `with` closes
    except DataError:  # the limit above, already one line
        raise
    except (OSError, SyntaxError, ValueError) as exc:
        raise DataError(f"{path}: not a readable image ({_one_line(exc)})") from None


def eight_bit(values: np.ndarray) -> np.ndarray:
    """16-bit intensities (0..65535) as 8-bit ones: the high byte, value >> 8 (65535 -> 255), the
    rule Pillow's own PNG decoder applies to 48-bit RGB and 16-bit grey-alpha files, so that every
    16-bit source (those files, 16-bit grey ones, uint16 arrays) gives the same 8 bits. Values
    outside 0..65535 (32-bit integer images) are clipped to 0..255 after the shift."""
    return (np.asarray(values).astype(np.int64) >> 8).clip(0, 255).astype(np.uint8)


def rgb_array(image: Image.Image, photo: bool = True, where: str = "the image") -> np.ndarray:
    """A PIL image as (H, W, 3) uint8 RGB: the one conversion every road from a file, a PIL image
    or an array to the model takes. Grey, palette and alpha images are converted (alpha dropped);
    16-bit grey is scaled to 8 bits (``eight_bit``), never clipped.

    A ``photo`` is turned upright by its EXIF orientation, as a viewer shows it. Dataset frames
    (``photo=False``) refuse 16-bit and float images, which there mean a depth map was listed as
    the RGB. A 32-bit float image is refused either way. DataError naming ``where``.
    """
    if photo:
        image = ImageOps.exif_transpose(image)
        if image.mode in ("I;16", "I;16B", "I;16L", "I"):
            return np.repeat(eight_bit(np.asarray(image))[..., None], 3, -1)
    if image.mode not in EIGHT_BIT_MODES:  # e.g. a depth map passed where a photo is expected
        raise DataError(f"{where}: expected an 8-bit{' or 16-bit' if photo else ''} colour image, got mode {image.mode} (a depth map?)")
    return np.asarray(image.convert("RGB"), dtype=np.uint8)


def read_rgb(path: str | os.PathLike, photo: bool = False, max_pixels: int | None = None) -> np.ndarray:
    """(H, W, 3) uint8 RGB of an image file, converted by ``rgb_array`` (``photo``: a user's
    photo, EXIF orientation applied and 16-bit allowed; else a dataset frame). An image of more
    than ``max_pixels`` pixels is a DataError raised before decoding it."""
    path = Path(path)
    return rgb_array(_open_image(path, max_pixels), photo, str(path))


def read_mask(path: str | os.PathLike) -> np.ndarray:
    """(H, W) array of a mask image (any integer mode; colour images give their first channel);
    DataError naming a missing or unreadable file."""
    array = np.asarray(_open_image(Path(path)))
    return array if array.ndim == 2 else array[..., 0]


def _check_scale(scale: float) -> None:
    if not (np.isfinite(scale) and scale > 0):
        raise ConfigError(f"depth scale must be a positive number, got {scale}")


def depth_png_scale(max_depth: float) -> float:
    """Values per metre of a 16-bit depth PNG that holds depths up to ``max_depth`` metres:
    millimetres (1000) while they fit (to 65.535 m), else 256 per metre as KITTI's files (to
    255.996 m), else the finest scale that fits. Written in the PNG's ``depth_scale`` text chunk."""
    for scale in (1000.0, 256.0):
        if max_depth * scale <= np.iinfo(np.uint16).max:
            return scale
    return float(np.iinfo(np.uint16).max) / max_depth


def _read_depth_png(path: Path, scale: float, strict_scale: bool) -> np.ndarray:
    image = _open_image(path)
    if image.mode not in UINT16_DEPTH_MODES:
        bits = "8-bit" if image.mode in EIGHT_BIT_MODES else "non-16-bit"
        raise DataError(f"{path}: a depth PNG must be 16-bit single-channel, this one is {bits} mode {image.mode}")
    declared = image.info.get(SCALE_TEXT_KEY)
    if declared is not None:
        try:
            declared_scale = float(declared)
        except ValueError:
            raise DataError(f"{path}: its {SCALE_TEXT_KEY} text chunk {declared!r} is not a number") from None
        _check_scale(declared_scale)
        if strict_scale and declared_scale != float(scale):
            raise DataError(f"{path}: file declares {SCALE_TEXT_KEY}={declared} but is read with scale {scale:g}")
        scale = declared_scale
    return (np.asarray(image, dtype=np.float32) / np.float32(scale)).astype(np.float32)


def _read_depth_npy(path: Path) -> np.ndarray:
    _require_file(path)
    try:
        # read_array rather than np.load: np.load treats a file without the .npy magic as a
        # pickle and then complains about pickles, which misleads.
        with open(path, "rb") as handle:
            array = np.lib.format.read_array(handle, allow_pickle=False)
    except (OSError, ValueError, EOFError) as exc:
        raise DataError(f"{path}: not a readable .npy file ({_one_line(exc)})") from None
    if not (np.issubdtype(array.dtype, np.floating) or np.issubdtype(array.dtype, np.integer)):
        raise DataError(f"{path}: expected a numeric depth array in metres, got dtype {array.dtype}")
    if array.ndim > 2 and all(size == 1 for size in array.shape[:-2]):
        array = array.reshape(array.shape[-2:])  # (1, H, W) and (1, 1, H, W) as models emit them
    if array.ndim != 2:
        raise DataError(f"{path}: expected an (H, W) depth map, got shape {array.shape}")
    if array.size == 0:
        raise DataError(f"{path}: the depth map is empty (shape {array.shape})")
    return array.astype(np.float32)


def read_depth_tiff(path: str | os.PathLike) -> np.ndarray:
    """(H, W) float32 metres from a single-channel 32-bit float TIFF (Pillow mode "F"), as depth
    cameras' and photogrammetry tools' exports store it; DataError naming the file for any other
    kind (a 16-bit TIFF's unit would be a guess: save such depth as a 16-bit PNG with its scale)."""
    image = _open_image(Path(path))
    if image.mode != "F":
        raise DataError(f"{path}: a depth TIFF must be single-channel 32-bit float metres, this one is mode {image.mode}")
    return np.asarray(image, dtype=np.float32)


def read_depth(path: str | os.PathLike, scale: float, *, prediction: bool = False, strict_scale: bool = False) -> np.ndarray:
    """(H, W) float32 depth in metres from a 16-bit PNG (value / scale), a float TIFF
    (``read_depth_tiff``, metres) or a ``.npy`` (metres).

    A PNG that declares its scale (a ``depth_scale`` text chunk, as clipdepth writes) is read with
    it; ``scale`` is for PNGs that do not. With ``strict_scale`` (a scale the user gave) a PNG that
    declares another one is a DataError. 0 stays 0 (no depth). Ground truth (the default) must
    have no NaN, no infinite and no negative value (0 marks missing depth). ``prediction=True``
    keeps NaN/inf/negative values of a ``.npy`` or TIFF as they are, because the protocol defines what they
    become (docs/protocol.md, post-processing step 2). An empty array is a DataError.
    """
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix == ".png":
        _check_scale(scale)
        depth = _read_depth_png(path, scale, strict_scale)
        if depth.size == 0:
            raise DataError(f"{path}: the depth map is empty ({depth.shape[0]}x{depth.shape[1]})")
        return depth
    if suffix not in (".npy", ".tif", ".tiff"):
        raise DataError(f"{path}: unsupported depth file type {suffix or '(none)'}; use a 16-bit .png, a float .tif or a .npy")
    depth = _read_depth_npy(path) if suffix == ".npy" else read_depth_tiff(path)
    if not prediction:
        n_nan = int(np.count_nonzero(np.isnan(depth)))
        if n_nan:
            raise DataError(f"{path}: depth contains {n_nan} NaN values; mark missing depth as 0")
        n_infinite = int(np.count_nonzero(np.isinf(depth)))
        if n_infinite:  # scored as no depth, it would drop those pixels without a word
            raise DataError(f"{path}: depth contains {n_infinite} infinite values; mark missing depth as 0")
        n_negative = int(np.count_nonzero(depth < 0))
        if n_negative:
            raise DataError(f"{path}: depth contains {n_negative} negative values; depth must be >= 0 (0 = missing)")
    return depth


SOURCE_TEXT_KEY = "source"  # the image a prediction was made from, as text (clipdepth predict; io.fingerprint.readable)
MADE_TEXT_KEY = "made"  # what it was made from: the exact source, its content, the settings (io.fingerprint.Made)


def write_depth_png(path: str | os.PathLike, depth_m: Any, scale: float, made: Made | None = None) -> None:
    """Atomically write metres as a 16-bit PNG: round(depth * scale) clipped to 0..65535.

    The scale is stored in a ``depth_scale`` text chunk, which ``read_depth`` honours. ``made``
    (what a prediction was made from) is stored in a ``made`` chunk, which ``png_made`` reads, and
    its source's name as text in a ``source`` chunk (a name that is not UTF-8 with ``\\xNN`` for
    its undecodable bytes).
    """
    path = Path(path)
    _check_scale(scale)
    depth = np.asarray(depth_m, dtype=np.float64)
    if depth.ndim != 2:
        raise DataError(f"{path}: expected an (H, W) depth map to write, got shape {depth.shape}")
    n_nan = int(np.count_nonzero(np.isnan(depth)))
    if n_nan:
        raise DataError(f"{path}: depth to write contains {n_nan} NaN values; mark missing depth as 0")
    values = np.clip(np.round(depth * scale), 0, np.iinfo(np.uint16).max).astype(np.uint16)
    text = PngImagePlugin.PngInfo()
    text.add_text(SCALE_TEXT_KEY, str(float(scale)))
    text.add_text("units", f"depth = value / {float(scale)} metres; 0 = no depth")
    if made is not None:
        text.add_text(SOURCE_TEXT_KEY, readable(made.source))
        text.add_text(MADE_TEXT_KEY, made.text())
    with atomic_path(path) as tmp:
        Image.fromarray(values).save(tmp, format="PNG", pnginfo=text, compress_level=PNG_COMPRESS_LEVEL)


def png_made(path: str | os.PathLike) -> Made | None:
    """The record of a depth PNG written by ``write_depth_png``: its ``made`` chunk; for a PNG of
    a clipdepth that wrote only the ``source`` chunk, that source alone (``Made(source)``); None
    without either, or for a file that cannot be read."""
    try:
        with open_header(path) as image:
            info = image.info
    except (OSError, SyntaxError, ValueError):
        return None
    made = Made.parse(info.get(MADE_TEXT_KEY))
    source = info.get(SOURCE_TEXT_KEY)
    return made if made is not None or not isinstance(source, str) else Made(source)


def write_npy(path: str | os.PathLike, array: Any) -> None:
    """Atomically save ``array`` as ``.npy``."""
    with atomic_path(path) as tmp, open(tmp, "wb") as handle:
        np.save(handle, np.asarray(array))
