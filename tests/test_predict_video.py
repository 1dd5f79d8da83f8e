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


def _make_vfr_video(path, frames, ticks, time_base):
    """A clip whose frames are shown at ``ticks`` of ``time_base`` seconds: a variable frame rate, as
    phones and screen recorders write."""
    with av.open(str(path), "w") as container:
        stream = container.add_stream("libx264", rate=25)  # the nominal rate; the timestamps say otherwise
        stream.width, stream.height, stream.pix_fmt = frames[0].shape[1], frames[0].shape[0], "yuv420p"
        stream.codec_context.time_base = time_base
        for frame, tick in zip(frames, ticks):
            made = av.VideoFrame.from_ndarray(frame, format="rgb24")
            made.pts, made.time_base = tick, time_base
            container.mux(stream.encode(made))
        container.mux(stream.encode())
    return path


def _times(path):
    """Each decoded frame's presentation time in seconds (exact) and the stream's time base."""
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        return [frame.pts * frame.time_base for frame in container.decode(stream)], stream.time_base


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
    assert _times(out / "clip_depth.mp4")[0] == _times(video)[0] == [Fraction(i, 12) for i in range(6)]
    assert metadata["comment"] == str(video.resolve())  # the source it shows
    expected = _expected_colours(checkpoint, source, 0.0, MAX_DEPTH)  # one range for the clip: no flicker
    _close(np.stack(made), expected, mean=5, worst=30)
    assert f"wrote {out / 'clip_depth.mp4'}: 6 frames of 64x48 at 12 fps, colours 0-10 m" in capsys.readouterr().out
    assert sorted(p.name for p in out.iterdir()) == ["clip_depth.mp4"]  # nothing half-written beside it


@pytest.mark.parametrize("codec", ["libx264", "mpeg4"])
def test_a_variable_frame_rate_clip_keeps_each_frames_timestamp(checkpoint, tmp_path, monkeypatch, codec):
    monkeypatch.setattr("clipdepth.io.video.video_codec", lambda: codec)
    # 0, 40, 90, 100, 250, 260, 400 and 700 ms in a 90 kHz clock: from 100 fps to 3.3 fps
    ticks = [0, 3600, 8100, 9000, 22500, 23400, 36000, 63000]
    video = _make_vfr_video(tmp_path / "phone.mp4", _scenes(8, 48, 64), ticks, Fraction(1, 90000))
    source, source_base = _times(video)
    assert source == [Fraction(t, 90000) for t in ticks]
    out = tmp_path / "out"
    assert main(["predict", str(video), "--checkpoint", str(checkpoint), "--out", str(out), "--batch-size", "3"]) == 0
    made, _ = _times(out / "phone_depth.mp4")
    assert len(made) == 8
    # H.264 keeps the source's 90 kHz clock; MPEG-4 part 2 counts in 1/65535 s at the finest
    step = source_base if codec == "libx264" else Fraction(1, 65535)
    assert all(abs(m - t) <= step / 2 for m, t in zip(made, source)), [float(m - t) for m, t in zip(made, source)]


def test_a_repeated_timestamp_moves_on_by_one_tick_and_a_missing_one_comes_a_frame_later(tmp_path):
    from clipdepth.io.video import Mp4Writer

    with Mp4Writer(tmp_path / "a.mp4", Fraction(10), time_base=Fraction(1, 1000)) as writer:
        for time in (Fraction(0), Fraction(0), Fraction(1, 2), None):  # a damaged source repeats one, loses one
            writer.write(np.zeros((16, 16, 3), np.uint8), time)
    assert _times(tmp_path / "a.mp4")[0] == [0, Fraction(1, 1000), Fraction(1, 2), Fraction(6, 10)]


def test_side_by_side_with_a_fixed_range_an_odd_size_and_a_fractional_rate(checkpoint, tmp_path):
    scenes = _scenes(3, 47, 63)
    video = _make_video(tmp_path / "clip.mov", scenes, fps=Fraction(30000, 1001), codec="png", pix_fmt="rgb24")  # lossless
    out = tmp_path / "out"
    assert (
        main(["predict", str(video), "--checkpoint", str(checkpoint), "--out", str(out), "--side-by-side", "--vmin", "2", "--vmax", "6"])
        == 0
    )
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
    # skipped and named as a bad clip is: other clips of the run go on
    assert err[:2] == [
        "clipdepth predict: 1 input(s) were skipped:",
        f"  {second}: {out / 'clip_depth.mp4'} holds the depth of {first.resolve()}; write elsewhere, or overwrite it",
    ]
    assert main(["predict", str(second), *args, "--overwrite"]) == 0
    assert len(_decoded(out / "clip_depth.mp4")[0]) == 3
    # two videos of one name in one run keep their folders
    assert main(["predict", str(first), str(second), "--checkpoint", str(checkpoint), "--out", str(tmp_path / "two")]) == 0
    assert sorted(p.relative_to(tmp_path / "two").as_posix() for p in (tmp_path / "two").rglob("*.mp4")) == [
        "a/clip_depth.mp4",
        "b/clip_depth.mp4",
    ]


HINT = "  (where an image is over a limit: --max-tiles, --max-pixels)"  # only the options that help


def test_bad_videos_are_one_line_and_leave_nothing(checkpoint, tmp_path, capsys):
    out = tmp_path / "out"
    (tmp_path / "broken.mp4").write_bytes(b"\x00\x00\x00\x18ftypisom" + b"garbage" * 50)
    assert main(["predict", str(tmp_path / "nope.mov"), "--checkpoint", str(checkpoint), "--out", str(out)]) == 2
    assert capsys.readouterr().err.strip().splitlines() == [f"clipdepth predict: error: {tmp_path / 'nope.mov'}: no such video"]
    assert main(["predict", str(tmp_path / "broken.mp4"), "--checkpoint", str(checkpoint), "--out", str(out)]) == 2
    assert capsys.readouterr().err.strip().splitlines() == [
        "clipdepth predict: 1 input(s) were skipped:",
        f"  {tmp_path / 'broken.mp4'}: not a readable video (Invalid data found when processing input)",
    ]
    assert not out.exists() or not any(out.iterdir())
    video = _make_video(tmp_path / "clip.mp4", _scenes(2, 48, 64), fps=5)
    assert main(["predict", str(video), "--checkpoint", str(checkpoint), "--out", str(out), "--ply"]) == 2
    assert capsys.readouterr().err.strip().splitlines() == [
        "clipdepth predict: error: --format, --npy, --ply and --uncertainty are image outputs: a video gives <stem>_depth.mp4 only"
    ]
    assert main(["predict", str(video), "--checkpoint", str(checkpoint), "--out", str(out), "--max-pixels", "0.001"]) == 2
    assert f"  {video}: 64x48 frames are 0.00307 megapixels, over the limit of 0.001\n{HINT}" in capsys.readouterr().err
    assert not out.exists() or not any(out.iterdir())


def test_one_bad_clip_does_not_stop_the_others_and_is_named(checkpoint, tmp_path, capsys):
    good = _make_video(tmp_path / "good.mp4", _scenes(2, 48, 64), fps=5)
    corrupt = tmp_path / "corrupt.mp4"
    corrupt.write_bytes(_make_video(tmp_path / "whole.mp4", _scenes(2, 48, 64), fps=5).read_bytes()[:-300])  # cut short
    good2 = _make_video(tmp_path / "good2.mp4", _scenes(3, 48, 64), fps=5)
    out = tmp_path / "out"
    assert main(["predict", str(good), str(corrupt), str(good2), "--checkpoint", str(checkpoint), "--out", str(out)]) == 2
    printed = capsys.readouterr()
    assert sorted(p.name for p in out.iterdir()) == ["good2_depth.mp4", "good_depth.mp4"]
    assert len(_decoded(out / "good_depth.mp4")[0]) == 2 and len(_decoded(out / "good2_depth.mp4")[0]) == 3
    assert f"wrote {out / 'good2_depth.mp4'}: 3 frames" in printed.out  # after the bad one
    err = printed.err.strip().splitlines()
    err = err[err.index("clipdepth predict: 1 input(s) were skipped:") :]  # after the progress bars
    assert len(err) == 2 and err[1].startswith(f"  {corrupt}: not a readable video (")  # no option helps: no hint


def test_without_pyav_a_video_is_one_line_saying_what_to_install(checkpoint, tmp_path, capsys, monkeypatch):
    video = _make_video(tmp_path / "clip.mp4", _scenes(2, 48, 64), fps=5)
    monkeypatch.setitem(sys.modules, "av", None)  # import av raises ImportError
    assert main(["predict", str(video), "--checkpoint", str(checkpoint), "--out", str(tmp_path / "out")]) == 2
    assert capsys.readouterr().err.strip().splitlines() == [
        'clipdepth predict: error: video needs PyAV, which is not installed: pip install -e ".[video]" in the clipdepth repository'
    ]


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
