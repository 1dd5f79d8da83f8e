"""`clipdepth serve`: a local web page: upload an image, see depth and uncertainty, download the
16-bit PNG (millimetres) and the PLY point cloud. Needs the ``serve`` extra (fastapi, uvicorn,
python-multipart). Listens on the loopback address only.
"""
from __future__ import annotations

import argparse
import signal
import sys
import tempfile

LOOPBACK = ("127.0.0.1", "localhost", "::1")
HELP = "a local web page: upload an image, see and download its depth"


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "serve", help=HELP,
        description="Example: clipdepth serve --checkpoint outputs/demo/model  (then open http://127.0.0.1:7860)",
    )
    p.add_argument("--checkpoint", required=True, help="a head checkpoint folder")
    p.add_argument("--host", default="127.0.0.1", help="loopback address to listen on (default 127.0.0.1)")
    p.add_argument("--port", type=int, default=7860)
    p.add_argument("--tta", action="store_true", help="flip test-time augmentation")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from ..errors import ClipdepthError

    if args.host not in LOOPBACK:
        raise ClipdepthError(f"--host {args.host}: only a loopback address ({', '.join(LOOPBACK)}) is allowed")
    if not 0 < args.port < 65536:
        raise ClipdepthError(f"--port {args.port}: not a port number")
    import importlib.util

    missing = [name for name, module in (("fastapi", "fastapi"), ("uvicorn", "uvicorn"))
               if importlib.util.find_spec(module) is None]
    if not (importlib.util.find_spec("python_multipart") or importlib.util.find_spec("multipart")):
        missing.append("python-multipart")
    if missing:
        raise ClipdepthError(f"serve needs {', '.join(missing)}: pip install 'clipdepth[serve]'")
    import uvicorn

    from ..errors import ConfigError
    from ..models import load_model
    from ..serve import create_app
    from ..device import resolve_device

    model = load_model(args.checkpoint)
    if model.uses_captions:
        raise ConfigError(f"{args.checkpoint}: the web demo serves caption-free models; use `clipdepth predict --caption` for TR2M")
    model.to(resolve_device(model.cfg.device))
    shown = f"[{args.host}]" if ":" in args.host else args.host
    # uvicorn re-raises SIGTERM once it has shut down; as SystemExit it unwinds the `with` below,
    # so the results go with the server instead of staying in the temp folder.
    signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(128 + signum))
    with tempfile.TemporaryDirectory(prefix="clipdepth-serve-") as workdir:  # results go when the server stops
        app = create_app(model, tta=args.tta, workdir=workdir)
        print(f"clipdepth serve: open http://{shown}:{args.port}/ (Ctrl+C to stop)")
        uvicorn.run(app, host=args.host, port=args.port, log_level="warning")
    return 0
