"""Training on one's own RGB-D folder (docs/own-data.md): the `folder` dataset without split lists
(a seeded 9:1 split of its stems, recorded in the run folder), its depth formats and the unit
warning, the pureclip_folder recipe trained, resumed and evaluated on real NYU frames, and the
NYU/KITTI recipes running with only data.root on the split lists shipped in data/splits/."""

from __future__ import annotations

import fnmatch
import gzip
import hashlib
import json
import re
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from safetensors.torch import load_file

from clipdepth.cli.main import main
from clipdepth.config import DataConfig, load_config
from clipdepth.data import get_dataset, records_split
from clipdepth.data.splits import SHIPPED_LISTS, read_split_list, train_val_split
from clipdepth.errors import ConfigError, DataError

from .conftest import TINY_ENCODER

ROOT = Path(__file__).resolve().parents[1]
TINY = [f"clip.{k}={v}" for k, v in TINY_ENCODER.items()] + ["train.batch_size=4", "eval.batch_size=4", "train.num_workers=0"]


def write_pair(root: Path, stem: str, rgb: np.ndarray, depth: np.ndarray, depth_suffix: str = ".png") -> None:
    """rgb/<stem>.png and depth/<stem><suffix>: a 16-bit PNG of the values as given (no scale chunk,
    as a depth camera's export), a float TIFF or a .npy."""
    (root / "rgb").mkdir(parents=True, exist_ok=True)
    (root / "depth").mkdir(exist_ok=True)
    Image.fromarray(rgb).save(root / "rgb" / f"{stem}.png")
    path = root / "depth" / f"{stem}{depth_suffix}"
    if depth_suffix == ".png":
        Image.fromarray(depth.astype(np.uint16)).save(path)
    elif depth_suffix == ".tif":
        Image.fromarray(depth.astype(np.float32)).save(path)
    else:
        np.save(path, depth.astype(np.float32))


def nyu_folder(samples: Path, root: Path) -> list[str]:
    """20 pairs cut from the 4 real NYU frames of the samples' manifest (its depth: uint16
    millimetres): five 240 x 320 windows of each, every 4th pixel (60 x 80), depth kept in
    millimetres as a 16-bit PNG. Returns the stems."""
    manifest = json.loads((samples / "manifest.json").read_text())["samples"]
    stems = []
    for sample in (s for s in manifest if s["dataset"] == "nyu"):
        assert sample["depth_decode"].startswith("uint16 / 1000 -> metres")
        rgb = np.asarray(Image.open(samples / sample["rgb"]).convert("RGB"))
        depth_mm = np.asarray(Image.open(samples / sample["depth"]))
        for k in range(5):
            window = (slice(40 * k, 40 * k + 240, 4), slice(60 * k, 60 * k + 320, 4))
            stem = f"{Path(sample['rgb']).stem}_{k}"
            write_pair(root, stem, np.ascontiguousarray(rgb[window]), depth_mm[window])
            stems.append(stem)
    return stems


def expected_val_stems(stems: list[str], seed: int = 0, fraction: float = 0.1) -> set[str]:
    """The held-out stems as the documented rule draws them (docs/own-data.md): numpy's PCG64 seeded
    by (data.seed, the first 12 hex digits of sha256 of the sorted stems joined by newlines),
    permuting the sorted stems; the first round(fraction * n) validate."""
    ordered = sorted(stems)
    digest = int(hashlib.sha256("\n".join(ordered).encode()).hexdigest()[:12], 16)
    order = np.random.default_rng([seed, digest]).permutation(len(ordered))
    return {ordered[i] for i in order[: round(fraction * len(ordered))]}


def split_files(run: Path) -> tuple[Path, Path]:
    (train,) = (run / "split").glob("*.train.txt")
    (val,) = (run / "split").glob("*.val.txt")
    return train, val


# -- the folder dataset without lists --------------------------------------------------------------


def test_a_folder_without_lists_splits_9_to_1_by_its_sorted_stems_whatever_the_files(tmp_path):
    stems = [f"frame{i:02d}" for i in range(20)]
    flat = np.zeros((4, 6, 3), np.uint8)
    a, b = tmp_path / "a", tmp_path / "b"
    for stem in stems:  # the same stems, written in another order and in another depth format
        write_pair(a, stem, flat, np.full((4, 6), 1500))
    for stem in reversed(stems):
        write_pair(b, stem, flat, np.full((4, 6), 1.5), ".npy")
    cfg = DataConfig(dataset="folder", root=str(a))
    train, val = get_dataset(cfg, "train"), get_dataset(cfg, "val")
    assert (len(train), len(val)) == (18, 2) and set(train.names) | set(val.names) == set(stems)
    assert set(val.names) == expected_val_stems(stems)
    other = DataConfig(dataset="folder", root=str(b))
    assert get_dataset(other, "val").names == val.names
    assert set(get_dataset(DataConfig(dataset="folder", root=str(a), seed=3), "val").names) == expected_val_stems(stems, seed=3)
    assert get_dataset(cfg, "test").names == stems  # no test list: the whole folder
    assert not list(a.glob("*.txt")) and not (a / "splits").exists()  # without data.val_split_dir nothing is written


def test_a_folder_with_lists_reads_them_relative_to_data_root(tmp_path):
    stems = [f"f{i}" for i in range(10)]
    for stem in stems:
        write_pair(tmp_path, stem, np.zeros((4, 6, 3), np.uint8), np.full((4, 6), 1000))
    (tmp_path / "lists").mkdir()
    (tmp_path / "lists" / "train.txt").write_text("".join(f"rgb/{s}.png depth/{s}.png\n" for s in stems[:8]))
    (tmp_path / "lists" / "test.txt").write_text("".join(f"rgb/{s}.png depth/{s}.png\n" for s in stems[8:]))
    cfg = DataConfig(dataset="folder", root=str(tmp_path), train_list="lists/train.txt", test_list="lists/test.txt", val_fraction=0.25)
    assert sorted(get_dataset(cfg, "train").names + get_dataset(cfg, "val").names) == stems[:8]
    assert get_dataset(cfg, "test").names == stems[8:]


def test_depth_formats_png_scale_float_tiff_npy_and_sparse_zeros(tmp_path):
    depth_m = np.array([[0.0, 1.25, 2.5], [0.0, 0.0, 7.75]])  # zeros: no measurement (sparse LiDAR / ToF)
    flat = np.zeros((2, 3, 3), np.uint8)
    write_pair(tmp_path, "png", flat, depth_m * 256)  # KITTI-style /256, declared below
    write_pair(tmp_path, "tif", flat, depth_m, ".tif")
    write_pair(tmp_path, "npy", flat, depth_m, ".npy")
    frames = get_dataset(DataConfig(dataset="folder", root=str(tmp_path), depth_scale=256.0), "test")
    assert frames.names == ["npy", "png", "tif"]
    for sample in (frames[i] for i in range(3)):
        assert sample.depth.dtype == np.float32 and np.array_equal(sample.depth, depth_m.astype(np.float32)), sample.name


def test_a_16_bit_tiff_and_two_files_of_one_stem_are_refused_in_one_line(tmp_path):
    write_pair(tmp_path, "a", np.zeros((2, 3, 3), np.uint8), np.ones((2, 3)), ".npy")
    Image.fromarray(np.ones((2, 3), np.uint16)).save(tmp_path / "depth" / "a.tif")
    with pytest.raises(DataError, match=r"depth: a.npy and a.tif share a stem; keep one"):
        get_dataset(DataConfig(dataset="folder", root=str(tmp_path)), "test")
    (tmp_path / "depth" / "a.npy").unlink()
    frames = get_dataset(DataConfig(dataset="folder", root=str(tmp_path)), "test")
    with pytest.raises(DataError, match=r"a.tif: a ground-truth TIFF must hold float metres, this one is mode I;16, of no declared unit"):
        frames[0]


def test_a_name_with_a_blank_cannot_be_split_without_a_list(tmp_path):
    for i in range(10):
        write_pair(tmp_path, f"my frame {i}", np.zeros((2, 3, 3), np.uint8), np.ones((2, 3)), ".npy")
    cfg = DataConfig(dataset="folder", root=str(tmp_path))
    assert len(get_dataset(cfg, "test")) == 10  # evaluated whole, nothing is written
    with pytest.raises(DataError, match=r"my frame 0.png: a name with a blank cannot be in a split list; rename it"):
        get_dataset(cfg, "train")


# -- the unit warning ---------------------------------------------------------------------------------


def test_a_folder_in_millimetres_declared_as_metres_warns_once(rgbd_samples, tmp_path, capsys):
    from clipdepth.training.run import Experiment

    root = tmp_path / "mine"
    stems = nyu_folder(rgbd_samples, root)
    run = tmp_path / "run"
    as_metres = load_config("pureclip_folder", [*TINY, f"data.root={root}", "data.depth_scale=1", f"output_dir={run}"])
    Experiment.create(as_metres, check_data=True)
    err = capsys.readouterr().err
    first = sorted(set(stems) - expected_val_stems(stems))[0]  # the unit check reads the training split from its start
    assert err.count("warning:") == 1, err
    (line,) = [line for line in err.splitlines() if "warning:" in line]
    assert line.startswith(f"warning: {root / 'depth' / first}.png: 100% of its depth lies beyond 10 m") and "data.depth_scale=1;" in line
    show = ["data", "show", "--config", "pureclip_folder", f"data.root={root}", "data.depth_scale=1", "--out", str(tmp_path / "s.png")]
    assert main(show) == 0
    assert capsys.readouterr().err.count("data.depth_scale=1;") == 1
    right = load_config("pureclip_folder", [*TINY, f"data.root={root}", f"output_dir={run}"])
    Experiment.create(right, check_data=True)
    assert "warning" not in capsys.readouterr().err


# -- the recipe end to end on real frames --------------------------------------------------------------


def test_pureclip_folder_trains_without_lists_records_its_split_resumes_exactly_and_evaluates(rgbd_samples, tmp_path, capsys):
    from clipdepth.training import train

    root = tmp_path / "mine"
    stems = nyu_folder(rgbd_samples, root)

    def cfg(run: Path, epochs: int):
        return load_config("pureclip_folder", [*TINY, f"data.root={root}", f"output_dir={run}", f"train.max_epochs={epochs}"])

    straight = train(cfg(tmp_path / "straight", 2))
    train(cfg(tmp_path / "resumed", 1))
    train_list, val_list = split_files(tmp_path / "resumed")
    assert train_list.name.startswith("mine.") and ".val0.1.seed0." in train_list.name
    recorded_val = {Path(e.rgb).stem for e in read_split_list(val_list)}
    recorded_train = {Path(e.rgb).stem for e in read_split_list(train_list)}
    assert recorded_val == expected_val_stems(stems) and len(recorded_val) == 2
    assert recorded_train == set(stems) - recorded_val
    log = (tmp_path / "resumed" / "train_log.txt").read_text()
    assert f"2 validation frames held out (data.val_source=held_out), the split recorded in {tmp_path / 'resumed' / 'split'}" in log

    before = val_list.stat().st_mtime_ns  # read back, not drawn again: the resumed run leaves it as it is
    resumed = train(cfg(tmp_path / "resumed", 2), resume=True)
    assert val_list.stat().st_mtime_ns == before
    assert resumed.first_epoch == 2 and resumed.history == straight.history
    weights = [load_file(str(tmp_path / run / "checkpoints" / "last" / "model.safetensors")) for run in ("straight", "resumed")]
    assert weights[0].keys() == weights[1].keys() and all((weights[0][k] == weights[1][k]).all() for k in weights[0])

    model = tmp_path / "resumed" / "model"
    capsys.readouterr()
    saved = tmp_path / "saved"
    assert main(["evaluate", "--checkpoint", str(model), "--out", str(tmp_path / "all"), "--save-predictions", str(saved)]) == 0
    evaluated = json.loads((tmp_path / "all" / "metrics.json").read_text())
    assert evaluated["n_images"] == 20  # no test list: the whole folder
    # the saved maps, scored by `score` against the folder's own depth, give evaluate's numbers
    assert sorted(path.stem for path in saved.glob("*.npy")) == sorted(stems)
    scored = tmp_path / "score" / "metrics.json"
    assert (
        main(["score", "--pred", str(saved), "--gt", str(root / "depth"), "--protocol", evaluated["protocol"], "--json", str(scored)]) == 0
    )
    rescored = json.loads(scored.read_text())
    for metric in ("abs_rel", "sq_rel", "rmse", "rmse_log", "log10", "silog", "d1", "d2", "d3"):
        assert rescored[metric] == pytest.approx(evaluated[metric], rel=1e-6, abs=1e-9), metric
    held_out = ["evaluate", "--checkpoint", str(model), "--split", str(val_list), "--out", str(tmp_path / "held_out")]
    assert main(held_out) == 0
    summary = json.loads((tmp_path / "held_out" / "metrics.json").read_text())
    assert summary["n_images"] == 2 and 0 < summary["abs_rel"] < 10


# -- the shipped NYU and KITTI lists -------------------------------------------------------------------

SHIPPED = {  # name: (lines, lines with ground truth)
    "nyudepthv2_train_files_with_gt.txt": (24231, 24231),
    "nyudepthv2_test_files_with_gt.txt": (654, 654),
    "eigen_train_files_with_gt.txt": (23158, 23158),
    "eigen_test_files_with_gt.txt": (697, 652),
}


def shipped_file(name: str) -> Path:
    return next(p for p in (SHIPPED_LISTS / name, SHIPPED_LISTS / f"{name}.gz") if p.is_file())


@pytest.mark.parametrize("name", SHIPPED)
def test_the_shipped_lists_have_their_known_counts_and_their_readme_says_so(name):
    entries = read_split_list(shipped_file(name))
    assert (len(entries), sum(e.depth is not None for e in entries)) == SHIPPED[name]
    content = shipped_file(name).read_bytes()
    content = gzip.decompress(content) if shipped_file(name).suffix == ".gz" else content
    row = next(line for line in (SHIPPED_LISTS / "README.md").read_text().splitlines() if line.startswith(f"| `{name}"))
    assert f"| {SHIPPED[name][0]:,} |" in row and hashlib.sha256(content).hexdigest() in row


def test_a_wheel_holds_the_shipped_lists():
    """pyproject's package data (globs under src/clipdepth) matches every shipped list and the README."""
    tomllib = pytest.importorskip("tomllib")  # Python 3.11+
    patterns = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["package-data"]["clipdepth"]
    package = ROOT / "src" / "clipdepth"
    files = [p.relative_to(package).as_posix() for p in SHIPPED_LISTS.iterdir()]
    assert len(files) == 5 and all(any(fnmatch.fnmatch(f, pattern) for pattern in patterns) for f in files), files


def test_a_list_name_resolves_under_data_root_first_then_to_the_shipped_list(tmp_path, monkeypatch):
    cfg = DataConfig(dataset="nyu", root=str(tmp_path), test_list="nyudepthv2_test_files_with_gt.txt")
    from clipdepth.data.splits import list_file

    assert list_file(cfg, "test_list") == SHIPPED_LISTS / "nyudepthv2_test_files_with_gt.txt"
    own = tmp_path / "nyudepthv2_test_files_with_gt.txt"
    own.write_text("a.jpg a.png 518.8579\n")  # a list of that name under data.root is the user's, and wins
    assert list_file(cfg, "test_list") == own
    for value in ("lists/nyudepthv2_test_files_with_gt.txt", str(tmp_path / "x" / "eigen_test_files_with_gt.txt")):
        with pytest.raises(ConfigError, match=r"does not exist \(a relative list path is read from data.root; shipped lists: eigen_test"):
            list_file(DataConfig(dataset="nyu", root=str(tmp_path), test_list=value), "test_list")  # a path is never a shipped name
    gz = tmp_path / "mine.txt.gz"
    gz.write_bytes(gzip.compress(b"b.jpg b.png 518.8579\n"))
    assert [e.rgb for e in read_split_list(gz)] == ["b.jpg"]


def layout(root: Path, samples: Path, name: str, frames: list[tuple[str, str]]) -> int:
    """Every file the shipped list ``name`` names, under ``root``: a symbolic link to one of the real
    sample ``frames`` (rgb, depth) in turn. The paths are the standard layout the list expects; the
    pixels are the few real samples standing in for the frames. Returns the number of lines."""
    entries = read_split_list(shipped_file(name))
    for i, entry in enumerate(entries):
        rgb, depth = frames[i % len(frames)]
        for path, target in ((entry.rgb_path(root), rgb), (entry.depth_path(root), depth)):
            if path is not None and not path.exists():
                path.parent.mkdir(parents=True, exist_ok=True)
                path.symlink_to(samples / target)
    return len(entries)


NYU_FRAMES = [("nyu/rgb_00000.jpg", "nyu/sync_depth_00000.png"), ("nyu/rgb_00050.jpg", "nyu/sync_depth_00050.png")]
KITTI_FRAMES = [("kitti/rgb/0000000005.png", "kitti/depth/0000000005.png"), ("kitti/rgb/0000000100.png", "kitti/depth/0000000100.png")]


@pytest.mark.parametrize(
    "recipe, frames, scored, test_list",
    [
        ("pureclip_nyu", NYU_FRAMES, 654, "nyudepthv2_test_files_with_gt.txt"),
        ("pureclip_kitti", KITTI_FRAMES, 652, "eigen_test_files_with_gt.txt"),
    ],
)
def test_the_nyu_and_kitti_recipes_need_only_data_root(rgbd_samples, tmp_path, capsys, recipe, frames, scored, test_list):
    """The recipe's test split opens from the shipped list with data.root alone, as `clipdepth data
    show` opens it. The root holds every path the list names (the 654 or 697-line test list, all
    of it: the dataset refuses a list with missing files), each a link to a real sample frame: the
    test checks where the files are looked for and that they decode, not which frames they are."""
    root = tmp_path / "data"
    layout(root, rgbd_samples, test_list, frames)
    cfg = load_config(recipe, [f"data.root={root}"])
    frames_ = get_dataset(cfg.data, "test")
    assert len(frames_) == scored and frames_.n_listed == SHIPPED[test_list][0]
    sample = frames_[0]
    valid = sample.depth[sample.depth > 0]
    assert sample.image.shape[:2] == sample.depth.shape and 0.1 < np.median(valid) < 80
    out = tmp_path / "sheet.png"
    assert main(["data", "show", "--config", recipe, f"data.root={root}", "-n", "2", "--out", str(out)]) == 0
    assert re.search(rf"2 of the {scored} test frames of {cfg.data.dataset}, protocol {cfg.eval.protocol}", capsys.readouterr().out)
    assert records_split(cfg.data)  # a training run records the held-out split of the shipped training list in its folder


def test_a_shipped_list_splits_as_a_copy_of_it_does_and_nothing_is_written_into_the_package(tmp_path):
    shipped = shipped_file("eigen_train_files_with_gt.txt")  # stored gzipped
    copy = tmp_path / "eigen_train_files_with_gt.txt"
    copy.write_bytes(gzip.decompress(shipped.read_bytes()))
    before = sorted(SHIPPED_LISTS.iterdir())
    _, val = train_val_split(read_split_list(shipped), shipped, None)
    assert sorted(SHIPPED_LISTS.iterdir()) == before
    _, val_of_copy = train_val_split(read_split_list(copy), copy, None)  # a list of the user's: written beside it
    assert len(val) == round(0.1 * 23158) and [e.rgb for e in val] == [e.rgb for e in val_of_copy]
    assert len(list(tmp_path.glob("eigen_train_files_with_gt.*.val0.1.seed0.val.txt"))) == 1
