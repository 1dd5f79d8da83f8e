"""`clipdepth serve` end to end: a real server on a loopback port, driven by headless Chromium.

Skips when fastapi/uvicorn/python-multipart/playwright are not installed or /usr/bin/chromium is absent.
"""
from __future__ import annotations

import importlib.util
import socket
import threading
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
]


def _require_server() -> None:
    for module in ("fastapi", "uvicorn"):
        if importlib.util.find_spec(module) is None:
            pytest.skip(f"{module} is not installed (pip install 'clipdepth[serve]')")
    if not (importlib.util.find_spec("python_multipart") or importlib.util.find_spec("multipart")):
        pytest.skip("python-multipart is not installed")


def _require_browser() -> None:
    if importlib.util.find_spec("playwright") is None:
        pytest.skip("playwright is not installed (pip install playwright)")
    if not CHROMIUM.is_file():
        pytest.skip(f"{CHROMIUM} not found (apt-get install chromium)")


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def server(tiny_cfg, tmp_path):
    _require_server()
    import uvicorn

    from clipdepth.models import load_model
    from clipdepth.models.pureclip_depth import PureCLIPDepth
    from clipdepth.serve import create_app

    PureCLIPDepth.build(tiny_cfg).save_pretrained(tmp_path / "ckpt")
    model = load_model(tmp_path / "ckpt")
    app = create_app(model, workdir=tmp_path / "results")
    port = _free_port()
    srv = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", lifespan="off"))
    thread = threading.Thread(target=srv.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 15
    while not srv.started:
        if time.monotonic() > deadline or not thread.is_alive():
            srv.should_exit = True
            pytest.fail("server did not start within 15 s")
        time.sleep(0.05)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        srv.should_exit = True
        thread.join(timeout=10)
        assert not thread.is_alive(), "server did not stop within 10 s"


def test_serve_upload_view_download(server, tmp_path):
    _require_browser()
    from playwright.sync_api import sync_playwright

    rng = np.random.default_rng(0)
    photo = tmp_path / "photo.png"
    Image.fromarray(rng.integers(0, 256, (48, 64, 3), dtype=np.uint8)).save(photo)
    not_image = tmp_path / "notes.png"
    not_image.write_text("this is not an image\n")

    with sync_playwright() as pw:
        context = pw.chromium.launch_persistent_context(
            str(tmp_path / "chromium-profile"), executable_path=str(CHROMIUM), args=CHROMIUM_ARGS,
            headless=True, accept_downloads=True, timeout=20_000,
        )
        try:
            page = context.new_page()
            page.set_default_timeout(20_000)
            page.goto(server + "/")
            assert "clipdepth" in page.title()

            page.set_input_files("#file", str(photo))
            page.click("#submit")
            page.wait_for_selector("#result:not([hidden])")
            for sel in ("#depth-img", "#unc-img"):  # both colour PNGs actually load and decode
                page.wait_for_function(
                    "s => { const i = document.querySelector(s); return i.complete && i.naturalWidth > 0; }", arg=sel)
            assert page.text_content("#error") == ""

            with page.expect_download() as info:
                page.click("#dl-png")
            saved = tmp_path / "depth_16bit.png"
            info.value.save_as(saved)
            with Image.open(saved) as im:
                depth = np.asarray(im)
            assert depth.shape == (48, 64) and depth.dtype == np.uint16
            assert depth.max() > 0

            with page.expect_download() as info:
                page.click("#dl-ply")
            ply = tmp_path / "depth.ply"
            info.value.save_as(ply)
            assert ply.read_bytes().startswith(b"ply")

            page.set_input_files("#file", str(not_image))
            page.click("#submit")
            page.wait_for_function("() => document.querySelector('#error').textContent.length > 0")
            error = page.text_content("#error")
            assert "notes.png" in error and "not a readable image" in error
            assert "\n" not in error and str(tmp_path) not in error  # the temp path never leaks
            assert page.is_hidden("#result")
        finally:
            context.close()


def _upload_error(server: str, name: str, content: bytes) -> tuple[int, str]:
    import json
    import urllib.error
    import urllib.request

    boundary = "x1x2x3"
    body = (f"--{boundary}\r\nContent-Disposition: form-data; name=\"image\"; filename=\"{name}\"\r\n"
            f"Content-Type: application/octet-stream\r\n\r\n").encode() + content + f"\r\n--{boundary}--\r\n".encode()
    req = urllib.request.Request(server + "/predict", data=body, method="POST",
                                 headers={"Content-Type": f"multipart/form-data; boundary={boundary}"})
    with pytest.raises(urllib.error.HTTPError) as err:
        urllib.request.urlopen(req, timeout=60)
    return err.value.code, json.loads(err.value.read())["detail"]


def _png_bytes(height: int, width: int) -> bytes:
    import io

    buffer = io.BytesIO()
    Image.new("RGB", (width, height), (90, 120, 150)).save(buffer, format="PNG")
    return buffer.getvalue()


def test_serve_bad_upload_is_400(server):
    import urllib.error
    import urllib.request

    code, detail = _upload_error(server, "a.jpg", b"not a jpeg")
    assert code == 400 and detail.startswith("a.jpg: not a readable image") and "\n" not in detail
    with pytest.raises(urllib.error.HTTPError) as err:
        urllib.request.urlopen(server + "/result/nope/depth_16bit.png", timeout=10)
    assert err.value.code == 404


def test_serve_refuses_images_over_the_limits_with_400(server):
    code, detail = _upload_error(server, "wide.png", _png_bytes(1, 5000))  # 5000 tiles
    assert code == 400 and detail.startswith("wide.png: a 1x5000 image needs 5000 tiles, more than the limit of 8")
    code, detail = _upload_error(server, "huge.png", _png_bytes(7500, 7000))  # 52.5 megapixels, header only
    assert code == 400 and detail.startswith("huge.png: 7000x7500 is 52.5 megapixels, over the limit of 50")


def test_serve_stopped_by_sigterm_leaves_no_results_behind(tiny_cfg, tmp_path):
    import os
    import signal
    import subprocess
    import sys
    import urllib.request

    _require_server()
    from clipdepth.models.pureclip_depth import PureCLIPDepth

    PureCLIPDepth.build(tiny_cfg).save_pretrained(tmp_path / "ckpt")
    temp = tmp_path / "tmp"
    temp.mkdir()
    port = _free_port()
    server = subprocess.Popen(
        [sys.executable, "-m", "clipdepth.cli.main", "serve", "--checkpoint", str(tmp_path / "ckpt"), "--port", str(port)],
        env={**os.environ, "TMPDIR": str(temp)}, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )
    try:
        deadline = time.monotonic() + 120
        while True:
            try:
                urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=2)
                break
            except OSError:
                assert server.poll() is None and time.monotonic() < deadline, server.stderr.read()[-2000:]
                time.sleep(0.2)
        boundary = "b0undary"
        body = (f"--{boundary}\r\nContent-Disposition: form-data; name=\"image\"; filename=\"p.png\"\r\n\r\n").encode() \
            + _png_bytes(48, 64) + f"\r\n--{boundary}--\r\n".encode()
        req = urllib.request.Request(f"http://127.0.0.1:{port}/predict", data=body, method="POST",
                                     headers={"Content-Type": f"multipart/form-data; boundary={boundary}"})
        assert urllib.request.urlopen(req, timeout=60).status == 200
        assert any(temp.rglob("depth_16bit.png"))  # the result is on disk while the server runs
    finally:
        server.send_signal(signal.SIGTERM)
        server.wait(timeout=60)
    assert list(temp.iterdir()) == []
