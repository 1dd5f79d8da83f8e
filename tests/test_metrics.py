"""The nine metrics on hand-worked cases; per-image mean versus pixel pooling."""

import numpy as np
import pytest
import torch

from clipdepth.evaluation.metrics import LOWER_IS_BETTER, METRIC_NAMES, MetricAccumulator

# g = [1, 2, 4], p = [1, 1, 5]:
#   |g-p|/g      = 0, 1/2, 1/4             -> abs_rel = 0.75/3 = 0.25
#   (g-p)^2/g    = 0, 1/2, 1/4             -> sq_rel  = 0.25
#   (g-p)^2      = 0, 1, 1                 -> rmse    = sqrt(2/3) = 0.8164965809
#   e = ln p - ln g = 0, -ln 2, ln 1.25 = 0, -0.6931471806, 0.2231435513
#   mean(e^2)    = (0.4804530139 + 0.0497929441)/3 = 0.1767486527 -> rmse_log = 0.4204148976
#   |log10 g - log10 p| = 0, log10 2, log10 1.25; sum = log10 2.5 = 0.3979400087 -> log10 = 0.1326466696
#   mean(e)      = ln(0.625)/3 = -0.1566678764; mean(e^2) - mean(e)^2 = 0.1522038626 -> silog = 39.01331345
#   max(g/p, p/g) = 1, 2, 1.25: strictly < 1.25 -> 1 of 3; < 1.5625 -> 2; < 1.953125 -> 2
#   |g-p|        = 0, 1, 1                 -> abs_diff = 2/3 (the extra, not a protocol metric)
EXPECTED_SMALL = {
    "abs_rel": 0.25,
    "sq_rel": 0.25,
    "rmse": 0.8164965809277260,
    "rmse_log": 0.4204148976155653,
    "log10": 0.1326466695573459,
    "silog": 39.01331345023692,
    "d1": 1 / 3,
    "d2": 2 / 3,
    "d3": 2 / 3,
    "abs_diff": 2 / 3,
}


def small_case():
    return np.array([1.0, 1.0, 5.0]), np.array([1.0, 2.0, 4.0]), np.ones(3, bool)


def test_metric_names_and_directions():
    assert METRIC_NAMES == ("abs_rel", "sq_rel", "rmse", "rmse_log", "log10", "silog", "d1", "d2", "d3")
    assert [name for name in METRIC_NAMES if not LOWER_IS_BETTER[name]] == ["d1", "d2", "d3"]


def test_nine_metrics_on_hand_worked_case():
    accumulator = MetricAccumulator()
    image = accumulator.add(*small_case())
    assert image == pytest.approx(EXPECTED_SMALL, rel=1e-12)
    mean = accumulator.mean()
    assert mean == pytest.approx({**EXPECTED_SMALL, "n_images": 1}, rel=1e-12)
    assert list(mean) == [*METRIC_NAMES, "abs_diff", "n_images"]


def test_torch_inputs_and_mask_are_accepted():
    pred, gt, _ = small_case()
    # A fourth pixel outside the mask must not count.
    pred, gt = np.append(pred, 100.0), np.append(gt, 1.0)
    mask = torch.tensor([True, True, True, False])
    image = MetricAccumulator().add(torch.from_numpy(pred).float(), torch.from_numpy(gt).float(), mask)
    assert image == pytest.approx(EXPECTED_SMALL, rel=1e-6)


def test_silog_of_constant_log_error_is_zero():
    gt = np.array([1.0, 2.0, 3.0, 7.0])
    image = MetricAccumulator().add(1.1 * gt, gt, np.ones(4, bool))
    assert image["silog"] == pytest.approx(0.0, abs=1e-6)
    assert image["abs_rel"] == pytest.approx(0.1)


def test_per_image_mean_differs_from_pixel_pooling():
    accumulator = MetricAccumulator()
    accumulator.add(*small_case())
    # Second image, one pixel: g = 2, p = 3 -> abs_rel 0.5, rmse 1.
    accumulator.add(np.array([3.0]), np.array([2.0]), np.array([True]))
    mean, pooled = accumulator.mean(), accumulator.pixel_pooled()
    # Per image: (0.25 + 0.5)/2 = 0.375; pooled: (0.75 + 0.5)/4 = 0.3125.
    assert mean["abs_rel"] == pytest.approx(0.375)
    assert pooled["abs_rel"] == pytest.approx(0.3125)
    # Per image: (sqrt(2/3) + 1)/2 = 0.9082482905; pooled: sqrt((2 + 1)/4) = 0.8660254038.
    assert mean["rmse"] == pytest.approx(0.9082482904638630)
    assert pooled["rmse"] == pytest.approx(0.8660254037844386)
    # d1: per image (1/3 + 0)/2 = 1/6 (3/2 is not < 1.25); pooled 1/4.
    assert mean["d1"] == pytest.approx(1 / 6)
    assert pooled["d1"] == pytest.approx(0.25)
    assert mean["n_images"] == pooled["n_images"] == 2
    assert pooled["n_pixels"] == 4
    assert len(accumulator.per_image) == 2


def test_image_without_valid_pixel_is_skipped_not_averaged():
    accumulator = MetricAccumulator()
    accumulator.add(*small_case())
    assert accumulator.add(np.array([9.0, 9.0]), np.array([1.0, 1.0]), np.zeros(2, bool)) is None
    assert accumulator.n_skipped == 1
    assert accumulator.mean() == pytest.approx({**EXPECTED_SMALL, "n_images": 1})


def test_mean_of_nothing_and_unclamped_predictions_are_refused():
    with pytest.raises(ValueError):
        MetricAccumulator().mean()
    with pytest.raises(ValueError, match="postprocess"):
        MetricAccumulator().add(np.array([0.0]), np.array([1.0]), np.array([True]))
