"""`clipdepth score`: score saved predictions against ground truth under a named protocol.

Predictions and ground truth are matched by file stem; each prediction is post-processed and
scored per image as protocol.md prescribes, and the table shows the mean over images.
"""
from __future__ import annotations

import argparse
import contextlib
import json
import sys
from pathlib import Path
from typing import Iterator

import numpy as np
from tqdm import tqdm

from ..errors import DataError
from ..evaluation.metrics import LOWER_IS_BETTER, METRIC_NAMES, MetricAccumulator
from ..evaluation.protocol import KB_CROP_SHAPE, PROTOCOLS, Protocol, get_protocol, kb_crop_paste, score_pair
from ..io.atomic import write_text_atomic
from ..io.depth_io import read_depth

DEPTH_SUFFIXES = (".png", ".npy")
# A prediction whose aspect ratio is this close to the GT's is taken as a resized prediction.
ASPECT_TOLERANCE = 0.02


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
    parser.add_argument(
        "--pred-scale", type=float, metavar="S", help="PNG predictions: metres = value / S (default: the protocol's GT scale)"
    )
    parser.add_argument(
        "--gt-scale", type=float, metavar="S", help="PNG ground truth: metres = value / S (default: the protocol's GT scale)"
    )
    parser.add_argument(
        "--median-scaling",
        action="store_true",
        help="rescale each prediction by median(gt)/median(pred); ONLY for relative (self-supervised) models",
    )
    parser.add_argument(
        "--kb-crop", action="store_true", help="352x1216 predictions are KB crops: paste them into the full GT frame"
    )
    parser.set_defaults(func=run)


def _depth_files(folder: Path, flag: str) -> dict[str, Path]:
    """Depth files of ``folder`` by stem."""
    if not folder.is_dir():
        raise DataError(f"{folder}: {flag} folder not found")
    files: dict[str, Path] = {}
    for path in sorted(folder.iterdir()):
        if path.is_file() and path.suffix.lower() in DEPTH_SUFFIXES:
            if path.stem in files:
                raise DataError(f"{path}: same stem as {files[path.stem].name}; keep one file per image")
            files[path.stem] = path
    if not files:
        raise DataError(f"{folder}: no .png or .npy files in the {flag} folder")
    return files


def _match_by_stem(pred_dir: Path, gt_dir: Path) -> list[tuple[Path, Path]]:
    preds, gts = _depth_files(pred_dir, "--pred"), _depth_files(gt_dir, "--gt")
    unmatched = sorted(
        [(stem, path, gt_dir) for stem, path in preds.items() if stem not in gts]
        + [(stem, path, pred_dir) for stem, path in gts.items() if stem not in preds]
    )
    if unmatched:
        stem, path, other_dir = unmatched[0]
        raise DataError(f"{path}: no file with stem {stem!r} in {other_dir} (unmatched files: {len(unmatched)})")
    return [(preds[stem], gts[stem]) for stem in sorted(preds)]


@contextlib.contextmanager
def _errors_naming(path: Path) -> Iterator[None]:
    """Prefix ``path`` to DataErrors from checks that know array sizes but not files."""
    try:
        yield
    except DataError as exc:
        raise DataError(f"{path}: {exc}") from None


def _to_gt_frame(pred: np.ndarray, pred_path: Path, gt_shape: tuple[int, int], kb_crop: bool) -> np.ndarray:
    """Paste a KB crop into the GT frame, or check that the prediction is a resize of the GT frame."""
    if kb_crop and pred.shape == KB_CROP_SHAPE:
        with _errors_naming(pred_path):
            return kb_crop_paste(pred, gt_shape)
    (pred_h, pred_w), (gt_h, gt_w) = pred.shape, gt_shape
    if abs((pred_w / pred_h) / (gt_w / gt_h) - 1) > ASPECT_TOLERANCE:
        hint = " (use --kb-crop for KB-crop predictions)" if pred.shape == KB_CROP_SHAPE else ""
        raise DataError(
            f"{pred_path}: prediction is {pred_h}x{pred_w} but the ground truth is {gt_h}x{gt_w}; "
            f"aspect ratios differ, so it is not a resize{hint}"
        )
    return pred


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


def read_pairs(
    pairs: list[tuple[Path, Path]], protocol: Protocol, pred_scale: float | None, gt_scale: float | None,
    kb_crop: bool, desc: str,
) -> Iterator[tuple[np.ndarray, np.ndarray, Path]]:
    """(prediction on the GT frame, GT, GT path) per matched pair, with a progress bar; a scale of
    None means the protocol's GT scale."""
    pred_scale = protocol.gt_scale if pred_scale is None else pred_scale
    gt_scale = protocol.gt_scale if gt_scale is None else gt_scale
    for pred_path, gt_path in tqdm(pairs, desc=desc, unit="image", file=sys.stderr, disable=None, leave=False):
        gt = read_depth(gt_path, gt_scale)
        pred = _to_gt_frame(read_depth(pred_path, pred_scale, prediction=True), pred_path, gt.shape, kb_crop)
        yield pred, gt, gt_path


def run(args: argparse.Namespace) -> int:
    protocol = get_protocol(args.protocol)
    pairs = _match_by_stem(args.pred, args.gt)

    accumulator = MetricAccumulator()
    for pred, gt, gt_path in read_pairs(pairs, protocol, args.pred_scale, args.gt_scale, args.kb_crop, "scoring"):
        with _errors_naming(gt_path):  # e.g. the NYU crop refusing a GT that is not 480x640
            score_pair(pred, gt, protocol, median_scaling=args.median_scaling, accumulator=accumulator)
    if accumulator.n_images == 0:
        raise DataError(
            f"{args.gt}: none of the {len(pairs)} ground-truth maps has a valid pixel under protocol {protocol.name}"
        )

    # The protocol's nine and the image count; abs_diff is no protocol metric.
    result = {k: v for k, v in accumulator.mean().items() if k in (*METRIC_NAMES, "n_images")}
    print(_format_table(result, protocol, args.median_scaling, accumulator.n_skipped))
    if args.json is not None:
        write_text_atomic(args.json, json.dumps(result, indent=2) + "\n")
    return 0
