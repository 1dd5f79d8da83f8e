"""`clipdepth score`: score saved predictions against ground truth under a named protocol.

Predictions and ground truth are matched by file stem; each prediction is post-processed and
scored per image as protocol.md prescribes, and the table shows the mean over images.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from ..errors import DataError
from ..evaluation.metrics import LOWER_IS_BETTER, METRIC_NAMES, MetricAccumulator
from ..evaluation.protocol import PROTOCOLS, Protocol, get_protocol, score_pair
from ..evaluation.saved import GT_FORMATS, SavedPairs, errors_naming, match_by_stem
from ..io.atomic import write_text_atomic
from .args import output_file, positive_float, refuse_existing


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "score",
        help="score saved depth predictions against ground truth",
        description="Score depth predictions (.npy metres or 16-bit .png) against ground truth matched by "
        "file stem, per image, then averaged over images (see protocol.md).",
    )
    parser.add_argument("--pred", required=True, type=Path, metavar="DIR", help="folder of predictions (.npy or .png)")
    parser.add_argument("--gt", required=True, type=Path, metavar="DIR", help="folder of ground truth (.png or .npy)")
    parser.add_argument("--protocol", required=True, choices=list(PROTOCOLS), help="depth caps, crop and GT scale")
    parser.add_argument("--json", type=Path, metavar="FILE", help="also write the mean metrics to this JSON file")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing --json file (default: refuse)")
    parser.add_argument(
        "--pred-scale", type=positive_float, metavar="S",
        help="PNG predictions: metres = value / S (default: the scale the PNG declares, as clipdepth writes it, "
        "else the protocol's GT scale)",
    )
    parser.add_argument(
        "--gt-scale", type=positive_float, metavar="S", help="PNG ground truth: metres = value / S (default: the protocol's GT scale)"
    )
    parser.add_argument(
        "--median-scaling",
        action="store_true",
        help="rescale each prediction by median(gt)/median(pred); ONLY for relative (self-supervised) models",
    )
    parser.add_argument(
        "--kb-crop", action="store_true", help="352x1216 predictions are KB crops: paste them into the full GT frame"
    )
    parser.add_argument(
        "--gt-format", choices=GT_FORMATS, metavar="DATASET",
        help=f"read the ground truth as this dataset stores it ({', '.join(GT_FORMATS)}); default: 16-bit PNG / --gt-scale",
    )
    parser.set_defaults(func=run)


def _format_table(result: dict[str, float], protocol: Protocol, median_scaling: bool, n_skipped: int) -> str:
    crop = protocol.crop or "none"
    lines = [
        f"protocol {protocol.name}: {protocol.min_depth:g} < gt < {protocol.max_depth:g} m, crop {crop}, "
        f"median scaling {'ON (relative-depth evaluation)' if median_scaling else 'off'}; mean over images"
    ]
    columns = [*METRIC_NAMES, "n_images"]
    widths = [max(len(name), 8) for name in columns]
    lines.append("  ".join(name.rjust(width) for name, width in zip(columns, widths)))
    cells = [f"{result[name]:.4f}" for name in METRIC_NAMES] + [str(result["n_images"])]
    lines.append("  ".join(cell.rjust(width) for cell, width in zip(cells, widths)))
    lines.append(
        "lower is better: "
        + " ".join(name for name in METRIC_NAMES if LOWER_IS_BETTER[name])
        + "; higher is better: "
        + " ".join(name for name in METRIC_NAMES if not LOWER_IS_BETTER[name])
    )
    if n_skipped:
        lines.append(f"skipped {n_skipped} images with no valid ground-truth pixel")
    return "\n".join(lines)


def run(args: argparse.Namespace) -> int:
    protocol = get_protocol(args.protocol)
    if args.json is not None:
        output_file(args.json, "--json")
        refuse_existing([args.json], args.overwrite)
    pairs = match_by_stem(args.pred, args.gt, gt_format=args.gt_format)
    saved = SavedPairs(pairs, protocol, args.pred_scale, args.gt_scale, args.kb_crop, args.gt_format, "scoring")
    accumulator = MetricAccumulator()
    for pred, gt, gt_path in saved:
        with errors_naming(gt_path):  # e.g. the NYU crop refusing a GT that is not 480x640
            score_pair(pred, gt, protocol, median_scaling=args.median_scaling, accumulator=accumulator)
    for warning in (saved.range_warning(), saved.prediction_warning()):
        if warning:
            print(warning, file=sys.stderr)
    if accumulator.n_images == 0:
        raise DataError(
            f"{args.gt}: none of the {len(pairs)} ground-truth maps has a valid pixel under protocol {protocol.name}"
        )

    # The protocol's nine and the image count; abs_diff is no protocol metric.
    result = {k: v for k, v in accumulator.mean().items() if k in (*METRIC_NAMES, "n_images")}
    if args.json is not None:  # written before anything is printed: a closed stdout cannot lose it
        write_text_atomic(args.json, json.dumps(result, indent=2) + "\n")
    print(_format_table(result, protocol, args.median_scaling, accumulator.n_skipped))
    return 0
