"""NYU Depth V2: the BTS-layout loader on real samples, and `clipdepth data prepare nyu`."""

from __future__ import annotations

from pathlib import Path

import h5py
import numpy as np
import pytest
from PIL import Image

from clipdepth.cli import main as cli_main
from clipdepth.config import DataConfig
from clipdepth.data import DATASET_PROTOCOLS, get_dataset
from clipdepth.data import nyu
from clipdepth.errors import ConfigError, DataError
from clipdepth.io.depth_io import read_depth

TRAIN, TEST = [1, 2, 4], [3, 5]  # 1-based, as in the official splits.mat


# --------------------------------------------------------------------------- loader


def test_loads_real_nyu_samples(rgbd_samples: Path, tmp_path: Path) -> None:
    stems = [p.name.removeprefix("rgb_").removesuffix(p.suffix) for p in sorted((rgbd_samples / "nyu").glob("rgb_*"))]
    rgb_files = {s: next((rgbd_samples / "nyu").glob(f"rgb_{s}.*")).name for s in stems}
    test_list = tmp_path / "nyu_test.txt"
    test_list.write_text("".join(f"nyu/{rgb_files[s]} nyu/sync_depth_{s}.png 518.8579\n" for s in stems))

    dataset = get_dataset(DataConfig(dataset="nyu", root=str(rgbd_samples), test_list=str(test_list)), "test")

    assert DATASET_PROTOCOLS["nyu"] == "nyu"
    assert len(dataset) == len(stems) >= 1
    for index, stem in enumerate(stems):
        sample = dataset[index]
        raw = np.asarray(Image.open(rgbd_samples / "nyu" / f"sync_depth_{stem}.png"), dtype=np.float64)
        assert sample.image.shape == (480, 640, 3) and sample.image.dtype == np.uint8
        assert sample.depth.shape == (480, 640) and sample.depth.dtype == np.float32
        valid = sample.depth > 0
        assert valid.any() and 0 < sample.depth[valid].min() and sample.depth.max() <= 10.0
        assert sample.depth.max() == pytest.approx(raw.max() / 1000, abs=1e-6)
        np.testing.assert_array_equal(sample.depth == 0, raw == 0)
        np.testing.assert_allclose(sample.intrinsics, nyu.NYU_INTRINSICS, rtol=1e-6)
        assert sample.name == f"nyu_rgb_{stem}"


def test_config_errors_name_the_field(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="data.root"):
        get_dataset(DataConfig(dataset="nyu", test_list="x.txt"), "test")
    with pytest.raises(ConfigError, match="data.test_list"):
        get_dataset(DataConfig(dataset="nyu", root=str(tmp_path)), "test")
    with pytest.raises(ConfigError, match="data.train_list"):
        get_dataset(DataConfig(dataset="nyu", root=str(tmp_path)), "val")
    test_list = tmp_path / "list.txt"
    test_list.write_text("/scene/rgb_00001.jpg /scene/sync_depth_00001.png 518.8579\n")
    with pytest.raises(DataError, match="missing under"):
        get_dataset(DataConfig(dataset="nyu", root=str(tmp_path), test_list=str(test_list)), "test")


# --------------------------------------------------------------------------- prepare from the .mat


def make_official_files(folder: Path, n: int = 5) -> tuple[Path, Path, np.ndarray, np.ndarray]:
    """A small labeled .mat and splits file in the official layout, and the frames they hold."""
    rng = np.random.default_rng(0)
    rgb = rng.integers(0, 256, size=(n, 480, 640, 3), dtype=np.uint8)
    depth_mm = rng.integers(0, 10_001, size=(n, 480, 640))
    depth_mm[:, :5] = 0  # no measurement
    depth = (depth_mm / 1000).astype(np.float32)
    mat, splits = folder / "nyu_depth_v2_labeled.mat", folder / "splits.mat"
    with h5py.File(mat, "w") as handle:  # h5py sees MATLAB's arrays transposed
        handle["images"] = rgb.transpose(0, 3, 2, 1)
        handle["depths"] = depth.transpose(0, 2, 1)
    with h5py.File(splits, "w") as handle:
        handle["trainNdxs"] = np.array([TRAIN], dtype=np.float64)
        handle["testNdxs"] = np.array([TEST], dtype=np.float64)
    return mat, splits, rgb, depth_mm


def run_cli(monkeypatch: pytest.MonkeyPatch, *args: str) -> int:
    monkeypatch.setitem(cli_main.SUBCOMMANDS, "data", "clipdepth.cli.data")
    return cli_main.main(["data", "prepare", "nyu", *args])


def test_prepare_writes_exact_frames_and_lists(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    mat, splits, rgb, depth_mm = make_official_files(tmp_path)
    out = tmp_path / "nyu"

    assert run_cli(monkeypatch, "--mat", str(mat), "--splits", str(splits), "--out", str(out)) == 0

    for split, indices in (("train", TRAIN), ("test", TEST)):
        lines = (out / f"nyu_{split}.txt").read_text().splitlines()
        assert lines == [f"/{split}/rgb_{i:05d}.png /{split}/sync_depth_{i:05d}.png 518.8579" for i in indices]
        for i in indices:
            image = np.asarray(Image.open(out / split / f"rgb_{i:05d}.png"))
            np.testing.assert_array_equal(image, rgb[i - 1])
            depth = read_depth(out / split / f"sync_depth_{i:05d}.png", 1000.0)
            np.testing.assert_array_equal(np.round(depth * 1000).astype(np.int64), depth_mm[i - 1])

    dataset = get_dataset(DataConfig(dataset="nyu", root=str(out), test_list=str(out / "nyu_test.txt")), "test")
    assert [dataset[k].name for k in range(len(dataset))] == ["test_rgb_00003", "test_rgb_00005"]


def test_prepare_resumes_after_a_kill(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    mat, splits, _, _ = make_official_files(tmp_path)
    out = tmp_path / "nyu"
    write_depth_png = nyu.write_depth_png
    depth_writes: list[Path] = []

    def killed_at_third_depth(path, depth, scale):
        if len(depth_writes) == 2:
            raise KeyboardInterrupt
        depth_writes.append(Path(path))
        write_depth_png(path, depth, scale)

    monkeypatch.setattr(nyu, "write_depth_png", killed_at_third_depth)
    with pytest.raises(KeyboardInterrupt):
        nyu.prepare_nyu_mat(mat, splits, out, progress=False)

    written = sorted(p for p in out.rglob("*") if p.is_file())
    assert not [p for p in written if ".tmp" in p.name]
    assert not (out / "nyu_train.txt").exists() and not (out / "nyu_test.txt").exists()
    # Frames 1 and 2 are complete; frame 4 was killed between its two files.
    assert [p.relative_to(out).as_posix() for p in written] == [
        ".clipdepth/nyu.json",
        "train/rgb_00001.png",
        "train/rgb_00002.png",
        "train/rgb_00004.png",
        "train/sync_depth_00001.png",
        "train/sync_depth_00002.png",
    ]
    before = {p: (p.stat().st_ino, p.stat().st_mtime_ns) for p in written}

    def counted(path, depth, scale):
        depth_writes.append(Path(path))
        write_depth_png(path, depth, scale)

    depth_writes.clear()
    monkeypatch.setattr(nyu, "write_depth_png", counted)
    lists = nyu.prepare_nyu_mat(mat, splits, out, progress=False)

    assert [p.relative_to(out).as_posix() for p in depth_writes] == [
        "train/sync_depth_00004.png",
        "test/sync_depth_00003.png",
        "test/sync_depth_00005.png",
    ]
    assert {p: (p.stat().st_ino, p.stat().st_mtime_ns) for p in written} == before  # not rewritten
    assert len(lists["train"].read_text().splitlines()) == 3 and len(lists["test"].read_text().splitlines()) == 2
    assert len([p for p in out.rglob("*.png")]) == 10 and not [p for p in out.rglob("*") if ".tmp" in p.name]


def test_missing_mat_is_one_line_exit_2(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys) -> None:
    _, splits, _, _ = make_official_files(tmp_path, n=1)
    missing = tmp_path / "absent.mat"
    assert run_cli(monkeypatch, "--mat", str(missing), "--splits", str(splits), "--out", str(tmp_path / "o")) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and str(missing) in err[0] and "not found" in err[0]


def test_mat_without_depths_is_one_line_exit_2(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys) -> None:
    _, splits, _, _ = make_official_files(tmp_path, n=1)
    mat = tmp_path / "images_only.mat"
    with h5py.File(mat, "w") as handle:
        handle["images"] = np.zeros((5, 3, 8, 6), dtype=np.uint8)
    assert run_cli(monkeypatch, "--mat", str(mat), "--splits", str(splits), "--out", str(tmp_path / "o")) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and str(mat) in err[0] and "depths" in err[0]
    assert not (tmp_path / "o").exists()


def test_index_beyond_the_mat_is_an_error(tmp_path: Path) -> None:
    _, splits, _, _ = make_official_files(tmp_path)
    mat = tmp_path / "small.mat"
    with h5py.File(mat, "w") as handle:
        handle["images"] = np.zeros((4, 3, 8, 6), dtype=np.uint8)
        handle["depths"] = np.zeros((4, 8, 6), dtype=np.float32)
    with pytest.raises(DataError, match=r"index 5 is outside 1\.\.4"):
        nyu.prepare_nyu_mat(mat, splits, tmp_path / "o", progress=False)


def test_official_matlab_v5_splits_are_read(tmp_path: Path) -> None:
    import scipy.io

    splits = tmp_path / "splits.mat"  # the toolbox's format: column vectors of 1-based indices
    scipy.io.savemat(splits, {"trainNdxs": np.array([[1], [2], [4]]), "testNdxs": np.array([[3], [5]])})
    assert {k: list(v) for k, v in nyu.read_nyu_splits(splits).items()} == {"train": [1, 2, 4], "test": [3, 5]}


def test_prepare_converts_again_from_a_mat_rewritten_in_place(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Frames are kept by what they were converted from, not by their names."""
    mat, splits, rgb, _ = make_official_files(tmp_path)
    out = tmp_path / "nyu"
    nyu.prepare_nyu_mat(mat, splits, out, progress=False)
    first = out / "train" / "rgb_00001.png"
    kept = first.stat().st_mtime_ns
    nyu.prepare_nyu_mat(mat, splits, out, progress=False)
    assert first.stat().st_mtime_ns == kept  # the same .mat: nothing written again
    with h5py.File(mat, "r+") as handle:  # re-exported in place: other images
        handle["images"][...] = 255 - handle["images"][...]
    nyu.prepare_nyu_mat(mat, splits, out, progress=False)
    for split, indices in (("train", TRAIN), ("test", TEST)):
        for i in indices:
            np.testing.assert_array_equal(np.asarray(Image.open(out / split / f"rgb_{i:05d}.png")), 255 - rgb[i - 1])
