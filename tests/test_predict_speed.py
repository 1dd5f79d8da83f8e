"""What makes `clipdepth predict` and `clipdepth caption` fast keeps their outputs: colour images by
lookup table, outputs written on threads, images read ahead in worker processes, --workers."""

from __future__ import annotations

import json
import os
from functools import partial

import matplotlib
import numpy as np
import pytest
import torch
from matplotlib.colors import Normalize
from PIL import Image

from clipdepth.cli.main import main
from clipdepth.data.synthetic import render_scene
from clipdepth.errors import ConfigError, DataError
from clipdepth.inference import PredictOptions, predict_to_folder
from clipdepth.data.loader import read_ahead
from clipdepth.io.predictions import collect_inputs, colourise, write_prediction
from clipdepth.models import PureCLIPDepth, load_model
from tests.test_captions import tiny_captioner  # noqa: F401  (a fixture)

WHITE = (255, 255, 255)
# Turbo's first, middle (entry 128) and last colours in its published table, times 255.
TURBO_FIRST, TURBO_128, TURBO_LAST = (48.4, 18.3, 59.2), (164.1, 252.4, 59.6), (122.3, 4.0, 2.7)


@pytest.fixture
def checkpoint(tiny_cfg, tmp_path):
    torch.manual_seed(0)
    return PureCLIPDepth.build(tiny_cfg).save_pretrained(tmp_path / "ckpt")


# -- colour by lookup table -----------------------------------------------------------------------
def test_lut_colouring_equals_matplotlibs_colormap():
    depth = np.array([[0.0, 5.0, 10.0, 12.0], [-1.0, np.nan, np.inf, -np.inf], [2.5, 7.5, 9.99, 0.04]], np.float32)
    rgb = colourise(depth, 10.0)
    assert rgb.shape == (3, 4, 3) and rgb.dtype == np.uint8
    valid = np.isfinite(depth)
    expected = matplotlib.colormaps["turbo"](Normalize(0, 10)(np.ma.masked_invalid(depth)))[..., :3] * 255
    assert np.abs(rgb[valid].astype(float) - expected[valid]).max() <= 1
    assert (rgb[~valid] == WHITE).all()  # NaN and +-inf: white, as the figure's background was
    # 0 and below: the first colour; 5 m of 10: entry 128; 10 m and beyond: the last
    for (row, col), colour in {(0, 0): TURBO_FIRST, (1, 0): TURBO_FIRST, (0, 1): TURBO_128, (0, 2): TURBO_LAST, (0, 3): TURBO_LAST}.items():
        np.testing.assert_allclose(rgb[row, col], colour, atol=1)


def test_the_colour_png_is_the_map_in_colour_beside_its_metre_scale(tmp_path):
    depth = np.tile(np.linspace(0.5, 6.0, 64, dtype=np.float32), (40, 1))
    write_prediction({"color": tmp_path / "c.png"}, depth, np.zeros((40, 64, 3), np.uint8), 10.0)
    png = np.asarray(Image.open(tmp_path / "c.png"))
    assert png.ndim == 3 and png.shape[2] == 3 and png.shape[1] > 64
    top = (png.shape[0] - 40) // 2  # as much margin above as below, for the scale's end labels
    # over 0..6 m, the map's own maximum below the model's 10 m
    np.testing.assert_array_equal(png[top : top + 40, :64], colourise(depth, 6.0))
    bar = png[top : top + 40, 64:].astype(int)
    bar_columns = np.flatnonzero((np.abs(bar[0] - TURBO_LAST).max(axis=1) <= 1) & (np.abs(bar[-1] - TURBO_FIRST).max(axis=1) <= 1))
    assert len(bar_columns) >= 8  # a bar from the last colour (top) to the first (bottom)


def test_the_colour_png_of_a_large_map_shows_every_kth_pixel(tmp_path, monkeypatch):
    monkeypatch.setattr("clipdepth.io.predictions.MAX_COLOUR_PIXELS", 100)
    depth = np.arange(30 * 30, dtype=np.float32).reshape(30, 30)  # 900 pixels: every 3rd, 10 x 10
    write_prediction({"color": tmp_path / "c.png"}, depth, np.zeros((30, 30, 3), np.uint8), 1000.0)
    png = np.asarray(Image.open(tmp_path / "c.png"))
    top = (png.shape[0] - 10) // 2
    np.testing.assert_array_equal(png[top : top + 10, :10], colourise(depth[::3, ::3], 27 * 30 + 27))


# -- reading ahead in workers ---------------------------------------------------------------------
def _whoami(index: int) -> np.ndarray:
    if index == 2:
        raise DataError(f"image{index}.png: not a readable image (truncated)")
    return np.array([index, os.getpid(), torch.get_num_threads()])


def test_images_are_read_in_order_by_one_thread_workers_and_errors_come_back_as_one_line():
    items = list(read_ahead([partial(_whoami, i) for i in range(6)], workers=2))
    assert items[2] == "image2.png: not a readable image (truncated)"
    arrays = np.stack([items[i] for i in (0, 1, 3, 4, 5)])
    assert arrays[:, 0].tolist() == [0, 1, 3, 4, 5]
    assert os.getpid() not in arrays[:, 1] and len(set(arrays[:, 1])) == 2 and set(arrays[:, 2]) == {1}
    here = list(read_ahead([partial(_whoami, i) for i in range(2)], workers=0))
    assert [a[1] for a in here] == [os.getpid()] * 2
    with pytest.raises(ValueError, match="workers must be >= 0"):
        read_ahead([], workers=-1)


def _folder_of_photos(root):
    """Two sizes interleaved (batches break where the size changes), one corrupt file."""
    root.mkdir()
    for i, (h, w) in enumerate([(24, 32), (24, 32), (40, 56), (24, 32), (40, 56), (40, 56)]):
        Image.fromarray(render_scene("indoor", i, h, w).image).save(root / f"p{i}.png")
    (root / "p3b.png").write_bytes(b"\x89PNG truncated")
    return collect_inputs([str(root)])


def test_workers_change_nothing_but_who_reads(checkpoint, tmp_path):
    jobs = _folder_of_photos(tmp_path / "in")
    model = load_model(checkpoint)
    reports = {}
    for workers in (0, 2):
        options = PredictOptions(npy=True, batch_size=2, workers=workers)
        reports[workers] = predict_to_folder(model, jobs, tmp_path / f"out{workers}", options, progress=False)
    assert reports[0] == reports[2]
    assert reports[2].done == 6 and len(reports[2].failed) == 1 and reports[2].failed[0].startswith(str(tmp_path / "in" / "p3b.png"))
    files = sorted(p.name for p in (tmp_path / "out0").iterdir())
    assert len(files) == 18 and files == sorted(p.name for p in (tmp_path / "out2").iterdir())
    for name in files:
        assert (tmp_path / "out0" / name).read_bytes() == (tmp_path / "out2" / name).read_bytes(), name


# -- PNG compression ------------------------------------------------------------------------------
def _zlib_level(path) -> int:
    """FLEVEL of a PNG's zlib stream (RFC 1950: bits 6-7 of its second byte): 0 for zlib level 1, the
    fastest; 1 for 2-5; 2 for 6, the default; 3 for 7-9."""
    data = path.read_bytes()
    at = data.index(b"IDAT") + 4  # the chunk's data begins with the zlib header (CMF, FLG)
    return data[at + 1] >> 6


def test_the_pngs_are_written_at_zlibs_fastest_level_with_the_same_pixels(tmp_path):
    # zlib level 1 encodes a 480x640 depth map about 4x faster than the default 6, for a file 15-60 % larger
    # (benchmarks/png_write.py); the pixels are the same whatever the level.
    depth = np.array([[0.5, 1.25], [2.0, 9.9994]], dtype=np.float32)
    image = np.arange(12, dtype=np.uint8).reshape(2, 2, 3)
    files = {kind: tmp_path / f"{kind}.png" for kind in ("depth", "color_map", "side", "color", "uncertainty")}
    write_prediction(files, depth, image, 10.0, uncertainty=depth / 10)
    assert {kind: _zlib_level(path) for kind, path in files.items()} == dict.fromkeys(files, 0)
    with Image.open(files["depth"]) as png:
        assert np.asarray(png).tolist() == [[500, 1250], [2000, 9999]]
    with Image.open(files["side"]) as png:
        assert np.array_equal(np.asarray(png)[:, :2], image)


# -- writing on threads ---------------------------------------------------------------------------
def test_a_writer_threads_error_is_raised_and_a_rerun_completes_the_images(checkpoint, tmp_path, monkeypatch, capsys):
    from clipdepth.io import predictions

    jobs = _folder_of_photos(tmp_path / "in")
    real = predictions.write_rgb

    def disk_full_at_p4(path, rgb):
        if path.name == "p4_color.png":
            raise OSError(28, "No space left on device", str(path))
        real(path, rgb)

    monkeypatch.setattr(predictions, "write_rgb", disk_full_at_p4)
    out = tmp_path / "out"
    args = ["predict", str(tmp_path / "in"), "--checkpoint", str(checkpoint), "--out", str(out), "--batch-size", "2", "--ply"]
    assert main(args) == 2
    last = capsys.readouterr().err.strip().splitlines()[-1]  # after the progress bar
    assert last == f"clipdepth predict: error: {out / 'p4_color.png'}: No space left on device"
    assert not (out / "p4_color.png").exists() and not (out / "p4.png").exists()  # the depth PNG, the record, comes last
    assert not [p for p in out.iterdir() if p.name.startswith(".")]  # nothing half-written
    # the cameras of every image written whole are recorded, though the run stopped
    whole = {p.stem for p in out.glob("*.ply") if (out / f"{p.stem}_color.png").exists()}
    assert whole and set(json.loads((out / "cameras.json").read_text())) == whole

    monkeypatch.setattr(predictions, "write_rgb", real)
    model = load_model(checkpoint)
    report = predict_to_folder(model, jobs, out, PredictOptions(batch_size=2, workers=2, ply=True), progress=False)
    assert (out / "p4_color.png").is_file() and all((out / f"p{i}_color.png").is_file() for i in range(6))
    assert report.done + report.kept == 6 and report.done >= 1 and len(report.failed) == 1
    assert sorted(json.loads((out / "cameras.json").read_text())) == [f"p{i}" for i in range(6)]


# -- --workers ------------------------------------------------------------------------------------
def test_predict_with_workers_end_to_end(checkpoint, tmp_path, capsys):
    _folder_of_photos(tmp_path / "in")
    out = tmp_path / "out"
    assert main(["predict", str(tmp_path / "in"), "--checkpoint", str(checkpoint), "--out", str(out), "--workers", "2"]) == 2
    streams = capsys.readouterr()
    assert "wrote depth for 6 image(s)" in streams.out and "p3b.png" in streams.err
    assert sorted(p.name for p in out.glob("*_color.png")) == [f"p{i}_color.png" for i in range(6)]
    with pytest.raises(SystemExit):
        main(["predict", str(tmp_path / "in"), "--checkpoint", str(checkpoint), "--out", str(out), "--workers", "-1"])
    assert "--workers: expected an integer >= 0, got -1" in capsys.readouterr().err


@pytest.mark.parametrize("command", [["train"], ["cache", "build"]])
def test_train_and_cache_build_take_workers_as_the_config_override(command, monkeypatch):
    seen = []

    def load_config(recipes, overrides):
        seen.append(list(overrides))
        raise ConfigError("stop here")

    monkeypatch.setattr("clipdepth.config.load_config", load_config)
    assert main([*command, "--workers", "3", "train.batch_size=2"]) == 2
    assert seen[0][0] == "train.batch_size=2" and seen[0][-1] == "train.num_workers=3"
    assert main([*command]) == 2
    assert not any(o.startswith("train.num_workers") for o in seen[1])


def test_evaluate_passes_workers(monkeypatch, capsys):
    calls = []

    def evaluate_checkpoint(checkpoint, **kwargs):
        calls.append(kwargs)
        return {"n_listed": 1, "n_without_gt": 0, "n_images": 1, "dataset": "nyu", "settings": "nyu: protocol nyu"}, "table"

    monkeypatch.setattr("clipdepth.evaluation.checkpoint.evaluate_checkpoint", evaluate_checkpoint)
    assert main(["evaluate", "--checkpoint", "ckpt", "--workers", "0"]) == 0
    assert main(["evaluate", "--checkpoint", "ckpt"]) == 0
    assert [c["workers"] for c in calls] == [0, None]


def test_caption_with_workers_writes_what_it_writes_without(tiny_captioner, tmp_path, capsys):  # noqa: F811
    images = tmp_path / "images"
    images.mkdir()
    rng = np.random.default_rng(0)
    for stem in ("kitchen", "street", "yard"):
        Image.fromarray(rng.integers(0, 256, (40, 56, 3), dtype=np.uint8)).save(images / f"{stem}.png")
    (images / "broken.png").write_bytes(b"not an image")
    written = {}
    for workers in ("0", "2"):
        out = tmp_path / f"captions{workers}"
        assert (
            main(
                [
                    "caption",
                    str(images),
                    "--model",
                    str(tiny_captioner),
                    "--out",
                    str(out),
                    "--lines",
                    "2",
                    "--max-new-tokens",
                    "6",
                    "--device",
                    "cpu",
                    "--workers",
                    workers,
                ]
            )
            == 2
        )
        streams = capsys.readouterr()
        assert "wrote captions for 3 image(s)" in streams.out and f"{images / 'broken.png'}: not a readable image" in streams.err
        written[workers] = {p.name: p.read_text() for p in out.glob("*.txt")}
    assert sorted(written["0"]) == ["kitchen.txt", "street.txt", "yard.txt"] and written["0"] == written["2"]
