"""`clipdepth evaluate`: score a trained head on a dataset with the exact protocol.

Every image is scored (no dropped last batch), at the GT's own resolution unless
``--score-at-input`` asks for the reference code's way. Writes the summary JSON, per-image
metrics as CSV and a markdown table.
"""
from __future__ import annotations

import argparse

from .args import output_folder, path_arg, positive_int, refuse_existing
import csv
import dataclasses
import json
from pathlib import Path


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "evaluate",
        help="score a trained head on a dataset",
        description="Example: clipdepth evaluate --checkpoint outputs/demo/model --dataset nyu "
        "--data-root /data/nyu --split nyudepthv2_test_files_with_gt.txt --tta",
    )
    p.add_argument("--checkpoint", required=True, help="a head checkpoint folder (e.g. outputs/demo/model)")
    p.add_argument("--dataset", help="dataset name (default: the checkpoint's)")
    p.add_argument("--data-root", help="dataset folder the split list's paths are relative to")
    p.add_argument("--split", help="test split list (BTS format)")
    p.add_argument("--protocol", help="evaluation protocol (default: the dataset's, e.g. nyu, kitti)")
    p.add_argument(
        "--config", metavar="RECIPE",
        help="take the dataset settings and protocol from a recipe, e.g. zeroshot/sun_rgbd (flags still win)",
    )
    captions = p.add_mutually_exclusive_group()
    captions.add_argument("--caption", help="TR2M: one caption for every frame")
    captions.add_argument("--caption-dir", help="TR2M: folder of <frame name>.txt captions (line 0 is used)")
    tta = p.add_mutually_exclusive_group()
    tta.add_argument("--tta", dest="tta", action="store_true", default=None, help="flip test-time augmentation")
    tta.add_argument("--no-tta", dest="tta", action="store_false", help="no flip TTA (default: the checkpoint's eval.tta)")
    p.add_argument(
        "--score-at-input", action="store_true",
        help="score at the encoder input size against resized GT, as the reference code (for comparison only)",
    )
    p.add_argument("--batch-size", type=positive_int, default=8)
    p.add_argument("--out", type=path_arg, help="output folder (default: outputs/eval/<dataset>)")
    p.add_argument("--overwrite", action="store_true", help="replace the results of an earlier run there (default: refuse)")
    p.add_argument("overrides", nargs="*", metavar="KEY=VALUE", help="data overrides, e.g. data.tiles=4")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from ..config import DataConfig, load_config, with_overrides
    from ..data import DATASET_PROTOCOLS, get_dataset
    from ..errors import ConfigError
    from ..evaluation.evaluate import evaluate_dataset, model_predictor
    from ..evaluation.metrics import ALL_METRIC_NAMES
    from ..evaluation.protocol import get_protocol
    from ..evaluation.report import markdown_table
    from ..io.atomic import atomic_path, write_text_atomic
    from ..models import load_model
    from ..data.captions import caption_lookup
    from ..training.run import resolve_device

    model = load_model(args.checkpoint)
    trained_on = model.cfg.data
    recipe = load_config(args.config) if args.config else None
    dataset_name = args.dataset or (recipe.data.dataset if recipe else trained_on.dataset)
    # Preprocessing (input crop, tiles) is the recipe's, else the checkpoint's on its own dataset,
    # else plain.
    if recipe is not None:
        base = recipe.data
    else:
        base = trained_on if dataset_name == trained_on.dataset else DataConfig(seed=trained_on.seed)
    bad = [o for o in args.overrides if not o.startswith("data.")]
    if bad:
        raise ConfigError(f"override {bad[0]!r}: only data.<field>=<value> can be overridden here")
    data = with_overrides(base, [
        f"dataset={dataset_name}",
        *([f"root={args.data_root}"] if args.data_root else []),
        *([f"test_list={args.split}"] if args.split else []),
        *([f"caption={args.caption}"] if args.caption is not None else []),
        *([f"caption_dir={args.caption_dir}"] if args.caption_dir else []),
        *(o.removeprefix("data.") for o in args.overrides),
    ])
    if dataset_name not in DATASET_PROTOCOLS:
        raise ConfigError(f"unknown dataset {dataset_name!r}; available: {sorted(DATASET_PROTOCOLS)}")
    protocol = get_protocol(args.protocol or (recipe.eval.protocol if recipe else DATASET_PROTOCOLS[dataset_name]))
    if args.score_at_input:  # crops are defined on the GT frame, which this mode leaves
        protocol = dataclasses.replace(protocol, crop=None)
    tta = model.cfg.eval.tta if args.tta is None else args.tta

    out = output_folder(args.out or f"outputs/eval/{dataset_name}")
    refuse_existing([out / name for name in ("metrics.json", "per_image.csv", "results.md")], args.overwrite)
    dataset = get_dataset(data, "test")
    model.to(resolve_device(model.cfg.device))
    preprocessor = model.preprocessor(data)
    predict = model_predictor(model, preprocessor, tta, args.score_at_input,
                              caption_lookup(data) if model.uses_captions else None)
    acc, names = evaluate_dataset(dataset, predict, protocol, args.batch_size)
    if not names:
        raise ConfigError(f"no image of {dataset_name} has a valid ground-truth pixel under protocol {protocol.name}")

    summary = {
        **acc.mean(),
        "dataset": dataset_name,
        "n_listed": getattr(dataset, "n_listed", len(dataset)),
        "n_without_gt": getattr(dataset, "n_without_gt", 0),
        "n_no_valid_pixel": acc.n_skipped,
        "protocol": protocol.name,
        "flip_tta": tta,
        "scored_at": "encoder input (reference code)" if args.score_at_input else "ground-truth resolution",
        "checkpoint": str(args.checkpoint),
        "encoder": model.encoder.description,
        "pixel_pooled": acc.pixel_pooled(),
    }
    write_text_atomic(out / "metrics.json", json.dumps(summary, indent=2))
    with atomic_path(out / "per_image.csv") as tmp, tmp.open("w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["name", *ALL_METRIC_NAMES])
        writer.writerows([name, *(f"{m[k]:.6g}" for k in ALL_METRIC_NAMES)] for name, m in zip(names, acc.per_image))
    table = markdown_table({f"{Path(args.checkpoint).name} on {dataset_name}": summary})
    write_text_atomic(
        out / "results.md",
        f"# {dataset_name}: protocol `{protocol.name}`, flip TTA {'on' if tta else 'off'}, "
        f"scored at {summary['scored_at']}\n\n{table}",
    )
    print(table)
    print(
        f"{summary['n_listed']} listed, {summary['n_without_gt']} without ground truth, {acc.n_images} scored; "
        f"wrote {out}/metrics.json, per_image.csv, results.md"
    )
    return 0

