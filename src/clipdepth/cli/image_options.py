"""The options of the commands that read images: what of each image the model is fed (``--crop``,
``--dataset``), the images they refuse (``--max-tiles``, ``--max-pixels``), and where and at which
precision the model runs (``--device``, ``--precision``)."""

from __future__ import annotations

import argparse

from .args import positive_int


# models.base.MAX_TILES, which is not imported for it: importing the models takes seconds, too long
# for --help (tests/test_cli_imports.py checks that the two agree).
DEFAULT_MAX_TILES = 8


# models.base.INFER_CROPS, not imported for --help (tests/test_cli_imports.py checks that they agree).
INFER_CROPS = ("none", "trained")


# device.RUN_PRECISIONS, not imported for --help: it imports torch (tests/test_cli_imports.py checks that they agree).
RUN_PRECISIONS = ("auto", "bf16", "fp16", "fp32")


# io.depth_io.MAX_PHOTO_PIXELS, not imported for --help: it imports numpy and Pillow (tests/test_cli_imports.py
# checks that the two agree).
DEFAULT_MAX_PIXELS = 50_000_000


def add_crop(parser: argparse.ArgumentParser) -> None:
    """``--crop none|trained`` and ``--dataset``: what of each image the model is fed
    (``DepthModel.processor_for``)."""
    parser.add_argument(
        "--crop",
        choices=INFER_CROPS,
        default="none",
        help="none (default): feed each whole image, as suits photos; trained: the checkpoint's trained input crop "
        "(e.g. NYU's [40, 470, 38, 603] white-border crop, KITTI's KB crop) and tiles, as `evaluate` feeds dataset "
        "frames, so that predictions on those frames score as evaluate does",
    )
    parser.add_argument(
        "--dataset",
        metavar="NAME",
        help="with --crop trained: the dataset the images are frames of, fed as `evaluate --dataset NAME` feeds them "
        "(default: the checkpoint's own dataset)",
    )


def megapixels(text: str) -> float:
    """argparse type: a finite number of megapixels > 0 (inf has no pixel count; nan is no number)."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number of megapixels, got {text!r}") from None
    if value == float("inf"):
        raise argparse.ArgumentTypeError(f"expected a finite number of megapixels, got {text}")
    if not value > 0:
        raise argparse.ArgumentTypeError(f"expected a positive number of megapixels, got {value:g}")
    return value


def add_image_limits(parser: argparse.ArgumentParser) -> None:
    """``--max-tiles`` and ``--max-pixels`` (megapixels): the images a command refuses, which
    bounds the memory one image can take."""
    parser.add_argument(
        "--max-tiles",
        type=positive_int,
        default=DEFAULT_MAX_TILES,
        help=f"refuse images that need more tiles than this (default {DEFAULT_MAX_TILES}: an aspect ratio up to about "
        f"{DEFAULT_MAX_TILES}:1)",
    )
    add_max_pixels(parser)


def add_max_pixels(parser: argparse.ArgumentParser) -> None:
    """``--max-pixels MP``: images larger than this many megapixels are refused from their header,
    before decoding (``io.depth_io.read_rgb``'s ``max_pixels``, MP x 1e6)."""
    parser.add_argument(
        "--max-pixels",
        type=megapixels,
        default=DEFAULT_MAX_PIXELS / 1e6,
        metavar="MP",
        help=f"refuse images larger than this many megapixels (default {DEFAULT_MAX_PIXELS / 1e6:g})",
    )


def add_device(parser: argparse.ArgumentParser) -> None:
    """``--device`` and ``--precision``: the config's ``device`` and ``precision`` (``run_overrides``)."""
    parser.add_argument(
        "--device",
        metavar="NAME",
        help="where the model runs: auto (default: CUDA, else another accelerator, else mps, else cpu), cpu, cuda, cuda:N, mps, ...",
    )
    parser.add_argument(
        "--precision",
        choices=RUN_PRECISIONS,
        help="the whole model at fp32, fp16 or bf16 on any device that has it (default auto: each part's own "
        "setting, reduced precision on CUDA only)",
    )


def run_overrides(args: argparse.Namespace) -> list[str]:
    """``--device`` / ``--precision`` as the config overrides they stand for."""
    return [f"{name}={getattr(args, name)}" for name in ("device", "precision") if getattr(args, name, None) is not None]
