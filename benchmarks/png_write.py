"""PNG encoders for what ``clipdepth predict`` writes per image: the 16-bit depth PNG (millimetres) and
the colour PNG (turbo colours at the image's size), 480 x 640 each.

Times encoding to memory (no disk) with Pillow at ``compress_level`` 0, 1, 3, 6 (Pillow's default) and 9,
Pillow's ``optimize``, and OpenCV's ``cv2.imencode`` (already installed with the project's
environment) at the same levels; every variant is decoded again and checked to hold the same pixel
values. The depth is a rendered room (``clipdepth.data.synthetic``, dense and smooth as predicted
depth is) or a real depth PNG (``--depth-png``; its holes are filled along rows so that it is dense
too). Alternatives are interleaved, after a warm-up; medians are printed.

    python benchmarks/png_write.py
    python benchmarks/png_write.py --depth-png /work/shared/data/rgbd-samples/nyu/sync_depth_00000.png

Lines: ``png_ms_<variant>=`` and ``png_kb_<variant>=`` for the depth PNG, ``color_png_ms_<variant>=``
and ``color_png_kb_<variant>=`` for the colour PNG, then the chosen default's ratios to Pillow's
default: ``chosen=level1 speedup_depth=... size_ratio_depth=... speedup_color=... size_ratio_color=...``.
"""

from __future__ import annotations

import argparse
import io
import statistics
import time
from collections.abc import Callable

import cv2
import numpy as np
from PIL import Image

from clipdepth.data.synthetic import render_scene
from clipdepth.io.depth_io import PNG_COMPRESS_LEVEL, read_depth
from clipdepth.io.predictions import colour_map

LEVELS = (0, 1, 3, 6, 9)
HEIGHT, WIDTH = 480, 640


def pillow(level: int | None = None, optimize: bool = False) -> Callable[[np.ndarray], bytes]:
    def encode(array: np.ndarray) -> bytes:
        buffer = io.BytesIO()
        options = {"optimize": True} if optimize else {"compress_level": level}
        Image.fromarray(array).save(buffer, format="PNG", **options)
        return buffer.getvalue()

    return encode


def opencv(level: int) -> Callable[[np.ndarray], bytes]:
    def encode(array: np.ndarray) -> bytes:
        # OpenCV takes BGR; the swap is part of what using it would cost
        ok, data = cv2.imencode(".png", array[..., ::-1] if array.ndim == 3 else array, [cv2.IMWRITE_PNG_COMPRESSION, level])
        assert ok
        return data.tobytes()

    return encode


def decoded(data: bytes) -> np.ndarray:
    with Image.open(io.BytesIO(data)) as image:
        return np.asarray(image)


def dense_depth(path: str | None) -> np.ndarray:
    """(480, 640) metres: the given depth PNG with its holes filled along rows, or a rendered room."""
    if path is None:
        return render_scene("indoor", 3, HEIGHT, WIDTH).depth.astype(np.float32)
    depth = read_depth(path, 1000.0).astype(np.float32)
    columns = np.arange(depth.shape[1])
    for row in depth:
        valid = row > 0
        if valid.any():
            row[~valid] = np.interp(columns[~valid], columns[valid], row[valid])
    return depth


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--depth-png", help="a real 16-bit depth PNG (millimetres unless it says) instead of a rendered room")
    parser.add_argument("--repeats", type=int, default=15)
    args = parser.parse_args()

    depth = dense_depth(args.depth_png)
    arrays = {
        "png": np.clip(np.round(depth * 1000.0), 0, 65535).astype(np.uint16),  # as write_depth_png rounds
        "color_png": colour_map(depth, 10.0),
    }
    variants = {
        **{f"level{k}": pillow(k) for k in LEVELS},
        "optimize": pillow(optimize=True),
        **{f"cv2_level{k}": opencv(k) for k in LEVELS},
    }
    times: dict[tuple[str, str], list[float]] = {(a, v): [] for a in arrays for v in variants}
    sizes: dict[tuple[str, str], int] = {}
    for kind, array in arrays.items():  # warm-up, and the same pixels back from every encoder
        for name, encode in variants.items():
            data = encode(array)
            assert np.array_equal(decoded(data), array), f"{name} changed the pixels of the {kind}"
            sizes[kind, name] = len(data)
    for _ in range(args.repeats):
        for kind, array in arrays.items():
            for name, encode in variants.items():
                start = time.perf_counter()
                encode(array)
                times[kind, name].append(time.perf_counter() - start)

    print(
        f"{HEIGHT}x{WIDTH}, {'depth from ' + args.depth_png if args.depth_png else 'a rendered room'}; "
        f"median of {args.repeats}; Pillow's default is level6"
    )
    print(f"{'variant':<12} {'depth ms':>9} {'depth KB':>9} {'colour ms':>10} {'colour KB':>10}")
    for name in variants:
        print(
            f"{name:<12} {statistics.median(times['png', name]) * 1e3:9.2f} {sizes['png', name] / 1e3:9.1f} "
            f"{statistics.median(times['color_png', name]) * 1e3:10.2f} {sizes['color_png', name] / 1e3:10.1f}"
        )
    for kind in arrays:
        for name in variants:
            print(f"{kind}_ms_{name}={statistics.median(times[kind, name]) * 1e3:.2f} {kind}_kb_{name}={sizes[kind, name] / 1e3:.1f}")
    chosen = f"level{PNG_COMPRESS_LEVEL}"
    ratios = []
    for kind, label in (("png", "depth"), ("color_png", "color")):
        speedup = statistics.median(times[kind, "level6"]) / statistics.median(times[kind, chosen])
        ratios.append(f"speedup_{label}={speedup:.2f} size_ratio_{label}={sizes[kind, chosen] / sizes[kind, 'level6']:.2f}")
    print(f"chosen={chosen} " + " ".join(ratios))


if __name__ == "__main__":
    main()
