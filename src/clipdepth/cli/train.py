"""`clipdepth train`: train a head from a recipe, with any field overridden as key=value."""

from __future__ import annotations

import argparse
import json

from .args import add_workers, path_arg
from .image_options import add_device, run_overrides

HELP = "train a head (PureCLIP-Depth, TR2M) from a recipe; DepthCLIP: write its checkpoint (nothing to train)"


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "train", help=HELP, description="Train a head. Example: clipdepth train --config demo train.max_epochs=5 pureclip.use_cls=false"
    )
    p.add_argument(
        "--config",
        action="append",
        metavar="RECIPE",
        help="recipe: a YAML path or a built-in name (demo, variants/paper, ...); repeat to layer "
        "recipes, later ones winning (default: demo)",
    )
    p.add_argument("--out", type=path_arg, help="output folder (default: the recipe's output_dir)")
    p.add_argument(
        "--resume",
        action="store_true",
        help="continue the run in the output folder from its last finished epoch "
        "(checkpoints/resume/), exactly as if never interrupted; the config must be the same (a larger train.max_epochs "
        "continues a finished run)",
    )
    p.add_argument(
        "--overwrite", action="store_true", help="replace the run already in the output folder (default: refuse; --resume continues it)"
    )
    add_workers(p, "the frames", "train.num_workers")
    add_device(p)
    p.add_argument("overrides", nargs="*", metavar="KEY=VALUE", help="config overrides, e.g. train.batch_size=4")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from ..config import load_config
    from ..models import model_class
    from ..training import train

    overrides = list(args.overrides) + ([f"output_dir={args.out}"] if args.out else [])
    overrides += [f"train.num_workers={args.workers}"] if args.workers is not None else []
    overrides += run_overrides(args)
    cfg = load_config(args.config or ["demo"], overrides)
    result = train(cfg, resume=args.resume, overwrite=args.overwrite)
    model_cls = model_class(cfg.model)
    if model_cls.zero_shot:
        print(f"{model_cls.display_name} has nothing to train: wrote its checkpoint {result.model_dir} (config, no trained weights)")
        return 0
    if result.first_epoch > 1:
        done, out = result.first_epoch - 1, cfg.output_dir
        print(
            f"resumed {out} after epoch {done}"
            if result.trained
            else f"nothing to train: {out} stopped early after epoch {done} (train.patience={cfg.train.patience})"
            if result.stopped_early
            else f"nothing to train: {out} has finished {done} epochs; a larger train.max_epochs continues it"
        )
    which = "the final epoch" if cfg.train.publish == "last" else f"best val {cfg.train.select_metric}"
    print(f"trained head: {result.model_dir} ({which}: epoch {result.published_epoch})")
    print(json.dumps(result.best, indent=2))
    return 0
