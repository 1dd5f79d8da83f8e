"""`clipdepth analyze`: error-vs-depth figures (the PureCLIP-Depth paper's Fig. 2) from saved
predictions (``clipdepth.evaluation.error_figures.analyze_saved``): joint_histogram.png,
error_spread.png, gt_histogram.png and analysis.json.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from .args import output_folder, path_arg, positive_float, positive_int
from .prediction_options import add_prediction_files

HELP = "plot prediction error against ground-truth depth (PureCLIP-Depth Fig. 2)"


def register(subparsers: argparse._SubParsersAction) -> None:
    from ..evaluation.error_figures import DEFAULT_BINS
    from ..evaluation.protocol import PROTOCOLS
    from ..evaluation.saved import GT_FORMATS

    parser = subparsers.add_parser(
        "analyze",
        help=HELP,
        description="Over all valid pixels (protocol post-processing and masks, as `clipdepth score`): a 2-D "
        "histogram of prediction vs GT depth, the mean and standard deviation of pred - gt per GT-depth bin, "
        "and a GT-depth histogram, as PNGs, plus analysis.json with the per-bin numbers.",
    )
    parser.add_argument(
        "--predictions",
        "--pred",
        dest="predictions",
        required=True,
        type=Path,
        metavar="DIR",
        help="folder of metric predictions (.npy .npz .tif .exr in metres, or 16-bit .png)",
    )
    parser.add_argument("--gt", required=True, type=Path, metavar="DIR", help="folder of ground truth (.png or .npy)")
    parser.add_argument("--protocol", required=True, choices=list(PROTOCOLS), help="depth caps, crop and GT scale")
    parser.add_argument(
        "--pred-scale",
        type=positive_float,
        metavar="S",
        help="predictions that declare no scale (array files, PNGs without one): metres = value / S (default: array "
        "files in metres, PNGs at the scale they declare, else the protocol's GT scale)",
    )
    parser.add_argument(
        "--gt-scale", type=positive_float, metavar="S", help="PNG ground truth: metres = value / S (default: the protocol's GT scale)"
    )
    add_prediction_files(parser)
    parser.add_argument("--kb-crop", action="store_true", help="352x1216 predictions are KB crops: paste them into the full GT frame")
    parser.add_argument(
        "--gt-format",
        choices=GT_FORMATS,
        metavar="DATASET",
        help=f"read the ground truth as this dataset stores it ({', '.join(GT_FORMATS)}); default: 16-bit PNG / --gt-scale",
    )
    parser.add_argument("--out", type=path_arg, default=Path("analysis"), metavar="DIR", help="output folder (default: ./analysis)")
    parser.add_argument("--overwrite", action="store_true", help="replace the results of an earlier run there (default: refuse)")
    parser.add_argument(
        "--bins",
        type=positive_int,
        default=DEFAULT_BINS,
        metavar="N",
        help=f"equal GT-depth bins over 0..max depth for the error spread (default: {DEFAULT_BINS})",
    )
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from ..evaluation.error_figures import analyze_saved, bin_table
    from ..evaluation.protocol import get_protocol

    protocol = get_protocol(args.protocol)
    output_folder(args.out)
    result, stats = analyze_saved(
        args.predictions,
        args.gt,
        args.out,
        protocol,
        pred_scale=args.pred_scale,
        gt_scale=args.gt_scale,
        kb_crop=args.kb_crop,
        gt_format=args.gt_format,
        bins=args.bins,
        overwrite=args.overwrite,
        pred_pattern=args.pred_pattern,
        key=args.key,
    )
    skipped = result["n_skipped"]
    print(
        f"protocol {protocol.name}: {result['n_pixels']} valid pixels in {result['n_images']} images"
        + (f" ({skipped} skipped, no valid pixel)" if skipped else "")
    )
    print(bin_table(stats))
    print(f"wrote {args.out}/joint_histogram.png, error_spread.png, gt_histogram.png, analysis.json")
    return 0
