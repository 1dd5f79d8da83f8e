"""Split lists: the standard lists parse with their known counts; the 9:1 split is fixed."""
from pathlib import Path

import pytest

from clipdepth.data.splits import check_files, read_split_list, train_val_split
from clipdepth.errors import DataError

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
