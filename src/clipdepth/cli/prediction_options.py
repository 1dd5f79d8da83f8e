"""The options of the commands that read saved predictions (``score``, ``analyze``): which files of
a predictions folder are read (``--pred-pattern``, ``--key``), what they hold and how each is fitted
to its ground truth (``--pred-kind``, ``--align``)."""

from __future__ import annotations

import argparse


def add_prediction_files(parser: argparse.ArgumentParser) -> None:
    """``--pred-pattern`` and ``--key``: which files of a predictions folder are read, and which
    array of an .npz or channel of an EXR (``evaluation.saved.prediction_files``, ``io.depth_io``)."""
    parser.add_argument(
        "--pred-pattern",
        metavar="PATTERN",
        help="prediction file name for a ground-truth stem, other files ignored: {stem}_raw_depth_meter.npy (Depth Anything V2), "
        "{stem}_depth.npy (Marigold), {stem}.npz (Depth Pro) (default: the same stem, any depth file type)",
    )
    parser.add_argument(
        "--key", metavar="NAME", help="the array of .npz predictions, or the channel of .exr ones, that holds the depth map"
    )


def add_alignment(parser: argparse.ArgumentParser) -> None:
    """``--pred-kind`` and ``--align`` (``--median-scaling``, its older name, sets ``align`` to
    median): what prediction files hold and how each is fitted to its ground truth
    (``evaluation.protocol.align_prediction``)."""
    from ..evaluation.protocol import ALIGNMENTS, PRED_KINDS

    parser.add_argument(
        "--pred-kind",
        choices=PRED_KINDS,
        default="depth",
        help="what the files hold: depth (metres), inverse (1/metres), disparity (inverse depth up to scale and shift, "
        "as relative models write it; needs --align) (default: depth)",
    )
    group = parser.add_mutually_exclusive_group()
    group.add_argument(
        "--align",
        choices=ALIGNMENTS,
        default="none",
        help="fit each prediction to its ground truth before scoring, ONLY for relative models: median (scale), lsq (scale "
        "and shift in depth), lsq-disparity (scale and shift in inverse depth) (default: none)",
    )
    group.add_argument(
        "--median-scaling", dest="align", action=MedianScaling, nargs=0, help="the same as --align median (older name, deprecated)"
    )


class MedianScaling(argparse.Action):
    """``--median-scaling``: ``--align median``, with a FutureWarning naming the new flag."""

    def __call__(self, parser, namespace, values, option_string=None):
        from ..config.legacy import renamed

        renamed("--median-scaling", "--align median")
        setattr(namespace, self.dest, "median")
