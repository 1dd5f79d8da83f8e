"""The Gradio page of ``clipdepth serve`` around a ``DepthService``, and its launch on a loopback address."""

from __future__ import annotations

import os
import signal
import sys
import threading
import time
from collections import OrderedDict
from pathlib import Path

import gradio as gr
from gradio.http_server import LOCALHOST_NAME as GRADIO_HOST

from ..errors import ClipdepthError, ConfigError
from .examples import folder_examples, synthetic_examples
from .network import DEFAULT_HOST, DEFAULT_PORT, check_address, check_host
from .service import MAX_UPLOAD_BYTES, DepthService, concurrent_requests

# The browser's own fonts: Gradio's default theme fetches Google fonts, and the page makes no request
# outside this server.
THEME = gr.themes.Default(font=["ui-sans-serif", "system-ui", "sans-serif"], font_mono=["ui-monospace", "monospace"])
NO_SHARING = ["download", "fullscreen"]  # an image's buttons, without "share" (an upload to Hugging Face)
INTRO = (
    "# clipdepth: metric depth from one image\n"
    "Upload an image (or pick an example), choose a model, and press *Estimate depth*. Depth is in metres; "
    "the point cloud takes the photo's EXIF focal length, else a 60 degree horizontal field of view."
)


def build_app(service: DepthService, examples: str | os.PathLike | None = None) -> gr.Blocks:
    """The page: image upload (any file: the service checks it, so a broken one gets a readable
    message), the model picker over ``service``'s checkpoints, a caption box shown for models that
    read captions (TR2M), and the results: depth in colour with its metre scale; then, each written
    when its button is pressed (``DepthService.result_file``), a 3-D view of the point cloud, the
    uncertainty in colour where the model gives one and the 16-bit PNG and PLY downloads.

    ``examples``: a folder of images offered as examples (``<stem>.txt`` beside one is its
    caption); None: two synthetic scenes, labelled as such. Either way they are copied into
    ``service.workdir``. Uploads beyond the newest ``service.keep`` are deleted.
    """
    folder = service.workdir / "examples"
    if examples is None:
        listed, examples_label = synthetic_examples(folder), "Examples: synthetic scenes rendered by clipdepth (not photos)"
    else:
        listed, examples_label = folder_examples(examples, folder), f"Examples from {examples}"
    keep_files = {path.resolve() for path, _ in listed}
    results = service.results_root.resolve()
    uploads: OrderedDict[Path, None] = OrderedDict()
    uploads_lock = threading.Lock()

    def forget_old_uploads(upload: str) -> None:
        path = Path(upload).resolve()
        if path in keep_files or path.is_relative_to(results):  # an example, or a result sent back as input
            return
        with uploads_lock:
            uploads[path] = None
            uploads.move_to_end(path)
            while len(uploads) > service.keep:
                old = uploads.popitem(last=False)[0]
                old.unlink(missing_ok=True)
                try:  # Gradio gives each upload a folder of its own
                    old.parent.rmdir()
                except OSError:
                    pass

    def picked(label: str) -> tuple[dict, dict, dict]:
        checkpoint = service.checkpoint(label)
        gives_uncertainty = checkpoint.model_class.gives_uncertainty
        return (
            gr.update(visible=checkpoint.model_class.uses_captions),
            gr.update(visible=gives_uncertainty),
            gr.update(visible=gives_uncertainty, value=None),
        )

    def predict(upload: str | None, label: str, caption: str) -> tuple:
        nothing = (None,) * 6  # the depth, and the previous result's 3-D view, uncertainty, downloads and key
        if upload is None:
            return *nothing, "Choose an image first (upload one, or click an example)."
        try:
            result = service.predict(upload, label, caption)
        except ClipdepthError as exc:
            return *nothing, f"Error: {exc}"
        finally:
            forget_old_uploads(upload)
        return (str(result.depth_color), None, None, None, None, (result.key, Path(upload).name), f"{label}: {result.summary}")

    def on_demand(kind: str):
        def write(result: tuple[str, str] | None) -> tuple:
            """The file ``kind`` of the page's result, written now (``DepthService.result_file``); the
            status line is left as it is unless that fails."""
            if result is None:
                return None, "Estimate the depth first: this is written from its result."
            key, name = result
            try:
                return str(service.result_file(key, kind)), gr.skip()
            except ClipdepthError as exc:
                return None, f"Error: {name}: {exc}"

        return write

    first = next(iter(service.checkpoints.values()))
    with gr.Blocks(title="clipdepth", analytics_enabled=False) as app:
        gr.Markdown(INTRO)
        with gr.Row():
            with gr.Column(scale=1):
                model = gr.Dropdown(
                    [(c.title, c.label) for c in service.checkpoints.values()], value=first.label, label="Model", elem_id="model"
                )
                image = gr.File(label="Image", file_types=["image"], type="filepath", elem_id="upload")
                caption = gr.Textbox(
                    label="Caption (TR2M reads one: describe the scene)",
                    max_lines=1,
                    visible=first.model_class.uses_captions,
                    elem_id="caption",
                )
                run = gr.Button("Estimate depth", variant="primary", elem_id="run")
                status = gr.Textbox(label="Status", interactive=False, elem_id="status")
                gr.Examples([[str(path), text] for path, text in listed], inputs=[image, caption], label=examples_label)
            with gr.Column(scale=2):
                depth = gr.Image(
                    label="Depth (metres, scale at the right)", type="filepath", interactive=False, buttons=NO_SHARING, elem_id="depth"
                )
                # The rest is written when asked for, from the result the server keeps: a request writes only the
                # depth's colour image.
                view_button = gr.Button("Show the point cloud in 3-D", size="sm", elem_id="view-button")
                view = gr.Model3D(label="Point cloud (every k-th pixel; drag to turn)", elem_id="view")
                gives_uncertainty = first.model_class.gives_uncertainty
                uncertainty_button = gr.Button("Show the uncertainty", size="sm", visible=gives_uncertainty, elem_id="uncertainty-button")
                uncertainty = gr.Image(
                    label="Uncertainty (metres)",
                    type="filepath",
                    interactive=False,
                    visible=gives_uncertainty,
                    buttons=NO_SHARING,
                    elem_id="uncertainty",
                )
                with gr.Row():
                    with gr.Column():
                        png_button = gr.Button("Write the 16-bit depth PNG", size="sm", elem_id="depth-png-button")
                        png = gr.File(label="16-bit depth PNG (value / depth_scale = metres)", elem_id="depth-png")
                    with gr.Column():
                        ply_button = gr.Button("Write the point cloud (PLY)", size="sm", elem_id="ply-button")
                        ply = gr.File(label="Point cloud (PLY, metres)", elem_id="ply")
        result = gr.State(None)  # (the service's key of the page's result, the upload's name)
        model.change(picked, model, [caption, uncertainty_button, uncertainty], api_name=False)
        gr.on(
            [run.click, caption.submit],
            predict,
            [image, model, caption],
            [depth, view, uncertainty, png, ply, result, status],
            api_name="predict",
            concurrency_limit=concurrent_requests(),
        )  # more would only queue at the model's lock
        view_button.click(on_demand("view"), result, [view, status], api_name="view")
        uncertainty_button.click(on_demand("uncertainty_color"), result, [uncertainty, status], api_name="uncertainty")
        png_button.click(on_demand("depth"), result, [png, status], api_name="download_depth_png")
        ply_button.click(on_demand("ply"), result, [ply, status], api_name="download_ply")
    return app


def launch_app(
    app: gr.Blocks,
    *,
    host: str = DEFAULT_HOST,
    port: int = DEFAULT_PORT,
    share: bool = False,
    allow_remote: bool = False,
    max_upload_bytes: int = MAX_UPLOAD_BYTES,
) -> str:
    """Start serving ``app`` on ``host``:``port`` in the background (a loopback address unless
    ``allow_remote``; a public Gradio share link, ``app.share_url``, only with ``share``) and return
    its local URL; ``serve_until_stopped`` waits, ``app.close()`` stops it. Gradio refuses uploads
    over ``max_upload_bytes``.

    Raises ConfigError, one line each, for a host that is not loopback without ``allow_remote``
    (``check_host``), a port out of range or in use, or a host that cannot be listened on
    (``check_address``).
    """
    check_host(host, allow_remote)
    check_address(host, port)
    if GRADIO_HOST != host:  # Gradio first checks the port on its own local address, then listens on host
        check_address(GRADIO_HOST, port)
    try:
        app.launch(
            server_name=host,
            server_port=port,
            share=share,
            prevent_thread_lock=True,
            max_file_size=max_upload_bytes,
            quiet=True,
            show_error=False,
            theme=THEME,
            footer_links=["gradio"],
            run_history=False,
            ssr_mode=False,
            mcp_server=False,
        )
    except OSError:  # taken since the check; Gradio's message names its own settings, not this command's
        raise ConfigError(
            f"{host}:{port}: the server could not start there (the port was taken meanwhile?): choose another port", setting="port"
        ) from None
    return app.local_url


def serve_until_stopped(app: gr.Blocks) -> None:
    """Wait while ``app`` serves; Ctrl+C or SIGTERM close it and go on as KeyboardInterrupt or
    SystemExit(143) (the command's exit status 130 or 143), so that the caller's
    ``with serving_folder()`` removes the server's files."""
    in_main = threading.current_thread() is threading.main_thread()
    previous = signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(128 + signum)) if in_main else None
    try:
        while app.is_running:
            time.sleep(0.2)
    finally:
        app.close(verbose=False)
        if in_main:
            signal.signal(signal.SIGTERM, previous)
