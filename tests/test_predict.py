"""`clipdepth predict` and the model's uncertainty: files a user can rely on."""

import numpy as np
import pytest
import torch
from PIL import Image

from clipdepth.cli.main import main
from clipdepth.data.synthetic import render_scene
from clipdepth.errors import ConfigError
from clipdepth.io.pointcloud import backproject, default_intrinsics
from clipdepth.models import PureCLIPDepth


@pytest.fixture
def checkpoint(tiny_cfg, tmp_path):
    torch.manual_seed(0)
    return PureCLIPDepth.build(tiny_cfg).save_pretrained(tmp_path / "ckpt")


def test_bin_std_is_the_spread_of_the_bin_distribution(tiny_cfg):
    model = PureCLIPDepth.build(tiny_cfg)
    centres = model.head.bin_centres  # 15 bins over 0..10 m
    one_hot = torch.zeros(15)
    one_hot[3] = 1
    half = torch.zeros(15)
    half[[2, 6]] = 0.5
    assert model.bin_std(one_hot).item() == pytest.approx(0.0, abs=1e-3)
    assert model.bin_std(half).item() == pytest.approx((centres[6] - centres[2]).item() / 2, rel=1e-5)


def test_tiles_follow_the_image_shape_unless_the_checkpoint_used_tiles(tiny_cfg):
    model = PureCLIPDepth.build(tiny_cfg)
    assert model.auto_tiles(480, 640) == 1 and model.auto_tiles(375, 1242) == 3
    model.cfg.data.tiles = 4
    assert model.auto_tiles(375, 1242) == 4


def test_predict_writes_metres_in_files_named_by_stem(checkpoint, tmp_path):
    inputs = tmp_path / "in"
    (inputs / "sub").mkdir(parents=True)
    Image.fromarray(render_scene("indoor", 1, 48, 64).image).save(inputs / "room.jpg")
    Image.fromarray(render_scene("outdoor", 1, 40, 128).image).save(inputs / "sub" / "street.png")
    out = tmp_path / "out"
    assert (
        main(
            [
                "predict",
                str(inputs),
                "--checkpoint",
                str(checkpoint),
                "--out",
                str(out),
                "--npy",
                "--ply",
                "--uncertainty",
                "--fx",
                "50",
                "--fy",
                "50",
                "--cx",
                "31.5",
                "--cy",
                "23.5",
            ]
        )
        == 0
    )
    depth = np.load(out / "room.npy")
    png = Image.open(out / "room.png")
    assert float(png.info["depth_scale"]) == 1000.0
    assert depth.shape == (48, 64) and np.abs(np.asarray(png) / 1000.0 - depth).max() <= 0.0005 + 1e-6
    assert (out / "sub" / "street.png").is_file() and (out / "room_color.png").is_file()
    assert np.load(out / "room_uncertainty.npy").min() >= 0
    # the PLY holds every measured pixel, back-projected with the given intrinsics
    raw = (out / "room.ply").read_bytes()
    header, body = raw.split(b"end_header\n", 1)
    assert f"element vertex {int((depth > 0).sum())}".encode() in header
    first = np.frombuffer(body[:15], dtype=[("x", "<f4"), ("y", "<f4"), ("z", "<f4"), ("r", "u1"), ("g", "u1"), ("b", "u1")])[0]
    assert first["z"] == pytest.approx(depth[0, 0]) and first["x"] == pytest.approx((0 - 31.5) * depth[0, 0] / 50)


def test_unreadable_images_are_skipped_and_reported(checkpoint, tmp_path, capsys):
    inputs = tmp_path / "in"
    inputs.mkdir()
    Image.fromarray(np.zeros((32, 32, 3), np.uint8)).save(inputs / "good.png")
    (inputs / "broken.png").write_bytes(b"not an image")
    assert main(["predict", str(inputs), "--checkpoint", str(checkpoint), "--out", str(tmp_path / "o")]) == 2
    assert "broken.png" in capsys.readouterr().err and (tmp_path / "o" / "good.png").is_file()


def test_a_missing_input_is_one_line(checkpoint, tmp_path, capsys):
    assert main(["predict", str(tmp_path / "nope.jpg"), "--checkpoint", str(checkpoint), "--out", str(tmp_path)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "nope.jpg" in err[0]


def test_default_intrinsics_are_a_60_degree_field_of_view():
    fx, fy, cx, cy = default_intrinsics(480, 640)
    assert fx == fy == pytest.approx(320 / np.tan(np.radians(30))) and (cx, cy) == (319.5, 239.5)
    points = backproject(np.full((2, 2), 2.0, np.float32), (1.0, 1.0, 0.0, 0.0))
    assert points.shape == (2, 2, 3) and points[1, 1].tolist() == [2.0, 2.0, 2.0]


def test_a_folder_of_awkward_images(checkpoint, tmp_path, capsys):
    """Grey, RGBA, 16-bit and EXIF-rotated photos are written; the corrupt one is named at the end;
    a rerun keeps what exists unless --overwrite."""
    inputs = tmp_path / "in"
    inputs.mkdir()
    Image.fromarray(np.full((24, 32), 90, np.uint8)).save(inputs / "grey.png")
    Image.fromarray(np.full((24, 32, 4), 200, np.uint8)).save(inputs / "rgba.png")
    Image.fromarray(np.full((24, 32), 40000, np.uint16)).save(inputs / "deep.png")
    rotated = Image.fromarray(np.zeros((24, 32, 3), np.uint8))
    exif = rotated.getexif()
    exif[0x0112] = 6  # "rotate 90 degrees": a viewer shows it 32 high, 24 wide
    rotated.save(inputs / "phone.jpg", exif=exif)
    (inputs / "corrupt.jpg").write_bytes(b"\xff\xd8 truncated")
    out = tmp_path / "out"
    args = ["predict", str(inputs), "--checkpoint", str(checkpoint), "--out", str(out), "--npy"]
    assert main(args) == 2
    err = capsys.readouterr().err
    assert "corrupt.jpg" in err.split("could not be read")[-1]  # named in the end summary
    for stem in ("grey", "rgba", "deep", "phone"):
        assert (out / f"{stem}.png").is_file()
    assert np.load(out / "phone.npy").shape == (32, 24)  # the EXIF rotation is honoured
    before = (out / "grey.png").stat().st_mtime_ns
    main(args)
    assert (out / "grey.png").stat().st_mtime_ns == before  # kept without --overwrite
    main([*args, "--overwrite"])
    assert (out / "grey.png").stat().st_mtime_ns != before


def test_infer_on_a_batch_equals_infer_per_image(checkpoint):
    from clipdepth.models import load_model

    model = load_model(checkpoint)
    images = np.stack([render_scene("indoor", s, 48, 64).image for s in range(3)])
    batch = model.infer(images, tta=True)
    for i in range(3):
        single = model.infer(images[i], tta=True)
        torch.testing.assert_close(batch["depth"][i], single["depth"][0], atol=1e-5, rtol=1e-5)
        torch.testing.assert_close(batch["uncertainty"][i], single["uncertainty"][0], atol=1e-5, rtol=1e-5)


def test_predict_on_the_real_samples(rgbd_samples, checkpoint, tmp_path):
    """With the head `make demo` leaves in outputs/demo/model when present, else a tiny random one."""
    from pathlib import Path

    demo_head = Path(__file__).resolve().parents[1] / "outputs" / "demo" / "model"
    head = demo_head if (demo_head / "model.safetensors").is_file() else checkpoint
    out = tmp_path / "out"
    fx, fy, cx, cy = 518.8579, 519.46961, 325.58245, 253.73617
    assert (
        main(
            [
                "predict",
                str(rgbd_samples / "nyu" / "rgb_00000.jpg"),
                str(rgbd_samples / "kitti" / "rgb" / "0000000005.png"),
                "--checkpoint",
                str(head),
                "--out",
                str(out),
                "--npy",
                "--ply",
                "--uncertainty",
                "--fx",
                str(fx),
                "--fy",
                str(fy),
                "--cx",
                str(cx),
                "--cy",
                str(cy),
            ]
        )
        == 0
    )
    for stem in ("rgb_00000", "0000000005"):
        names = {p.name for p in out.iterdir() if p.name.startswith(stem)}
        assert names == {f"{stem}{s}" for s in (".png", "_color.png", ".npy", ".ply", "_uncertainty.png", "_uncertainty.npy")}
    depth = np.load(out / "rgb_00000.npy")
    assert depth.shape == (480, 640) and np.abs(np.asarray(Image.open(out / "rgb_00000.png")) / 1000.0 - depth).max() <= 0.001
    header, body = (out / "rgb_00000.ply").read_bytes().split(b"end_header\n", 1)
    points = np.frombuffer(body, dtype=[("x", "<f4"), ("y", "<f4"), ("z", "<f4"), ("r", "u1"), ("g", "u1"), ("b", "u1")])
    valid = depth > 0
    assert len(points) == valid.sum()
    v, u = np.nonzero(valid)
    np.testing.assert_allclose(points["z"], depth[valid], rtol=1e-6)
    np.testing.assert_allclose(points["x"] * fx / points["z"] + cx, u, atol=1e-3)  # back-projects to its pixel
    np.testing.assert_allclose(points["y"] * fy / points["z"] + cy, v, atol=1e-3)


# -- pictures to look at: colour at the image's size, a fixed range, side by side ----------------
def _turbo(depth, vmin, vmax):
    """matplotlib's own colouring, the reference the lookup table must equal."""
    import matplotlib
    from matplotlib.colors import Normalize

    return matplotlib.colormaps["turbo"](Normalize(vmin, vmax)(depth), bytes=True)[..., :3]


def test_the_colour_png_is_the_depth_at_its_size_over_the_range_asked(tmp_path):
    from clipdepth.io.predictions import write_prediction

    # values off the bins' edges; below the range, above it, and a map whose max is under max_depth
    depth = np.array([[0.3, 1.1, 2.2, 3.7], [4.9, 5.6, 7.45, 9.8], [12.0, 0.0, 6.1, 2.9]], np.float32)
    image = np.arange(3 * 4 * 3, dtype=np.uint8).reshape(3, 4, 3) * 7
    for vmin, vmax, low, high in [(None, None, 0.0, 10.0), (2.0, 6.0, 2.0, 6.0), (1.5, None, 1.5, 10.0)]:
        files = {"color_map": tmp_path / "c.png", "side": tmp_path / "s.png"}
        write_prediction(files, depth, image, 10.0, vmin=vmin, vmax=vmax)
        colour = np.asarray(Image.open(tmp_path / "c.png"))
        np.testing.assert_array_equal(colour, _turbo(depth, low, high))  # the input's size, no scale beside it
        side = np.asarray(Image.open(tmp_path / "s.png"))
        assert side.shape == (3, 8, 3)
        np.testing.assert_array_equal(side[:, :4], image)  # the image at the left, its colours at the right
        np.testing.assert_array_equal(side[:, 4:], colour)
    small = depth.clip(0, 6.5)  # by default each map is coloured up to its own max
    write_prediction({"color_map": tmp_path / "c.png"}, small, image, 10.0)
    np.testing.assert_array_equal(np.asarray(Image.open(tmp_path / "c.png")), _turbo(small, 0.0, 6.5))
    with pytest.raises(ConfigError, match="vmin 7 must be below vmax 3"):
        write_prediction({"color_map": tmp_path / "c.png"}, depth, image, 10.0, vmin=7.0, vmax=3.0)


def test_predict_colours_every_image_over_vmin_vmax_and_writes_side_by_side(checkpoint, tmp_path, capsys):
    inputs = tmp_path / "in"
    inputs.mkdir()
    for seed, (h, w) in enumerate([(48, 64), (40, 90)]):
        Image.fromarray(render_scene("indoor", seed, h, w).image).save(inputs / f"p{seed}.png")
    out = tmp_path / "out"
    assert (
        main(
            [
                "predict",
                str(inputs),
                "--checkpoint",
                str(checkpoint),
                "--out",
                str(out),
                "--npy",
                "--side-by-side",
                "--vmin",
                "1",
                "--vmax",
                "4",
            ]
        )
        == 0
    )
    for stem in ("p0", "p1"):
        depth, rgb = np.load(out / f"{stem}.npy"), np.asarray(Image.open(inputs / f"{stem}.png"))
        colour = np.asarray(Image.open(out / f"{stem}_color.png"))
        np.testing.assert_array_equal(colour, _turbo(depth, 1.0, 4.0))
        np.testing.assert_array_equal(np.asarray(Image.open(out / f"{stem}_side.png")), np.concatenate([rgb, colour], axis=1))
    assert main(["predict", str(inputs), "--checkpoint", str(checkpoint), "--out", str(out), "--vmin", "5", "--vmax", "2"]) == 2
    assert capsys.readouterr().err.strip().splitlines()[-1] == "clipdepth predict: error: vmin 5 must be below vmax 2 (metres) (--vmin)"


def test_a_rerun_with_more_outputs_says_the_existing_ones_keep_their_options(checkpoint, tmp_path, capsys):
    inputs = tmp_path / "in"
    inputs.mkdir()
    Image.fromarray(render_scene("indoor", 0, 48, 64).image).save(inputs / "p0.png")
    out = tmp_path / "out"
    base = ["predict", str(inputs), "--checkpoint", str(checkpoint), "--out", str(out)]
    assert main(base) == 0
    colour = (out / "p0_color.png").read_bytes()
    capsys.readouterr()
    assert main([*base, "--side-by-side", "--vmax", "2"]) == 0
    printed = capsys.readouterr().out
    assert "1 of them had outputs from an earlier run: only the missing files were written" in printed
    assert (out / "p0_color.png").read_bytes() == colour and (out / "p0_side.png").exists()  # kept as it was
    assert main([*base, "--side-by-side", "--vmax", "2", "--overwrite"]) == 0
    assert "earlier run" not in capsys.readouterr().out and (out / "p0_color.png").read_bytes() != colour


def test_a_bad_set_names_the_flag(checkpoint, tmp_path, capsys):
    Image.fromarray(render_scene("indoor", 0, 48, 64).image).save(tmp_path / "p.png")
    base = ["predict", str(tmp_path / "p.png"), "--checkpoint", str(checkpoint), "--out", str(tmp_path / "o")]
    for value, says in (("foo", "expected KEY=VALUE"), ("pureclip.num_bins=3", "part of its weights")):
        assert main([*base, "--set", value]) == 2
        line = capsys.readouterr().err.strip().splitlines()[-1]
        assert says in line and line.endswith("(--set)")
