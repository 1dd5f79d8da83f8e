"""`clipdepth score`: score saved predictions against ground truth under a named protocol.

Predictions and ground truth are matched by file stem; each prediction is post-processed and
scored per image (``clipdepth.evaluation.saved.score_saved``), and the table shows the mean over images.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from ..io.atomic import refuse_existing, write_text_atomic
from .args import flag_for, output_file, positive_float

HELP = "score saved depth predictions against ground truth"


def register(subparsers: argparse._SubParsersAction) -> None:
    from ..evaluation.protocol import PROTOCOLS
    from ..evaluation.saved import GT_FORMATS

    parser = subparsers.add_parser(
        "score",
        help=HELP,
        description="Score depth predictions (.npy metres or 16-bit .png) against ground truth matched by "
        "file stem, per image, then averaged over images (see docs/protocol.md).",
    )
    parser.add_argument("--pred", required=True, type=Path, metavar="DIR", help="folder of predictions (.npy or .png)")
    parser.add_argument("--gt", required=True, type=Path, metavar="DIR", help="folder of ground truth (.png or .npy)")
    parser.add_argument("--protocol", required=True, choices=list(PROTOCOLS), help="depth caps, crop and GT scale")
    parser.add_argument(
        "--json",
        type=Path,
        metavar="FILE",
        help="also write the mean metrics to this JSON file, with the files left out on each side (--allow-missing)",
    )
    parser.add_argument("--overwrite", action="store_true", help="replace an existing --json file (default: refuse)")
    parser.add_argument(
        "--pred-scale",
        type=positive_float,
        metavar="S",
        help="predictions that declare no scale (.npy, PNGs without one): metres = value / S, e.g. 1000 for "
        "millimetres (default: .npy in metres, PNGs at the scale they declare, as clipdepth writes it, else the "
        "protocol's GT scale; predictions whose values then look like another unit are refused)",
    )
    parser.add_argument(
        "--gt-scale", type=positive_float, metavar="S", help="PNG ground truth: metres = value / S (default: the protocol's GT scale)"
    )
    parser.add_argument(
        "--allow-missing",
        action="store_true",
        help="score the matched pairs when some files have no partner of the same stem, counting those left out (default: refuse)",
    )
    parser.add_argument(
        "--median-scaling",
        action="store_true",
        help="rescale each prediction by median(gt)/median(pred); ONLY for relative (self-supervised) models",
    )
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
    from ..evaluation.report import text_table
    from ..evaluation.saved import score_saved

    protocol = get_protocol(args.protocol)
    if args.json is not None:
        output_file(args.json, "--json")
        refuse_existing([args.json], args.overwrite)
    score = score_saved(
        args.pred,
        args.gt,
        protocol,
        pred_scale=args.pred_scale,
        gt_scale=args.gt_scale,
        kb_crop=args.kb_crop,
        gt_format=args.gt_format,
        median_scaling=args.median_scaling,
        allow_missing=args.allow_missing,
    )
    for setting, warning in score.warnings.items():
        print(f"{warning} ({flag_for(args, setting)})", file=sys.stderr)
    if args.json is not None:  # written before anything is printed: a closed stdout cannot lose it
        result = {
            **score.metrics,
            "n_predictions_without_gt": score.n_predictions_without_gt,
            "n_gt_without_prediction": score.n_gt_without_prediction,
        }
        write_text_atomic(args.json, json.dumps(result, indent=2) + "\n")
    print(text_table(score.metrics, protocol, args.median_scaling, score.n_skipped))
    return 0
