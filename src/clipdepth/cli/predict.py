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
from pathlib import Path

from .args import add_workers, finite_float, output_folder, path_arg, positive_float, positive_int, report_failures
from .image_options import add_crop, add_image_limits

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
    p.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        dest="overrides",
        help="point a frozen part elsewhere, e.g. tr2m.relative.name=/models/depth-anything-small (repeatable); "
        "a trained head's own settings cannot change",
    )
    p.add_argument("--out", required=True, type=path_arg, help="output folder")
    p.add_argument("--npy", action="store_true", help="also write <name>.npy (float32 metres)")
    p.add_argument("--ply", action="store_true", help="also write a coloured point cloud <name>.ply")
    p.add_argument("--uncertainty", action="store_true", help="also write <name>_uncertainty.png (and .npy with --npy)")
    p.add_argument(
        "--side-by-side",
        action="store_true",
        help="also write <name>_side.png, the image | its colour depth (a video: both halves in the mp4)",
    )
    p.add_argument("--vmin", type=finite_float, metavar="M", help="colour depth from M metres (default 0)")
    p.add_argument(
        "--vmax",
        type=positive_float,
        metavar="M",
        help="colour depth up to M metres, the same for every image (default: each image's max up to the "
        "model's range; a video: the model's range)",
    )
    p.add_argument(
        "--fx",
        type=positive_float,
        help="focal length in pixels of every image for --ply (default: --fy, else --intrinsics, intrinsics.json "
        "beside the image, its EXIF 35 mm focal length, a 60 degree horizontal field of view)",
    )
    p.add_argument("--fy", type=positive_float, help="vertical focal length for --ply (default: --fx)")
    p.add_argument("--cx", type=finite_float, help="principal point for --ply (default: the image centre)")
    p.add_argument("--cy", type=finite_float, help="principal point for --ply (default: the image centre)")
    p.add_argument(
        "--intrinsics",
        type=path_arg,
        metavar="FILE",
        help='JSON of cameras by image name for --ply: {"a.jpg": [fx, fy, cx, cy] or a 3x3 K, ...} or one '
        "camera for all (see docs/predict.md)",
    )
    p.add_argument("--tta", action="store_true", help="flip test-time augmentation")
    add_crop(p)
    p.add_argument("--tiles", type=positive_int, help="square tiles across the image (default: automatic, wide images get several)")
    add_image_limits(p)
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
        },
    )


def run(args: argparse.Namespace) -> int:
    from ..errors import ConfigError
    from ..io.predictions import collect_inputs
    from ..io.video import collect_videos, is_video

    # What can be refused without torch first: a wrong path or flag is told at once, not after the
    # seconds that importing torch and transformers takes.
    output_folder(args.out)
    if (args.cx is None) != (args.cy is None):
        raise ConfigError("--cx and --cy go together (the principal point); give both or neither (the image centre)")
    camera = [flag for flag in ("fx", "fy", "cx", "cy", "intrinsics") if getattr(args, flag) is not None]
    if not args.ply and camera:
        raise ConfigError(f"{'/'.join('--' + f for f in camera)}: the point cloud's intrinsics: add --ply, or drop them")
    images, videos = [i for i in args.inputs if not is_video(i)], [i for i in args.inputs if is_video(i)]
    if videos and not images and (args.npy or args.ply or args.uncertainty):
        raise ConfigError("--npy, --ply and --uncertainty are image outputs: a video gives <stem>_depth.mp4 only")
    jobs = collect_inputs(images, args.out) if images else []
    clips = collect_videos(videos, args.out) if videos else []

    from ..device import resolve_device
    from ..inference import PredictOptions, input_lines, predict_to_folder, predict_videos
    from ..models import load_model

    options = PredictOptions(
        npy=args.npy,
        ply=args.ply,
        uncertainty=args.uncertainty,
        side_by_side=args.side_by_side,
        fx=args.fx,
        fy=args.fy,
        cx=args.cx,
        cy=args.cy,
        intrinsics=args.intrinsics,
        vmin=args.vmin,
        vmax=args.vmax,
        tta=args.tta,
        crop=args.crop,
        dataset=args.dataset,
        tiles=args.tiles,
        max_tiles=args.max_tiles,
        max_pixels=int(args.max_pixels * 1e6),
        batch_size=args.batch_size,
        overwrite=args.overwrite,
        caption=args.caption,
        captions=args.captions,
        workers=args.workers,
    )
    model = load_model(args.checkpoint, [*args.overrides, *([f"clip.name={args.encoder}"] if args.encoder else [])])
    model, failed = model.to(resolve_device(model.cfg.device)), []
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
