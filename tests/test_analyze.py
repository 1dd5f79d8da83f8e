"""Error-vs-depth analysis: per-bin numbers worked by hand, accumulation, and `clipdepth analyze`."""

import json

import numpy as np
import pytest

import clipdepth.cli.main
from clipdepth.evaluation.analysis import DepthErrorAccumulator, depth_bin_stats, stats_to_json
from clipdepth.evaluation.protocol import get_protocol, postprocess, valid_mask

EDGES = [0.0, 1.0, 2.0, 3.0]


def test_bin_stats_hand_worked():
    # bin [0,1): pred = gt + 1 -> mean 1, std 0; bin [1,2): pred = gt - 2 -> mean -2, std 0;
    # bin [2,3]: errors {+1, -1} -> mean 0, population std sqrt(((1-0)^2 + (-1-0)^2) / 2) = 1.
    gt = np.array([0.2, 0.5, 0.9, 1.1, 1.5, 2.5, 2.6])
    pred = np.array([1.2, 1.5, 1.9, -0.9, -0.5, 3.5, 1.6])
    stats = depth_bin_stats(pred, gt, EDGES)
    np.testing.assert_array_equal(stats["count"], [3, 2, 2])
    np.testing.assert_allclose(stats["mean_error"], [1.0, -2.0, 0.0], atol=1e-12)
    np.testing.assert_allclose(stats["std_error"], [0.0, 0.0, 1.0], atol=1e-6)
    np.testing.assert_allclose(stats["centers"], [0.5, 1.5, 2.5])
    np.testing.assert_array_equal(stats["edges"], EDGES)


def test_bin_stats_edges_empty_bins_and_outside():
    # 1.0 goes to [1,2) (left-closed); 3.0 to the last bin (closed on the right); 3.5 and -1 ignored.
    gt = np.array([1.0, 3.0, 3.5, -1.0])
    pred = np.array([1.5, 2.0, 0.0, 0.0])
    stats = depth_bin_stats(pred, gt, EDGES)
    np.testing.assert_array_equal(stats["count"], [0, 1, 1])
    assert np.isnan(stats["mean_error"][0]) and np.isnan(stats["std_error"][0])
    np.testing.assert_allclose(stats["mean_error"][1:], [0.5, -1.0])
    as_json = stats_to_json(stats)
    assert as_json["mean_error"][0] is None and as_json["count"] == [0, 1, 1]
    json.dumps(as_json, allow_nan=False)  # valid JSON, no NaN tokens


def test_std_matches_numpy_population_std():
    rng = np.random.default_rng(0)
    gt = rng.uniform(0, 3, 5000)
    pred = gt + rng.normal(0.3, 0.7, gt.size)
    stats = depth_bin_stats(pred, gt, EDGES)
    for i in range(3):
        err = (pred - gt)[(gt >= EDGES[i]) & (gt < EDGES[i + 1])]
        assert stats["count"][i] == err.size
        np.testing.assert_allclose(stats["mean_error"][i], err.mean(), rtol=1e-10)
        np.testing.assert_allclose(stats["std_error"][i], err.std(ddof=0), rtol=1e-9)


def test_accumulator_equals_one_pass_over_concatenation():
    rng = np.random.default_rng(1)
    edges, hist_edges = np.linspace(0, 10, 21), np.linspace(0, 10, 51)
    images = [(rng.uniform(0.1, 9.9, n), rng.uniform(0.1, 9.9, n)) for n in (700, 1300)]
    acc = DepthErrorAccumulator(edges, hist_edges)
    for pred, gt in images:
        acc.add(pred, gt)
    acc.add(np.array([]), np.array([]))  # no valid pixel: skipped
    pred_all = np.concatenate([p for p, _ in images])
    gt_all = np.concatenate([g for _, g in images])
    one_pass = depth_bin_stats(pred_all, gt_all, edges)
    got = acc.stats()
    np.testing.assert_array_equal(got["count"], one_pass["count"])
    np.testing.assert_allclose(got["mean_error"], one_pass["mean_error"], rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(got["std_error"], one_pass["std_error"], rtol=1e-9, atol=1e-12)
    joint, _, _ = np.histogram2d(gt_all, pred_all, bins=[hist_edges, hist_edges])
    np.testing.assert_array_equal(acc.joint, joint)
    np.testing.assert_array_equal(acc.gt_histogram(), np.histogram(gt_all, hist_edges)[0])
    assert (acc.n_images, acc.n_skipped, acc.n_pixels) == (2, 1, 2000)


@pytest.fixture
def analyze_cmd(monkeypatch):
    monkeypatch.setitem(clipdepth.cli.main.SUBCOMMANDS, "analyze", "clipdepth.cli.analyze")

    def run(capsys, *args):
        rc = clipdepth.cli.main.main(["analyze", *map(str, args)])
        out, err = capsys.readouterr()
        return rc, out, err

    return run


def _write_pairs(tmp_path):
    rng = np.random.default_rng(2)
    pred_dir, gt_dir = tmp_path / "pred", tmp_path / "gt"
    pred_dir.mkdir()
    gt_dir.mkdir()
    pairs = []
    for i in range(3):
        gt = rng.uniform(0.5, 9.5, (24, 32)).astype(np.float32)
        gt[:2] = 0.0  # missing depth: invalid
        gt[2, :4] = 12.0  # beyond max_depth: invalid
        pred = gt + rng.normal(0, 0.2 * (i + 1), gt.shape).astype(np.float32)
        if i == 2:
            pred = pred[::2, ::2]  # half resolution: resized as `score` does
        np.save(gt_dir / f"frame{i}.npy", gt)
        np.save(pred_dir / f"frame{i}.npy", pred)
        pairs.append((pred, gt))
    return pred_dir, gt_dir, pairs


def test_cli_writes_figures_and_json(tmp_path, capsys, analyze_cmd):
    pred_dir, gt_dir, pairs = _write_pairs(tmp_path)
    out = tmp_path / "analysis"
    rc, stdout, err = analyze_cmd(
        capsys, "--predictions", pred_dir, "--gt", gt_dir, "--protocol", "synthetic_indoor", "--out", out, "--bins", 10
    )
    assert rc == 0, err
    for name in ("joint_histogram.png", "error_spread.png", "gt_histogram.png"):
        data = (out / name).read_bytes()
        assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 5000
    assert sorted(p.name for p in out.iterdir()) == [
        "analysis.json",
        "error_spread.png",
        "gt_histogram.png",
        "joint_histogram.png",
    ]  # no temporaries left
    result = json.loads((out / "analysis.json").read_text())

    # The same numbers from the protocol's own post-processing and mask, in one pass.
    protocol = get_protocol("synthetic_indoor")
    preds, gts = [], []
    for pred, gt in pairs:
        mask = valid_mask(gt, protocol)
        preds.append(postprocess(pred, gt.shape, protocol)[mask])
        gts.append(gt[mask])
    expected = depth_bin_stats(np.concatenate(preds), np.concatenate(gts), np.linspace(0, 10, 11))
    bins = result["bins"]
    assert len(bins["edges"]) == 11 and bins["edges"][-1] == 10.0
    assert bins["count"] == expected["count"].tolist()
    assert result["n_pixels"] == sum(bins["count"]) == 3 * (22 * 32 - 4)
    assert result["n_images"] == 3 and result["protocol"] == "synthetic_indoor"
    np.testing.assert_allclose(bins["std_error"], expected["std_error"], rtol=1e-6)
    np.testing.assert_allclose(bins["mean_error"], expected["mean_error"], rtol=1e-6, atol=1e-9)
    assert "pixels" in stdout


def test_cli_missing_folder_is_one_line_exit_2(tmp_path, capsys, analyze_cmd):
    _, gt_dir, _ = _write_pairs(tmp_path)
    missing = tmp_path / "nope"
    rc, _, err = analyze_cmd(capsys, "--predictions", missing, "--gt", gt_dir, "--protocol", "synthetic_indoor", "--out", tmp_path / "a")
    assert rc == 2
    assert len(err.strip().splitlines()) == 1
    assert str(missing) in err and "--predictions" in err
    assert not (tmp_path / "a").exists()


def test_cli_unmatched_stem_is_one_line_exit_2(tmp_path, capsys, analyze_cmd):
    pred_dir, gt_dir, _ = _write_pairs(tmp_path)
    (pred_dir / "frame0.npy").rename(pred_dir / "other.npy")
    rc, _, err = analyze_cmd(capsys, "--predictions", pred_dir, "--gt", gt_dir, "--protocol", "synthetic_indoor", "--out", tmp_path / "a")
    assert rc == 2 and len(err.strip().splitlines()) == 1 and "stem" in err
