"""`clipdepth score`: score saved predictions against ground truth under a named protocol.

Predictions and ground truth are matched by file stem (or a name pattern); each prediction is read,
converted from what it holds, aligned as asked, post-processed and scored per image
(``clipdepth.evaluation.saved.score_saved``), and the table shows the mean over images.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from ..io.atomic import refuse_existing, write_text_atomic
from .args import flag_for, output_file, positive_float
from .prediction_options import add_alignment, add_prediction_files

HELP = "score saved depth predictions against ground truth"
PER_IMAGE = "per_image.csv"  # written beside the --json file


def register(subparsers: argparse._SubParsersAction) -> None:
    from ..evaluation.protocol import PROTOCOLS
    from ..evaluation.saved import GT_FORMATS

    parser = subparsers.add_parser(
        "score",
        help=HELP,
        description="Score depth predictions (.npy, .npz, float TIFF, .exr, 16-bit .png) against ground truth matched by "
        "file stem, per image, then averaged over images (see docs/compare.md and docs/protocol.md).",
    )
    parser.add_argument("--pred", required=True, type=Path, metavar="DIR", help="folder of predictions (.npy .npz .tif .exr .png)")
    parser.add_argument("--gt", required=True, type=Path, metavar="DIR", help="folder of ground truth (.png or .npy)")
    parser.add_argument("--protocol", required=True, choices=list(PROTOCOLS), help="depth caps, crop and GT scale")
    parser.add_argument(
        "--json",
        type=Path,
        metavar="FILE",
        help=f"also write the mean metrics to this JSON file (with the alignment and the files left out on each side), "
        f"and each image's to {PER_IMAGE} beside it",
    )
    parser.add_argument("--overwrite", action="store_true", help=f"replace an existing --json file and {PER_IMAGE} (default: refuse)")
    parser.add_argument(
        "--pred-scale",
        type=positive_float,
        metavar="S",
        help="predictions that declare no scale (array files, PNGs without one): metres = value / S, e.g. 1000 for "
        "millimetres (default: array files in metres, PNGs at the scale they declare, as clipdepth writes it, else the "
        "protocol's GT scale; metric predictions whose values then look like another unit are refused)",
    )
    parser.add_argument(
        "--gt-scale", type=positive_float, metavar="S", help="PNG ground truth: metres = value / S (default: the protocol's GT scale)"
    )
    parser.add_argument(
        "--allow-missing",
        action="store_true",
        help="score the matched pairs when some files have no partner of the same stem, counting those left out (default: refuse)",
    )
    add_prediction_files(parser)
    add_alignment(parser)
    parser.add_argument("--kb-crop", action="store_true", help="352x1216 predictions are KB crops: paste them into the full GT frame")
    parser.add_argument(
        "--gt-format",
        choices=GT_FORMATS,
        metavar="DATASET",
        help=f"read the ground truth as this dataset stores it ({', '.join(GT_FORMATS)}); default: 16-bit PNG / --gt-scale",
    )
    parser.set_defaults(func=run, flags={"predictions": "--pred", "gt_format": "--gt-format, --gt-scale"})


def run(args: argparse.Namespace) -> int:
    from ..evaluation.protocol import get_protocol
    from ..evaluation.report import per_image_csv, text_table
    from ..evaluation.saved import score_saved

    protocol = get_protocol(args.protocol)
    outputs = [] if args.json is None else [args.json, args.json.parent / PER_IMAGE]
    if outputs:
        output_file(args.json, "--json")
        refuse_existing(outputs, args.overwrite)
    score = score_saved(
        args.pred,
        args.gt,
        protocol,
        pred_scale=args.pred_scale,
        gt_scale=args.gt_scale,
        kb_crop=args.kb_crop,
        gt_format=args.gt_format,
        align=args.align,
        pred_kind=args.pred_kind,
        pred_pattern=args.pred_pattern,
        key=args.key,
        allow_missing=args.allow_missing,
    )
    for setting, warning in score.warnings.items():
        print(f"{warning} ({flag_for(args, setting)})", file=sys.stderr)
    if outputs:  # written before anything is printed: a closed stdout cannot lose them
        write_text_atomic(args.json, json.dumps(score.summary(), indent=2) + "\n")
        write_text_atomic(outputs[1], per_image_csv(score.per_image))
    print(text_table(score.metrics, protocol, args.align, score.n_skipped, args.pred_kind))
    return 0
