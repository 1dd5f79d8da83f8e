"""`clipdepth serve`: a Gradio page for depth from one uploaded image (needs the ``serve`` extra:
gradio).

    from clipdepth.serve import DepthService, build_app, find_checkpoints, launch_app, serve_until_stopped, serving_folder

    checkpoints, _ = find_checkpoints(["outputs/demo/model"])
    with serving_folder() as workdir:
        app = build_app(DepthService(checkpoints, workdir))
        print(launch_app(app))  # http://127.0.0.1:7860/
        serve_until_stopped(app)  # until Ctrl+C (KeyboardInterrupt) or SIGTERM (SystemExit)
"""

from __future__ import annotations

from .network import check_address, check_host, is_loopback
from .service import Checkpoint, DepthService, Prediction, find_checkpoints, serving_folder
from .view3d import view_points, write_view_glb

PAGE = ("build_app", "launch_app", "serve_until_stopped")


def __getattr__(name: str):
    # Gradio is imported with the page only: it fixes some of its folders at import, so that a
    # `serving_folder` entered before gets them too.
    if name in PAGE:
        from . import app

        return getattr(app, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = [
    "Checkpoint",
    "DepthService",
    "Prediction",
    "build_app",
    "check_address",
    "check_host",
    "find_checkpoints",
    "is_loopback",
    "launch_app",
    "serve_until_stopped",
    "serving_folder",
    "view_points",
    "write_view_glb",
]
