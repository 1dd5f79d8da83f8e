"""`clipdepth score` end to end on real NYU and KITTI ground truth, and its one-line errors."""

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

import clipdepth
from PIL import Image

from clipdepth.cli.main import main
from clipdepth.evaluation.protocol import PROTOCOLS

SAMPLES = Path(__file__).resolve().parents[2] / "shared" / "data" / "rgbd-samples"
# dataset -> (GT glob, protocol, PNG scale, max depth, evaluation crop written out by hand for the
# GT size: NYU Eigen [45:471, 41:601] at 480x640, KITTI Garg at 375x1242 rows 153..370, cols 44..1196)
DATASETS = {
    "nyu": ("nyu/sync_depth_*.png", "nyu", 1000, 10.0, np.s_[45:471, 41:601]),
    "kitti": ("kitti/depth/*.png", "kitti", 256, 80.0, np.s_[153:371, 44:1197]),
}
JSON_KEYS = [
    "align",
    "pred_kind",
    "abs_rel",
    "sq_rel",
    "rmse",
    "rmse_log",
    "log10",
    "silog",
    "d1",
    "d2",
    "d3",
    "n_images",
    "n_predictions_without_gt",
    "n_gt_without_prediction",
    *(
        PROVENANCE := [  # what was scored and how, and by which clipdepth
            "protocol",
            "predictions",
            "gt",
            "pred_pattern",
            "key",
            "pred_scale",
            "gt_scale",
            "gt_format",
            "kb_crop",
            "clipdepth_version",
        ]
    ),
]


def copy_gt(dataset, tmp_path):
    files = sorted(SAMPLES.glob(DATASETS[dataset][0]))
    if not files:
        pytest.skip(f"real RGB-D samples not found under {SAMPLES} (shared data not checked out)")
    gt_dir = tmp_path / "gt"
    gt_dir.mkdir()
    for path in files:
        shutil.copy(path, gt_dir / path.name)
    return sorted(gt_dir.iterdir())


def raw_depth(path):
    return np.array(Image.open(path)).astype(np.float32)


def run_cli(capsys, *args):
    rc = main(["score", *map(str, args)])
    out, err = capsys.readouterr()
    return rc, out, err


def score(capsys, tmp_path, protocol, *extra):
    json_path = tmp_path / "result.json"
    rc, out, err = run_cli(
        capsys, "--pred", tmp_path / "pred", "--gt", tmp_path / "gt", "--protocol", protocol, "--json", json_path, *extra
    )
    assert rc == 0, err
    assert "abs_rel" in out and "n_images" in out
    result = json.loads(json_path.read_text())
    assert list(result) == JSON_KEYS
    assert (result["protocol"], result["predictions"], result["gt"]) == (protocol, str(tmp_path / "pred"), str(tmp_path / "gt"))
    assert result["clipdepth_version"] == clipdepth.__version__
    return {key: value for key, value in result.items() if key not in PROVENANCE}  # the numbers, to compare runs


def expected_metrics(gt_files, pred_metres, dataset):
    """Mean over images of per-image metrics, with plain numpy: pred clamped at max, strict GT range, crop."""
    _, _, scale, max_depth, crop = DATASETS[dataset]
    per_image = []
    for path, pred in zip(gt_files, pred_metres):
        g = (raw_depth(path) / np.float32(scale)).astype(np.float64)[crop]
        p = np.minimum(pred.astype(np.float64), max_depth)[crop]
        valid = (g > 1e-3) & (g < max_depth)
        g, p = g[valid], p[valid]
        per_image.append(
            {
                "abs_rel": np.mean(np.abs(g - p) / g),
                "sq_rel": np.mean((g - p) ** 2 / g),
                "rmse": np.sqrt(np.mean((g - p) ** 2)),
                "d1": np.mean(np.maximum(g / p, p / g) < 1.25),
            }
        )
    return {name: np.mean([m[name] for m in per_image]) for name in per_image[0]}


def write_scaled_predictions(gt_files, dataset, tmp_path, fmt, factor=1.1):
    """Predictions = factor x GT, as .npy metres or 16-bit PNG at the protocol's scale; returns them in metres."""
    scale = DATASETS[dataset][2]
    pred_dir = tmp_path / "pred"
    pred_dir.mkdir()
    preds = []
    for path in gt_files:
        if fmt == "npy":
            pred = np.float32(factor) * raw_depth(path) / np.float32(scale)
            np.save(pred_dir / f"{path.stem}.npy", pred)
        else:
            raw = np.clip(np.round(factor * raw_depth(path).astype(np.float64)), 0, 65535).astype(np.uint16)
            Image.fromarray(raw).save(pred_dir / f"{path.stem}.png")
            pred = raw / np.float32(scale)
        preds.append(pred)
    return preds


@pytest.mark.parametrize("dataset", ["nyu", "kitti"])
def test_perfect_predictions(capsys, tmp_path, dataset):
    gt_files = copy_gt(dataset, tmp_path)
    write_scaled_predictions(gt_files, dataset, tmp_path, "npy", factor=1.0)
    result = score(capsys, tmp_path, DATASETS[dataset][1])
    assert result["abs_rel"] == 0.0 and result["rmse"] == 0.0
    assert result["d1"] == result["d2"] == result["d3"] == 1.0
    assert result["n_images"] == len(gt_files)


@pytest.mark.parametrize("fmt", ["npy", "png"])
@pytest.mark.parametrize("dataset", ["nyu", "kitti"])
def test_predictions_ten_percent_too_far(capsys, tmp_path, dataset, fmt):
    gt_files = copy_gt(dataset, tmp_path)
    preds = write_scaled_predictions(gt_files, dataset, tmp_path, fmt)
    result = score(capsys, tmp_path, DATASETS[dataset][1])
    expected = expected_metrics(gt_files, preds, dataset)
    for name, value in expected.items():
        assert result[name] == pytest.approx(value, rel=1e-5), name
    # 0.1 exactly where 1.1 g stays under the cap; a little less overall because of the clamp.
    assert 0.09 < result["abs_rel"] <= 0.1 + 1e-6
    assert result["d1"] == 1.0


def test_kb_crop_predictions_are_pasted(capsys, tmp_path):
    gt_files = copy_gt("kitti", tmp_path)
    preds = write_scaled_predictions(gt_files, "kitti", tmp_path, "npy")
    for path, pred in zip(gt_files, preds):
        # top = 375 - 352 = 23, left = (1242 - 1216) // 2 = 13; the Garg crop lies inside.
        np.save(tmp_path / "pred" / f"{path.stem}.npy", pred[23:375, 13:1229])
    result = score(capsys, tmp_path, "kitti", "--kb-crop")
    assert result["abs_rel"] == pytest.approx(expected_metrics(gt_files, preds, "kitti")["abs_rel"], rel=1e-5)

    rc, _, err = run_cli(capsys, "--pred", tmp_path / "pred", "--gt", tmp_path / "gt", "--protocol", "kitti")
    assert rc == 2 and "--kb-crop" in err and "352x1216" in err and "375x1242" in err


def test_lower_resolution_prediction_is_resized(capsys, tmp_path):
    gt_files = copy_gt("nyu", tmp_path)
    preds = write_scaled_predictions(gt_files, "nyu", tmp_path, "npy")
    for path, pred in zip(gt_files, preds):
        np.save(tmp_path / "pred" / f"{path.stem}.npy", pred[::2, ::2])
    result = score(capsys, tmp_path, "nyu")
    assert result["n_images"] == len(gt_files) and 0.05 < result["abs_rel"] < 0.2


def assert_one_line_error(rc, err, *fragments):
    assert rc == 2
    assert "Traceback" not in err
    assert len(err.strip().splitlines()) == 1, err
    for fragment in fragments:
        assert str(fragment) in err


def synthetic_pair(tmp_path, shape=(6, 8), gt=None):
    for folder in ("pred", "gt"):
        (tmp_path / folder).mkdir(exist_ok=True)
    np.save(tmp_path / "gt" / "a.npy", np.full(shape, 2.0) if gt is None else gt)
    np.save(tmp_path / "pred" / "a.npy", np.full(shape, 2.0))


def run_pair(capsys, tmp_path, protocol="synthetic_indoor"):
    """(return code, stderr) of scoring tmp_path/pred against tmp_path/gt."""
    rc, _, err = run_cli(capsys, "--pred", tmp_path / "pred", "--gt", tmp_path / "gt", "--protocol", protocol)
    return rc, err


def test_error_unmatched_stem(capsys, tmp_path):
    gt_files = copy_gt("nyu", tmp_path)
    write_scaled_predictions(gt_files, "nyu", tmp_path, "npy")
    (tmp_path / "pred" / f"{gt_files[1].stem}.npy").unlink()
    np.save(tmp_path / "pred" / "zzz_extra.npy", np.ones((480, 640)))
    assert_one_line_error(
        *run_pair(capsys, tmp_path, "nyu"),
        f"1 prediction without ground truth ({tmp_path / 'pred' / 'zzz_extra.npy'})",
        f"1 ground-truth map without a prediction ({gt_files[1]})",
        "--allow-missing",
    )


def test_error_size_mismatch_that_is_not_a_resize(capsys, tmp_path):
    synthetic_pair(tmp_path)
    np.save(tmp_path / "pred" / "a.npy", np.ones((6, 6)))
    assert_one_line_error(*run_pair(capsys, tmp_path), tmp_path / "pred" / "a.npy", "6x6", "6x8")


def test_error_missing_folder(capsys, tmp_path):
    synthetic_pair(tmp_path)
    missing = tmp_path / "no_such_dir"
    rc, _, err = run_cli(capsys, "--pred", missing, "--gt", tmp_path / "gt", "--protocol", "synthetic_indoor")
    assert_one_line_error(rc, err, missing, "not found")


def test_error_corrupt_gt_png(capsys, tmp_path):
    gt_files = copy_gt("nyu", tmp_path)
    write_scaled_predictions(gt_files, "nyu", tmp_path, "npy")
    gt_files[0].write_bytes(b"\x89PNG\r\n\x1a\n truncated")
    assert_one_line_error(*run_pair(capsys, tmp_path, "nyu"), gt_files[0], "not a readable image")


def test_error_nan_gt(capsys, tmp_path):
    gt = np.full((6, 8), 2.0)
    gt[0, :3] = np.nan
    synthetic_pair(tmp_path, gt=gt)
    assert_one_line_error(*run_pair(capsys, tmp_path), tmp_path / "gt" / "a.npy", "3 NaN values")


def test_error_nyu_crop_needs_480x640(capsys, tmp_path):
    synthetic_pair(tmp_path)
    assert_one_line_error(*run_pair(capsys, tmp_path, "nyu"), tmp_path / "gt" / "a.npy", "480x640")


def test_error_no_valid_pixel(capsys, tmp_path):
    synthetic_pair(tmp_path, gt=np.zeros((6, 8)))
    assert_one_line_error(*run_pair(capsys, tmp_path), tmp_path / "gt", "valid pixel")


def test_predict_side_outputs_are_not_predictions(tmp_path):
    """A `clipdepth predict --side-by-side --uncertainty` folder scores its depth maps only; a stem
    that merely ends like a side output, with no depth map of its own beside it, stays."""
    from clipdepth.evaluation.saved import depth_files

    for stem in ("a", "a_color", "a_side", "a_uncertainty", "b_side"):
        Image.fromarray(np.ones((2, 2), np.uint16)).save(tmp_path / f"{stem}.png")
    assert sorted(depth_files(tmp_path, "predictions")) == ["a", "b_side"]


def test_one_missing_prediction_is_counted_once_beside_nyus_images(capsys, tmp_path):
    """A prepared NYU folder holds rgb_N.png images beside sync_depth_N.png maps. With predictions named
    after the maps and one missing, that one is the only file without a partner: the images are no
    ground truth (they were counted, "unmatched files: 5", and the first image named)."""
    for folder in ("pred", "gt"):
        (tmp_path / folder).mkdir()
    for i in range(4):
        Image.fromarray(np.zeros((6, 8, 3), np.uint8)).save(tmp_path / "gt" / f"rgb_{i:05d}.png")
        Image.fromarray(np.full((6, 8), 2000, np.uint16)).save(tmp_path / "gt" / f"sync_depth_{i:05d}.png")
        if i != 2:
            np.save(tmp_path / "pred" / f"sync_depth_{i:05d}.npy", np.full((6, 8), 2.0, np.float32))
    rc, err = run_pair(capsys, tmp_path)
    missing = tmp_path / "gt" / "sync_depth_00002.png"
    assert_one_line_error(rc, err, f"1 ground-truth map without a prediction ({missing})", "the 3 matched pairs", "--allow-missing")
    assert "rgb_" not in err and "prediction without" not in err


def test_files_without_a_partner_are_counted_per_side(capsys, tmp_path):
    synthetic_pair(tmp_path)
    for stem in ("b", "c"):
        np.save(tmp_path / "pred" / f"{stem}.npy", np.full((6, 8), 2.0))
    np.save(tmp_path / "gt" / "d.npy", np.full((6, 8), 2.0))
    assert_one_line_error(
        *run_pair(capsys, tmp_path),
        f"2 predictions without ground truth (first: {tmp_path / 'pred' / 'b.npy'}), "
        f"1 ground-truth map without a prediction ({tmp_path / 'gt' / 'd.npy'})",
        "the 1 matched pairs only (--allow-missing)",
    )


def write_npy_folder(folder, maps):
    folder.mkdir(parents=True)
    for stem, depth in maps.items():
        np.save(folder / f"{stem}.npy", np.asarray(depth, np.float32))


def test_allow_missing_scores_exactly_the_matched_pairs(capsys, tmp_path):
    rng = np.random.default_rng(0)
    gt = {stem: rng.uniform(0.5, 9.0, (6, 8)) for stem in "abc"}
    pred = {stem: rng.uniform(0.5, 9.0, (6, 8)) for stem in "abe"}
    write_npy_folder(tmp_path / "gt", gt)
    write_npy_folder(tmp_path / "pred", {s: pred[s] for s in "abe"})  # c has no prediction, e no GT
    rc, _, err = run_cli(
        capsys,
        "--pred",
        tmp_path / "pred",
        "--gt",
        tmp_path / "gt",
        "--protocol",
        "synthetic_indoor",
        "--json",
        tmp_path / "result.json",
        "--allow-missing",
    )
    assert rc == 0, err
    result = json.loads((tmp_path / "result.json").read_text())
    both = tmp_path / "both"
    write_npy_folder(both / "gt", {s: gt[s] for s in "ab"})  # a folder of only the matched pairs
    write_npy_folder(both / "pred", {s: pred[s] for s in "ab"})
    alone = score(capsys, both, "synthetic_indoor")
    assert result["n_images"] == 2
    assert {k: v for k, v in result.items() if not k.endswith(("_gt", "_prediction")) and k not in PROVENANCE} == {
        k: v for k, v in alone.items() if not k.endswith(("_gt", "_prediction"))
    }
    assert (result["n_predictions_without_gt"], result["n_gt_without_prediction"]) == (1, 1)
    assert (alone["n_predictions_without_gt"], alone["n_gt_without_prediction"]) == (0, 0)
    # scored, and said on stderr: each side's count and file
    assert (
        f"left out 1 prediction without ground truth ({tmp_path / 'pred' / 'e.npy'}), 1 ground-truth map "
        f"without a prediction ({tmp_path / 'gt' / 'c.npy'}); scored the 2 matched pairs (--allow-missing)"
    ) in err


# Two hand-made images: GT 2 m and 4 m; predictions 2.25 m and 3 m (millimetres 2250 and 3000, exact
# in float32 after / 1000). Per image AbsRel 0.125 and 0.25, SqRel 0.03125 and 0.25, RMSE 0.25 and
# 1, d1 1 and 0 (4 / 3 > 1.25), d2 1 and 1.
HAND_GT = {"a": 2.0, "b": 4.0}
HAND_PRED_MM = {"a": 2250, "b": 3000}
HAND_METRICS = {"abs_rel": 0.1875, "sq_rel": 0.140625, "rmse": 0.625, "d1": 0.5, "d2": 1.0, "d3": 1.0, "n_images": 2}


@pytest.mark.parametrize(
    ("fmt", "protocol", "read_scale"),
    [
        ("npy", "synthetic_indoor", 1),  # millimetres in a .npy, taken as metres
        ("png", "synthetic_outdoor", 256),  # a PNG without a declared scale, at the protocol's GT scale
    ],
)
def test_millimetre_predictions_are_refused_until_their_scale_is_given(capsys, tmp_path, fmt, protocol, read_scale):
    write_npy_folder(tmp_path / "gt", {s: np.full((4, 6), v) for s, v in HAND_GT.items()})
    (tmp_path / "pred").mkdir()
    for stem, mm in HAND_PRED_MM.items():
        if fmt == "npy":
            np.save(tmp_path / "pred" / f"{stem}.npy", np.full((4, 6), mm, np.float32))
        else:
            Image.fromarray(np.full((4, 6), mm, np.uint16)).save(tmp_path / "pred" / f"{stem}.png")
    json_path = tmp_path / "result.json"
    rc, _, err = run_cli(capsys, "--pred", tmp_path / "pred", "--gt", tmp_path / "gt", "--protocol", protocol, "--json", json_path)
    read_as = "read as metres" if read_scale == 1 else f"read at {read_scale} values per metre"
    assert_one_line_error(
        rc,
        err,
        tmp_path / "pred" / f"a.{fmt}",
        f"look like millimetres {read_as}",
        "2 of 2 predictions",
        "pred_scale 1000",
        f"or pred_scale {read_scale} to take",
        "(--pred-scale)",
    )
    assert not json_path.exists()  # nothing written from values in the wrong unit

    # a given scale states the unit, so nothing is guessed: the scale they were read at scores them as read
    mm_as_read = {s: np.float32(mm) / np.float32(read_scale) for s, mm in HAND_PRED_MM.items()}
    result = score(capsys, tmp_path, protocol, "--overwrite", "--pred-scale", str(read_scale))
    cap = PROTOCOLS[protocol].max_depth
    expected = np.mean([abs(min(mm_as_read[s], cap) - g) / g for s, g in HAND_GT.items()])
    assert result["abs_rel"] == pytest.approx(expected)

    result = score(capsys, tmp_path, protocol, "--overwrite", "--pred-scale", "1000")
    for name, value in HAND_METRICS.items():
        assert result[name] == value, name
    metres = tmp_path / "metres"
    write_npy_folder(metres / "pred", {s: np.full((4, 6), mm / np.float32(1000)) for s, mm in HAND_PRED_MM.items()})
    shutil.copytree(tmp_path / "gt", metres / "gt")
    assert score(capsys, metres, protocol) == result  # the same numbers as predictions in metres


def test_a_prediction_near_no_unit_is_refused_without_naming_one(capsys, tmp_path):
    """Predictions 20 times the ground truth are 5 times from centimetres: refused with how far off
    they are, not told to take pred_scale 100."""
    write_npy_folder(tmp_path / "gt", {s: np.full((4, 6), v) for s, v in HAND_GT.items()})
    write_npy_folder(tmp_path / "pred", {s: np.full((4, 6), 20 * v) for s, v in HAND_GT.items()})
    rc, err = run_pair(capsys, tmp_path)
    assert_one_line_error(
        rc,
        err,
        f"{tmp_path / 'pred' / 'a.npy'}: its values, read as metres, are 20 times the ground truth's",
        "2 of 2 predictions",
        "give pred_scale, the values per metre they are in",
        "or pred_scale 1 to take the values as read (--pred-scale)",
    )
    assert "centimetres" not in err and "pred_scale 100" not in err


def test_score_reads_png_headers_whatever_the_image_size(capsys, tmp_path, monkeypatch):
    """What score reads from a PNG's header (whether a prediction declares its scale, whether a
    ground-truth-side PNG is an image) is read as depth maps are, without Pillow's decompression-bomb
    guard (a DecompressionBombError traceback for a large PNG)."""
    from clipdepth.io.depth_io import write_depth_png

    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 10)  # Pillow refuses beyond twice this: 6 x 8 = 48 > 20
    for folder in ("pred", "gt"):
        (tmp_path / folder).mkdir()
    Image.fromarray(np.zeros((6, 8, 3), np.uint8)).save(tmp_path / "gt" / "rgb_00000.png")  # NYU's image beside
    write_depth_png(tmp_path / "gt" / "sync_depth_00000.png", np.full((6, 8), 2.0), 1000.0)
    write_depth_png(tmp_path / "pred" / "sync_depth_00000.png", np.full((6, 8), 2.5), 1000.0)
    result = score(capsys, tmp_path, "synthetic_indoor")
    assert (result["abs_rel"], result["n_images"]) == (0.25, 1)
    assert Image.MAX_IMAGE_PIXELS == 10  # Pillow's own setting is left as it was


def test_analyze_refuses_millimetre_predictions_too(capsys, tmp_path):
    write_npy_folder(tmp_path / "gt", {s: np.full((4, 6), v) for s, v in HAND_GT.items()})
    write_npy_folder(tmp_path / "pred", {s: np.full((4, 6), mm) for s, mm in HAND_PRED_MM.items()})
    out = tmp_path / "analysis"
    rc = main(
        ["analyze", "--pred", str(tmp_path / "pred"), "--gt", str(tmp_path / "gt"), "--protocol", "synthetic_indoor", "--out", str(out)]
    )
    err = capsys.readouterr().err
    assert_one_line_error(rc, err, tmp_path / "pred" / "a.npy", "look like millimetres", "--pred-scale")
    assert not out.exists() or not any(out.iterdir())


@pytest.mark.parametrize(
    ("ratio", "read_scale", "unit"),
    [
        (1.9, 1.0, None),
        (0.6, 1.0, None),
        (8.0, 1.0, None),  # a poor model, in metres
        (1125.0, 1.0, 1000.0),
        (750.0, 1.0, 1000.0),
        (110.0, 1.0, 100.0),  # .npy
        (1000 / 256, 256.0, 1000.0),
        (0.1, 1000.0, 100.0),
        (2.1, 256.0, None),  # PNGs read at the protocol's scale
        # beyond 10x and near no unit (over 1.5x from each): the values per metre that would bring the medians
        # together, no unit (5000 is 5x millimetres, 20 is 5x centimetres, 12000 is 12x millimetres)
        (5000.0, 1.0, 5000.0),
        (20.0, 1.0, 20.0),
        (12.0, 1000.0, 12000.0),
    ],
)
def test_unit_mismatch(ratio, read_scale, unit):
    from clipdepth.evaluation.saved import unit_mismatch

    assert unit_mismatch(ratio, read_scale) == unit
