"""`clipdepth demo`: the whole pipeline on built-in synthetic scenes, on a CPU, in minutes
(``clipdepth.training.demo.run_demo``): PureCLIP-Depth's head, or with ``--config demo_tr2m`` TR2M
and its global-factor variant, trained on random-weight frozen parts and scored beside the
mean-depth predictor. Run again into the same folder, it keeps finished runs of the same config,
resumes interrupted ones and trains again those whose config changed, and says so in one line.
"""

from __future__ import annotations

import argparse

from .args import output_folder, path_arg

HELP = "train and score a head on built-in synthetic scenes (CPU, minutes)"


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("demo", help=HELP)
    p.add_argument("--config", default="demo", help="recipe (default: demo; demo_outdoor for streets, demo_tr2m for TR2M)")
    p.add_argument("--out", type=path_arg, help="output folder (default: the recipe's output_dir)")
    p.add_argument("overrides", nargs="*", metavar="KEY=VALUE", help="config overrides, e.g. data.train_size=64")
    p.set_defaults(func=run, flags={"output_dir": "--out"})


def run(args: argparse.Namespace) -> int:
    from ..config import load_config
    from ..training.demo import run_demo

    cfg = load_config(args.config, [*args.overrides, *([f"output_dir={args.out}"] if args.out else [])])
    output_folder(cfg.output_dir)
    result = run_demo(cfg, log=lambda line: print(line, flush=True))
    out = cfg.output_dir
    print(f"\n{result.table}\n{result.summary}")
    print(
        f"wrote {out}/metrics.json, {out}/results.md, {out}/panels/ and the checkpoints: "
        + ", ".join(result.report["checkpoints"].values())
    )
    return 0
