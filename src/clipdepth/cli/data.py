"""`clipdepth data prepare nyu` converts the official NYU Depth V2 .mat files to split lists +
PNGs; `clipdepth data show` draws a contact sheet to check decoding, masks and crops."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from ..io.atomic import refuse_existing
from .args import path_arg, output_file, output_folder, positive_int

HELP = "prepare datasets"


def register(subparsers: argparse._SubParsersAction) -> None:
    data = subparsers.add_parser("data", help=HELP, description="Prepare datasets for training and evaluation.")
    actions = data.add_subparsers(dest="action", required=True, metavar="ACTION")
    prepare = actions.add_parser("prepare", help="convert a dataset's official files", description="Convert a dataset's official files.")
    datasets = prepare.add_subparsers(dest="dataset", required=True, metavar="DATASET")
    nyu = datasets.add_parser(
        "nyu",
        help="NYU Depth V2 official labeled split (795 train / 654 test)",
        description="Write the official NYU Depth V2 split from nyu_depth_v2_labeled.mat and splits.mat as "
        "{train,test}/rgb_XXXXX.png + sync_depth_XXXXX.png (16-bit, millimetres) and the split lists "
        "nyu_train.txt / nyu_test.txt (BTS format). Rerunning after an interruption resumes.",
    )
    nyu.add_argument("--mat", required=True, type=Path, metavar="FILE", help="nyu_depth_v2_labeled.mat (MATLAB v7.3)")
    nyu.add_argument(
        "--splits",
        required=True,
        type=Path,
        metavar="FILE",
        help="splits.mat with trainNdxs/testNdxs (a MATLAB v5 file needs scipy; an HDF5 copy does not)",
    )
    nyu.add_argument("--out", required=True, type=path_arg, metavar="DIR", help="output folder (use it as data.root)")
    nyu.set_defaults(func=run_prepare_nyu)

    show = actions.add_parser(
        "show",
        help="contact sheet of a dataset: RGB with crops, GT depth, valid mask",
        description="Examples: clipdepth data show --dataset kitti --data-root /data/kitti --split eigen_test_files_with_gt.txt ; "
        "clipdepth data show --config pureclip_folder data.root=/data/mine --which train (the frames as that recipe trains on them)",
    )
    show.add_argument("--dataset", help="dataset name (see clipdepth.data.DATASETS); or --config")
    show.add_argument(
        "--config", action="append", metavar="RECIPE", help="the data settings and protocol of a recipe, as `clipdepth train` reads them"
    )
    show.add_argument("--data-root", help="dataset folder")
    show.add_argument(
        "--split", help="split list (BTS format): relative to --data-root, absolute, or the name of a shipped list (docs/data.md)"
    )
    show.add_argument("--which", default="test", choices=["train", "val", "test"], help="split to show (default: test)")
    show.add_argument("--protocol", help="evaluation protocol (default: the dataset's)")
    show.add_argument("-n", type=positive_int, default=4, help="frames to show (default: 4)")
    show.add_argument(
        "--out",
        type=path_arg,
        default=Path("outputs/data_show.png"),
        help="image to write, of the type its suffix names (default: outputs/data_show.png)",
    )
    show.add_argument("--overwrite", action="store_true", help="replace the results of an earlier run there (default: refuse)")
    show.add_argument("overrides", nargs="*", metavar="KEY=VALUE", help="config overrides, e.g. data.depth_scale=256")
    flags = {"data.dataset": "--dataset", "data.root": "--data-root", "data.test_list": "--split", "data.train_list": "--split"}
    show.set_defaults(func=run_show, flags=flags)


def run_prepare_nyu(args: argparse.Namespace) -> int:
    from ..data.nyu import prepare_nyu_mat  # imports torch: only when this command runs

    output_folder(args.out)
    lists = prepare_nyu_mat(args.mat, args.splits, args.out)
    print(f"NYU Depth V2 written to {args.out}; split lists: {lists['train']}, {lists['test']}")
    return 0


def run_show(args: argparse.Namespace) -> int:
    from ..config import load_config
    from ..data import DATASET_PROTOCOLS, get_dataset, unit_warning
    from ..errors import ConfigError
    from ..evaluation.protocol import get_protocol, crop_box, valid_mask
    from ..io.panels import check_figure_path, save_contact_sheet

    if not (args.dataset or args.config):
        raise ConfigError("data show: give --dataset NAME, or --config RECIPE for a recipe's dataset")
    check_figure_path(output_file(args.out, "--out"), "out")
    refuse_existing([args.out], args.overwrite)
    overrides = [f"data.dataset={args.dataset}"] * bool(args.dataset) + [f"data.root={args.data_root}"] * bool(args.data_root)
    list_field = "test_list" if args.which == "test" else "train_list"
    overrides += [f"data.{list_field}={args.split}"] * bool(args.split)
    recipe = load_config(args.config, [*args.overrides, *overrides])
    cfg, name = recipe.data, recipe.data.dataset
    protocol = get_protocol(args.protocol or (recipe.eval.protocol if args.config else DATASET_PROTOCOLS.get(name, "synthetic_indoor")))
    dataset = get_dataset(cfg, args.which)
    warning = unit_warning(dataset, protocol.max_depth)
    if warning:
        print(warning, file=sys.stderr)
    samples = [dataset[i] for i in range(min(args.n, len(dataset)))]
    rows = [(s.name, s.image, s.depth, valid_mask(s.depth, protocol)) for s in samples]
    box = crop_box(samples[0].depth.shape, protocol.crop) if protocol.crop else None
    save_contact_sheet(args.out, rows, protocol.max_depth, {f"{protocol.crop} crop": box} if box else None)
    print(f"wrote {args.out} ({len(rows)} of the {len(dataset)} {args.which} frames of {name}, protocol {protocol.name})")
    return 0
