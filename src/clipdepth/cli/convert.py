"""`clipdepth convert`: the papers' released checkpoints as clipdepth checkpoint folders.

    clipdepth convert pureclip-released CKPT.pth --out DIR [--dataset nyu|kitti] [--encoder CLIP]
    clipdepth convert tr2m-released CKPT.pth --out DIR [--dataset nyu|kitti]
    clipdepth convert rsa-released da_lanscale --out DIR [--dataset nyu|kitti]

The conversion itself is ``clipdepth.models.released`` (``convert_pureclip_released``,
``convert_tr2m_released``, ``convert_rsa_released``), callable from Python alike; each model's spec names its converters by
KIND (``ModelSpec.converters``, ``clipdepth.registry.converter``).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from .args import path_arg, output_folder

HELP = "turn a released PureCLIP-Depth, TR2M or RSA checkpoint into a clipdepth checkpoint"


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("convert", help=HELP, description="Example: clipdepth convert pureclip-released nyu_best.pth --out pureclip-nyu/")
    kinds = p.add_subparsers(dest="kind", required=True, metavar="KIND")
    pure = kinds.add_parser(
        "pureclip-released",
        aliases=["pureclip-reference"],
        help="a checkpoint of github ryutaroLF/PureCLIP-Depth (PatchAligner)",
        description="Copies the head (phi, psi or FiLM, depth table, bins) and checks the checkpoint's frozen "
        "CLIP tensor by tensor against the CLIP the converted checkpoint names; the CLIP weights are not copied.",
    )
    pure.add_argument("--encoder", help="CLIP hub id or folder (default openai/clip-vit-large-patch14-336)")
    pure.set_defaults(func=run_pureclip)
    tr2m = kinds.add_parser(
        "tr2m-released",
        aliases=["tr2m-reference"],
        help="a checkpoint of github BeileiCui/TR2M (ScaleMapModel weights)",
        description="Copies the scale/shift network; loads the frozen parts the recipe names (DINOv2, CLIP text, "
        "Depth Anything) to check the widths and record their fingerprint.",
    )
    tr2m.set_defaults(func=run_captioned)
    rsa = kinds.add_parser(
        "rsa-released",
        help="a checkpoint of github Adonis-galaxy/RSA (LanScaleModel weights, e.g. eval_void/da_lanscale)",
        description="Copies the MLP, its widths read off the file; loads the frozen parts the recipe names (CLIP RN50's "
        "text tower, Depth Anything small) to check the text width and record their fingerprint.",
    )
    rsa.set_defaults(func=run_captioned)
    kinds_help = (
        (pure, "default: told by the bins, 10 m NYU, 30 m KITTI", "clip.name=/models/clip-l14-336"),
        (tr2m, "default: nyu", "tr2m.image_encoder.name=/models/dinov2-large"),
        (rsa, "default: nyu", "depthclip.weights=/models/RN50.pt"),
    )
    for kind, datasets, example in kinds_help:
        kind.add_argument("checkpoint", type=Path, metavar="CKPT", help="the released .pth file")
        kind.add_argument("--out", type=path_arg, required=True, help="the checkpoint folder to write")
        kind.add_argument("--dataset", choices=["nyu", "kitti"], help=f"the recipe the config starts from ({datasets})")
        kind.add_argument("--overwrite", action="store_true", help="replace --out if it exists (default: refuse)")
        kind.add_argument(
            "--set",
            action="append",
            default=[],
            metavar="KEY=VALUE",
            dest="overrides",
            help=f"config override, e.g. {example} (repeatable)",
        )


def _report(out: Path) -> dict:
    return json.loads((out / "config.json").read_text())


# The kinds' names of clipdepth 0.1, which called the released code "reference" (argparse aliases).
RENAMED = {"pureclip-reference": "pureclip-released", "tr2m-reference": "tr2m-released"}


def _converter(args: argparse.Namespace):
    from ..config.legacy import renamed
    from ..registry import converter

    if args.kind in RENAMED:
        renamed(f"clipdepth convert {args.kind}", f"clipdepth convert {RENAMED[args.kind]}")
        args.kind = RENAMED[args.kind]
    return converter(args.kind)


def run_pureclip(args: argparse.Namespace) -> int:
    output_folder(args.out)
    out = _converter(args)(args.checkpoint, args.out, args.dataset, args.encoder, args.overrides, args.overwrite)
    meta = _report(out)
    head, encoder = meta["config"]["pureclip"], meta["config"]["clip"]["name"]
    print(
        f"wrote {out}: PureCLIP-Depth head, {head['num_bins']} bins over {head['min_depth']:g}-{head['max_depth']:g} m, "
        f"{head['fusion']} fusion, recipe for {meta['config']['data']['dataset']}"
    )
    checked = meta["clip_tensors_checked"]
    print(
        f"its {checked} frozen CLIP tensors equal those of {meta['clip_checked_against']}"
        if checked
        else f"the checkpoint holds no CLIP weights: nothing was compared; it is assumed to be {encoder}"
    )
    print(f"use it: clipdepth predict photo.jpg --checkpoint {out} --out depth/")
    return 0


def run_captioned(args: argparse.Namespace) -> int:
    """TR2M's and RSA's converters: heads that read a caption."""
    output_folder(args.out)
    out = _converter(args)(args.checkpoint, args.out, args.dataset or "nyu", args.overrides, args.overwrite)
    cfg = _report(out)["config"]
    own = cfg[cfg["model"]]  # the model's section: tr2m or rsa
    print(
        f"wrote {out}: {cfg['model'].upper()} head, input {own['input_height']} x {own['input_width']}, recipe for {cfg['data']['dataset']}"
    )
    print(f"use it: clipdepth predict photo.jpg --checkpoint {out} --caption 'a living room with a sofa' --out depth/")
    return 0
