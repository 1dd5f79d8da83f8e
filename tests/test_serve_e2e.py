"""`clipdepth serve` (the Gradio page of clipdepth.serve): the library without a browser, then a
real server on a loopback port driven by headless Chromium, then the command stopped by Ctrl+C and
by SIGTERM.

Skips when gradio/trimesh (the `serve` extra), playwright or /usr/bin/chromium are absent.
"""

from __future__ import annotations

import importlib.util
import math
import os
import socket
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import ExifTags, Image

from clipdepth.config import config_to_dict, load_config, load_config_dict
from clipdepth.errors import CheckpointError, ConfigError, DataError
from clipdepth.models import build_model, load_model, predicts_from_images

from .conftest import TINY_DEPTH_ANYTHING, TINY_ENCODER, TINY_TR2M

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
TIMEOUT_MS = 20_000
CAPTION = "a narrow corridor with a door at the end"


def _require_serve() -> None:
    for module in ("gradio", "trimesh"):
        if importlib.util.find_spec(module) is None:
            pytest.skip(f'{module} is not installed (pip install -e ".[serve]" in the clone)')


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory) -> dict[str, Path]:
    """A tiny random-weight PureCLIP-Depth and TR2M (random Depth Anything, so that it runs on
    images without ground truth) whose depth depends on the caption."""
    root = tmp_path_factory.mktemp("checkpoints")
    cfg = load_config("demo", [f"clip.{k}={v}" for k, v in TINY_ENCODER.items()] + [f"output_dir={root / 'run'}"])
    tr2m_cfg = load_config_dict(config_to_dict(load_config_dict(config_to_dict(cfg), TINY_TR2M)), TINY_DEPTH_ANYTHING)
    torch.manual_seed(0)
    build_model(cfg).save_pretrained(root / "pure")
    tr2m = build_model(tr2m_cfg)
    with torch.no_grad():  # the factor heads start as constants (zero weights): make them read the features
        for head in (tr2m.head.scale_head, tr2m.head.shift_head):
            torch.nn.init.normal_(head.conv_out.weight, std=2.0)
        tr2m.head.shift_head.conv_out.bias.fill_(3.0)  # inverse depth about 0.2: depths inside the 10 m range
    tr2m.save_pretrained(root / "tr2m")
    return {"pure": root / "pure", "tr2m": root / "tr2m"}


@pytest.fixture(scope="module")
def photo(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("images") / "photo.png"
    Image.fromarray(np.random.default_rng(0).integers(0, 256, (48, 64, 3), dtype=np.uint8)).save(path)
    return path


def _rgb(path: Path) -> np.ndarray:
    with Image.open(path) as im:
        return np.asarray(im.convert("RGB"))


def _png_bytes(height: int, width: int) -> bytes:
    import io

    buffer = io.BytesIO()
    Image.new("RGB", (width, height), (90, 120, 150)).save(buffer, format="PNG")
    return buffer.getvalue()


def _read_ply(path: Path) -> np.ndarray:
    """The vertices of a binary little-endian PLY of x y z float, red green blue uchar."""
    data = path.read_bytes()
    end = data.index(b"end_header\n") + len(b"end_header\n")
    header = data[:end].decode("ascii").splitlines()
    assert header[:2] == ["ply", "format binary_little_endian 1.0"]
    count = int(next(line for line in header if line.startswith("element vertex")).split()[-1])
    vertex = np.dtype([("x", "<f4"), ("y", "<f4"), ("z", "<f4"), ("r", "u1"), ("g", "u1"), ("b", "u1")])
    assert len(data) - end == count * vertex.itemsize
    return np.frombuffer(data, dtype=vertex, offset=end)


def _check_ply(path: Path, depth: np.ndarray, rgb: np.ndarray) -> None:
    """Every pixel's point, back-projected with a 60 degree horizontal field of view (worked out here)."""
    height, width = depth.shape
    vertices = _read_ply(path)
    assert len(vertices) == height * width
    focal = 0.5 * width / math.tan(math.radians(30))
    v, u = np.mgrid[:height, :width]
    np.testing.assert_allclose(vertices["z"], depth.ravel(), rtol=1e-5)
    np.testing.assert_allclose(vertices["x"], ((u - (width - 1) / 2) * depth / focal).ravel(), rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(vertices["y"], ((v - (height - 1) / 2) * depth / focal).ravel(), rtol=1e-4, atol=1e-5)
    assert np.array_equal(np.stack([vertices["r"], vertices["g"], vertices["b"]], -1), rgb.reshape(-1, 3))


def _check_depth_png(path: Path, expected: np.ndarray) -> None:
    """Millimetres (the model's range fits), rounded: within half a millimetre of the model's depth."""
    with Image.open(path) as im:
        assert im.text["depth_scale"] == "1000.0"
        values = np.asarray(im)
    assert values.dtype == np.uint16 and values.shape == expected.shape
    np.testing.assert_allclose(values / 1000.0, expected, rtol=0, atol=0.0005 + 1e-6)


# -- the library, without a browser ---------------------------------------------------------------
def test_view_points_are_every_kth_pixel_in_gltf_axes():
    _require_serve()
    from clipdepth.serve import view_points
    from clipdepth.serve.view3d import view_step

    depth = np.array([[1.0, 2.0, 3.0], [4.0, 0.0, 6.0], [7.0, 8.0, np.nan]], dtype=np.float32)
    image = np.arange(27, dtype=np.uint8).reshape(3, 3, 3)
    points, colours = view_points(depth, image, (2.0, 4.0, 1.0, 1.0), max_points=4)  # 3x3 > 4: every 2nd pixel
    # kept: (0,0) d=1, (0,2) d=3, (2,0) d=7; (2,2) is NaN. x = (u-cx) d / fx, y = (v-cy) d / fy, then y, z negated.
    np.testing.assert_allclose(points, [[-0.5, 0.25, -1.0], [1.5, 0.75, -3.0], [-3.5, -1.75, -7.0]])
    assert colours.tolist() == [[0, 1, 2], [6, 7, 8], [18, 19, 20]]
    assert view_step(3, 3, 9) == 1 and view_step(3, 3, 8) == 2 and view_step(3, 3, 1) == 3
    assert view_step(1000, 1000, 200_000) == 3  # ceil(1000/3)^2 = 111556 <= 200000 < ceil(1000/2)^2


def test_the_view_glb_holds_the_points_and_colours_as_trimesh_reads_them(tmp_path):
    _require_serve()
    import io
    import struct

    import trimesh

    from clipdepth.serve.view3d import glb_bytes, write_view_glb

    points = np.array([[0.5, -1.0, -2.0], [1.5, 0.25, -3.0], [-2.0, 2.0, -1.0]], dtype=np.float32)
    colours = np.array([[255, 0, 0], [0, 128, 0], [1, 2, 3]], dtype=np.uint8)
    data = glb_bytes(points, colours)
    magic, version, length = struct.unpack("<III", data[:12])
    assert (magic, version, length) == (0x46546C67, 2, len(data)) and length % 4 == 0  # b"glTF", version 2
    cloud = trimesh.load(io.BytesIO(data), file_type="glb").to_geometry()
    assert isinstance(cloud, trimesh.PointCloud)
    assert np.asarray(cloud.vertices).tolist() == points.tolist()
    assert np.asarray(cloud.colors).tolist() == [[255, 0, 0, 255], [0, 128, 0, 255], [1, 2, 3, 255]]
    # no valid depth: a file with an empty scene
    assert len(trimesh.load(io.BytesIO(glb_bytes(points[:0], colours[:0])), file_type="glb").geometry) == 0
    depth = np.array([[1.0, 2.0], [0.0, 4.0]], dtype=np.float32)  # 3 valid pixels, written whole
    assert write_view_glb(tmp_path / "v.glb", depth, np.zeros((2, 2, 3), np.uint8), (1.0, 1.0, 0.5, 0.5)) == 3
    assert len(trimesh.load(tmp_path / "v.glb").to_geometry().vertices) == 3


def test_a_result_is_written_outside_the_model_lock(checkpoints, photo, tmp_path, monkeypatch):
    """While one request's files are being written, the next request's model runs (and its files are
    written): the lock covers the model call only."""
    _require_serve()
    import threading

    from clipdepth.serve import DepthService, find_checkpoints
    from clipdepth.serve import service as service_module

    found, _ = find_checkpoints([checkpoints["pure"]])
    service = DepthService(found, tmp_path / "work")
    real, release, first = service_module.write_depth_colour, threading.Event(), []

    def held_first(*args, **kwargs):  # the first request's file waits until released
        if not first:
            first.append(True)
            assert release.wait(120)
        return real(*args, **kwargs)

    monkeypatch.setattr(service_module, "write_depth_colour", held_first)
    results: dict[str, object] = {}

    def request(key: str) -> None:
        results[key] = service.predict(photo, found[0].label)

    writing = threading.Thread(target=request, args=("first",))
    writing.start()
    while not first and writing.is_alive():
        writing.join(0.01)
    second = threading.Thread(target=request, args=("second",))
    second.start()
    second.join(120)  # returns at once when done; without the fix it waits on the lock held by the first
    done_while_writing = not second.is_alive() and writing.is_alive()
    release.set()
    writing.join(120)
    second.join(120)
    assert done_while_writing
    expected = load_model(checkpoints["pure"]).infer(_rgb(photo))["depth"][0].numpy()
    for result in (results["first"], results["second"]):
        _check_depth_png(service.result_file(result.key, "depth"), expected)
        assert result.depth_color.is_file()


def test_a_file_on_demand_being_written_is_finished_before_its_result_is_dropped(checkpoints, photo, tmp_path, monkeypatch):
    """A download of the oldest result is being written while a new request drops that result
    (keep=1): the folder is removed only once the file is written whole, and the download succeeds."""
    _require_serve()
    import threading

    from clipdepth.serve import DepthService, find_checkpoints
    from clipdepth.serve import service as service_module

    found, _ = find_checkpoints([checkpoints["pure"]])
    service = DepthService(found, tmp_path / "work", keep=1)
    first = service.predict(photo, found[0].label)
    real_write, real_rmtree = service_module.write_prediction, service_module.shutil.rmtree
    started, release, events = threading.Event(), threading.Event(), []

    def held_write(files, *args, **kwargs):
        started.set()
        assert release.wait(120)
        real_write(files, *args, **kwargs)
        events.append(("written", next(iter(files.values())).is_file()))

    def rmtree(path, *args, **kwargs):
        events.append(("removed", path))
        real_rmtree(path, *args, **kwargs)

    monkeypatch.setattr(service_module, "write_prediction", held_write)
    downloaded: list = []
    download = threading.Thread(target=lambda: downloaded.append(service.result_file(first.key, "ply")))
    download.start()
    assert started.wait(120)
    monkeypatch.setattr(service_module, "write_prediction", real_write)
    monkeypatch.setattr(service_module.shutil, "rmtree", rmtree)
    second = threading.Thread(target=service.predict, args=(photo, found[0].label))
    second.start()
    while first.key in service._results and second.is_alive():  # the second request has dropped the first
        second.join(0.01)
    release.set()
    download.join(120)
    second.join(120)
    assert downloaded == [first.depth_color.parent / "photo.ply"]
    assert events == [("written", True), ("removed", first.depth_color.parent)]
    assert not first.depth_color.parent.exists()


def test_find_checkpoints_lists_given_and_found_ones_and_skips_damaged_ones(checkpoints, tmp_path):
    _require_serve()
    from clipdepth.serve import find_checkpoints

    runs = tmp_path / "runs"
    (runs / "a").mkdir(parents=True)
    for name in ("config.json", "model.safetensors"):
        (runs / "a" / name).write_bytes((checkpoints["tr2m"] / name).read_bytes())
    (runs / "broken").mkdir()
    (runs / "broken" / "config.json").write_text("{not json")
    (runs / "broken" / "model.safetensors").write_bytes(b"")
    (runs / "notes").mkdir()
    (runs / "notes" / "config.json").write_text("{}")  # no weights beside it: not a checkpoint
    found, skipped = find_checkpoints([checkpoints["pure"], checkpoints["pure"]], runs)
    assert [(c.label, c.model_class.display_name) for c in found] == [
        (str(checkpoints["pure"]), "PureCLIP-Depth"),
        (str(runs / "a"), "TR2M"),
    ]
    assert found[1].title == f"{runs / 'a'} (TR2M)"
    assert len(skipped) == 1 and skipped[0].startswith(f"{runs / 'broken' / 'config.json'}: invalid JSON")
    with pytest.raises(CheckpointError, match="checkpoint folder not found"):
        find_checkpoints([tmp_path / "nope"])
    with pytest.raises(ConfigError, match="no checkpoint to serve in"):
        find_checkpoints([], runs / "notes")


def test_service_predicts_checks_limits_and_keeps_the_newest_results(checkpoints, photo, tmp_path):
    _require_serve()
    from clipdepth.serve import DepthService, find_checkpoints

    found, _ = find_checkpoints([checkpoints["pure"], checkpoints["tr2m"]])
    pure, tr2m = (c.label for c in found)
    service = DepthService(found, tmp_path / "work", keep=2, max_upload_bytes=2**20)
    first = service.predict(photo, pure)
    expected = load_model(checkpoints["pure"]).infer(_rgb(photo))["depth"][0].numpy()
    # a request writes what the page shows at once; the rest waits until asked for
    assert [p.name for p in first.depth_color.parent.iterdir()] == ["photo_depth_color.png"]
    first_png, first_ply = service.result_file(first.key, "depth"), service.result_file(first.key, "ply")
    _check_depth_png(first_png, expected)
    _check_ply(first_ply, expected, _rgb(photo))
    assert first.points == 48 * 64 and first.uncertainty
    spread, view = service.result_file(first.key, "uncertainty_color"), service.result_file(first.key, "view")
    assert view.stat().st_size > 0
    assert [p.name for p in (first.depth_color, first_png, first_ply, view, spread)] == [
        "photo_depth_color.png",
        "photo_depth16.png",
        "photo.ply",
        "photo_view.glb",
        "photo_uncertainty_color.png",
    ]
    assert {p.parent for p in (first_png, first_ply, view, spread)} == {first.depth_color.parent}
    with Image.open(first_png) as im:
        assert im.text["source"] == "photo.png"  # the upload's name, not the server's path of it
    written = first_ply.stat().st_mtime_ns
    assert service.result_file(first.key, "ply") == first_ply and first_ply.stat().st_mtime_ns == written  # not again
    with pytest.raises(ConfigError, match="no result file 'npy'; choose one of view, depth, ply, uncertainty_color"):
        service.result_file(first.key, "npy")

    with_caption = service.predict(photo, tr2m, f"  {CAPTION}\n")  # surrounding blanks do not count
    assert not with_caption.uncertainty
    with pytest.raises(ConfigError, match="^this result's model gives no uncertainty$"):
        service.result_file(with_caption.key, "uncertainty_color")
    tr2m_model = load_model(checkpoints["tr2m"])
    expected = tr2m_model.infer(_rgb(photo), captions=[CAPTION])["depth"][0].numpy()
    _check_depth_png(service.result_file(with_caption.key, "depth"), expected)
    other = tr2m_model.infer(_rgb(photo), captions=["a wide open beach"])["depth"][0].numpy()
    assert np.abs(other - expected).max() > 0.01  # the caption matters: the check above could fail
    for caption, message in (
        ("", "TR2M reads a caption"),
        ("   ", "TR2M reads a caption"),
        ("x" * 1001, "the caption has 1001 characters, more than the limit of 1000"),
    ):
        with pytest.raises(ConfigError, match=message):
            service.predict(photo, tr2m, caption)

    service.predict(photo, pure)  # a third result: the first (keep=2) is gone, from disk and from memory
    assert not first.depth_color.parent.exists() and with_caption.depth_color.exists()
    assert len(list(service.results_root.iterdir())) == 2
    with pytest.raises(DataError) as err:
        service.result_file(first.key, "ply")
    assert str(err.value) == "that result is no longer kept (the server keeps its newest 2): estimate the depth again"
    assert not first.depth_color.parent.exists()

    # a photo with an EXIF 35 mm-equivalent focal length: its point cloud uses it (Depth Pro's conversion)
    exif = Image.Exif()
    exif.get_ifd(ExifTags.IFD.Exif)[ExifTags.Base.FocalLengthIn35mmFilm] = 26
    Image.fromarray(_rgb(photo)).save(tmp_path / "phone.jpg", exif=exif, quality=100)
    phone = service.predict(tmp_path / "phone.jpg", pure)
    focal = 26 * math.hypot(64, 48) / math.hypot(36, 24)
    u = np.arange(64)[None, :].repeat(48, 0)
    np.testing.assert_allclose(
        _read_ply(service.result_file(phone.key, "ply"))["x"], ((u - 31.5) * phone.depth / focal).ravel(), rtol=1e-4, atol=1e-5
    )
    assert "EXIF" in phone.summary and "60 degree" in first.summary

    cases = {
        "notes.png": (b"this is not an image\n", "notes.png: not a readable image"),
        "empty.png": (b"", "empty.png: empty file"),
        "wide.png": (_png_bytes(1, 5000), "wide.png: a 5000x1 image needs 5000 tiles, more than the limit of 8"),
        "huge.png": (_png_bytes(7500, 7000), "huge.png: 7000x7500 is 52.5 megapixels, over the limit of 50"),
        "big.bmp": (b"BM" + bytes(3 * 2**19), "big.bmp: 1.5 MiB, over the upload limit of 1 MiB"),
    }
    for name, (content, message) in cases.items():
        upload = tmp_path / "uploads" / name
        upload.parent.mkdir(exist_ok=True)
        upload.write_bytes(content)
        with pytest.raises(DataError) as err:
            service.predict(upload, pure)
        assert str(err.value).startswith(message) and str(tmp_path) not in str(err.value) and "\n" not in str(err.value)
    with pytest.raises(ConfigError, match="no checkpoint 'x' here"):
        service.predict(photo, "x")


def test_examples_come_from_a_folder_with_their_captions_or_are_synthetic(tmp_path):
    _require_serve()
    from clipdepth.serve.examples import folder_examples, synthetic_examples

    source = tmp_path / "mine"
    (source / "sub").mkdir(parents=True)
    Image.new("RGB", (8, 6), (10, 20, 30)).save(source / "kitchen.jpg")
    Image.new("RGB", (8, 6), (40, 50, 60)).save(source / "sub" / "yard.png")
    (source / "kitchen.txt").write_text("\na kitchen with a window\nsecond line\n")
    (source / "notes.md").write_text("not an image")
    listed = folder_examples(source, tmp_path / "copies")
    assert [(p.relative_to(tmp_path / "copies").as_posix(), c) for p, c in listed] == [
        ("kitchen.jpg", "a kitchen with a window"),
        ("sub/yard.png", ""),
    ]
    assert listed[0][0].read_bytes() == (source / "kitchen.jpg").read_bytes()
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match="no images found in"):
        folder_examples(tmp_path / "empty", tmp_path / "x")

    scenes = synthetic_examples(tmp_path / "synthetic")
    assert [p.name for p, _ in scenes] == ["synthetic_indoor.png", "synthetic_outdoor.png"]
    assert all(caption for _, caption in scenes)
    assert [_rgb(p).shape for p, _ in scenes] == [(240, 320, 3), (192, 640, 3)]


def test_serving_folder_is_gradios_temp_folder_while_open_and_removed_after():
    _require_serve()
    from clipdepth.serve import serving_folder

    before = os.environ.get("GRADIO_TEMP_DIR")
    with serving_folder() as workdir:
        assert os.environ["GRADIO_TEMP_DIR"] == str(workdir) and workdir.is_dir()
        (workdir / "left.txt").write_text("x")
    assert not workdir.exists() and os.environ.get("GRADIO_TEMP_DIR") == before


def test_only_loopback_hosts_are_allowed_unless_remote_is(checkpoints, capsys):
    _require_serve()
    from clipdepth.cli.main import main
    from clipdepth.serve import check_host, is_loopback

    for host in ("127.0.0.1", "127.0.0.2", "127.255.255.254", "::1", "[::1]", "localhost", "LocalHost"):
        assert is_loopback(host), host
        check_host(host)
    for host in ("0.0.0.0", "::", "128.0.0.1", "126.255.255.255", "192.168.1.5", "::2", "example.com", "localhost.example"):
        assert not is_loopback(host), host
        with pytest.raises(ConfigError, match="not a loopback address .*allow_remote") as err:
            check_host(host)
        assert err.value.setting == "allow_remote"
        check_host(host, allow_remote=True)
    assert main(["serve", "--checkpoint", str(checkpoints["pure"]), "--host", "0.0.0.0"]) == 2
    assert capsys.readouterr().err == (
        "clipdepth serve: error: 0.0.0.0: not a loopback address (127.0.0.0/8, ::1, localhost): the page would be "
        "open to the network; allow that explicitly with allow_remote (--allow-remote)\n"
    )
    assert main(["serve"]) == 2
    assert "no checkpoint to serve: give checkpoint folders" in capsys.readouterr().err


def _refuse_serving(monkeypatch) -> None:
    """Starting a server fails the test: what is checked must be refused before."""
    import clipdepth.serve.app

    def launch(*args, **kwargs):
        raise AssertionError("the server was started")

    monkeypatch.setattr(clipdepth.serve.app, "launch_app", launch)


def test_overrides_are_checked_before_serving(checkpoints, monkeypatch, capsys, tmp_path):
    _require_serve()
    from clipdepth.cli.main import main
    from clipdepth.serve import DepthService, find_checkpoints

    _refuse_serving(monkeypatch)
    pure = str(checkpoints["pure"])
    assert main(["serve", "--checkpoint", pure, "--set", "foo"]) == 2
    assert capsys.readouterr().err == (
        "clipdepth serve: error: override 'foo': expected KEY=VALUE, e.g. clip.name=/models/clip-vit-l14-336 (--set)\n"
    )
    assert main(["serve", "--checkpoint", pure, "--set", "clip.name=/models/clip", "--set", "pureclip.num_bins=8"]) == 2
    err = capsys.readouterr().err
    assert (
        err.startswith("clipdepth serve: error: override 'pureclip.num_bins=8': a trained checkpoint's settings are part of its weights")
        and err.endswith("(--set)\n")
        and err.count("\n") == 1
    )
    found, _ = find_checkpoints([pure])
    with pytest.raises(ConfigError, match="override 'data.height=32': a trained checkpoint's settings"):
        DepthService(found, tmp_path, overrides=["data.height=32"])
    DepthService(found, tmp_path, overrides=["clip.name=/models/clip"])  # where a frozen part is: allowed


def test_the_image_limits_reach_the_service(checkpoints, monkeypatch, capsys):
    _require_serve()
    import clipdepth.serve
    from clipdepth.cli.main import main

    given = {}

    def service(checkpoints, workdir, **kwargs):
        given.update(kwargs)
        raise ConfigError("stopped here")

    monkeypatch.setattr(clipdepth.serve, "DepthService", service)
    assert main(["serve", "--checkpoint", str(checkpoints["pure"]), "--max-tiles", "3", "--max-pixels", "2.5"]) == 2
    assert capsys.readouterr().err == "clipdepth serve: error: stopped here\n"
    assert (given["max_tiles"], given["max_pixels"]) == (3, 2_500_000)
    assert main(["serve", "--checkpoint", str(checkpoints["pure"])]) == 2  # predict's defaults
    assert (given["max_tiles"], given["max_pixels"]) == (8, 50_000_000)
    with pytest.raises(SystemExit):
        main(["serve", "--checkpoint", str(checkpoints["pure"]), "--max-pixels", "0"])
    assert "expected a positive number of megapixels, got 0" in capsys.readouterr().err


def test_a_port_in_use_or_an_address_not_here_is_one_line(checkpoints, monkeypatch, capsys):
    _require_serve()
    from clipdepth.cli.main import main
    from clipdepth.serve import check_address

    _refuse_serving(monkeypatch)
    with socket.socket() as taken:  # another server, listening
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        assert main(["serve", "--checkpoint", str(checkpoints["pure"]), "--port", str(port)]) == 2
        assert capsys.readouterr().err == (
            f"clipdepth serve: error: 127.0.0.1:{port} is in use (by another server, perhaps another clipdepth serve): "
            "stop that one, or choose another port (--port)\n"
        )
        with pytest.raises(ConfigError, match=f"localhost:{port} is in use") as err:
            check_address("localhost", port)
        assert err.value.setting == "port"
    check_address("127.0.0.1", port)  # free again
    # 192.0.2.0/24 is reserved for documentation: no machine has it
    assert main(["serve", "--checkpoint", str(checkpoints["pure"]), "--host", "192.0.2.1", "--allow-remote"]) == 2
    assert capsys.readouterr().err == (
        "clipdepth serve: error: 192.0.2.1: not an address of this machine, so nothing can listen there: give one of "
        "its addresses (default 127.0.0.1) (--host)\n"
    )
    with pytest.raises(ConfigError, match="70000: not a port number"):
        check_address("127.0.0.1", 70000)


def test_launch_refuses_a_taken_port_in_one_line_also_when_taken_after_the_check(server, monkeypatch, capfd):
    import gradio as gr

    import clipdepth.serve.app
    from clipdepth.serve import launch_app

    port = int(server[0].rstrip("/").rsplit(":", 1)[1])  # the page's server holds it
    with gr.Blocks() as blank:
        gr.Markdown("another page")
    with pytest.raises(ConfigError, match=f"127.0.0.1:{port} is in use"):
        launch_app(blank, port=port)
    with pytest.raises(ConfigError, match=f"127.0.0.1:{port} is in use"):  # Gradio checks 127.0.0.1 first
        launch_app(blank, host="127.0.0.2", port=port)
    monkeypatch.setattr(clipdepth.serve.app, "check_address", lambda host, port: None)  # taken since the check
    with pytest.raises(ConfigError) as err:
        launch_app(blank, port=port)
    assert (
        str(err.value) == (f"127.0.0.1:{port}: the server could not start there (the port was taken meanwhile?): choose another port")
        and err.value.setting == "port"
    )
    assert "ERROR" not in "".join(capfd.readouterr())  # no log line of the server beside it


def _copy_checkpoint(source: Path, to: Path) -> Path:
    to.mkdir(parents=True)
    for name in ("config.json", "model.safetensors"):
        (to / name).write_bytes((source / name).read_bytes())
    return to


def test_found_checkpoints_are_a_runs_model_only_and_none_that_needs_ground_truth(
    checkpoints, tiny_tr2m_cfg, monkeypatch, capsys, tmp_path
):
    _require_serve()
    from clipdepth.cli.main import main
    from clipdepth.serve import find_checkpoints

    runs = tmp_path / "runs"
    for folder in (
        "done/model",
        "done/checkpoints/best_abs_rel",
        "done/checkpoints/last",
        "unfinished/checkpoints/best_abs_rel",
        "unfinished/checkpoints/last",
        "converted",
    ):
        _copy_checkpoint(checkpoints["pure"], runs / folder)
    build_model(tiny_tr2m_cfg).save_pretrained(runs / "oracle" / "model")  # TR2M on the ground-truth oracle
    _copy_checkpoint(runs / "oracle" / "model", runs / "oracle" / "checkpoints" / "last")
    assert not predicts_from_images(runs / "oracle" / "model") and predicts_from_images(checkpoints["tr2m"])

    found, skipped = find_checkpoints([], runs)
    assert [c.label for c in found] == [
        str(runs / f) for f in ("done/model", "converted", "unfinished/checkpoints/best_abs_rel", "unfinished/checkpoints/last")
    ]
    reason = (
        f"{runs / 'oracle' / 'model'}: this TR2M checkpoint takes its relative depth from the ground truth (the "
        "oracle source of the synthetic demo and tests), so it cannot predict on uploaded images; train one "
        "with tr2m.relative.source=depth_anything to serve it"
    )
    assert skipped == [reason]  # its checkpoints/last is part of the run: not listed, not skipped again
    found, _ = find_checkpoints([], runs / "done" / "checkpoints")  # a run's checkpoints searched: all listed
    assert [c.label for c in found] == [str(runs / "done" / "checkpoints" / f) for f in ("best_abs_rel", "last")]
    found, _ = find_checkpoints([runs / "done" / "checkpoints" / "last"], runs / "done")  # named: offered
    assert [c.label for c in found] == [str(runs / "done" / "checkpoints" / "last"), str(runs / "done" / "model")]

    with pytest.raises(CheckpointError, match="this TR2M checkpoint takes its relative depth from the ground truth"):
        find_checkpoints([runs / "oracle" / "model"], runs)
    _refuse_serving(monkeypatch)
    assert main(["serve", "--checkpoint", str(runs / "oracle" / "model")]) == 2
    assert capsys.readouterr().err == f"clipdepth serve: error: {reason} (--checkpoint/--checkpoints)\n"


# -- the page in headless Chromium --------------------------------------------------------------
@pytest.fixture(scope="module")
def server(checkpoints):
    _require_serve()
    from clipdepth.serve import DepthService, build_app, find_checkpoints, launch_app, serving_folder

    with serving_folder() as workdir:
        # keep=2: each test reads only its newest result, and the last one counts what is left
        service = DepthService(find_checkpoints([checkpoints["pure"], checkpoints["tr2m"]])[0], workdir, keep=2)
        app = build_app(service)
        url = launch_app(app, port=_free_port())
        try:
            yield url, workdir
        finally:
            app.close(verbose=False)


@pytest.fixture(scope="module")
def browser(tmp_path_factory):
    if importlib.util.find_spec("playwright") is None:
        pytest.skip("playwright is not installed (pip install playwright)")
    if not CHROMIUM.is_file():
        pytest.skip(f"{CHROMIUM} not found (apt-get install chromium)")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as pw:
        context = pw.chromium.launch_persistent_context(
            str(tmp_path_factory.mktemp("chromium-profile")),
            executable_path=str(CHROMIUM),
            args=CHROMIUM_ARGS,
            headless=True,
            accept_downloads=True,
            timeout=TIMEOUT_MS,
            viewport={"width": 1400, "height": 1200},
        )
        try:
            yield context
        finally:
            context.close()


@pytest.fixture
def page(browser, server):
    server, _ = server
    page = browser.new_page()
    page.set_default_timeout(TIMEOUT_MS)
    elsewhere: list[str] = []  # the page asks nothing of any other server (no fonts, no analytics)
    page.on("request", lambda r: None if r.url.startswith((server, "data:", "blob:")) else elsewhere.append(r.url))
    page.goto(server)
    page.wait_for_selector("#run")
    yield page
    page.close()
    assert elsewhere == []


def _estimate(page, image: Path, caption: str | None = None) -> str:
    """Upload ``image``, type ``caption`` (if any), press the button; the status line once it changes."""
    before = page.input_value("#status textarea")
    if page.is_visible("#upload button[aria-label=Clear]"):  # the previous upload
        page.click("#upload button[aria-label=Clear]")
    page.set_input_files("#upload input[type=file]", str(image))
    page.wait_for_selector(f'#upload td.filename[aria-label="{image.name}"]')  # uploaded
    if caption is not None:
        page.fill("#caption input", caption)
    page.click("#run")
    page.wait_for_function("before => document.querySelector('#status textarea').value !== before", arg=before)
    return page.input_value("#status textarea")


def _shown(page, selector: str, to: Path) -> np.ndarray:
    """The image the page shows at ``selector``, once loaded, as the server sent it."""
    page.wait_for_function("s => { const i = document.querySelector(s); return i && i.complete && i.naturalWidth > 0; }", arg=selector)
    to.write_bytes(page.request.get(page.get_attribute(selector, "src")).body())
    return _rgb(to)


def _download(page, selector: str, to: Path) -> Path:
    """Press the button of the download at ``selector`` (the server writes the file), then its link."""
    page.click(f"{selector}-button")
    link = page.locator(f"{selector} a.download-link")
    link.wait_for()
    with page.expect_download() as info:
        link.click()
    info.value.save_as(to)
    return to


def test_the_page_shows_depth_its_downloads_and_the_3d_view(page, checkpoints, photo, tmp_path):
    status = _estimate(page, photo)
    assert status == page.input_value("#status textarea") and "64x48: depth" in status and "3072 points" in status

    expected = load_model(checkpoints["pure"]).infer(_rgb(photo))["depth"][0].numpy()
    assert not page.is_visible("#uncertainty img")  # written when asked for
    page.click("#uncertainty-button")
    shown = {s: _shown(page, f"#{s} img", tmp_path / f"{s}.png") for s in ("depth", "uncertainty")}
    for colour in shown.values():  # the map, and its metre scale at the right
        assert colour.shape[0] > 48 and colour.shape[1] > 64 and len(np.unique(colour.reshape(-1, 3), axis=0)) > 10
    # Each depth pixel in turbo's colour of its bin over 0 m .. the largest depth (256 bins; one
    # bin either way for depths on a bin edge, where float32 and float64 may part).
    from matplotlib import colormaps

    lut = colormaps["turbo"](np.linspace(0.0, 1.0, 256), bytes=True)[:, :3]
    pad = (shown["depth"].shape[0] - 48) // 2
    mapped = shown["depth"][pad : pad + 48, :64]
    bins = np.minimum((expected / expected.max() * 256).astype(int), 255)
    assert all(np.any([np.all(mapped == lut[np.clip(bins + d, 0, 255)], axis=-1) for d in (-1, 0, 1)], axis=0).ravel())

    _check_depth_png(_download(page, "#depth-png", tmp_path / "d.png"), expected)
    _check_ply(_download(page, "#ply", tmp_path / "p.ply"), expected, _rgb(photo))

    # The 3-D view, once asked for, draws the point cloud: its canvas is not one flat colour.
    page.click("#view-button")
    canvas = page.locator("#view canvas")
    canvas.wait_for()
    page.wait_for_timeout(500)
    drawn = tmp_path / "view.png"
    canvas.screenshot(path=str(drawn))
    assert len(np.unique(_rgb(drawn).reshape(-1, 3), axis=0)) > 20


def test_the_tr2m_caption_box_reaches_the_model(page, checkpoints, photo, tmp_path):
    assert not page.is_visible("#caption")  # PureCLIP-Depth is first: no caption to give
    page.click("#model input")
    page.get_by_role("option", name=f"{checkpoints['tr2m']} (TR2M)").click()
    page.wait_for_selector("#caption input", state="visible")
    assert not page.is_visible("#uncertainty") and not page.is_visible("#uncertainty-button")  # TR2M gives none

    status = _estimate(page, photo)  # no caption yet
    assert status.startswith("Error: TR2M reads a caption: describe the scene in the caption box")
    status = _estimate(page, photo, CAPTION)
    assert status.startswith(f"{checkpoints['tr2m']}: 64x48: depth")
    expected = load_model(checkpoints["tr2m"]).infer(_rgb(photo), captions=[CAPTION])["depth"][0].numpy()
    _check_depth_png(_download(page, "#depth-png", tmp_path / "d.png"), expected)


def test_a_corrupt_upload_gets_one_line_and_the_next_upload_works(page, server, photo, tmp_path):
    broken = tmp_path / "notes.png"
    broken.write_text("this is not an image\n")
    status = _estimate(page, broken)
    assert status.startswith("Error: notes.png: not a readable image") and "\n" not in status
    assert str(tmp_path) not in status and "clipdepth-serve" not in status  # no server path
    assert not page.is_visible("#depth img")
    fresh = tmp_path / "fresh.png"  # other bytes than photo.png: an upload of its own
    Image.fromarray(_rgb(photo)[::-1].copy()).save(fresh)
    status = _estimate(page, fresh)
    assert "64x48: depth" in status
    page.wait_for_selector("#depth img")
    # The server keeps its newest 2 results and uploads (this module's tests made more of each).
    workdir = server[1]
    assert len(list((workdir / "results").iterdir())) <= 2
    # Gradio keeps each upload in a folder of its own (it also leaves an empty temporary file per
    # upload beside them, which goes with the server's folder).
    uploads = [p for p in workdir.glob("*/*") if p.parent.name not in ("results", "examples")]
    assert sorted(p.name for p in uploads) == ["fresh.png", "notes.png"]


# -- the command -----------------------------------------------------------------------------------
def test_serve_stopped_by_sigterm_leaves_nothing_behind(checkpoints, photo, tmp_path):
    import signal
    import subprocess
    import sys
    import time
    import urllib.request

    _require_serve()
    temp = tmp_path / "tmp"
    temp.mkdir()
    port = _free_port()
    env = {k: v for k, v in os.environ.items() if k != "GRADIO_TEMP_DIR"}
    server = subprocess.Popen(
        [sys.executable, "-m", "clipdepth.cli.main", "serve", "--checkpoint", str(checkpoints["pure"]), "--port", str(port)],
        env={**env, "TMPDIR": str(temp)},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
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
        from gradio_client import Client, handle_file

        client = Client(f"http://127.0.0.1:{port}/", verbose=False)
        outputs = client.predict(handle_file(str(photo)), str(checkpoints["pure"]), "", api_name="/predict")
        assert "64x48: depth" in outputs[-1]
        assert any(temp.rglob("photo_depth_color.png")) and not any(temp.rglob("photo_depth16.png"))
        client.predict(api_name="/download_depth_png")  # the session's result: written now, on the server's disk
        assert any(temp.rglob("photo_depth16.png"))  # the result is on disk while the server runs
    finally:
        server.send_signal(signal.SIGTERM)
        server.wait(timeout=60)
    assert server.returncode == 128 + signal.SIGTERM, server.stderr.read()[-2000:]
    assert f"clipdepth serve: offering {checkpoints['pure']} (PureCLIP-Depth)" in server.stdout.read()
    # Uploads, examples, results and Gradio's own folders went with the server (torch's compiler
    # cache, which importing transformers makes, is no part of it).
    assert [p.name for p in temp.iterdir() if not p.name.startswith("torchinductor_")] == []


def test_serve_stopped_by_ctrl_c_exits_130_and_closes_the_server(server, checkpoints, capsys, monkeypatch):
    # `server`: Gradio is first imported in its folder, not in this command's (which goes when it stops).
    import _thread
    import signal
    import threading
    import time
    import urllib.request

    from clipdepth.cli.main import main

    import clipdepth.serve

    port = _free_port()
    stop, waiting = threading.Event(), threading.Event()
    serve_until_stopped = clipdepth.serve.serve_until_stopped

    def waits(app) -> None:  # the command has printed its address and waits
        waiting.set()
        serve_until_stopped(app)

    monkeypatch.setattr(clipdepth.serve, "serve_until_stopped", waits)

    def press_ctrl_c() -> None:  # once the page answers and the command waits, as a user would
        deadline = time.monotonic() + 300
        while not stop.is_set() and time.monotonic() < deadline:
            try:
                urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=2)
                break
            except OSError:
                time.sleep(0.1)
        waiting.wait(timeout=max(0.0, deadline - time.monotonic()))
        if not stop.is_set():  # pressed even past the deadline: a slow start fails the test, never hangs it
            _thread.interrupt_main()

    # Ctrl+C as a terminal delivers it, also where this process was started with SIGINT ignored (a
    # background job of a script), where Python would not turn it into KeyboardInterrupt.
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)

    presser = threading.Thread(target=press_ctrl_c, daemon=True)
    presser.start()
    try:
        status = main(["serve", "--checkpoint", str(checkpoints["pure"]), "--port", str(port)])
    finally:
        stop.set()
        presser.join()
        signal.signal(signal.SIGINT, previous)
    out, err = capsys.readouterr()
    assert status == 130, err
    assert f"open http://127.0.0.1:{port}/ (Ctrl+C to stop)" in out and err == "clipdepth serve: interrupted\n"
    with pytest.raises(OSError):  # closed
        urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=2)
