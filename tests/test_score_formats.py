"""`clipdepth score` on what depth models write: each prediction file type read back to the floats
written, name patterns of Depth Anything V2, Marigold and Depth Pro folders, alignment and prediction
kinds end to end, and the JSON and per_image.csv that say how the numbers were made."""

import csv
import json
import struct
import sys

import numpy as np
import pytest
from PIL import Image, PngImagePlugin

from clipdepth.cli.main import main
from clipdepth.errors import ConfigError, DataError
from clipdepth.evaluation.metrics import METRIC_NAMES
from clipdepth.evaluation.protocol import get_protocol, score_pair
from clipdepth.evaluation.saved import match_files, prediction_files
from clipdepth.io.depth_io import read_depth, read_depth_array

PROTOCOL = get_protocol("synthetic_indoor")  # 0.001 < gt < 10 m, no crop
# Values whose float32 forms are not round numbers, negative and zero included: read back bit for bit.
VALUES = np.array([[1 / 3, 2.5, 9.75], [0.0, -1.25, 7.1]], np.float32)
HALF_VALUES = np.array([[0.333251953125, 2.5, 9.75], [0.0, -1.25, 7.1015625]], np.float16)  # exact in float16


def tiff_bytes(array):
    """A baseline little-endian TIFF of one uncompressed strip holding a float32 or float16 (H, W)
    array (SampleFormat 3 = IEEE float), written by hand so that no reader's own writer is trusted."""
    array = np.ascontiguousarray(array, array.dtype.newbyteorder("<"))
    height, width = array.shape
    data = array.tobytes()
    tags = [(256, width), (257, height), (258, array.dtype.itemsize * 8), (259, 1), (262, 1), (273, None), (277, 1)]
    tags += [(278, height), (279, len(data)), (339, 3)]
    offset = 8 + 2 + 12 * len(tags) + 4  # the pixels follow the one directory
    out = b"II*\x00" + struct.pack("<IH", 8, len(tags))
    for tag, value in tags:
        kind, packed = (
            (4, struct.pack("<I", offset))
            if tag == 273
            else (4, struct.pack("<I", value))
            if tag == 279
            else (3, struct.pack("<HH", value, 0))
        )
        out += struct.pack("<HHI", tag, kind, 1) + packed
    return out + struct.pack("<I", 0) + data


def one_line(excinfo, *fragments):
    message = str(excinfo.value)
    assert "\n" not in message
    for fragment in fragments:
        assert str(fragment) in message, message


# -- each file type read back --------------------------------------------------------------------


def test_npy_and_npz_read_back_exactly(tmp_path):
    np.save(tmp_path / "a.npy", VALUES)
    np.savez(tmp_path / "one.npz", depth=VALUES)  # Depth Pro writes savez_compressed(depth=...)
    np.savez_compressed(tmp_path / "two.npz", depth=VALUES, focallength_px=np.float32(500.0))
    np.testing.assert_array_equal(read_depth_array(tmp_path / "a.npy"), VALUES)
    np.testing.assert_array_equal(read_depth_array(tmp_path / "one.npz"), VALUES)  # the one array it holds
    np.testing.assert_array_equal(read_depth_array(tmp_path / "two.npz", key="depth"), VALUES)
    np.testing.assert_array_equal(read_depth(tmp_path / "two.npz", 1.0, prediction=True, key="depth"), VALUES)


def test_an_npz_of_several_arrays_needs_a_key_and_names_them(tmp_path):
    path = tmp_path / "two.npz"
    np.savez(path, depth=VALUES, confidence=VALUES)
    with pytest.raises(DataError) as excinfo:
        read_depth_array(path)
    one_line(excinfo, path, "holds 2 arrays (confidence, depth)", "key")
    assert excinfo.value.setting == "key"
    with pytest.raises(DataError) as excinfo:
        read_depth_array(path, key="pred")
    one_line(excinfo, path, "no array 'pred'", "confidence, depth")


def test_float32_tiff_reads_back_exactly(tmp_path):
    (tmp_path / "hand.tif").write_bytes(tiff_bytes(VALUES))
    Image.fromarray(VALUES).save(tmp_path / "pillow.tiff", compression="tiff_deflate")  # as a model's script might
    for name in ("hand.tif", "pillow.tiff"):
        depth = read_depth_array(tmp_path / name)
        assert depth.dtype == np.float32
        np.testing.assert_array_equal(depth, VALUES)


def test_float16_tiff_without_tifffile_is_one_line(tmp_path, monkeypatch):
    path = tmp_path / "half.tif"
    path.write_bytes(tiff_bytes(HALF_VALUES))
    monkeypatch.setitem(sys.modules, "tifffile", None)  # as where it is not installed: Pillow cannot decode float16
    with pytest.raises(DataError) as excinfo:
        read_depth_array(path)
    one_line(excinfo, path, "a float16 TIFF needs the tifffile package", "or save float32")


def test_float16_tiff_reads_back_exactly_through_tifffile(tmp_path):
    pytest.importorskip("tifffile", reason="tifffile is not installed (the refusal is tested above)")
    path = tmp_path / "half.tif"
    path.write_bytes(tiff_bytes(HALF_VALUES))
    np.testing.assert_array_equal(read_depth_array(path), HALF_VALUES.astype(np.float32))


def test_16bit_png_reads_at_its_declared_scale(tmp_path):
    raw = np.array([[0, 1, 333], [2500, 65535, 7100]], np.uint16)
    text = PngImagePlugin.PngInfo()
    text.add_text("depth_scale", "256.0")  # written by hand, as clipdepth's writer does
    Image.fromarray(raw).save(tmp_path / "p.png", pnginfo=text)
    expected = raw.astype(np.float32) / np.float32(256.0)
    np.testing.assert_array_equal(read_depth(tmp_path / "p.png", 1000.0, prediction=True), expected)


def test_exr_reads_back_exactly(tmp_path):
    OpenEXR = pytest.importorskip("OpenEXR", reason="OpenEXR is not installed (the exr extra; the refusal is tested below)")
    header = {"compression": OpenEXR.ZIP_COMPRESSION, "type": OpenEXR.scanlineimage}
    with OpenEXR.File(header, {"Z": VALUES}) as exr:
        exr.write(str(tmp_path / "float.exr"))
    with OpenEXR.File(header, {"Y": HALF_VALUES}) as exr:
        exr.write(str(tmp_path / "half.exr"))
    with OpenEXR.File(header, {"Z": VALUES, "A": np.ones_like(VALUES)}) as exr:
        exr.write(str(tmp_path / "two.exr"))
    np.testing.assert_array_equal(read_depth_array(tmp_path / "float.exr"), VALUES)
    np.testing.assert_array_equal(read_depth_array(tmp_path / "half.exr"), HALF_VALUES.astype(np.float32))
    np.testing.assert_array_equal(read_depth_array(tmp_path / "two.exr", key="Z"), VALUES)
    with pytest.raises(DataError) as excinfo:
        read_depth_array(tmp_path / "two.exr")
    one_line(excinfo, "holds 2 channels (A, Z)")


def test_exr_without_its_reader_is_one_line(tmp_path, monkeypatch):
    path = tmp_path / "d.exr"
    path.write_bytes(b"v/1\x01")  # the file is there; what is missing is the package
    monkeypatch.setitem(sys.modules, "OpenEXR", None)
    with pytest.raises(DataError) as excinfo:
        read_depth_array(path)
    one_line(excinfo, path, 'pip install "clipdepth[exr]"')


# -- name patterns -------------------------------------------------------------------------------

STEMS = ("0001", "0002")


def _gt_folder(tmp_path):
    gt = tmp_path / "gt"
    gt.mkdir()
    for stem in STEMS:
        np.save(gt / f"{stem}.npy", np.full((4, 6), 2.0, np.float32))
    return gt


@pytest.mark.parametrize(
    ("pattern", "written", "others"),
    [
        # Depth Anything V2 metric_depth/run.py --save-numpy: the raw metres beside a colour <stem>.png
        ("{stem}_raw_depth_meter.npy", "{}_raw_depth_meter.npy", ["{}.png"]),
        ("{stem}_depth.npy", "{}_depth.npy", []),  # Marigold's script/depth/run.py, its depth_npy folder
        ("{stem}.npz", "{}.npz", ["{}.jpg"]),  # Depth Pro's depth-pro-run: depth=... beside a colour <stem>.jpg
    ],
)
def test_a_pattern_maps_each_gt_stem_to_its_prediction(tmp_path, pattern, written, others):
    gt = _gt_folder(tmp_path)
    pred = tmp_path / "pred"
    pred.mkdir()
    for stem in STEMS:
        (np.savez if written.endswith(".npz") else np.save)(pred / written.format(stem), np.full((4, 6), 2.0, np.float32))
        for other in others:  # colour images the models write beside: not predictions
            Image.fromarray(np.zeros((4, 6, 3), np.uint8)).save(pred / other.format(stem))
    assert prediction_files(pred, pattern) == {stem: pred / written.format(stem) for stem in STEMS}
    matched = match_files(pred, gt, pred_pattern=pattern)
    assert matched.pairs == [(pred / written.format(stem), gt / f"{stem}.npy") for stem in STEMS]
    assert matched.preds_alone == [] and matched.gts_alone == []


def test_files_a_pattern_names_count_and_others_do_not(tmp_path):
    gt = _gt_folder(tmp_path)
    pred = tmp_path / "pred"
    pred.mkdir()
    for stem in (*STEMS, "0003"):  # 0003 is a prediction without ground truth
        np.save(pred / f"{stem}_depth.npy", np.full((4, 6), 2.0, np.float32))
    np.save(pred / "0004.npy", np.ones((4, 6), np.float32))  # not named as the pattern says: ignored
    matched = match_files(pred, gt, allow_missing=True, pred_pattern="{stem}_depth.npy")
    assert [p.name for p, _ in matched.pairs] == ["0001_depth.npy", "0002_depth.npy"]
    assert matched.preds_alone == [pred / "0003_depth.npy"] and matched.gts_alone == []


@pytest.mark.parametrize(
    ("pattern", "fragment"),
    [
        ("depth.npy", "must hold {stem} once"),
        ("{stem}_{stem}.npy", "must hold {stem} once"),
        ("{stem}.jpg", "must end in a depth file type"),
    ],
)
def test_a_bad_pattern_is_one_line(tmp_path, pattern, fragment):
    with pytest.raises(ConfigError) as excinfo:
        prediction_files(tmp_path, pattern)
    one_line(excinfo, repr(pattern), fragment)
    assert excinfo.value.setting == "pred_pattern"


# -- end to end through the CLI ------------------------------------------------------------------


def run_cli(capsys, *args):
    rc = main(["score", *map(str, args)])
    out, err = capsys.readouterr()
    return rc, out, err


def scene(seed, shape=(6, 8)):
    gt = np.random.default_rng(seed).uniform(0.5, 9.0, shape).astype(np.float32)
    gt[0, :2] = 0.0  # missing depth
    return gt


def write_folder(folder, maps, name="{}.npy"):
    folder.mkdir(parents=True)
    for stem, array in maps.items():
        np.save(folder / name.format(stem), np.asarray(array, np.float32))


def score_json(capsys, pred, gt, json_path, *extra):
    rc, out, err = run_cli(capsys, "--pred", pred, "--gt", gt, "--protocol", "synthetic_indoor", "--json", json_path, *extra)
    assert rc == 0, err
    return json.loads(json_path.read_text()), out


def test_lsq_scores_an_affine_prediction_as_perfect_and_says_so(capsys, tmp_path):
    gts = {s: scene(i) for i, s in enumerate("abc")}
    write_folder(tmp_path / "gt", gts)
    # Depth Anything V2's layout, the values an affine transform of the truth (relative depth)
    write_folder(tmp_path / "pred", {s: (g - 0.4) / 2.5 for s, g in gts.items()}, "{}_raw_depth_meter.npy")
    result, out = score_json(
        capsys,
        tmp_path / "pred",
        tmp_path / "gt",
        tmp_path / "r" / "r.json",
        "--pred-pattern",
        "{stem}_raw_depth_meter.npy",
        "--align",
        "lsq",
    )
    assert (result["align"], result["pred_kind"], result["n_images"]) == ("lsq", "depth", 3)
    assert result["abs_rel"] == pytest.approx(0.0, abs=1e-6) and result["d1"] == 1.0
    assert "alignment lsq" in out.splitlines()[0] and "median scaling" not in out
    # unaligned, the same files are far off: the JSON says which numbers are which
    plain, out = score_json(
        capsys, tmp_path / "pred", tmp_path / "gt", tmp_path / "plain" / "r.json", "--pred-pattern", "{stem}_raw_depth_meter.npy"
    )
    assert plain["align"] == "none" and plain["abs_rel"] > 0.3 and "alignment none" in out


def test_per_image_csv_holds_score_pair_of_each_image(capsys, tmp_path):
    gts = {s: scene(10 + i) for i, s in enumerate("abc")}
    gts["d"] = np.zeros((6, 8), np.float32)  # no valid pixel: a row without metrics
    noise = np.random.default_rng(20)
    preds = {s: 3.0 * g + 0.5 + noise.uniform(-0.3, 0.3, g.shape) for s, g in gts.items()}
    write_folder(tmp_path / "gt", gts)
    write_folder(tmp_path / "pred", preds)
    result, _ = score_json(capsys, tmp_path / "pred", tmp_path / "gt", tmp_path / "out" / "r.json", "--align", "lsq")
    with open(tmp_path / "out" / "per_image.csv", newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert [row["name"] for row in rows] == ["a", "b", "c", "d"]
    assert list(rows[0]) == ["name", *METRIC_NAMES, "n_valid"]
    for row in rows:
        gt = gts[row["name"]]
        expected = score_pair(np.float32(preds[row["name"]]), gt, PROTOCOL, align="lsq")
        assert int(row["n_valid"]) == int(np.count_nonzero((gt > 0.001) & (gt < 10.0)))
        if expected is None:
            assert row["name"] == "d" and all(row[m] == "" for m in METRIC_NAMES) and row["n_valid"] == "0"
            continue
        assert {m: float(row[m]) for m in METRIC_NAMES} == {m: expected[m] for m in METRIC_NAMES}  # full precision
    assert result["n_images"] == 3
    assert result["abs_rel"] == pytest.approx(np.mean([float(row["abs_rel"]) for row in rows[:3]]), rel=1e-12)

    # an existing per_image.csv is an earlier run's: refused, as the JSON is, unless --overwrite
    (tmp_path / "out" / "r.json").unlink()
    rc, _, err = run_cli(
        capsys,
        "--pred",
        tmp_path / "pred",
        "--gt",
        tmp_path / "gt",
        "--protocol",
        "synthetic_indoor",
        "--json",
        tmp_path / "out" / "r.json",
    )
    assert rc == 2 and "per_image.csv: exists" in err and "(--overwrite)" in err and not (tmp_path / "out" / "r.json").exists()


def test_a_disparity_folder_scores_as_the_equivalent_depth_folder(capsys, tmp_path):
    gts = {s: scene(30 + i) for i, s in enumerate("ab")}
    noise = np.random.default_rng(31)
    depth = {s: g * noise.uniform(0.8, 1.25, g.shape) + 0.1 for s, g in gts.items()}
    write_folder(tmp_path / "gt", gts)
    write_folder(tmp_path / "depth", depth)
    write_folder(tmp_path / "disparity", {s: 4.0 / d + 0.05 for s, d in depth.items()})  # affine in inverse depth
    write_folder(tmp_path / "inverse", {s: 1.0 / d for s, d in depth.items()})  # 1/metres
    as_depth, _ = score_json(capsys, tmp_path / "depth", tmp_path / "gt", tmp_path / "d" / "r.json", "--align", "lsq-disparity")
    as_disparity, out = score_json(
        capsys, tmp_path / "disparity", tmp_path / "gt", tmp_path / "p" / "r.json", "--pred-kind", "disparity", "--align", "lsq-disparity"
    )
    assert "predictions read as disparity" in out
    assert (as_disparity["align"], as_disparity["pred_kind"]) == ("lsq-disparity", "disparity")
    for name in METRIC_NAMES:
        assert as_disparity[name] == pytest.approx(as_depth[name], rel=1e-5, abs=1e-7), name
    # 1/metres, no alignment: the same numbers as the metres themselves, no unit check in the way
    plain, _ = score_json(capsys, tmp_path / "depth", tmp_path / "gt", tmp_path / "m" / "r.json")
    inverse, _ = score_json(capsys, tmp_path / "inverse", tmp_path / "gt", tmp_path / "i" / "r.json", "--pred-kind", "inverse")
    for name in METRIC_NAMES:
        assert inverse[name] == pytest.approx(plain[name], rel=1e-5, abs=1e-7), name
    # a disparity has no metres without alignment: refused before any file is read
    rc, _, err = run_cli(
        capsys, "--pred", tmp_path / "disparity", "--gt", tmp_path / "gt", "--protocol", "synthetic_indoor", "--pred-kind", "disparity"
    )
    assert rc == 2 and len(err.strip().splitlines()) == 1 and "--align lsq-disparity" in err


def test_median_scaling_is_align_median_and_no_unit_is_checked_when_aligned(capsys, tmp_path):
    gts = {s: scene(40 + i) for i, s in enumerate("ab")}
    write_folder(tmp_path / "gt", gts)
    write_folder(tmp_path / "pred", {s: 1000.0 * g for s, g in gts.items()})  # millimetres, or a relative model's units
    rc, _, err = run_cli(capsys, "--pred", tmp_path / "pred", "--gt", tmp_path / "gt", "--protocol", "synthetic_indoor")
    assert rc == 2 and "look like millimetres" in err  # metric depth: the unit is checked
    with pytest.warns(FutureWarning, match=r"'--median-scaling' is a deprecated clipdepth name, read as '--align median'.*0\.4\.0") as said:
        legacy, out = score_json(capsys, tmp_path / "pred", tmp_path / "gt", tmp_path / "legacy" / "r.json", "--median-scaling")
    assert len(said) == 1
    aligned, _ = score_json(capsys, tmp_path / "pred", tmp_path / "gt", tmp_path / "aligned" / "r.json", "--align", "median")
    assert legacy == aligned and legacy["align"] == "median" and legacy["abs_rel"] == pytest.approx(0.0, abs=1e-6)
    assert "alignment median" in out


def test_an_npz_folder_with_several_arrays_names_them_and_key_picks_one(capsys, tmp_path):
    gts = {s: scene(50 + i) for i, s in enumerate("ab")}
    write_folder(tmp_path / "gt", gts)
    (tmp_path / "pred").mkdir()
    for stem, gt in gts.items():
        np.savez(tmp_path / "pred" / f"{stem}.npz", depth=np.where(gt > 0, gt, 5.0), confidence=np.ones_like(gt))
    args = ["--pred", tmp_path / "pred", "--gt", tmp_path / "gt", "--protocol", "synthetic_indoor"]
    rc, _, err = run_cli(capsys, *args)
    assert rc == 2 and len(err.strip().splitlines()) == 1
    assert f"{tmp_path / 'pred' / 'a.npz'}: holds 2 arrays (confidence, depth)" in err and err.strip().endswith("(--key)")
    result, _ = score_json(
        capsys, tmp_path / "pred", tmp_path / "gt", tmp_path / "r" / "r.json", "--key", "depth", "--pred-pattern", "{stem}.npz"
    )
    assert result["abs_rel"] == 0.0 and result["n_images"] == 2
