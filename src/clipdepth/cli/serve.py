"""`clipdepth serve`: a local web page (Gradio): upload an image, pick a model, see depth and
uncertainty, download the 16-bit PNG and the PLY, turn the point cloud in 3-D. Needs the ``serve``
extra (gradio). The page is ``clipdepth.serve``'s; this module parses the arguments.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from .args import add_frozen_part_overrides, path_arg, positive_int
from .image_options import add_crop, add_device, add_image_limits, run_overrides

HELP = "a local web page (Gradio): upload an image, see its depth in colour and 3-D, download PNG and PLY"
# serve.network.DEFAULT_HOST / DEFAULT_PORT and serve.service.KEEP_RESULTS, not imported for --help
# (importing clipdepth.serve imports the models: seconds)
DEFAULT_HOST, DEFAULT_PORT, DEFAULT_KEEP = "127.0.0.1", 7860, 16


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "serve",
        help=HELP,
        description="Example: clipdepth serve --checkpoint outputs/demo/model  (then open http://127.0.0.1:7860). "
        "Give checkpoints with --checkpoint (repeatable) and/or --checkpoints DIR; the page has a picker over them.",
    )
    p.add_argument(
        "--checkpoint",
        action="append",
        default=[],
        metavar="DIR",
        help="a checkpoint folder to offer (repeatable), also one that --checkpoints does not list (a run's checkpoints/best_*)",
    )
    p.add_argument(
        "--checkpoints",
        type=path_arg,
        metavar="DIR",
        help="offer the checkpoint folders found in DIR and its sub-folders (e.g. outputs/): of a training run "
        "its final model/ only, its checkpoints/best_* and last only when it has no model/ "
        "(name one with --checkpoint to offer it); one that cannot predict on images alone (TR2M on the "
        "ground-truth oracle) or cannot be read is skipped with the reason",
    )
    p.add_argument(
        "--examples",
        type=path_arg,
        metavar="DIR",
        help="a folder of example images (<stem>.txt beside one: its caption); default: two synthetic scenes",
    )
    add_frozen_part_overrides(p, "clip.name=/models/clip", "; applies to every checkpoint")
    p.add_argument(
        "--host",
        default=DEFAULT_HOST,
        help=f"address to listen on (default {DEFAULT_HOST}); only loopback ones (127.0.0.0/8, ::1, localhost) unless --allow-remote",
    )
    p.add_argument(
        "--allow-remote",
        action="store_true",
        help="allow a --host that is not loopback (e.g. 0.0.0.0): anyone who reaches it can use the page",
    )
    p.add_argument("--port", type=positive_int, default=DEFAULT_PORT, help=f"default {DEFAULT_PORT}")
    p.add_argument("--share", action="store_true", help="also ask Gradio for a public *.gradio.live link (off by default; needs internet)")
    p.add_argument("--tta", action="store_true", help="flip test-time augmentation")
    add_crop(p)
    add_image_limits(p)
    add_device(p)
    p.add_argument(
        "--keep",
        type=positive_int,
        default=DEFAULT_KEEP,
        help=f"results (and uploads) kept on disk while serving; older ones are deleted (default {DEFAULT_KEEP})",
    )
    p.set_defaults(func=run, flags={"checkpoints": "--checkpoint/--checkpoints", "overrides": "--set"})


def run(args: argparse.Namespace) -> int:
    import importlib.util

    from ..errors import ConfigError

    if importlib.util.find_spec("gradio") is None:
        raise ConfigError('serve needs gradio: pip install -e ".[serve]" in a clone of clipdepth')
    from ..serve import DepthService, check_address, check_host, find_checkpoints, serving_folder

    # everything that can be refused, before Gradio is imported (seconds) and the server starts
    check_host(args.host, args.allow_remote)
    check_address(args.host, args.port)
    checkpoints, skipped = find_checkpoints(args.checkpoint, args.checkpoints)
    for line in skipped:
        print(f"clipdepth serve: skipped {line}", file=sys.stderr)
    for checkpoint in checkpoints:
        print(f"clipdepth serve: offering {checkpoint.title}")
    with serving_folder() as workdir:  # uploads and results go when the server stops
        service = DepthService(
            checkpoints,
            workdir,
            tta=args.tta,
            crop=args.crop,
            dataset=args.dataset,
            keep=args.keep,
            overrides=[*args.overrides, *run_overrides(args)],
            max_pixels=int(args.max_pixels * 1e6),
            max_tiles=args.max_tiles,
        )
        from ..serve import build_app, launch_app, serve_until_stopped  # Gradio, once its folder is set

        app = build_app(service, examples=Path(args.examples) if args.examples else None)
        url = launch_app(app, host=args.host, port=args.port, share=args.share, allow_remote=args.allow_remote)
        try:
            public = f", public link {app.share_url}" if args.share and app.share_url else ""
            print(f"clipdepth serve: {len(checkpoints)} checkpoint(s); open {url}{public} (Ctrl+C to stop)", flush=True)
        except BaseException:  # Ctrl+C before the server is waited on: it still closes
            app.close(verbose=False)
            raise
        serve_until_stopped(app)  # Ctrl+C: KeyboardInterrupt, exit status 130
    return 0
