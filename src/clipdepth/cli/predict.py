"""`clipdepth predict`: metric depth for your own images and videos, files you can use.

The files and their names are ``clipdepth.io.predictions``'s, written by ``clipdepth.inference.predict_to_folder``: 16-bit
depth PNG, colour PNG, and on request npy, PLY (each image's camera from ``clipdepth.io.intrinsics``),
uncertainty and side-by-side. A video gives ``<stem>_depth.mp4`` (``clipdepth.inference.predict_videos``).
Any checkpoint type works; TR2M and RSA checkpoints take a caption per image (``--caption`` for all;
``--captions`` a folder of ``<name>.txt`` files as ``clipdepth caption`` writes them, or one ``.txt``
file for all; line 0).
"""

from __future__ import annotations

import argparse
from dataclasses import fields
from pathlib import Path

from .args import add_frozen_part_overrides, add_workers, output_folder, path_arg, positive_int, report_failures
from .image_options import add_crop, add_device, add_image_limits, run_overrides
from .predict_outputs import add_camera, add_outputs, check_outputs

HELP = "metric depth for your images and videos (16-bit PNG, colour PNG, npy, ply, mp4)"
# What helps with a skipped item, by a marker in its line (cli.args.report_failures).
HELPS = [
    ("limit of", "where an image is over a limit: --max-tiles, --max-pixels"),
    ("(crop none)", "where the trained crop does not suit an image: --crop none"),
    ("overwrite it", "where an output holds another image's depth, or depth made with other settings: another --out, or --overwrite"),
]


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "predict", help=HELP, description="Example: clipdepth predict photos/ --checkpoint outputs/demo/model --out depth/ --ply"
    )
    p.add_argument(
        "inputs",
        nargs="+",
        metavar="INPUT",
        help="image, folder (recursive), glob, or .txt list of paths (relative ones from the list's folder); "
        "a video (.mp4 .mov .m4v .mkv .avi .webm, or a glob of them) gives <stem>_depth.mp4",
    )
    p.add_argument("--checkpoint", required=True, help="a head checkpoint folder")
    p.add_argument("--encoder", help="CLIP hub id or folder to use instead of the one the checkpoint names")
    captions = p.add_mutually_exclusive_group()
    captions.add_argument("--caption", help="TR2M, RSA: one caption for every image")
    captions.add_argument(
        "--captions",
        type=Path,
        help="TR2M, RSA: folder of <name>.txt caption files, named as the outputs are (as `clipdepth caption` writes them; "
        "<stem>.txt where the name has no folder), or one .txt for all; line 0 is used",
    )
    add_frozen_part_overrides(p, "tr2m.relative.name=/models/depth-anything-small")
    p.add_argument("--out", required=True, type=path_arg, help="output folder")
    add_outputs(p)
    add_camera(p)
    p.add_argument("--tta", action="store_true", help="flip test-time augmentation")
    add_crop(p)
    p.add_argument("--tiles", type=positive_int, help="square tiles across the image (default: automatic, wide images get several)")
    add_image_limits(p)
    add_device(p)
    p.add_argument("--batch-size", type=positive_int, default=8)
    add_workers(p, "the images")
    p.add_argument("--overwrite", action="store_true", help="replace outputs that exist (default: keep them, write only the missing ones)")
    p.set_defaults(
        func=run,
        flags={
            "caption": "--caption/--captions",
            "captions": "--captions",
            "uncertainty": "--uncertainty",
            "tiles": "--tiles, --max-tiles",
            "side_by_side": "--side-by-side",
            "overrides": "--set",
            "formats": "--format",
        },
    )


def run(args: argparse.Namespace) -> int:
    from ..io.predictions import collect_inputs
    from ..io.video import collect_videos, is_video

    # What can be refused without torch first: a wrong path or flag is told at once, not after the
    # seconds that importing torch and transformers takes.
    output_folder(args.out)
    images, videos = [i for i in args.inputs if not is_video(i)], [i for i in args.inputs if is_video(i)]
    check_outputs(args, videos_only=bool(videos and not images))
    jobs = collect_inputs(images, args.out) if images else []
    clips = collect_videos(videos, args.out) if videos else []

    from ..device import run_device
    from ..inference import PredictOptions, input_lines, predict_to_folder, predict_videos
    from ..models import load_model

    chosen = {f.name: getattr(args, f.name) for f in fields(PredictOptions) if f.name in vars(args)}
    options = PredictOptions(**{**chosen, "max_pixels": int(args.max_pixels * 1e6)})
    model = load_model(args.checkpoint, [*args.overrides, *run_overrides(args), *([f"clip.name={args.encoder}"] if args.encoder else [])])
    model, failed = model.to(run_device(model.cfg)), []
    print("\n".join(input_lines(model, options)))
    if jobs:
        report = predict_to_folder(model, jobs, args.out, options)
        print("\n".join(report.lines(args.out)))
        failed = report.failed
    for made in predict_videos(model, clips, args.out, options):
        if made.failed:  # reported with the images that were skipped
            failed.append(made.failed)
        else:
            print(made.line())
    return report_failures("predict", failed, "were skipped", HELPS, noun="input(s)" if clips else "image(s)")
