"""FastAPI app: upload an image, get depth and uncertainty (colour PNGs), a 16-bit PNG and a PLY.

Endpoints: ``GET /`` the page, ``POST /predict`` (multipart field ``image``) -> JSON with the
result id and URLs, ``GET /result/{id}/{file}`` one of the files. A bad upload gets HTTP 400
with a one-line ``detail`` at once, before any inference: unreadable, over ``MAX_UPLOAD_BYTES``,
over ``max_pixels`` (from the image header) or needing more than ``max_tiles`` tiles. Results live
in a per-server temp folder; only the newest ``keep`` results are kept.
"""
from __future__ import annotations

import shutil
import tempfile
import threading
import uuid
from collections import OrderedDict
from importlib import resources
from pathlib import Path
from typing import Annotated

import numpy as np
from fastapi import FastAPI, File, HTTPException, UploadFile
from fastapi.responses import FileResponse, HTMLResponse

from ..errors import DataError
from ..io.depth_io import MAX_PHOTO_PIXELS, read_rgb
from ..io.predictions import write_prediction
from ..models.base import MAX_TILES

MAX_UPLOAD_BYTES = 25 * 1024 * 1024
# file name -> (what it holds, see write_prediction; media type); only these can be fetched from /result
RESULT_FILES = {
    "depth_color.png": ("color", "image/png"),
    "uncertainty_color.png": ("uncertainty_color", "image/png"),
    "depth_16bit.png": ("depth", "image/png"),
    "depth.ply": ("ply", "application/octet-stream"),
}


def _page() -> str:
    return resources.files("clipdepth.serve").joinpath("static/index.html").read_text(encoding="utf-8")


def create_app(
    model, *, tta: bool = False, keep: int = 32, workdir: str | Path | None = None,
    max_pixels: int = MAX_PHOTO_PIXELS, max_tiles: int = MAX_TILES,
) -> FastAPI:
    """The app around a loaded model (``clipdepth.models.load_model``), already on its device."""
    root = Path(workdir) if workdir is not None else Path(tempfile.mkdtemp(prefix="clipdepth-serve-"))
    root.mkdir(parents=True, exist_ok=True)
    results: OrderedDict[str, Path] = OrderedDict()
    lock = threading.Lock()  # one inference at a time
    max_depth = float(model.max_depth)
    page = _page()

    app = FastAPI(title="clipdepth", docs_url=None, redoc_url=None, openapi_url=None)
    app.state.workdir = root

    @app.get("/", response_class=HTMLResponse)
    def index() -> str:
        return page

    @app.post("/predict")
    def predict(image: Annotated[UploadFile, File()]) -> dict:
        data = image.file.read(MAX_UPLOAD_BYTES + 1)
        if not data:
            raise HTTPException(400, "empty upload: choose an image file")
        if len(data) > MAX_UPLOAD_BYTES:
            raise HTTPException(400, f"upload too large (limit {MAX_UPLOAD_BYTES // 2**20} MiB)")
        rid = uuid.uuid4().hex
        out = root / rid
        out.mkdir()
        try:
            upload = out / "upload"
            upload.write_bytes(data)
            try:  # the pixel limit is checked from the header, before decoding
                rgb = np.array(read_rgb(upload, photo=True, max_pixels=max_pixels))  # writable for torch
                model.tiles_for(rgb.shape[0], rgb.shape[1], max_tiles=max_tiles)
            except DataError as exc:
                name = Path(image.filename or "upload").name
                message = str(exc).replace(f"'{upload}'", repr(name)).replace(str(upload), name)
                if not message.startswith(name):  # e.g. the tile limit, which knows no file
                    message = f"{name}: {message}"
                raise HTTPException(400, message) from None  # names the upload, never the temp path
            finally:
                upload.unlink(missing_ok=True)
            with lock:
                result = model.infer(rgb, tta=tta)
                depth = result["depth"][0].float().cpu().numpy()
                spread = result["uncertainty"][0].float().cpu().numpy()
                files = {kind: out / name for name, (kind, _) in RESULT_FILES.items()}
                points = write_prediction(files, depth, rgb, max_depth, uncertainty=spread)
                results[rid] = out
                while len(results) > keep:
                    _, old = results.popitem(last=False)
                    shutil.rmtree(old, ignore_errors=True)
        except BaseException:
            if rid not in results:
                shutil.rmtree(out, ignore_errors=True)
            raise
        h, w = depth.shape
        return {
            "id": rid,
            "width": w,
            "height": h,
            "points": int(points),
            "depth_range_m": [float(np.nanmin(depth)), float(np.nanmax(depth))],
            "files": {name: f"/result/{rid}/{name}" for name in RESULT_FILES},
        }

    @app.get("/result/{rid}/{name}")
    def result_file(rid: str, name: str) -> FileResponse:
        folder = results.get(rid)
        if folder is None or name not in RESULT_FILES or not (folder / name).is_file():
            raise HTTPException(404, "no such result (results are kept for the newest few uploads only)")
        download = name if name.endswith("_color.png") else f"{rid[:8]}_{name}"
        disposition = "inline" if name.endswith("_color.png") else "attachment"
        return FileResponse(folder / name, media_type=RESULT_FILES[name][1], filename=download,
                            content_disposition_type=disposition)

    return app
