"""Reading and writing RGB images and metric depth maps.

Depth files are 16-bit PNGs (metres = value / scale, 0 = no depth; docs/protocol.md "Caps and units")
or arrays of the values as written (``ARRAY_SUFFIXES``): ``.npy``, ``.npz`` (one array, or the one
named), float32/float16 TIFF and OpenEXR (the ``exr`` extra), in metres unless a caller divides
them. Every problem with an input file is a one-line DataError that names the file and says what
is wrong.
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


HEIF_SUFFIXES = (".heic", ".heif")  # phone photos; read through pillow-heif (the heic extra)
HEIC_INSTALL_HINT = 'pip install "clipdepth[heic]"'


def _register_heif(path: str | os.PathLike) -> None:
    """Teach Pillow HEIC/HEIF (once) before such a file is opened; DataError naming the file and the
    extra when pillow-heif is missing."""
    try:
        import pillow_heif
    except ImportError:
        raise DataError(f"{path}: reading HEIC/HEIF images needs pillow-heif: {HEIC_INSTALL_HINT}") from None
    pillow_heif.register_heif_opener()  # idempotent; EXIF (orientation, focal length) comes through as for JPEG


def open_header(path: str | os.PathLike) -> Image.Image:
    """``Image.open`` of a file: its header read (mode, size, text chunks, EXIF), its pixels not
    decoded; use it as a context manager. Pillow's decompression-bomb guard does not apply, so that
    what a header tells never fails for the image's size (the limits that apply are clipdepth's
    own, such as ``max_pixels``). Raises what ``Image.open`` raises for a file that is not an image
    (OSError, SyntaxError, ValueError); DataError for a HEIC/HEIF file without pillow-heif."""
    if Path(path).suffix.lower() in HEIF_SUFFIXES:
        _register_heif(path)
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


def _depth_map(path: Path, array: np.ndarray) -> np.ndarray:
    """``array`` as an (H, W) float32 map: numeric, leading sizes of 1 dropped, not empty."""
    if not (np.issubdtype(array.dtype, np.floating) or np.issubdtype(array.dtype, np.integer)):
        raise DataError(f"{path}: expected a numeric depth array in metres, got dtype {array.dtype}")
    if array.ndim > 2 and all(size == 1 for size in array.shape[:-2]):
        array = array.reshape(array.shape[-2:])  # (1, H, W) and (1, 1, H, W) as models emit them
    if array.ndim != 2:
        raise DataError(f"{path}: expected an (H, W) depth map, got shape {array.shape}")
    if array.size == 0:
        raise DataError(f"{path}: the depth map is empty (shape {array.shape})")
    return array.astype(np.float32)


def _read_npy(path: Path) -> np.ndarray:
    try:
        # read_array rather than np.load: np.load treats a file without the .npy magic as a
        # pickle and then complains about pickles, which misleads.
        with open(path, "rb") as handle:
            return np.lib.format.read_array(handle, allow_pickle=False)
    except (OSError, ValueError, EOFError) as exc:
        raise DataError(f"{path}: not a readable .npy file ({_one_line(exc)})") from None


def _one_of(path: Path, names: list[str], key: str | None, what: str) -> str:
    """The name of ``names`` to read: ``key``, or the only one; DataError (setting ``key``) naming
    them when ``key`` is not among them or there are several and no ``key``."""
    listed = ", ".join(names) or "none"
    if key is None and len(names) == 1:
        return names[0]
    if key is None:
        raise DataError(f"{path}: holds {len(names)} {what}s ({listed}); name the depth map's with key", setting="key")
    if key not in names:
        raise DataError(f"{path}: holds no {what} {key!r} (it holds {listed})", setting="key")
    return key


def _read_npz(path: Path, key: str | None) -> np.ndarray:
    try:
        with np.load(path, allow_pickle=False) as archive:
            return archive[_one_of(path, sorted(archive.files), key, "array")]
    except DataError:
        raise
    except (OSError, ValueError, EOFError, KeyError) as exc:  # not a zip, a damaged member, a pickled object
        raise DataError(f"{path}: not a readable .npz file ({_one_line(exc)})") from None


def _read_tiff(path: Path) -> np.ndarray:
    """A single-channel TIFF through Pillow (float32, integer modes), else through tifffile where it
    is installed: Pillow cannot decode float16 TIFFs."""
    try:
        image = _open_image(path)
    except DataError as pillow_error:
        try:
            import tifffile
        except ImportError:
            raise DataError(f"{pillow_error}; a float16 TIFF needs the tifffile package (pip install tifffile), or save float32") from None
        try:
            return np.asarray(tifffile.imread(path))
        except (OSError, ValueError, KeyError, IndexError) as exc:  # TiffFileError is a ValueError
            raise DataError(f"{path}: not a readable TIFF ({_one_line(exc)})") from None
    if image.mode in EIGHT_BIT_MODES:
        raise DataError(f"{path}: a depth TIFF must be one channel of floats or integers, this one is 8-bit mode {image.mode}")
    return np.asarray(image)


EXR_INSTALL_HINT = 'pip install "clipdepth[exr]"'  # the OpenEXR package


def require_exr() -> None:
    """ConfigError (setting ``formats``) in one line when the OpenEXR package is missing: said
    before any work, not at the first file."""
    try:
        import OpenEXR  # noqa: F401
    except ImportError:
        raise ConfigError(f"the exr depth format needs the OpenEXR package: {EXR_INSTALL_HINT}", setting="formats") from None


def _read_exr(path: Path, key: str | None) -> np.ndarray:
    """The one channel of an OpenEXR file (half or float), or the one named ``key``."""
    try:
        import OpenEXR
    except ImportError:
        raise DataError(f"{path}: reading .exr needs the OpenEXR package: {EXR_INSTALL_HINT}") from None
    try:
        with OpenEXR.File(str(path), separate_channels=True) as exr:
            channels = exr.channels()
            return np.asarray(channels[_one_of(path, sorted(channels), key, "channel")].pixels)
    except DataError:
        raise
    except (OSError, RuntimeError, ValueError) as exc:  # OpenEXR: RuntimeError "Unable to open ..."
        raise DataError(f"{path}: not a readable .exr file ({_one_line(exc)})") from None


# Files that hold a depth map's values as written, by reader; ``key`` picks an .npz array or an EXR channel.
_ARRAY_READERS = {
    ".npy": lambda path, key: _read_npy(path),
    ".npz": _read_npz,
    ".tif": lambda path, key: _read_tiff(path),
    ".tiff": lambda path, key: _read_tiff(path),
    ".exr": _read_exr,
}
ARRAY_SUFFIXES = tuple(_ARRAY_READERS)
DEPTH_FILE_SUFFIXES = (*ARRAY_SUFFIXES, ".png")  # every depth file read_depth reads


def _check_float_tiff(path: Path) -> None:
    """DataError for a ground-truth TIFF of integers: unlike a PNG it declares no scale, so its unit
    cannot be known (float16 TIFFs, which Pillow cannot open, are floats)."""
    try:
        with open_header(path) as image:
            mode = image.mode
    except (OSError, SyntaxError, ValueError):
        return  # read_depth_array says what is wrong with it
    if mode != "F":
        raise DataError(
            f"{path}: a ground-truth TIFF must hold float metres, this one is mode {mode}, of no declared unit "
            "(save float32 metres, or a 16-bit PNG read with data.depth_scale)"
        )


def read_depth_array(path: str | os.PathLike, key: str | None = None) -> np.ndarray:
    """(H, W) float32 values as written in an array file (``ARRAY_SUFFIXES``): ``.npy``; ``.npz``
    (its one array, or the one named ``key``); single-channel TIFF (float32, float16 through
    tifffile where installed, integers); OpenEXR (its one channel, or ``key``; needs the OpenEXR
    package). (1, H, W) and (1, 1, H, W) arrays are taken as (H, W); float16 becomes float32
    exactly. DataError naming the file for a missing, unreadable, non-numeric, empty or
    not-2-D one, an .npz/EXR with several arrays and no ``key`` (naming them), and an EXR without
    its reader installed (saying what to install)."""
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix not in _ARRAY_READERS:
        raise DataError(f"{path}: not an array file; array files end in {', '.join(ARRAY_SUFFIXES)}")
    _require_file(path)
    return _depth_map(path, _ARRAY_READERS[suffix](path, key))


def read_depth(
    path: str | os.PathLike, scale: float, *, prediction: bool = False, strict_scale: bool = False, key: str | None = None
) -> np.ndarray:
    """(H, W) float32 depth in metres from a 16-bit PNG (value / scale) or an array file (metres;
    ``read_depth_array``, with ``key`` naming the array of an .npz or the channel of an EXR).

    A PNG that declares its scale (a ``depth_scale`` text chunk, as clipdepth writes) is read with
    it; ``scale`` is for PNGs that do not. With ``strict_scale`` (a scale the user gave) a PNG that
    declares another one is a DataError. 0 stays 0 (no depth). Ground truth (the default) must
    have no NaN, no infinite and no negative value (0 marks missing depth). ``prediction=True``
    keeps NaN/inf/negative values of an array as they are, because the protocol defines what they
    become (docs/protocol.md, post-processing step 2). Ground truth in TIFF must be float (an
    integer one declares no unit). An empty map is a DataError.
    """
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix == ".png":
        _check_scale(scale)
        depth = _read_depth_png(path, scale, strict_scale)
        if depth.size == 0:
            raise DataError(f"{path}: the depth map is empty ({depth.shape[0]}x{depth.shape[1]})")
        return depth
    if suffix not in ARRAY_SUFFIXES:
        raise DataError(
            f"{path}: unsupported depth file type {suffix or '(none)'}; use a 16-bit .png or one of {', '.join(ARRAY_SUFFIXES)}"
        )
    if not prediction and suffix in (".tif", ".tiff"):
        _check_float_tiff(path)
    depth = read_depth_array(path, key)
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


def write_tiff(path: str | os.PathLike, depth_m: Any) -> None:
    """Atomically save (H, W) depth as a one-channel float32 TIFF (metres), as Pillow writes mode F."""
    image = Image.fromarray(np.ascontiguousarray(depth_m, dtype=np.float32), mode="F")
    with atomic_path(path) as tmp:
        image.save(tmp, format="TIFF")


def write_exr(path: str | os.PathLike, depth_m: Any) -> None:
    """Atomically save (H, W) depth as an OpenEXR file, one float32 channel "Z" (metres; the
    channel name depth files use). DataError naming the file and the exr extra without OpenEXR."""
    try:
        import OpenEXR
    except ImportError:
        raise DataError(f"{path}: writing .exr needs the OpenEXR package: {EXR_INSTALL_HINT}") from None
    header = {"compression": OpenEXR.ZIP_COMPRESSION, "type": OpenEXR.scanlineimage}
    channels = {"Z": np.ascontiguousarray(depth_m, dtype=np.float32)}
    with atomic_path(path) as tmp, OpenEXR.File(header, channels) as exr:
        exr.write(str(tmp))


def write_npy(path: str | os.PathLike, array: Any) -> None:
    """Atomically save ``array`` as ``.npy``."""
    with atomic_path(path) as tmp, open(tmp, "wb") as handle:
        np.save(handle, np.asarray(array))
