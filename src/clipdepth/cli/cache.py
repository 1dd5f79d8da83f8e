"""`clipdepth cache build|info`: the on-disk encoder feature cache."""

from __future__ import annotations

import argparse
import json
import sys

from .args import add_workers, path_arg

SPLITS = ("train", "val", "test")
HELP = "build or inspect the encoder feature cache"


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("cache", help=HELP)
    actions = p.add_subparsers(dest="action", required=True, metavar="ACTION")
    build = actions.add_parser(
        "build",
        help="run the encoder once per frame and store its outputs",
        description="Example: clipdepth cache build --config pureclip_nyu --cache /scratch/nyu_cache data.root=/data/nyu ...",
    )
    build.add_argument("--config", action="append", metavar="RECIPE", help="recipe(s), as for train (default: demo)")
    build.add_argument("--cache", type=path_arg, help="cache folder (default: the recipe's train.feature_cache)")
    build.add_argument("--splits", nargs="+", default=["train", "val"], metavar="SPLIT", help="train, val and/or test (default: train val)")
    add_workers(build, "the frames", "train.num_workers")
    build.add_argument("overrides", nargs="*", metavar="KEY=VALUE")
    build.set_defaults(func=run_build)
    info = actions.add_parser("info", help="size, frame count and damaged shards of a cache folder (or of each split in it)")
    info.add_argument("folder", help="a split's cache folder, or the --cache folder holding train/, val/, ...")
    info.add_argument("--key", action="store_true", help="also print each cache's key (what it was built for)")
    info.set_defaults(func=run_info)


def run_build(args: argparse.Namespace) -> int:
    from ..config import load_config
    from ..errors import ConfigError
    from ..training.run import Experiment
    from .args import OVERRIDE, output_folder

    # `--splits train val k=v`: the greedy list also swallows overrides placed after it
    splits = [s for s in args.splits if not OVERRIDE.match(s)]
    unknown = [s for s in splits if s not in SPLITS]
    if unknown or not splits:
        raise ConfigError(f"--splits {' '.join(args.splits)}: each split must be one of {', '.join(SPLITS)}")
    overrides = [*args.overrides, *(s for s in args.splits if OVERRIDE.match(s))]
    overrides += [f"train.feature_cache={args.cache}"] if args.cache else []
    overrides += [f"train.num_workers={args.workers}"] if args.workers is not None else []
    cfg = load_config(args.config or ["demo"], overrides)
    if not cfg.train.feature_cache:
        raise ConfigError("no cache folder: pass --cache DIR or set train.feature_cache")
    output_folder(cfg.train.feature_cache, "--cache")
    exp = Experiment.create(cfg)
    for source in exp.sources:  # a mixture's datasets, each in its own folder
        for split in splits:
            # Validation and test frames are also cached mirrored when flip TTA is on, as training uses them.
            split_data = exp.encode(split, flip=split != "train" and cfg.eval.tta, source=source)
            label = f"{source.name} {split}" if cfg.mixture else split
            print(f"{label}: {len(split_data)} frames cached under {cfg.train.feature_cache}")
    return 0


def run_info(args: argparse.Namespace) -> int:
    from ..features.cache import cache_folders, cache_info

    damaged_any = False
    for folder in cache_folders(args.folder):
        info = cache_info(folder)
        per_frame = (
            "no readable shard"
            if not info["shards_done"]
            else (
                f"per frame {info['bytes_per_frame'] / 2**10:.1f} KiB: {info['feature_bytes_per_frame'] / 2**10:.1f} KiB "
                f"encoder outputs, {info['depth_bytes_per_frame'] / 2**10:.1f} KiB "
                f"{'input-size depth' if info['purpose'] == 'train' else 'ground truth'}"
            )
        )
        print(
            f"{folder}: {info['frames']} frames, {info['shards_done']}/{info['shards_total']} shards, "
            f"{info['bytes'] / 2**20:.1f} MiB; {per_frame}"
        )
        for name, problem in info["shards_damaged"].items():
            damaged_any = True
            print(f"  {folder / name}: damaged ({problem}); `clipdepth cache build` rebuilds it", file=sys.stderr)
        if args.key:
            print(json.dumps(info["key"], indent=2))
    return 2 if damaged_any else 0
