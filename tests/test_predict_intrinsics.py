"""`clipdepth predict --ply`: each image's camera from the flags, an intrinsics file, the folder's
intrinsics.json, EXIF or the 60 degree default, in that order; the point clouds checked against
back-projections worked out here; the summary and cameras.json say which source each took."""

from __future__ import annotations

import json
import math
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from PIL import ExifTags, Image

from clipdepth.cli.main import main
from clipdepth.data.synthetic import render_scene
from clipdepth.errors import DataError
from clipdepth.io.intrinsics import CameraRecord, CameraSources, describe_cameras, lookup, read_intrinsics_file
from clipdepth.models import PureCLIPDepth

PLY_VERTEX = np.dtype([("x", "<f4"), ("y", "<f4"), ("z", "<f4"), ("r", "u1"), ("g", "u1"), ("b", "u1")])
NONE_GIVEN = SimpleNamespace(fx=None, fy=None, cx=None, cy=None)


@pytest.fixture
def checkpoint(tiny_cfg, tmp_path):
    torch.manual_seed(0)
    return PureCLIPDepth.build(tiny_cfg).save_pretrained(tmp_path / "ckpt")


def _photo(path, height=48, width=64, focal_35mm=None, orientation=None, seed=1):
    path.parent.mkdir(parents=True, exist_ok=True)
    image = Image.fromarray(render_scene("indoor", seed, height, width).image)
    exif = Image.Exif()
    if focal_35mm is not None:
        exif.get_ifd(ExifTags.IFD.Exif)[ExifTags.Base.FocalLengthIn35mmFilm] = focal_35mm
    if orientation is not None:
        exif[ExifTags.Base.Orientation] = orientation
    image.save(path, exif=exif)
    return path


def _points(ply):
    header, body = ply.read_bytes().split(b"end_header\n", 1)
    return np.frombuffer(body, dtype=PLY_VERTEX)


def _assert_back_projected(out, name, fx, fy, cx, cy):
    """The PLY holds every pixel of name.npy at ((u - cx) z / fx, (v - cy) z / fy, z), row by row."""
    depth = np.load(out / f"{name}.npy")
    points = _points(out / f"{name}.ply")
    v, u = np.nonzero(depth > 0)
    z = depth[v, u]
    assert len(points) == len(z)
    np.testing.assert_allclose(points["z"], z, rtol=1e-6)
    np.testing.assert_allclose(points["x"], (u - cx) * z / fx, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(points["y"], (v - cy) * z / fy, rtol=1e-5, atol=1e-6)


def test_each_source_gives_its_images_point_cloud_and_is_reported(checkpoint, tmp_path, capsys):
    photos = tmp_path / "photos"
    _photo(photos / "sub" / "a.jpg", seed=1)  # named by the --intrinsics file, by its path
    _photo(photos / "b.png", seed=2)  # named by photos/intrinsics.json, by its stem
    _photo(photos / "c.jpg", focal_35mm=26, orientation=6, seed=3)  # EXIF: shown 48 wide, 64 high
    _photo(photos / "d.png", seed=4)  # nothing: 60 degrees
    cams = tmp_path / "cams.json"
    cams.write_text(json.dumps({"sub/a.jpg": [[50.0, 0, 30.0], [0, 52.0, 21.0], [0, 0, 1]]}))
    (photos / "intrinsics.json").write_text(json.dumps({"b": {"fx": 40, "fy": 41, "cx": 30.5, "cy": 22}}))
    out = tmp_path / "out"
    assert (
        main(["predict", str(photos), "--checkpoint", str(checkpoint), "--out", str(out), "--npy", "--ply", "--intrinsics", str(cams)]) == 0
    )
    exif_focal = 26 * math.sqrt(48**2 + 64**2) / math.sqrt(36**2 + 24**2)  # Depth Pro's conversion, W x H as shown
    default_focal = 32 / math.tan(math.radians(30))  # half the width over tan(half of 60 degrees)
    expected = {
        "sub/a": (50.0, 52.0, 30.0, 21.0, "file"),
        "b": (40.0, 41.0, 30.5, 22.0, "folder"),
        "c": (exif_focal, exif_focal, 23.5, 31.5, "exif"),
        "d": (default_focal, default_focal, 31.5, 23.5, "default"),
    }
    record = json.loads((out / "cameras.json").read_text())
    for name, (fx, fy, cx, cy, source) in expected.items():
        _assert_back_projected(out, name, fx, fy, cx, cy)
        entry = record[name]
        assert entry["source"] == source and entry["fx"] == pytest.approx(fx) and entry["cy"] == pytest.approx(cy)
    assert np.load(out / "c.npy").shape == (64, 48) and (record["c"]["width"], record["c"]["height"]) == (48, 64)
    assert record["c"]["origin"] == "26 mm" and record["b"]["origin"] == str(photos / "intrinsics.json")
    lines = capsys.readouterr().out.splitlines()
    assert f"point cloud intrinsics (each image's in {out / 'cameras.json'}):" in lines
    assert f"  1 from the intrinsics file {cams}: sub/a" in lines
    assert f"  1 from {photos / 'intrinsics.json'}: b" in lines
    assert "  1 from the EXIF 35 mm-equivalent focal length: c" in lines
    assert "  1 from the default 60 degree horizontal field of view: d" in lines

    # The flags come first, for every image; fy = fx and the centre where not given.
    given = tmp_path / "given"
    assert (
        main(
            [
                "predict",
                str(photos / "c.jpg"),
                str(photos / "b.png"),
                "--checkpoint",
                str(checkpoint),
                "--out",
                str(given),
                "--npy",
                "--ply",
                "--intrinsics",
                str(cams),
                "--fx",
                "45",
            ]
        )
        == 0
    )
    _assert_back_projected(given, "c", 45.0, 45.0, 23.5, 31.5)
    _assert_back_projected(given, "b", 45.0, 45.0, 31.5, 23.5)
    assert "  2 from the given fx/fy/cx/cy: c, b" in capsys.readouterr().out.splitlines()


def test_precedence_flags_file_folder_exif_default(tmp_path):
    image = _photo(tmp_path / "f" / "p.jpg", focal_35mm=50)
    other = _photo(tmp_path / "f" / "q.jpg")
    (tmp_path / "f" / "intrinsics.json").write_text(json.dumps({"p.jpg": [70, 70, 1, 2]}))
    (tmp_path / "cams.json").write_text(json.dumps({"p": [80, 81, 3, 4]}))
    sources = CameraSources(SimpleNamespace(fx=90.0, fy=None, cx=None, cy=None), tmp_path / "cams.json", [image])
    assert sources.camera(image, 48, 64).intrinsics == (90.0, 90.0, 31.5, 23.5)
    sources = CameraSources(NONE_GIVEN, tmp_path / "cams.json", [image, other])
    assert sources.camera(image, 48, 64).intrinsics == (80.0, 81.0, 3.0, 4.0)
    sources = CameraSources(None, None, [image, other])
    assert sources.camera(image, 48, 64).intrinsics == (70.0, 70.0, 1.0, 2.0)  # the folder's file
    focal = 50 * 80 / math.sqrt(36**2 + 24**2)  # a 64 x 48 image's diagonal is 80 pixels
    (tmp_path / "f" / "intrinsics.json").write_text(json.dumps({"q.jpg": [70, 70, 1, 2]}))  # names q only
    sources = CameraSources(None, None, [image, other])
    camera = sources.camera(image, 48, 64)
    assert camera.source == "exif" and camera.intrinsics == pytest.approx((focal, focal, 31.5, 23.5))
    assert sources.camera(other, 48, 64).source == "folder"
    (tmp_path / "f" / "intrinsics.json").unlink()
    assert CameraSources(None, None, [other]).camera(other, 48, 64).source == "default"


def test_one_camera_for_every_image(tmp_path):
    image = _photo(tmp_path / "x.png")
    (tmp_path / "all.json").write_text(json.dumps([60, 61, 30, 20]))
    camera = CameraSources(None, tmp_path / "all.json", [image]).camera(image, 48, 64)
    assert camera.intrinsics == (60.0, 61.0, 30.0, 20.0) and camera.source == "file"


def test_names_are_path_ends_by_whole_components(tmp_path):
    image = tmp_path / "data" / "sub" / "a.jpg"
    image.parent.mkdir(parents=True)
    image.touch()

    def found(keys):
        """Which of ``keys`` (written to a file) names the image; None if none."""
        (tmp_path / "k.json").write_text(json.dumps({k: [i + 1, 1, 0, 0] for i, k in enumerate(keys)}))
        hit = lookup(read_intrinsics_file(tmp_path / "k.json"), image)
        return None if hit is None else keys[int(hit[0]) - 1]

    for key in ("a.jpg", "sub/a.jpg", "./sub/a.jpg", "a", "sub/a", str(image.resolve())):
        assert found([key]) == key
    for key in ("b.jpg", "ub/a.jpg", "other/a.jpg", "A.jpg", "a.png", "data/a.jpg"):
        assert found([key]) is None
    assert found(["a.jpg", "sub/a.jpg", "a"]) == "sub/a.jpg"  # more components first
    assert found(["a", "a.jpg"]) == "a.jpg"  # then the name with its extension
    assert found(["sub/a", "a.jpg"]) == "sub/a"


@pytest.mark.parametrize(
    "content, message",
    [
        ('{"a.jpg": [1, 2, 3, 4],', "not valid JSON (line 1 column 24: Expecting property name"),
        ('{"a.jpg": [1, 2, 3]}', "entry 'a.jpg' is not a camera: intrinsics must be fx fy cx cy or a 3x3 matrix K, got shape (3,)"),
        ('{"a.jpg": [0, 2, 3, 4]}', "entry 'a.jpg' is not a camera: intrinsics: the focal lengths fx, fy must be positive"),
        (
            '{"a.jpg": {"fx": 1, "fy": 2, "cx": 3}}',
            "entry 'a.jpg' is not a camera: an object needs fx, fy, cx, cy (or K); this one has no cy",
        ),
        ('{"a.jpg": "wide"}', "entry 'a.jpg' is not a camera"),
        ('"wide"', "expected an object mapping image names to cameras, or one camera; got str"),
    ],
)
def test_a_file_that_is_not_cameras_is_one_line_naming_it_and_the_entry(tmp_path, content, message):
    (tmp_path / "cams.json").write_text(content)
    with pytest.raises(DataError) as raised:
        read_intrinsics_file(tmp_path / "cams.json")
    assert str(raised.value).startswith(f"{tmp_path / 'cams.json'}: ") and message in str(raised.value)


def test_bad_intrinsics_stop_the_run_before_any_image_with_one_line(checkpoint, tmp_path, capsys):
    photos = tmp_path / "photos"
    _photo(photos / "a.jpg")
    out = tmp_path / "out"
    args = ["predict", str(photos), "--checkpoint", str(checkpoint), "--out", str(out)]
    (tmp_path / "cams.json").write_text('{"a.jpg": [1, 2, 3]}')
    assert main([*args, "--ply", "--intrinsics", str(tmp_path / "cams.json")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith(f"clipdepth predict: error: {tmp_path / 'cams.json'}: entry 'a.jpg' is not a camera")
    assert main([*args, "--ply", "--intrinsics", str(tmp_path / "none.json")]) == 2
    assert f"{tmp_path / 'none.json'}: no such intrinsics file" in capsys.readouterr().err
    (photos / "intrinsics.json").write_text("{oops")
    assert main([*args, "--ply"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and f"{photos / 'intrinsics.json'}: not valid JSON (line 1 column 2" in err[0]
    assert not out.exists() or not any(out.iterdir())
    assert main([*args, "--intrinsics", str(tmp_path / "cams.json")]) == 2  # only point clouds take a camera
    assert "--intrinsics: the point cloud's intrinsics: add --ply, or drop them" in capsys.readouterr().err
    assert main([*args]) == 0  # without --ply no camera is read: the broken intrinsics.json is not in the way


def test_the_record_is_merged_over_reruns_and_another_file_is_not_replaced(checkpoint, tmp_path, capsys):
    photos = tmp_path / "photos"
    _photo(photos / "a.png", seed=1)
    out = tmp_path / "out"
    args = ["--checkpoint", str(checkpoint), "--out", str(out), "--ply"]
    assert main(["predict", str(photos / "a.png"), *args, "--fx", "30"]) == 0
    _photo(photos / "b.png", seed=2)
    assert main(["predict", str(photos), *args]) == 0  # a is kept, b is new
    record = json.loads((out / "cameras.json").read_text())
    assert sorted(record) == ["a", "b"] and record["a"]["fx"] == 30.0 and record["a"]["source"] == "given"
    assert record["b"]["source"] == "default"
    assert "1 from the default 60 degree horizontal field of view: b" in capsys.readouterr().out  # a was not written again
    (out / "cameras.json").write_text('{"notes": "mine"}')
    (out / "b.ply").unlink()
    assert main(["predict", str(photos), *args]) == 2
    err = capsys.readouterr().err
    assert f"{out / 'cameras.json'}: not a clipdepth camera record (entry 'notes'); move it, or write elsewhere" in err
    assert (out / "cameras.json").read_text() == '{"notes": "mine"}' and not (out / "b.ply").exists()


def test_a_rerun_records_the_camera_of_a_kept_point_cloud_the_record_lacks(checkpoint, tmp_path, capsys):
    """A run stopped after writing a point cloud but before saving cameras.json keeps the point cloud
    on the next run: that run adds its entry, as the first would have made it (here an EXIF photo shown
    48 wide and 64 high, and one from its folder's intrinsics.json)."""
    photos = tmp_path / "photos"
    _photo(photos / "c.jpg", focal_35mm=26, orientation=6, seed=3)
    _photo(photos / "b.png", seed=2)
    (photos / "intrinsics.json").write_text(json.dumps({"b": [40, 41, 30.5, 22]}))
    out = tmp_path / "out"
    args = ["predict", str(photos), "--checkpoint", str(checkpoint), "--out", str(out), "--ply"]
    assert main(args) == 0
    whole = json.loads((out / "cameras.json").read_text())
    for name in ("c", "b"):
        (out / "cameras.json").write_text(json.dumps({k: v for k, v in whole.items() if k != name}))
        plys = {p.name: p.read_bytes() for p in out.glob("*.ply")}
        capsys.readouterr()
        assert main(args) == 0
        printed = capsys.readouterr().out
        assert "kept 2 finished before" in printed and f": {name}" in printed
        assert json.loads((out / "cameras.json").read_text()) == whole
        assert {p.name: p.read_bytes() for p in out.glob("*.ply")} == plys  # the point clouds are kept as they are
    # killed after the point cloud, before its depth PNG (written last) and the record: the rerun writes
    # the depth PNG and records the camera of the point cloud it keeps
    (out / "cameras.json").write_text(json.dumps({k: v for k, v in whole.items() if k != "c"}))
    (out / "c.png").unlink()
    plys = {p.name: p.read_bytes() for p in out.glob("*.ply")}
    assert main(args) == 0 and "only the missing files were written" in capsys.readouterr().out
    assert json.loads((out / "cameras.json").read_text()) == whole and (out / "c.png").is_file()
    assert {p.name: p.read_bytes() for p in out.glob("*.ply")} == plys
    assert (whole["c"]["source"], whole["c"]["width"], whole["c"]["height"]) == ("exif", 48, 64)
    assert (whole["b"]["source"], whole["b"]["fx"]) == ("folder", 40.0)


def test_predict_reads_exif_and_its_records_whatever_the_image_size(checkpoint, tmp_path, capsys, monkeypatch):
    """The EXIF focal length and an earlier depth PNG's record are header reads without Pillow's
    decompression-bomb guard, as the image itself is read (--max-pixels is the limit): a large photo
    gave a DecompressionBombError traceback."""
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 100)  # Pillow refuses beyond twice this: 48 x 64 > 200
    photo = _photo(tmp_path / "photos" / "c.jpg", focal_35mm=26, seed=3)
    out = tmp_path / "out"
    args = ["predict", str(photo), "--checkpoint", str(checkpoint), "--out", str(out), "--ply"]
    assert main(args) == 0
    assert json.loads((out / "cameras.json").read_text())["c"]["source"] == "exif"
    capsys.readouterr()
    assert main(args) == 0 and "kept 1 finished before" in capsys.readouterr().out
    assert Image.MAX_IMAGE_PIXELS == 100


def test_the_record_is_saved_when_due_and_reads_back(tmp_path):
    record = CameraRecord(tmp_path)
    camera = CameraSources(None, None, []).camera(_photo(tmp_path / "in" / "a.png"), 48, 64)
    record.add(Path("a"), tmp_path / "in" / "a.png", camera)
    record.save(every=3600)  # too soon: not yet
    assert not (tmp_path / "cameras.json").exists()
    record.save()
    assert json.loads((tmp_path / "cameras.json").read_text())["a"]["fx"] == pytest.approx(32 / math.tan(math.radians(30)))
    again = CameraRecord(tmp_path)
    assert again.entries == json.loads((tmp_path / "cameras.json").read_text())


def test_the_summary_names_a_few_images_and_counts_the_rest():
    lines = describe_cameras(
        {"the EXIF 35 mm-equivalent focal length": [f"p{i}" for i in range(7)], "the given fx/fy/cx/cy": ["q"]}, Path("out/cameras.json")
    )
    assert lines == [
        "point cloud intrinsics (each image's in out/cameras.json):",
        "  7 from the EXIF 35 mm-equivalent focal length: p0, p1, p2, p3, p4 and 2 more",
        "  1 from the given fx/fy/cx/cy: q",
    ]
