"""Files downstream tools read: predict's float depth files (npy, TIFF, EXR) hold exactly the depth
infer gives and score reads them back; HEIC photos go in as JPEGs do (EXIF orientation and focal
length); point clouds thin by --ply-stride to the full cloud's points at those pixels."""

from __future__ import annotations

import builtins
import json

import numpy as np
import pytest
from PIL import Image

from clipdepth.cli.main import main
from clipdepth.errors import ConfigError, DataError
from clipdepth.inference import PredictOptions
from clipdepth.io.depth_io import read_depth_array, read_rgb, write_exr, write_tiff
from clipdepth.io.intrinsics import exif_focal_35mm
from clipdepth.io.pointcloud import VERTEX, depth_to_ply
from clipdepth.models import PureCLIPDepth, load_model


def _ply_points(path):
    data = path.read_bytes()
    end = data.index(b"end_header\n") + len(b"end_header\n")
    count = int(next(line.split()[-1] for line in data[:end].decode().splitlines() if line.startswith("element vertex")))
    return np.frombuffer(data[end:], VERTEX, count)


def _hide(monkeypatch, module):
    real = builtins.__import__

    def fake(name, *args, **kwargs):
        if name == module:
            raise ImportError(f"No module named {module!r}")
        return real(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", fake)


@pytest.fixture
def photo_and_model(tiny_cfg, tmp_path):
    image = tmp_path / "in" / "a.png"
    image.parent.mkdir()
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (30, 44, 3), dtype=np.uint8)).save(image)
    return image, PureCLIPDepth.build(tiny_cfg).save_pretrained(tmp_path / "ckpt")


def test_predict_writes_each_float_format_exactly(photo_and_model, tmp_path, capsys):
    pytest.importorskip("OpenEXR", reason="OpenEXR is not installed (the exr extra)")
    image, folder = photo_and_model
    out = tmp_path / "out"
    assert main(["predict", str(image), "--checkpoint", str(folder), "--out", str(out), "--format", "npy,tiff,exr"]) == 0
    expected = load_model(folder).infer(str(image))["depth"][0].numpy().astype(np.float32)
    for suffix in (".npy", ".tiff", ".exr"):
        read = read_depth_array(out / f"a{suffix}")
        assert read.dtype == np.float32 and np.array_equal(read, expected), suffix
    # score reads them as it reads any prediction: the same metrics from each (GT = the npy itself)
    gt = tmp_path / "gt"
    gt.mkdir()
    np.save(gt / "a.npy", expected)
    for suffix in (".tiff", ".exr"):
        pattern = ["--pred-pattern", "{stem}" + suffix, "--json", str(tmp_path / suffix[1:] / "m.json")]
        assert main(["score", "--pred", str(out), "--gt", str(gt), "--protocol", "synthetic_indoor", *pattern]) == 0
        assert json.loads((tmp_path / suffix[1:] / "m.json").read_text())["abs_rel"] == pytest.approx(0.0, abs=1e-7)


def test_float_files_round_trip_exact_values(tmp_path):
    depth = np.random.default_rng(1).uniform(0.05, 90.0, (7, 9)).astype(np.float32)
    depth[0, 0] = 0.0  # no depth stays 0
    write_tiff(tmp_path / "d.tiff", depth)
    assert np.array_equal(read_depth_array(tmp_path / "d.tiff"), depth)
    if pytest.importorskip("OpenEXR", reason="OpenEXR is not installed (the exr extra)"):
        write_exr(tmp_path / "d.exr", depth)
        assert np.array_equal(read_depth_array(tmp_path / "d.exr"), depth)


def test_a_missing_exr_package_is_one_line_before_any_work(monkeypatch, tmp_path):
    _hide(monkeypatch, "OpenEXR")
    with pytest.raises(ConfigError, match=r'^the exr depth format needs the OpenEXR package: pip install "clipdepth\[exr\]"$'):
        PredictOptions(formats=("exr",))
    with pytest.raises(DataError, match=r"d.exr: writing .exr needs the OpenEXR package"):
        write_exr(tmp_path / "d.exr", np.ones((2, 2)))
    assert not list(tmp_path.iterdir())  # nothing half-written
    assert PredictOptions(npy=True).formats == ("npy",) and PredictOptions(formats=("tiff", "npy")).npy


def test_heic_photos_read_as_jpegs_do(tmp_path):
    pillow_heif = pytest.importorskip("pillow_heif", reason="pillow-heif is not installed (the heic extra)")
    pixels = np.zeros((20, 30, 3), np.uint8)
    pixels[:, :10] = (250, 20, 20)  # a red left third, to see the rotation
    exif = Image.Exif()
    exif[0x0112] = 6  # Orientation: rotate 90 degrees clockwise to show
    exif.get_ifd(0x8769)[0xA405] = 28  # FocalLengthIn35mmFilm
    path = tmp_path / "phone.heic"
    pillow_heif.from_pillow(Image.fromarray(pixels)).save(path, quality=-1, exif=exif.tobytes())
    upright = read_rgb(path, photo=True)
    assert upright.shape == (30, 20, 3)  # turned as a viewer shows it
    assert upright[:10, :, 0].mean() > 200 and upright[-10:, :, 0].mean() < 50  # the red third is now on top
    assert exif_focal_35mm(path) == 28.0


def test_a_missing_heic_reader_is_one_line(monkeypatch, tmp_path):
    path = tmp_path / "phone.heic"
    path.write_bytes(b"\x00\x00\x00\x18ftypheic")
    _hide(monkeypatch, "pillow_heif")
    with pytest.raises(DataError, match=r'phone.heic: reading HEIC/HEIF images needs pillow-heif: pip install "clipdepth\[heic\]"$'):
        read_rgb(path, photo=True)


def test_ply_stride_keeps_the_full_clouds_points_at_those_pixels(tmp_path):
    rng = np.random.default_rng(2)
    depth = rng.uniform(0.5, 5.0, (37, 50)).astype(np.float32)
    depth[4, 8] = 0.0  # an unmeasured pixel on the stride grid is left out
    image = rng.integers(0, 255, (37, 50, 3), dtype=np.uint8)
    camera = (40.0, 42.0, 24.5, 17.0)
    depth_to_ply(tmp_path / "f.ply", depth, image, camera)
    full = _ply_points(tmp_path / "f.ply")
    count = depth_to_ply(tmp_path / "s.ply", depth, image, camera, stride=4)
    kept = np.zeros_like(depth, bool)
    kept[::4, ::4] = True
    assert count == np.count_nonzero(kept & (depth > 0)) == 10 * 13 - 1
    thinned = _ply_points(tmp_path / "s.ply")
    on_grid = kept[depth > 0]  # the full cloud holds the measured pixels, row-major
    for axis in ("x", "y", "z", "red"):
        np.testing.assert_allclose(thinned[axis], full[axis][on_grid], rtol=1e-6)


def test_predict_says_the_point_clouds_size(photo_and_model, tmp_path, capsys):
    image, folder = photo_and_model
    out = tmp_path / "out"
    assert main(["predict", str(image), "--checkpoint", str(folder), "--out", str(out), "--ply", "--ply-stride", "2"]) == 0
    points = len(_ply_points(out / "a.ply"))
    assert points == 15 * 22
    said = f"wrote 1 point cloud(s): {points:,} points, {points * 15 / 1e3:.0f} kB (--ply-stride 2: one pixel in 2x2)"
    assert said in capsys.readouterr().out
