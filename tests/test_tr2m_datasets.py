"""TR2M's other datasets, read from small files written here in each set's real format: VOID
(PNG / 256 m, two-list splits), C3VD (16-bit TIFF x 100 / 65535 mm, fixed sequence indices,
templated captions, frames at 480 x 640) and SimCol (PNG x 200 / (255 x 256) mm, fixed caption)."""

import numpy as np
import pytest
from PIL import Image

from clipdepth.config import DataConfig
from clipdepth.data import get_dataset
from clipdepth.errors import DataError
from clipdepth.evaluation.protocol import get_protocol


def rgb(path, shape=(24, 32), value=100):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.full((*shape, 3), value, np.uint8)).save(path)


def depth16(path, values):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.asarray(values, np.uint16)).save(path)


# -- VOID -----------------------------------------------------------------------------------------
def void_root(tmp_path, prefixed):
    root = tmp_path / "void"
    units = np.zeros((24, 32), np.uint16)
    units[0, 0], units[0, 1], units[5, 7] = 256, 1280, 64  # 1 m, 5 m, 0.25 m
    images, depths = [], []
    for stamp in ("1552696003.7320", "1552625625.5154"):
        rgb(root / "void_1500/data/classroom6/image" / f"{stamp}.png")
        depth16(root / "void_1500/data/classroom6/ground_truth" / f"{stamp}.png", units)
        prefix = f"{root}/" if prefixed else ""
        images.append(f"{prefix}void_1500/data/classroom6/image/{stamp}.png")
        depths.append(f"{prefix}void_1500/data/classroom6/ground_truth/{stamp}.png")
    (tmp_path / "test_image.txt").write_text("\n".join(images) + "\n")
    (tmp_path / "test_ground_truth.txt").write_text("\n".join(depths) + "\n")
    return root


@pytest.mark.parametrize("prefixed", [True, False])  # the release writes root + path; both are read
def test_void_depth_is_png_over_256_in_metres(tmp_path, prefixed):
    root = void_root(tmp_path, prefixed)
    data = DataConfig(dataset="void", root=str(root), test_list=str(tmp_path / "test_image.txt"))
    frames = get_dataset(data, "test")
    sample = frames[0]
    assert len(frames) == 2 and sample.name == "void_1500_data_classroom6_image_1552696003.7320"
    assert (sample.depth[0, 0], sample.depth[0, 1], sample.depth[5, 7], sample.depth[1, 1]) == (1.0, 5.0, 0.25, 0.0)
    protocol = get_protocol("void")  # the release's caps, inside the NYU Eigen crop
    assert (protocol.min_depth, protocol.max_depth, protocol.crop) == (0.2, 5.0, "eigen_nyu")


def test_a_void_split_without_its_ground_truth_list_is_one_line(tmp_path):
    root = void_root(tmp_path, False)
    (tmp_path / "test_ground_truth.txt").unlink()
    data = DataConfig(dataset="void", root=str(root), test_list=str(tmp_path / "test_image.txt"))
    with pytest.raises(DataError, match=r"test_ground_truth.txt: VOID list not found") as err:
        get_dataset(data, "test")
    assert "\n" not in str(err.value)


# -- C3VD -----------------------------------------------------------------------------------------
def c3vd_root(tmp_path):
    root = tmp_path / "C3VD_undistort"
    names = [f"cecum_t1_a{i:02d}" for i in range(20)] + ["trans_t4_b", "trans_t4_c", "trans_t4_d"]  # 23, sorted
    for name in names:
        (root / name).mkdir(parents=True)
    units = np.zeros((24, 32), np.uint16)
    units[0, 0], units[1, 0], units[23, 31] = 65535, 13107, 6554  # 100 mm, 20 mm, 10.0 mm
    for sequence in (names[0], names[21]):  # test indices 0 and 21
        rgb(root / sequence / "0000_color.png")
        (root / sequence / "0000_depth.tiff").parent.mkdir(exist_ok=True)
        Image.fromarray(units).save(root / sequence / "0000_depth.tiff")
        rgb(root / sequence / "0001_color.png")  # no depth: left out, as released
    rgb(root / names[1] / "0000_color.png")  # index 1: a training sequence
    Image.fromarray(units).save(root / names[1] / "0000_depth.tiff")
    return root, names


def test_c3vd_reads_millimetre_tiffs_as_metres_at_480x640_by_the_released_split(tmp_path):
    root, names = c3vd_root(tmp_path)
    test = get_dataset(DataConfig(dataset="c3vd", root=str(root)), "test")
    train = get_dataset(DataConfig(dataset="c3vd", root=str(root)), "train")
    assert test.names == [f"{names[0]}_0000", f"{names[21]}_0000"] and train.names == [f"{names[1]}_0000"]
    sample = test[1]
    assert sample.image.shape == (480, 640, 3) and sample.depth.shape == (480, 640)
    # nearest-neighbour upsampling by 20: source pixel (r, c) fills rows 20r..20r+19, cols 20c..20c+19
    assert sample.depth[0, 0] == pytest.approx(0.1, abs=1e-9) and sample.depth[19, 19] == sample.depth[0, 0]
    assert sample.depth[20, 0] == pytest.approx(13107 * 0.1 / 65535) and sample.depth[40, 0] == 0.0
    assert sample.depth[479, 639] == pytest.approx(6554 * 0.1 / 65535)
    assert sample.captions == ["The image shows a medical scene of transcending colon with  texture type four."]
    assert test[0].captions == ["The image shows a medical scene of cecum with  texture type one."]
    protocol = get_protocol("c3vd")  # the release's 0.1 .. 100 mm
    assert (protocol.min_depth, protocol.max_depth, protocol.crop) == (1e-4, 0.1, None)


def test_a_c3vd_sequence_named_otherwise_is_one_line_naming_it(tmp_path):
    root, names = c3vd_root(tmp_path)
    (root / names[0]).rename(root / "a_stray_folder")  # sorts first: test index 0
    with pytest.raises(DataError, match=r"^a_stray_folder: a C3VD sequence folder is named <colon>_t<k>_<x>"):
        get_dataset(DataConfig(dataset="c3vd", root=str(root)), "test")


# -- SimCol ---------------------------------------------------------------------------------------
def test_simcol_reads_its_listed_folders_in_millimetres_as_metres(tmp_path):
    root = tmp_path / "SimCol"
    (root / "misc").mkdir(parents=True)
    (root / "misc" / "test_file.txt").write_text("SyntheticColon_I/Frames_S1/\n")
    folder = root / "SyntheticColon_I" / "Frames_S1"
    units = np.zeros((24, 32), np.uint16)
    units[0, 0], units[2, 3] = 65280, 32640  # 200 mm, 100 mm
    for i in range(2):
        rgb(folder / f"FrameBuffer_{i:04d}.png")
        depth16(folder / f"Depth_{i:04d}.png", units)
    rgb(folder / "FrameBuffer_0002.png")  # no depth: left out
    frames = get_dataset(DataConfig(dataset="simcol", root=str(root)), "test")
    assert frames.names == ["SyntheticColon_I_Frames_S1_0000", "SyntheticColon_I_Frames_S1_0001"]
    sample = frames[0]
    assert sample.depth[0, 0] == pytest.approx(0.2) and sample.depth[2, 3] == pytest.approx(0.1) and sample.depth[1, 1] == 0
    assert sample.captions == ["The image shows a medical scene of a cecum with texture type one."]
    with pytest.raises(DataError, match=r"no train split"):
        get_dataset(DataConfig(dataset="simcol", root=str(root)), "train")


def test_simcol_without_its_test_list_is_one_line(tmp_path):
    with pytest.raises(DataError, match=r"misc/test_file.txt: SimCol test list not found") as err:
        get_dataset(DataConfig(dataset="simcol", root=str(tmp_path)), "test")
    assert "\n" not in str(err.value)


# -- iBims-1 --------------------------------------------------------------------------------------
def test_ibims_depth_is_masked_by_its_invalid_and_transparent_masks(tmp_path):
    from clipdepth.data.zeroshot import read_ibims_depth

    units = np.full((4, 5), 13107, np.uint16)  # 13107 / 65535 * 50 = 10 m
    depth16(tmp_path / "depth" / "corridor_01.png", units)
    invalid, transparent = np.full((4, 5), 255, np.uint8), np.full((4, 5), 1, np.uint8)
    invalid[0, 0], transparent[3, 4] = 0, 0
    for folder, mask in (("mask_invalid", invalid), ("mask_transp", transparent)):
        (tmp_path / folder).mkdir()
        Image.fromarray(mask).save(tmp_path / folder / "corridor_01.png")
    depth = read_ibims_depth(tmp_path / "depth" / "corridor_01.png")
    assert depth[0, 0] == 0 and depth[3, 4] == 0 and depth[1, 1] == pytest.approx(10.0)
    assert np.count_nonzero(depth) == 18
    (tmp_path / "mask_transp" / "corridor_01.png").unlink()
    with pytest.raises(DataError, match=r"mask_transp/corridor_01.png: iBims-1 mask not found"):
        read_ibims_depth(tmp_path / "depth" / "corridor_01.png")
