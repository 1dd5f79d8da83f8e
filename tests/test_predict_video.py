"""`clipdepth predict clip.mp4`: the frames through the model as images go, out as an mp4 of the
colour depth at the source's frame rate over one colour range for the clip; side by side on
request; bad videos and a missing PyAV as one line."""
from __future__ import annotations

import sys
from fractions import Fraction

import av
import matplotlib
import numpy as np
import pytest
import torch
from matplotlib.colors import Normalize

from clipdepth.cli.main import main
from clipdepth.data.synthetic import render_scene
from clipdepth.io.video import upright
from clipdepth.models import PureCLIPDepth, load_model

MAX_DEPTH = 10.0  # the tiny checkpoint's range (the demo recipe's)


@pytest.fixture
def checkpoint(tiny_cfg, tmp_path):
    torch.manual_seed(0)
    return PureCLIPDepth.build(tiny_cfg).save_pretrained(tmp_path / "ckpt")


def _make_video(path, frames, fps, codec="libx264", pix_fmt="yuv420p"):
    with av.open(str(path), "w") as container:
        stream = container.add_stream(codec, rate=fps)
        stream.width, stream.height, stream.pix_fmt = frames[0].shape[1], frames[0].shape[0], pix_fmt
        for frame in frames:
            container.mux(stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")))
        container.mux(stream.encode())
    return path


def _scenes(count, height, width):
    return [render_scene("indoor", seed, height, width).image for seed in range(count)]


def _decoded(path):
    """Every frame as RGB, the stream's rate, codec and stored size."""
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        frames = [frame.to_ndarray(format="rgb24") for frame in container.decode(stream)]
        return frames, stream.average_rate, stream.codec_context.name, (stream.width, stream.height), container.metadata


def _expected_colours(checkpoint, frames, vmin, vmax):
    """The model's depth of each frame, coloured by matplotlib's turbo over vmin..vmax."""
    depth = load_model(checkpoint).infer(np.stack(frames))["depth"].numpy()
    return matplotlib.colormaps["turbo"](Normalize(vmin, vmax)(depth), bytes=True)[..., :3]


def _close(made, expected, mean, worst):
    """Within lossy 4:2:0 coding: small on average, bounded everywhere."""
    difference = np.abs(made.astype(int) - expected.astype(int))
    assert difference.mean() <= mean and np.percentile(difference, 99) <= worst, (difference.mean(), np.percentile(difference, 99))


def test_a_video_gives_an_mp4_of_its_colour_depth_at_its_frame_rate(checkpoint, tmp_path, capsys):
    video = _make_video(tmp_path / "clip.mp4", _scenes(6, 48, 64), fps=12)
    source, *_ = _decoded(video)  # what the pipeline decodes, decoded here alike
    out = tmp_path / "out"
    assert main(["predict", str(video), "--checkpoint", str(checkpoint), "--out", str(out), "--batch-size", "4"]) == 0
    made, rate, codec, size, metadata = _decoded(out / "clip_depth.mp4")
    assert len(made) == 6 and rate == 12 and codec == "h264" and size == (64, 48)
    assert metadata["comment"] == str(video.resolve())  # the source it shows
    expected = _expected_colours(checkpoint, source, 0.0, MAX_DEPTH)  # one range for the clip: no flicker
    _close(np.stack(made), expected, mean=5, worst=30)
    assert f"wrote {out / 'clip_depth.mp4'}: 6 frames of 64x48 at 12 fps, colours 0-10 m" in capsys.readouterr().out
    assert sorted(p.name for p in out.iterdir()) == ["clip_depth.mp4"]  # nothing half-written beside it


def test_side_by_side_with_a_fixed_range_an_odd_size_and_a_fractional_rate(checkpoint, tmp_path):
    scenes = _scenes(3, 47, 63)
    video = _make_video(tmp_path / "clip.mov", scenes, fps=Fraction(30000, 1001), codec="png", pix_fmt="rgb24")  # lossless
    out = tmp_path / "out"
    assert main(["predict", str(video), "--checkpoint", str(checkpoint), "--out", str(out), "--side-by-side",
                 "--vmin", "2", "--vmax", "6"]) == 0
    made, rate, _, size, _ = _decoded(out / "clip_depth.mp4")
    assert len(made) == 3 and rate == Fraction(30000, 1001)
    assert size == (126, 48)  # 63 + 63 wide; 47 high gains one row (4:2:0 needs even sizes)
    made = np.stack(made)
    _close(made[:, :47, :63], np.stack(scenes), mean=5, worst=36)  # the frame at the left
    _close(made[:, :47, 63:], _expected_colours(checkpoint, scenes, 2.0, 6.0), mean=4, worst=30)  # its depth at the right
    _close(made[:, 47], made[:, 46], mean=3, worst=16)  # the added row repeats the last


def test_without_libx264_the_mp4_is_mpeg4(checkpoint, tmp_path, monkeypatch):
    monkeypatch.setattr("clipdepth.io.video.video_codec", lambda: "mpeg4")
    video = _make_video(tmp_path / "clip.mp4", _scenes(4, 48, 64), fps=10)
    source, *_ = _decoded(video)
    assert main(["predict", str(video), "--checkpoint", str(checkpoint), "--out", str(tmp_path / "out")]) == 0
    made, rate, codec, size, _ = _decoded(tmp_path / "out" / "clip_depth.mp4")
    assert (len(made), rate, codec, size) == (4, 10, "mpeg4", (64, 48))
    _close(np.stack(made), _expected_colours(checkpoint, source, 0.0, MAX_DEPTH), mean=6, worst=40)


def test_a_rerun_keeps_the_mp4_and_another_videos_is_never_replaced(checkpoint, tmp_path, capsys):
    first = _make_video((tmp_path / "a").mkdir() or tmp_path / "a" / "clip.mp4", _scenes(2, 48, 64), fps=5)
    second = _make_video((tmp_path / "b").mkdir() or tmp_path / "b" / "clip.mp4", _scenes(3, 48, 64), fps=5)
    out = tmp_path / "out"
    args = ["--checkpoint", str(checkpoint), "--out", str(out)]
    assert main(["predict", str(first), *args]) == 0
    before = (out / "clip_depth.mp4").stat().st_mtime_ns
    capsys.readouterr()
    assert main(["predict", str(first), *args]) == 0
    assert f"kept {out / 'clip_depth.mp4'}: 2 frames of 64x48 at 5 fps, finished before" in capsys.readouterr().out
    assert (out / "clip_depth.mp4").stat().st_mtime_ns == before
    assert main(["predict", str(second), *args]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [f"clipdepth predict: error: {second}: {out / 'clip_depth.mp4'} holds the depth of {first.resolve()}; "
                   "write elsewhere, or overwrite it (--overwrite)"]
    assert main(["predict", str(second), *args, "--overwrite"]) == 0
    assert len(_decoded(out / "clip_depth.mp4")[0]) == 3
    # two videos of one name in one run keep their folders
    assert main(["predict", str(first), str(second), "--checkpoint", str(checkpoint), "--out", str(tmp_path / "two")]) == 0
    assert sorted(p.relative_to(tmp_path / "two").as_posix() for p in (tmp_path / "two").rglob("*.mp4")) == [
        "a/clip_depth.mp4", "b/clip_depth.mp4"]


def test_bad_videos_are_one_line_and_leave_nothing(checkpoint, tmp_path, capsys):
    out = tmp_path / "out"
    (tmp_path / "broken.mp4").write_bytes(b"\x00\x00\x00\x18ftypisom" + b"garbage" * 50)
    for video, message in [(tmp_path / "broken.mp4", "not a readable video (Invalid data found when processing input)"),
                           (tmp_path / "nope.mov", "no such video")]:
        assert main(["predict", str(video), "--checkpoint", str(checkpoint), "--out", str(out)]) == 2
        assert capsys.readouterr().err.strip().splitlines() == [f"clipdepth predict: error: {video}: {message}"]
    assert not out.exists() or not any(out.iterdir())
    video = _make_video(tmp_path / "clip.mp4", _scenes(2, 48, 64), fps=5)
    assert main(["predict", str(video), "--checkpoint", str(checkpoint), "--out", str(out), "--ply"]) == 2
    assert capsys.readouterr().err.strip().splitlines() == [
        "clipdepth predict: error: --npy, --ply and --uncertainty are image outputs: a video gives <stem>_depth.mp4 only"]
    assert main(["predict", str(video), "--checkpoint", str(checkpoint), "--out", str(out), "--max-pixels", "0.001"]) == 2
    assert "clip.mp4: 64x48 frames are 0.00307 megapixels, over the limit of 0.001 (--max-pixels)" in capsys.readouterr().err
    assert not out.exists() or not any(out.iterdir())


def test_without_pyav_a_video_is_one_line_saying_what_to_install(checkpoint, tmp_path, capsys, monkeypatch):
    video = _make_video(tmp_path / "clip.mp4", _scenes(2, 48, 64), fps=5)
    monkeypatch.setitem(sys.modules, "av", None)  # import av raises ImportError
    assert main(["predict", str(video), "--checkpoint", str(checkpoint), "--out", str(tmp_path / "out")]) == 2
    assert capsys.readouterr().err.strip().splitlines() == [
        "clipdepth predict: error: video needs PyAV, which is not installed: pip install -e \".[video]\" in the clipdepth repository"]


def test_a_rotated_frame_is_turned_upright_as_players_do():
    frame = np.arange(6).reshape(2, 3)[..., None]  # 2 high, 3 wide
    # FFmpeg's players turn a frame whose display matrix says -90 degrees (counterclockwise) by
    # 90 degrees clockwise: the first column, read bottom to top, becomes the first row.
    np.testing.assert_array_equal(upright(frame, -90)[..., 0], [[3, 0], [4, 1], [5, 2]])
    np.testing.assert_array_equal(upright(frame, 90)[..., 0], [[2, 5], [1, 4], [0, 3]])
    np.testing.assert_array_equal(upright(frame, 180)[..., 0], [[5, 4, 3], [2, 1, 0]])
    np.testing.assert_array_equal(upright(frame, 0)[..., 0], [[0, 1, 2], [3, 4, 5]])


def test_a_tr2m_video_reads_one_caption_for_its_frames(tiny_tr2m_cfg, tmp_path, capsys):
    from clipdepth.config import config_to_dict, load_config_dict
    from clipdepth.models import build_model

    from .conftest import TINY_DEPTH_ANYTHING

    torch.manual_seed(0)
    build_model(load_config_dict(config_to_dict(tiny_tr2m_cfg), TINY_DEPTH_ANYTHING)).save_pretrained(tmp_path / "ckpt")
    video = _make_video(tmp_path / "walk.mov", _scenes(2, 30, 40), fps=5, codec="png", pix_fmt="rgb24")
    args = ["predict", str(video), "--checkpoint", str(tmp_path / "ckpt"), "--out", str(tmp_path / "out")]
    assert main(args) == 2
    assert "give a caption" in capsys.readouterr().err
    (tmp_path / "captions").mkdir()
    (tmp_path / "captions" / "walk.txt").write_text("a corridor\n")
    assert main([*args, "--captions", str(tmp_path / "captions")]) == 0
    model = load_model(tmp_path / "ckpt")
    depth = model.infer(np.stack(_scenes(2, 30, 40)), captions=["a corridor"] * 2)["depth"].numpy()
    expected = matplotlib.colormaps["turbo"](Normalize(0, model.max_depth)(depth), bytes=True)[..., :3]
    _close(np.stack(_decoded(tmp_path / "out" / "walk_depth.mp4")[0]), expected, mean=5, worst=30)


def test_a_folder_of_videos_says_videos_are_read_when_named(tmp_path):
    from clipdepth.errors import DataError
    from clipdepth.io.predictions import collect_inputs

    (tmp_path / "clips").mkdir()
    (tmp_path / "clips" / "a.mp4").write_bytes(b"not read")
    with pytest.raises(DataError, match=r"no images found in .*clips \(videos in a folder are not read: name each"):
        collect_inputs([str(tmp_path / "clips")])
