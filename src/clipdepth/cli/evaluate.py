"""`clipdepth evaluate`: score a trained head (``clipdepth.evaluation.checkpoint.evaluate_checkpoint``)
or any transformers depth model (``--hf``: ``clipdepth.evaluation.hf_models.evaluate_hf``) on a
dataset with the exact protocol: every image, at the GT's own resolution unless
``--score-at-input``; writes metrics.json, per_image.csv and results.md.
"""

from __future__ import annotations

import argparse

from .args import add_workers, output_folder, path_arg, positive_int
from .image_options import add_device

HELP = "score a trained head, or a transformers depth model, on a dataset"


def register(sub: argparse._SubParsersAction) -> None:
    from ..evaluation.protocol import ALIGNMENTS, PRED_KINDS

    p = sub.add_parser(
        "evaluate",
        help=HELP,
        description="Example: clipdepth evaluate --checkpoint outputs/demo/model --dataset nyu "
        "--data-root /data/nyu --split nyudepthv2_test_files_with_gt.txt --tta",
    )
    model = p.add_mutually_exclusive_group(required=True)  # one model per run
    model.add_argument("--checkpoint", help="a head checkpoint folder (e.g. outputs/demo/model)")
    model.add_argument(
        "--hf",
        metavar="MODEL",
        help="a transformers depth model instead of --checkpoint (one or the other): Hub id or save_pretrained folder",
    )
    p.add_argument("--dataset", help="dataset name (default: the checkpoint's; --hf needs it, or --config)")
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
    p.add_argument("--align", choices=ALIGNMENTS, default="none", help="--hf: per-image alignment to the GT (relative models)")
    p.add_argument("--pred-kind", choices=PRED_KINDS, default="depth", help="--hf: what the model outputs (default: depth, metres)")
    add_device(p)
    p.add_argument(
        "--save-predictions",
        type=path_arg,
        metavar="DIR",
        help="also write each scored frame's map as DIR/<frame name>.npy (float32 metres on the GT grid, as scored)",
    )
    p.add_argument("--batch-size", type=positive_int, default=8)
    add_workers(p, "the frames")
    p.add_argument("--out", type=path_arg, help="output folder (default: outputs/eval/<dataset>)")
    p.add_argument("--overwrite", action="store_true", help="replace the results of an earlier run there (default: refuse)")
    p.add_argument("overrides", nargs="*", metavar="KEY=VALUE", help="data overrides, e.g. data.tiles=4")
    p.set_defaults(func=run, flags={"data.root": "--data-root", "data.test_list": "--split", "recipe": "--config"})


def run(args: argparse.Namespace) -> int:
    from ..errors import ConfigError

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
    where = dict(dataset=args.dataset, recipe=args.config, protocol=args.protocol, data_overrides=data, batch_size=args.batch_size)
    where.update(out=args.out, overwrite=args.overwrite, workers=args.workers, save_predictions=args.save_predictions)
    # Options of the other kind of model are refused, not ignored.
    hf_only = {"--align": args.align != "none", "--pred-kind": args.pred_kind != "depth"}
    captions = args.caption is not None or bool(args.caption_dir)
    checkpoint_only = {"--tta/--no-tta": args.tta is not None, "--caption/--caption-dir": captions, "--score-at-input": args.score_at_input}
    checkpoint_only["--precision"] = args.precision is not None
    wrong = [flag for flag, given in (checkpoint_only if args.hf else hf_only).items() if given]
    if wrong:
        kind = "clipdepth checkpoints (--checkpoint)" if args.hf else "transformers models (--hf)"
        raise ConfigError(f"{wrong[0]} is only for {kind}")
    if args.hf:
        from ..evaluation.hf_models import evaluate_hf

        summary, table = evaluate_hf(args.hf, align=args.align, pred_kind=args.pred_kind, device=args.device or "auto", **where)
    else:
        from ..evaluation.checkpoint import evaluate_checkpoint

        runs = dict(device=args.device, precision=args.precision)
        summary, table = evaluate_checkpoint(args.checkpoint, tta=args.tta, score_at_input=args.score_at_input, **runs, **where)
    print(summary["settings"])
    print(table)
    print(
        f"{summary['n_listed']} listed, {summary['n_without_gt']} without ground truth, {summary['n_images']} scored; "
        f"wrote {args.out or 'outputs/eval/' + summary['dataset']}/metrics.json, per_image.csv, results.md"
    )
    return 0
