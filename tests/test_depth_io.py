"""Depth/RGB file round trips and one-line DataErrors naming the file."""

import numpy as np
import pytest
from PIL import Image

from clipdepth.errors import DataError
from clipdepth.io.depth_io import read_depth, read_rgb, write_depth_png, write_npy


def assert_one_line_naming(excinfo, path):
    message = str(excinfo.value)
    assert str(path) in message and "\n" not in message


def test_depth_png_round_trip(tmp_path):
    depth = np.array([[0.0, 1.2344, 2.5], [10.0, 70.0, 0.0004]], dtype=np.float32)
    path = tmp_path / "d.png"
    write_depth_png(path, depth, 1000)
    with Image.open(path) as image:
        assert image.mode == "I;16"
        assert image.info["depth_scale"] == "1000.0" and "value / 1000.0 metres" in image.info["units"]
        # round(d * 1000), clipped to 65535; 0 stays 0
        assert np.array(image).tolist() == [[0, 1234, 2500], [10000, 65535, 0]]
    back = read_depth(path, 1000)
    assert back.dtype == np.float32
    np.testing.assert_allclose(back, [[0.0, 1.234, 2.5], [10.0, 65.535, 0.0]], rtol=1e-6)
    assert not list(tmp_path.glob(".*tmp*"))  # the atomic write left no temporary behind


def test_a_declared_png_scale_is_honoured_and_a_contradicting_given_one_refused(tmp_path):
    path = tmp_path / "d.png"
    write_depth_png(path, np.full((2, 2), 70.0), 256)  # stored as 17920 = 70 * 256
    # the file says 256 per metre: a reader whose default is millimetres still gets 70 m, not 17.92
    np.testing.assert_allclose(read_depth(path, 1000), 70.0)
    with pytest.raises(DataError, match="depth_scale=256.0") as excinfo:
        read_depth(path, 1000, strict_scale=True)  # a scale the user gave explicitly
    assert_one_line_naming(excinfo, path)


def test_the_png_scale_holds_the_models_range():
    from clipdepth.io.depth_io import depth_png_scale

    assert depth_png_scale(10.0) == 1000.0 and depth_png_scale(65.535) == 1000.0  # millimetres while they fit
    assert depth_png_scale(80.0) == 256.0  # 80 m * 1000 > 65535: KITTI's 1/256 m, up to 255.996 m
    assert depth_png_scale(300.0) == pytest.approx(65535 / 300)  # the finest that still fits


def test_empty_depth_maps_are_one_line(tmp_path):
    np.save(tmp_path / "e.npy", np.zeros((0, 5), np.float32))
    with pytest.raises(DataError, match="empty") as excinfo:
        read_depth(tmp_path / "e.npy", 1000)
    assert_one_line_naming(excinfo, tmp_path / "e.npy")


def test_plain_16bit_png_and_npy_round_trip(tmp_path):
    Image.fromarray(np.array([[0, 256, 512]], dtype=np.uint16)).save(tmp_path / "k.png")
    np.testing.assert_array_equal(read_depth(tmp_path / "k.png", 256), [[0.0, 1.0, 2.0]])
    depth = np.array([[0.0, 1.5], [3.25, 80.0]])
    write_npy(tmp_path / "d.npy", depth)
    np.testing.assert_array_equal(read_depth(tmp_path / "d.npy", 123), depth)  # metres; scale ignored
    write_npy(tmp_path / "batched.npy", depth[None, None])
    assert read_depth(tmp_path / "batched.npy", 1).shape == (2, 2)


def test_read_rgb(tmp_path):
    rgb = np.arange(2 * 3 * 3, dtype=np.uint8).reshape(2, 3, 3)
    Image.fromarray(rgb).save(tmp_path / "c.png")
    out = read_rgb(tmp_path / "c.png")
    assert out.dtype == np.uint8 and out.shape == (2, 3, 3)
    np.testing.assert_array_equal(out, rgb)
    Image.fromarray(np.zeros((2, 3), np.uint8)).save(tmp_path / "grey.png")
    assert read_rgb(tmp_path / "grey.png").shape == (2, 3, 3)


def test_missing_files(tmp_path):
    for read in (lambda p: read_depth(p, 1000), read_rgb):
        path = tmp_path / "absent.png"
        with pytest.raises(DataError, match="not found") as excinfo:
            read(path)
        assert_one_line_naming(excinfo, path)
    with pytest.raises(DataError, match="not found"):
        read_depth(tmp_path / "absent.npy", 1)


@pytest.mark.parametrize("name", ["bad.png", "bad.npy"])
def test_corrupt_bytes(tmp_path, name):
    path = tmp_path / name
    path.write_bytes(b"\x89PNG\r\n\x1a\n this is not an image")
    with pytest.raises(DataError) as excinfo:
        read_depth(path, 1000)
    assert_one_line_naming(excinfo, path)
    if name.endswith(".png"):
        with pytest.raises(DataError, match="not a readable image"):
            read_rgb(path)


def test_truncated_png(tmp_path):
    good = tmp_path / "good.png"
    Image.fromarray(np.random.default_rng(0).integers(0, 65535, (64, 64), dtype=np.uint16)).save(good)
    path = tmp_path / "cut.png"
    path.write_bytes(good.read_bytes()[:200])
    with pytest.raises(DataError, match="not a readable image") as excinfo:
        read_depth(path, 1000)
    assert_one_line_naming(excinfo, path)


@pytest.mark.parametrize("array, mode", [(np.zeros((4, 4), np.uint8), "mode L"), (np.zeros((4, 4, 3), np.uint8), "mode RGB")])
def test_8bit_depth_png_is_refused(tmp_path, array, mode):
    path = tmp_path / "d8.png"
    Image.fromarray(array).save(path)
    with pytest.raises(DataError, match=f"16-bit.*8-bit {mode}") as excinfo:
        read_depth(path, 1000)
    assert_one_line_naming(excinfo, path)


def test_16bit_png_is_not_an_rgb_image(tmp_path):
    path = tmp_path / "depth.png"
    Image.fromarray(np.zeros((4, 4), np.uint16)).save(path)
    with pytest.raises(DataError, match="I;16"):
        read_rgb(path)


def test_nan_and_negative_depth_npy(tmp_path):
    path = tmp_path / "nan.npy"
    np.save(path, np.array([[1.0, np.nan], [np.nan, 0.0]]))
    with pytest.raises(DataError) as excinfo:
        read_depth(path, 1000)
    assert str(excinfo.value) == f"{path}: depth contains 2 NaN values; mark missing depth as 0"
    # Predictions keep NaN: the protocol maps it to min_depth when post-processing.
    assert np.isnan(read_depth(path, 1000, prediction=True)).sum() == 2
    negative = tmp_path / "neg.npy"
    np.save(negative, np.array([[1.0, -2.0]]))
    with pytest.raises(DataError, match="1 negative values") as excinfo:
        read_depth(negative, 1000)
    assert_one_line_naming(excinfo, negative)


def test_infinite_ground_truth_is_refused_as_nan_is(tmp_path):
    """+inf and -inf in ground truth would be dropped as no depth without a word: refused, named and
    counted; a prediction keeps them (the protocol maps inf to max_depth)."""
    path = tmp_path / "inf.npy"
    np.save(path, np.array([[1.0, np.inf], [-np.inf, 0.0], [np.inf, 2.0]], np.float32))
    with pytest.raises(DataError) as excinfo:
        read_depth(path, 1000)
    assert str(excinfo.value) == f"{path}: depth contains 3 infinite values; mark missing depth as 0"
    assert np.isinf(read_depth(path, 1000, prediction=True)).sum() == 3


def test_unsupported_depth_files(tmp_path):
    for name, array in [("d.jpg", None), ("flat.npy", np.ones(5)), ("text.npy", np.array(["a"]))]:
        path = tmp_path / name
        if array is None:
            path.write_bytes(b"x")
        else:
            np.save(path, array)
        with pytest.raises(DataError) as excinfo:
            read_depth(path, 1000)
        assert_one_line_naming(excinfo, path)


def test_writing_nan_depth_png_is_refused(tmp_path):
    with pytest.raises(DataError, match="1 NaN"):
        write_depth_png(tmp_path / "n.png", np.array([[1.0, np.nan]]), 1000)
    assert not list(tmp_path.iterdir())
