"""`clipdepth predict`'s output options: the files besides the 16-bit PNG and colour PNG, their
colour range, and the point clouds' camera; checked before torch is imported."""

from __future__ import annotations

import argparse

from .args import finite_float, path_arg, positive_float, positive_int

CAMERA = ("fx", "fy", "cx", "cy", "intrinsics")
# io.predictions.DEPTH_FORMATS, not imported for --help (tests/test_cli_imports.py checks that they agree).
DEPTH_FORMATS = ("png16", "npy", "tiff", "exr")


def add_outputs(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--format",
        type=formats,
        default=(),
        dest="formats",
        metavar="LIST",
        help="depth files, comma-separated, of png16 (<name>.png, 16-bit, always written), npy, tiff, exr "
        '(float32 metres; exr needs pip install "clipdepth[exr]"), e.g. --format npy,exr',
    )
    p.add_argument("--npy", action="store_true", help="also write <name>.npy (float32 metres): --format npy")
    p.add_argument("--ply", action="store_true", help="also write a coloured point cloud <name>.ply")
    p.add_argument(
        "--ply-stride", type=positive_int, default=1, metavar="N", help="point clouds of every N-th pixel of every N-th row (default 1)"
    )
    p.add_argument("--uncertainty", action="store_true", help="also write <name>_uncertainty.png (and .npy with --npy)")
    p.add_argument(
        "--side-by-side",
        action="store_true",
        help="also write <name>_side.png, the image | its colour depth (a video: both halves in the mp4)",
    )
    p.add_argument("--vmin", type=finite_float, metavar="M", help="colour depth from M metres (default 0)")
    p.add_argument(
        "--vmax",
        type=positive_float,
        metavar="M",
        help="colour depth up to M metres, the same for every image (default: each image's max up to the "
        "model's range; a video: the model's range)",
    )


def formats(text: str) -> tuple[str, ...]:
    """argparse type of --format: names from DEPTH_FORMATS, comma-separated."""
    names = tuple(name.strip() for name in text.split(",") if name.strip())
    unknown = [name for name in names if name not in DEPTH_FORMATS]
    if unknown or not names:
        raise argparse.ArgumentTypeError(f"expected depth formats from {', '.join(DEPTH_FORMATS)}, got {text!r}")
    return names


def add_camera(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--fx",
        type=positive_float,
        help="focal length in pixels of every image for --ply (default: --fy, else --intrinsics, intrinsics.json "
        "beside the image, its EXIF 35 mm focal length, a 60 degree horizontal field of view)",
    )
    p.add_argument("--fy", type=positive_float, help="vertical focal length for --ply (default: --fx)")
    p.add_argument("--cx", type=finite_float, help="principal point for --ply (default: the image centre)")
    p.add_argument("--cy", type=finite_float, help="principal point for --ply (default: the image centre)")
    p.add_argument(
        "--intrinsics",
        type=path_arg,
        metavar="FILE",
        help='JSON of cameras by image name for --ply: {"a.jpg": [fx, fy, cx, cy] or a 3x3 K, ...} or one '
        "camera for all (see docs/predict.md)",
    )


def check_outputs(args: argparse.Namespace, videos_only: bool) -> None:
    """ConfigError for output options that do not go together (before torch is imported)."""
    from ..errors import ConfigError

    if (args.cx is None) != (args.cy is None):
        raise ConfigError("--cx and --cy go together (the principal point); give both or neither (the image centre)")
    camera = [flag for flag in CAMERA if getattr(args, flag) is not None]
    if not args.ply and camera:
        raise ConfigError(f"{'/'.join('--' + f for f in camera)}: the point cloud's intrinsics: add --ply, or drop them")
    if not args.ply and args.ply_stride != 1:
        raise ConfigError("--ply-stride thins the point clouds: add --ply, or drop it")
    if videos_only and (args.npy or args.ply or args.uncertainty or args.formats):
        raise ConfigError("--format, --npy, --ply and --uncertainty are image outputs: a video gives <stem>_depth.mp4 only")
