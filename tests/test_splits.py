"""Split lists: the standard lists parse with their known counts; the 9:1 split is fixed; list paths
are read from data.root; data.val_source picks the validation frames."""

import dataclasses
import hashlib
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from clipdepth.config import DataConfig
from clipdepth.data import get_dataset
from clipdepth.data.splits import check_files, read_split_list, train_val_split
from clipdepth.data.transforms import Preprocessor
from clipdepth.errors import ConfigError, DataError

from .conftest import SHARED

SPLITS = SHARED / "data" / "splits"


@pytest.fixture
def split_dir() -> Path:
    if not SPLITS.is_dir():
        pytest.skip(f"standard split lists not found at {SPLITS} (../shared is absent)")
    return SPLITS


@pytest.mark.parametrize(
    "name, total, with_gt",
    [
        ("nyudepthv2_train_files_with_gt.txt", 24231, 24231),
        ("nyudepthv2_test_files_with_gt.txt", 654, 654),
        ("kitti_eigen_train_files_with_gt.txt", 23158, 23158),
        ("kitti_eigen_test_files_with_gt.txt", 697, 652),
    ],
)
def test_standard_lists_parse_with_known_counts(split_dir, name, total, with_gt):
    entries = read_split_list(split_dir / name)
    assert len(entries) == total and sum(e.depth is not None for e in entries) == with_gt


def test_missing_files_are_one_error_naming_the_first_and_the_count(tmp_path):
    (tmp_path / "a").mkdir()
    (tmp_path / "a" / "rgb_1.jpg").write_bytes(b"x")
    listing = tmp_path / "list.txt"
    listing.write_text("/a/rgb_1.jpg /a/d_1.png 518.8579\n/a/rgb_2.jpg /a/d_2.png 518.8579\n")
    with pytest.raises(DataError, match=r"3 listed file\(s\) missing .*first: .*d_1.png"):
        check_files(read_split_list(listing), tmp_path, listing)


def test_malformed_line_names_file_and_line(tmp_path):
    listing = tmp_path / "list.txt"
    listing.write_text("a.jpg a.png 1.0\nonly_one_field\n")
    with pytest.raises(DataError, match=r"list.txt:2"):
        read_split_list(listing)


@pytest.mark.parametrize("focal", ["nan", "inf", "-inf", "0", "-518.8579", "0.0"])
def test_a_focal_length_not_finite_and_positive_names_the_file_and_line(tmp_path, focal):
    listing = tmp_path / "list.txt"
    listing.write_text(f"a.jpg a.png 518.8579\nb.jpg b.png {focal}\n")
    with pytest.raises(DataError) as exc:
        read_split_list(listing)
    assert str(exc.value).startswith(f"{listing}:2: focal length {focal!r} is not a finite number > 0; ")
    assert "\n" not in str(exc.value)


def test_train_val_split_is_fixed_and_written_once(tmp_path):
    listing = tmp_path / "train.txt"
    listing.write_text("".join(f"/s/rgb_{i}.jpg /s/d_{i}.png 518.8579\n" for i in range(100)))
    entries = read_split_list(listing)
    train, val = train_val_split(entries, listing, tmp_path / "a")
    again_train, again_val = train_val_split(entries, listing, tmp_path / "b")  # recomputed elsewhere
    assert [e.rgb for e in val] == [e.rgb for e in again_val] and len(val) == 10 and len(train) == 90
    assert {e.rgb for e in train}.isdisjoint(e.rgb for e in val)
    # numpy's PCG64 on (seed, content hash) is platform-independent: the same frames everywhere
    assert sorted(int(e.rgb.split("_")[1].split(".")[0]) for e in val) == [2, 27, 28, 33, 49, 54, 75, 93, 98, 99]
    written = sorted(p.name for p in (tmp_path / "a").iterdir())
    assert len(written) == 2 and all(n.startswith("train.") for n in written)
    assert "518.8579" in (tmp_path / "a" / written[0]).read_text()


# -- where list paths are read from, and where validation frames come from --------------------------
def rgbd_root(root: Path, stems: list[str]) -> Path:
    """A folder dataset: rgb/<stem>.png and depth/<stem>.png (1 m) for each stem, 6 x 8 pixels."""
    from PIL import Image

    from clipdepth.io.depth_io import write_depth_png

    (root / "rgb").mkdir(parents=True, exist_ok=True)
    (root / "depth").mkdir(exist_ok=True)
    for stem in stems:
        Image.fromarray(np.zeros((6, 8, 3), np.uint8)).save(root / "rgb" / f"{stem}.png")
        write_depth_png(root / "depth" / f"{stem}.png", np.ones((6, 8)), scale=1000.0)
    return root


def write_list(path: Path, stems: list[str]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(f"rgb/{s}.png depth/{s}.png\n" for s in stems))
    return path


TRAIN, TEST = [f"t{i}" for i in range(10)], ["v0", "v1", "v2"]


def test_relative_list_paths_are_read_from_data_root_absolute_ones_as_given(tmp_path, monkeypatch):
    root = rgbd_root(tmp_path / "data", TRAIN + TEST)
    write_list(root / "lists" / "train.txt", TRAIN)
    outside = write_list(tmp_path / "elsewhere" / "test.txt", TEST)
    monkeypatch.chdir(tmp_path / "elsewhere")  # none of the relative paths below is under it
    cfg = DataConfig(dataset="folder", root=str(root), train_list="lists/train.txt", test_list=str(outside), val_split_dir="splits")
    train, val = get_dataset(cfg, "train"), get_dataset(cfg, "val")
    assert len(train) == 9 and len(val) == 1 and set(train.names) | set(val.names) == set(TRAIN)
    assert len(list((root / "splits").glob("train.*.txt"))) == 2  # the fixed split, written under the root
    assert get_dataset(cfg, "test").names == TEST

    from clipdepth.features.cache import cache_key  # the cache keys the list found there, by content

    encoder = SimpleNamespace(description="e", fingerprint=lambda: "f")
    model = SimpleNamespace(
        architecture="m",
        device=torch.device("cpu"),
        frozen_precisions={},
        frozen_run_precisions={},
        encoder=encoder,
        uses_captions=False,
        storage=lambda purpose: {},
    )
    key = cache_key(model, Preprocessor.create(8, None), cfg, "train", False, train.names)
    assert key["data"]["train_list_sha"] == hashlib.sha256((root / "lists" / "train.txt").read_bytes()).hexdigest()[:16]


def test_a_list_only_in_the_current_folder_is_refused_in_one_line(tmp_path, monkeypatch, capsys):
    root = rgbd_root(tmp_path / "data", TEST)
    write_list(tmp_path / "here" / "test.txt", TEST)
    monkeypatch.chdir(tmp_path / "here")
    cfg = DataConfig(dataset="folder", root=str(root), test_list="test.txt")
    with pytest.raises(
        ConfigError,
        match=r"^data.test_list='test.txt': not under data.root \(.*data/test.txt does not "
        r"exist\); split lists are read relative to data.root, not the current folder: "
        r"give the absolute path .*here/test.txt$",
    ) as err:
        get_dataset(cfg, "test")
    assert "\n" not in str(err.value) and err.value.setting == "data.test_list"
    (root / "test.txt").write_text("rgb/v0.png depth/v0.png\n")  # a list of that name under the root wins
    assert get_dataset(cfg, "test").names == ["v0"]
    with pytest.raises(
        ConfigError,
        match=r"^data.train_list='absent.txt': .*data/absent.txt does not exist \(a relative "
        r"list path is read from data.root; shipped lists: eigen_test_files_with_gt.txt, eigen_train_files_with_gt.txt, "
        r"nyudepthv2_test_files_with_gt.txt, nyudepthv2_train_files_with_gt.txt\)$",
    ):
        get_dataset(DataConfig(dataset="nyu", root=str(root), train_list="absent.txt"), "train")


def test_an_empty_validation_split_names_data_val_fraction_and_data_val_source(tmp_path):
    root = rgbd_root(tmp_path, TEST)
    cfg = DataConfig(dataset="folder", root=str(root), train_list=str(write_list(root / "train.txt", TEST)))
    # 3 lines x 0.1 rounds to no validation frame; nothing is written
    with pytest.raises(
        ConfigError,
        match=r"train.txt: data.val_fraction=0.1 of its 3 lines leaves no validation frame; "
        r"change data.val_fraction, or set data.val_source=test_list",
    ) as err:
        get_dataset(cfg, "val")
    assert err.value.setting == "data.val_fraction" and sorted(p.name for p in root.glob("*.txt")) == ["train.txt"]
    with pytest.raises(ConfigError, match=r"data.val_fraction=0.9 of its 3 lines leaves no training frame"):
        get_dataset(dataclasses.replace(cfg, val_fraction=0.9), "train")


@pytest.mark.parametrize("dataset", ["folder", "void", "synthetic_indoor"])
def test_val_source_test_list_trains_on_the_whole_train_list_and_validates_on_the_test_list(tmp_path, dataset):
    root = rgbd_root(tmp_path / "data", TRAIN + TEST)
    if dataset == "void":  # the release's two lists a split: <split>_image.txt beside <split>_ground_truth.txt
        for split, stems in (("train", TRAIN), ("test", TEST)):
            (root / f"{split}_image.txt").write_text("".join(f"rgb/{s}.png\n" for s in stems))
            (root / f"{split}_ground_truth.txt").write_text("".join(f"depth/{s}.png\n" for s in stems))
        lists = dict(train_list="train_image.txt", test_list="test_image.txt")
    else:
        lists = dict(train_list=write_list(root / "train.txt", TRAIN).name, test_list=write_list(root / "test.txt", TEST).name)
    cfg = DataConfig(dataset=dataset, root=str(root), **lists, val_source="test_list", train_size=4, val_size=2, test_size=3)
    names = {split: get_dataset(cfg, split).names for split in ("train", "val", "test")}
    assert names["val"] == names["test"]
    if dataset == "synthetic_indoor":  # the built-in scenes validate on their test scenes
        assert len(names["train"]) == 4 and len(names["val"]) == 3
    else:
        assert [n.split("_")[-1].removesuffix(".png") if dataset == "void" else n for n in names["train"]] == TRAIN
        assert len(names["val"]) == 3
    assert not list(root.glob("*.val0.1.*"))  # no held-out split is made
