"""DepthFolder: a user's rgb/ + depth/ folder by stem or by split list, with optional intrinsics."""

import json

import numpy as np
import pytest
from PIL import Image

from clipdepth.config import DataConfig
from clipdepth.data import get_dataset
from clipdepth.data.folder import DepthFolder
from clipdepth.errors import ConfigError, DataError
from clipdepth.io.depth_io import write_depth_png


@pytest.fixture
def folder(tmp_path):
    (tmp_path / "rgb").mkdir()
    (tmp_path / "depth").mkdir()
    for stem, metres in (("a", 1.5), ("b", 2.25)):
        Image.fromarray(np.zeros((6, 8, 3), dtype=np.uint8)).save(tmp_path / "rgb" / f"{stem}.jpg")
    write_depth_png(tmp_path / "depth" / "a.png", np.full((6, 8), 1.5), scale=1000.0)
    np.save(tmp_path / "depth" / "b.npy", np.full((6, 8), 2.25, dtype=np.float32))
    (tmp_path / "intrinsics.json").write_text(json.dumps({"a": [10, 11, 4, 3]}))
    return tmp_path


def test_pairs_by_stem_with_png_scale_npy_metres_and_intrinsics(folder):
    dataset = DepthFolder(folder)
    a, b = dataset
    assert (a.name, b.name) == ("a", "b")
    assert a.depth[0, 0] == pytest.approx(1.5) and b.depth[0, 0] == pytest.approx(2.25)
    assert a.intrinsics.tolist() == [10, 11, 4, 3]
    assert np.isnan(b.intrinsics).all()  # unknown: no intrinsics.json entry, no focal


def test_pairs_by_split_list_through_the_registry(folder):
    listing = folder / "test.txt"
    listing.write_text("rgb/b.jpg depth/b.npy 20.0\nrgb/a.jpg None 20.0\n")
    dataset = get_dataset(DataConfig(dataset="folder", root=str(folder), test_list=str(listing)), "test")
    assert (dataset.n_listed, dataset.n_without_gt, len(dataset)) == (2, 1, 1)
    assert dataset[0].intrinsics.tolist() == [20.0, 20.0, 4.0, 3.0]


def test_a_missing_depth_file_is_one_error_naming_it(folder):
    (folder / "depth" / "b.npy").unlink()
    with pytest.raises(DataError, match=r"1 image\(s\) .* first: .*depth/b\{\.png,\.tif,\.tiff,\.npy\}"):
        DepthFolder(folder)
    listing = folder / "test.txt"
    listing.write_text("rgb/b.jpg depth/b.npy\n")
    with pytest.raises(DataError, match=r"depth/b\.npy"):
        DepthFolder(folder, listing)


def test_unset_settings_are_config_errors_naming_the_field(tmp_path):
    with pytest.raises(ConfigError, match="data.root"):
        get_dataset(DataConfig(dataset="folder"), "test")
    with pytest.raises(ConfigError, match="data.root"):
        get_dataset(DataConfig(dataset="kitti"), "test")
    with pytest.raises(ConfigError, match="data.test_list"):
        get_dataset(DataConfig(dataset="kitti", root=str(tmp_path)), "test")


def test_folder_depth_scale_comes_from_the_config(tmp_path):
    (tmp_path / "rgb").mkdir()
    (tmp_path / "depth").mkdir()
    Image.fromarray(np.zeros((4, 6, 3), np.uint8)).save(tmp_path / "rgb" / "a.png")
    Image.fromarray(np.full((4, 6), 512, np.uint16)).save(tmp_path / "depth" / "a.png")
    sample = get_dataset(DataConfig(dataset="folder", root=str(tmp_path), depth_scale=256.0), "test")[0]
    assert sample.name == "a" and np.all(sample.depth == 2.0)
