"""`clipdepth evaluate`: score a trained head on a dataset with the exact protocol
(``clipdepth.evaluation.checkpoint.evaluate_checkpoint``): every image, at the GT's own resolution
unless ``--score-at-input``; writes metrics.json, per_image.csv and results.md.
"""

from __future__ import annotations

import argparse

from .args import add_workers, output_folder, path_arg, positive_int

HELP = "score a trained head on a dataset"


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "evaluate",
        help=HELP,
        description="Example: clipdepth evaluate --checkpoint outputs/demo/model --dataset nyu "
        "--data-root /data/nyu --split nyudepthv2_test_files_with_gt.txt --tta",
    )
    p.add_argument("--checkpoint", required=True, help="a head checkpoint folder (e.g. outputs/demo/model)")
    p.add_argument("--dataset", help="dataset name (default: the checkpoint's)")
    p.add_argument("--data-root", help="dataset folder the split list's paths are relative to")
    p.add_argument("--split", help="test split list (BTS format); a relative path is read from --data-root")
    p.add_argument(
        "--protocol",
        help="evaluation protocol (default: the one the checkpoint's training validated this "
        "dataset with, else the dataset's, e.g. nyu, kitti)",
    )
    p.add_argument(
        "--config", metavar="RECIPE", help="take the dataset settings and protocol from a recipe, e.g. zeroshot/sun_rgbd (flags still win)"
    )
    captions = p.add_mutually_exclusive_group()
    captions.add_argument("--caption", help="TR2M, RSA: one caption for every frame")
    captions.add_argument("--caption-dir", help="TR2M, RSA: folder of <frame name>.txt captions (line 0 is used)")
    tta = p.add_mutually_exclusive_group()
    tta.add_argument("--tta", dest="tta", action="store_true", default=None, help="flip test-time augmentation")
    tta.add_argument("--no-tta", dest="tta", action="store_false", help="no flip TTA (default: the checkpoint's eval.tta)")
    p.add_argument(
        "--score-at-input",
        action="store_true",
        help="score at the encoder input size against resized GT, as the released code (for comparison only)",
    )
    p.add_argument("--batch-size", type=positive_int, default=8)
    add_workers(p, "the frames")
    p.add_argument("--out", type=path_arg, help="output folder (default: outputs/eval/<dataset>)")
    p.add_argument("--overwrite", action="store_true", help="replace the results of an earlier run there (default: refuse)")
    p.add_argument("overrides", nargs="*", metavar="KEY=VALUE", help="data overrides, e.g. data.tiles=4")
    p.set_defaults(func=run, flags={"data.root": "--data-root", "data.test_list": "--split"})


def run(args: argparse.Namespace) -> int:
    from ..errors import ConfigError
    from ..evaluation.checkpoint import evaluate_checkpoint

    bad = [o for o in args.overrides if not o.startswith("data.")]
    if bad:
        raise ConfigError(f"override {bad[0]!r}: only data.<field>=<value> can be overridden here")
    if args.out is not None:
        output_folder(args.out)
    data = [
        *([f"root={args.data_root}"] if args.data_root else []),
        *([f"test_list={args.split}"] if args.split else []),
        *([f"caption={args.caption}"] if args.caption is not None else []),
        *([f"caption_dir={args.caption_dir}"] if args.caption_dir else []),
        *(o.removeprefix("data.") for o in args.overrides),
    ]
    summary, table = evaluate_checkpoint(
        args.checkpoint,
        dataset=args.dataset,
        recipe=args.config,
        protocol=args.protocol,
        data_overrides=data,
        tta=args.tta,
        score_at_input=args.score_at_input,
        batch_size=args.batch_size,
        out=args.out,
        overwrite=args.overwrite,
        workers=args.workers,
    )
    print(summary["settings"])
    print(table)
    print(
        f"{summary['n_listed']} listed, {summary['n_without_gt']} without ground truth, {summary['n_images']} scored; "
        f"wrote {args.out or 'outputs/eval/' + summary['dataset']}/metrics.json, per_image.csv, results.md"
    )
    return 0
