""" "Already done" from content, not names: an output records what it was made from (io.fingerprint),
and a rerun keeps it, makes it again or names it by that record (predict's images and videos; the
captions are in test_captions.py). File names that are not UTF-8 go through it unchanged."""

from __future__ import annotations

import os
from dataclasses import fields

import av
import numpy as np
import pytest
import torch
from PIL import Image, PngImagePlugin

from clipdepth.cli.main import main
from clipdepth.config import config_to_dict, load_config_dict
from clipdepth.data.synthetic import render_scene
from clipdepth.inference.folder import DEPTH_OPTIONS, PredictOptions
from clipdepth.io.depth_io import png_made, read_depth
from clipdepth.io.fingerprint import Made, file_digest
from clipdepth.models import TR2M, PureCLIPDepth, load_model

from .conftest import TINY_DEPTH_ANYTHING


@pytest.fixture
def checkpoint(tiny_cfg, tmp_path):
    torch.manual_seed(0)
    return PureCLIPDepth.build(tiny_cfg).save_pretrained(tmp_path / "ckpt")


def _rewrite_in_place(path, image):
    """``path`` rewritten with ``image``, its size (a BMP of the same shape) and modification time as before."""
    before = path.stat()
    Image.fromarray(image).save(path)
    os.utime(path, ns=(before.st_atime_ns, before.st_mtime_ns))
    assert (path.stat().st_size, path.stat().st_mtime_ns) == (before.st_size, before.st_mtime_ns)


def _depth_of(checkpoint, image, tta=False):
    return load_model(checkpoint).infer(image, tta=tta)["depth"][0].numpy()


def test_a_record_tells_same_content_from_rewritten_other_settings_and_other_images(tmp_path):
    made = Made("/in/a.jpg", {"image": "11"}, {"checkpoint": "c1", "tta": False})
    out = tmp_path / "a.png"
    assert made.compare(Made("/in/a.jpg", {"image": "11"}, {"checkpoint": "c1", "tta": False})) == "same"
    assert made.compare(Made("/in/a.jpg", {"image": "22"}, {"checkpoint": "c1", "tta": False})) == "inputs changed"
    other = Made("/in/a.jpg", {"image": "22"}, {"checkpoint": "c1", "tta": True})
    assert made.compare(other) == "other settings"  # settings first: another result, whatever its image
    assert made.refusal(other, out, "the depth") == (
        f"{out} holds the depth made with tta=true (this run: tta=false); write elsewhere, or overwrite it"
    )
    assert made.compare(Made("/in/b.jpg", {"image": "33"}, {"checkpoint": "c1", "tta": False})) == "other source"
    assert made.compare(Made("/old/a.jpg", {"image": "11"}, {"checkpoint": "c1", "tta": False})) == "same"  # moved
    assert made.refusal(Made("/in/b.jpg"), out, "the depth") == (f"{out} holds the depth of /in/b.jpg; write elsewhere, or overwrite it")
    assert made.compare(None) == "unknown" and made.refusal(None, out, "the depth").endswith(
        "another input (it does not say which); write elsewhere, or overwrite it"
    )
    assert made.refusal(Made("/in/a.jpg", {"image": "22"}, made.settings), out, "the depth") is None
    # A depth PNG of a clipdepth that wrote only the source chunk stays readable, and is taken as made from it.
    info = PngImagePlugin.PngInfo()
    info.add_text("depth_scale", "1000.0")
    info.add_text("source", "/in/a.jpg")
    Image.fromarray(np.full((2, 3), 1500, np.uint16)).save(out, pnginfo=info)
    assert png_made(out) == Made("/in/a.jpg") and made.compare(png_made(out)) == "unrecorded"
    assert read_depth(out, 1000.0).tolist() == [[1.5] * 3] * 2


def test_every_predict_option_is_recorded_or_leaves_the_depth_as_it_is():
    """A new option must be placed: recorded with the depth (DEPTH_OPTIONS), or one of these."""
    files_colours_cameras_or_running = {
        "npy",
        "ply",
        "uncertainty",
        "side_by_side",
        "fx",
        "fy",
        "cx",
        "cy",
        "intrinsics",
        "vmin",
        "vmax",
        "max_tiles",
        "max_pixels",
        "batch_size",
        "overwrite",
        "workers",
        "caption",
        "captions",  # the caption's text is recorded per image, as its content
        "formats",  # more depth files of the same depth
        "ply_stride",  # a thinner point cloud of the same depth
    }
    assert {f.name for f in fields(PredictOptions)} - set(DEPTH_OPTIONS) == files_colours_cameras_or_running
    assert set(DEPTH_OPTIONS) <= {f.name for f in fields(PredictOptions)}


def test_an_image_rewritten_in_place_is_predicted_again_and_an_unchanged_one_kept(checkpoint, tmp_path, capsys):
    inputs = tmp_path / "in"
    inputs.mkdir()
    Image.fromarray(render_scene("indoor", 0, 48, 64).image).save(inputs / "a.bmp")
    Image.fromarray(render_scene("indoor", 1, 48, 64).image).save(inputs / "b.bmp")
    out = tmp_path / "out"
    base = ["predict", str(inputs), "--checkpoint", str(checkpoint), "--out", str(out)]
    assert main([*base, "--npy"]) == 0
    old_colour = (out / "a_color.png").read_bytes()
    b_files = {p.name: p.stat().st_mtime_ns for p in out.glob("b*")}
    new = render_scene("outdoor", 2, 48, 64).image
    _rewrite_in_place(inputs / "a.bmp", new)  # re-exported: only its content tells
    capsys.readouterr()
    assert main(base) == 0
    printed = capsys.readouterr().out
    assert "wrote depth for 1 image(s)" in printed and "kept 1 finished before" in printed
    assert (
        "1 of them had changed since an earlier run made their outputs: those were replaced (1 that this run does not write were removed)"
    ) in printed
    assert np.abs(read_depth(out / "a.png", 1000.0) - _depth_of(checkpoint, new)).max() <= 0.0005 + 1e-6
    assert (out / "a_color.png").read_bytes() != old_colour
    assert not (out / "a.npy").exists()  # the old content's, which this run does not write again
    assert png_made(out / "a.png").inputs == {"image": file_digest(inputs / "a.bmp")}
    assert {p.name: p.stat().st_mtime_ns for p in out.glob("b*")} == b_files  # b.npy too: b is unchanged


def test_a_rerun_with_tta_or_another_checkpoint_leaves_the_earlier_depth_and_names_it(checkpoint, tiny_cfg, tmp_path, capsys):
    image = render_scene("indoor", 0, 48, 64).image
    Image.fromarray(image).save(tmp_path / "p.png")
    out = tmp_path / "out"
    base = ["predict", str(tmp_path / "p.png"), "--out", str(out)]
    assert main([*base, "--checkpoint", str(checkpoint)]) == 0
    before = (out / "p.png").read_bytes()
    capsys.readouterr()
    assert main([*base, "--checkpoint", str(checkpoint), "--tta"]) == 2
    err = capsys.readouterr().err
    assert (
        f"{tmp_path / 'p.png'}: {out / 'p.png'} holds the depth made with tta=false (this run: tta=true); write elsewhere, or overwrite it"
    ) in err and "--overwrite" in err.splitlines()[-1]
    torch.manual_seed(1)
    other = PureCLIPDepth.build(tiny_cfg).save_pretrained(tmp_path / "other")
    assert main([*base, "--checkpoint", str(other)]) == 2
    assert f"{out / 'p.png'} holds the depth made with checkpoint=" in capsys.readouterr().err
    assert (out / "p.png").read_bytes() == before
    assert main([*base, "--checkpoint", str(checkpoint), "--tta", "--overwrite"]) == 0
    assert np.abs(read_depth(out / "p.png", 1000.0) - _depth_of(checkpoint, image, tta=True)).max() <= 0.0005 + 1e-6
    capsys.readouterr()
    assert main([*base, "--checkpoint", str(checkpoint), "--tta"]) == 0
    assert "kept 1 finished before" in capsys.readouterr().out


def test_a_caption_edited_since_makes_the_depth_of_its_image_again(tiny_tr2m_cfg, tmp_path, capsys):
    torch.manual_seed(0)
    # max_depth 100: the tiny head's depth lies beyond 10 m, where a 10 m clamp would hide the caption
    cfg = load_config_dict(config_to_dict(tiny_tr2m_cfg), [*TINY_DEPTH_ANYTHING, "tr2m.max_depth=100"])
    checkpoint = TR2M.build(cfg).save_pretrained(tmp_path / "ckpt")
    inputs, captions, out = tmp_path / "in", tmp_path / "captions", tmp_path / "out"
    inputs.mkdir()
    captions.mkdir()
    image = render_scene("indoor", 0, 48, 64).image
    Image.fromarray(image).save(inputs / "x.png")
    (captions / "x.txt").write_text("a dark corridor\n")
    args = ["predict", str(inputs), "--checkpoint", str(checkpoint), "--out", str(out), "--npy", "--captions", str(captions)]
    assert main(args) == 0
    (captions / "x.txt").write_text("a bright kitchen\n")
    capsys.readouterr()
    assert main(args) == 0 and "1 of them had changed since" in capsys.readouterr().out
    model = load_model(checkpoint)
    expected = model.infer(image, captions=["a bright kitchen"])["depth"][0].numpy()
    np.testing.assert_allclose(np.load(out / "x.npy"), expected, rtol=1e-5)
    earlier = model.infer(image, captions=["a dark corridor"])["depth"][0].numpy()
    assert np.abs(expected - earlier).max() > 1e-3  # the caption moves the depth: the file is the new caption's


def _make_video(path, count, fps=5):
    with av.open(str(path), "w") as container:
        stream = container.add_stream("png", rate=fps)  # lossless
        stream.width, stream.height, stream.pix_fmt = 64, 48, "rgb24"
        for seed in range(count):
            frame = av.VideoFrame.from_ndarray(render_scene("indoor", seed, 48, 64).image, format="rgb24")
            container.mux(stream.encode(frame))
        container.mux(stream.encode())


def _frames(path):
    with av.open(str(path)) as container:
        return sum(1 for _ in container.decode(video=0))


def test_a_video_rewritten_in_place_is_predicted_again_and_other_colours_are_named(checkpoint, tmp_path, capsys):
    video, out = tmp_path / "clip.mov", tmp_path / "out"
    _make_video(video, 2)
    args = ["predict", str(video), "--checkpoint", str(checkpoint), "--out", str(out)]
    assert main(args) == 0 and _frames(out / "clip_depth.mp4") == 2
    _make_video(video, 3)  # the same name, other content
    capsys.readouterr()
    assert main(args) == 0
    assert "3 frames of 64x48 at 5 fps, colours 0-10 m (replacing the mp4 of the video's earlier content)" in (capsys.readouterr().out)
    assert _frames(out / "clip_depth.mp4") == 3
    before = (out / "clip_depth.mp4").stat().st_mtime_ns
    assert main(args) == 0 and "finished before" in capsys.readouterr().out
    assert main([*args, "--vmax", "5"]) == 2
    assert (
        f"{out / 'clip_depth.mp4'} holds the depth made with colours=[0.0, 10.0] (this run: colours=[0.0, 5.0]); "
        "write elsewhere, or overwrite it"
    ) in capsys.readouterr().err
    assert (out / "clip_depth.mp4").stat().st_mtime_ns == before


def test_a_file_name_that_is_not_utf8_goes_through_predict_twice(checkpoint, tmp_path, capsys):
    """b'caf\\xe9.png' (Latin-1) on a file system that takes any bytes: Python's name for it holds a
    surrogate, which no text chunk can hold as it is."""
    inputs, out = tmp_path / "in", tmp_path / "out"
    inputs.mkdir()
    name = os.fsdecode(b"caf\xe9.png")
    try:
        Image.fromarray(render_scene("indoor", 0, 48, 64).image).save(inputs / name)
    except (OSError, UnicodeEncodeError):
        pytest.skip("this file system takes only UTF-8 names")
    base = ["predict", str(inputs), "--checkpoint", str(checkpoint), "--out", str(out)]
    assert main(base) == 0
    depth = out / name
    assert Image.open(depth).info["source"] == f"{inputs.resolve()}/caf\\xe9.png"  # text for people and other programs
    assert png_made(depth).source == str((inputs / name).resolve())  # the exact name, for the rerun
    before = depth.stat().st_mtime_ns
    capsys.readouterr()
    assert main(base) == 0
    assert "kept 1 finished before" in capsys.readouterr().out and depth.stat().st_mtime_ns == before
