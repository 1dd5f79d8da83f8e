"""Crops, post-processing and validity exactly as protocol.md states them (indices worked by hand)."""

import numpy as np
import pytest
import torch

from clipdepth.errors import ConfigError, DataError
from clipdepth.evaluation.metrics import MetricAccumulator
from clipdepth.evaluation.protocol import (
    Protocol,
    crop_mask,
    get_protocol,
    kb_crop_paste,
    median_scale,
    postprocess,
    score_pair,
    valid_mask,
)


def test_presets():
    assert get_protocol("nyu") == Protocol("nyu", 1e-3, 10.0, "eigen_nyu", 1000.0)
    assert get_protocol("kitti") == Protocol("kitti", 1e-3, 80.0, "garg", 256.0)
    assert get_protocol("kitti_eigen") == Protocol("kitti_eigen", 1e-3, 80.0, "eigen_kitti", 256.0)
    assert get_protocol("synthetic_indoor") == Protocol("synthetic_indoor", 1e-3, 10.0, None, 1000.0)
    assert get_protocol("synthetic_outdoor") == Protocol("synthetic_outdoor", 1e-3, 80.0, None, 256.0)
    with pytest.raises(ConfigError, match="kitti_eigen"):
        get_protocol("nyu_v2")


def assert_box(mask, rows, cols):
    """mask is True exactly on rows[0]..rows[1] x cols[0]..cols[1] (inclusive)."""
    (top, bottom), (left, right) = rows, cols
    assert mask.sum() == (bottom - top + 1) * (right - left + 1)
    assert mask[top, left] and mask[bottom, right]
    assert not mask[top - 1, left] and not mask[bottom + 1, right]
    assert not mask[top, left - 1] and not mask[bottom, right + 1]


def test_nyu_eigen_crop():
    mask = crop_mask((480, 640), "eigen_nyu")
    assert mask.sum() == 426 * 560
    assert_box(mask, (45, 470), (41, 600))
    with pytest.raises(DataError, match="480x640"):
        crop_mask((240, 320), "eigen_nyu")


def test_kitti_garg_crop_at_375x1242():
    # rows int(153.04) = 153 .. int(371.96) - 1 = 370; cols int(44.65) = 44 .. int(1197.35) - 1 = 1196
    assert_box(crop_mask((375, 1242), "garg"), (153, 370), (44, 1196))


def test_kitti_eigen_crop_at_375x1242():
    # rows int(124.66) = 124 .. int(342.57) - 1 = 341; cols int(44.65) = 44 .. int(1197.35) - 1 = 1196
    assert_box(crop_mask((375, 1242), "eigen_kitti"), (124, 341), (44, 1196))


def test_no_crop_and_unknown_crop():
    assert crop_mask((3, 4), None).all()
    with pytest.raises(ConfigError):
        crop_mask((3, 4), "kb")


def test_postprocess_resizes_bilinear_align_corners():
    pred = np.array([[1.0, 2.0], [3.0, 4.0]])
    # align_corners=True keeps the corners and puts the new samples half-way between them.
    expected = np.array([[1.0, 1.5, 2.0], [2.0, 2.5, 3.0], [3.0, 3.5, 4.0]])
    out = postprocess(pred, (3, 3), get_protocol("synthetic_indoor"))
    np.testing.assert_allclose(out, expected, rtol=0, atol=1e-12)
    # torch input with (1, 1, H, W) batch dims is accepted.
    out_t = postprocess(torch.tensor(pred)[None, None].float(), (3, 3), get_protocol("synthetic_indoor"))
    np.testing.assert_allclose(out_t, expected, atol=1e-6)


def test_postprocess_clamps_inf_nan_and_range():
    pred = np.array([[np.inf, np.nan, -1.0, 20.0, 5.0, -np.inf]])
    out = postprocess(pred, (1, 6), get_protocol("nyu"))
    np.testing.assert_array_equal(out, [[10.0, 1e-3, 1e-3, 10.0, 5.0, 1e-3]])


def test_postprocess_inf_does_not_turn_into_nan_when_resizing():
    pred = np.array([[1.0, np.inf], [3.0, 4.0]])
    out = postprocess(pred, (3, 3), get_protocol("nyu"))
    assert out[0, 2] == 10.0  # the +inf corner itself -> max
    assert np.isfinite(out).all()


def test_valid_mask_is_strict():
    gt = np.array([[0.0, 1e-3, 0.0011, 5.0, 9.999, 10.0, 11.0, np.nan]])
    mask = valid_mask(gt, get_protocol("synthetic_indoor"))
    assert mask.tolist() == [[False, False, True, True, True, False, False, False]]


def test_valid_mask_applies_crop():
    gt = np.full((480, 640), 2.0)
    mask = valid_mask(gt, get_protocol("nyu"))
    assert mask.sum() == 426 * 560 and mask[45, 41] and not mask[44, 41]


def test_kb_crop_paste_positions():
    canvas = kb_crop_paste(np.ones((352, 1216)), (375, 1242))
    # top = 375 - 352 = 23, left = (1242 - 1216) // 2 = 13
    assert canvas.sum() == 352 * 1216
    assert canvas[23, 13] == 1 and canvas[374, 1228] == 1
    assert canvas[22, 13] == 0 and canvas[23, 12] == 0 and canvas[374, 1229] == 0
    with pytest.raises(DataError, match="352x1216"):
        kb_crop_paste(np.ones((352, 1216)), (300, 1000))


def test_median_scale():
    scaled = median_scale(np.array([1.0, 2.0, 3.0, 50.0]), np.array([2.0, 4.0, 6.0, 1.0]), [True, True, True, False])
    np.testing.assert_allclose(scaled, [2.0, 4.0, 6.0, 100.0])  # median 4 / median 2


def test_score_pair_clamps_after_median_scaling():
    protocol = get_protocol("synthetic_indoor")
    gt = np.array([[2.0, 4.0, 6.0]])
    # Relative prediction at half scale: median scaling restores it exactly.
    assert score_pair(gt / 2, gt, protocol, align="median")["abs_rel"] == pytest.approx(0.0)
    assert score_pair(gt / 2, gt, protocol)["abs_rel"] == pytest.approx(0.5)
    # Scaled to 6 * 3 = 18 m, then clamped to 10 m: |6 - 10| / 6 on the last pixel.
    image = score_pair(np.array([[1.0, 2.0, 9.0]]), gt, protocol, align="median")
    assert image["abs_rel"] == pytest.approx((0 + 0 + 4 / 6) / 3)


def test_score_pair_adds_to_accumulator_and_skips_empty():
    accumulator = MetricAccumulator()
    protocol = get_protocol("synthetic_indoor")
    score_pair(np.ones((2, 2)), np.full((2, 2), 2.0), protocol, accumulator=accumulator)
    assert score_pair(np.ones((2, 2)), np.zeros((2, 2)), protocol, accumulator=accumulator) is None
    assert accumulator.n_images == 1 and accumulator.n_skipped == 1
    assert accumulator.mean()["abs_rel"] == pytest.approx(0.5)


# -- TR2M's released variants ---------------------------------------------------------------------
def test_released_crops_have_the_release_indices():
    from clipdepth.evaluation.protocol import crop_box

    # KITTI, scored on the 352 x 1216 KB crop: Garg fractions of the crop, [143:349, 43:1172] in it
    assert crop_box((352, 1216), "garg_kb") == (143, 349, 43, 1172)
    top, left = 375 - 352, (1242 - 1216) // 2  # a 375 x 1242 frame: the crop starts at (23, 13)
    assert crop_box((375, 1242), "garg_kb") == (top + 143, top + 349, left + 43, left + 1172)
    # DIODE: KITTI's Garg fractions on 768 x 1024, [313:761, 36:987] in the release
    assert crop_box((768, 1024), "garg") == (313, 761, 36, 987)
    # SUN RGB-D: NYU's Eigen indices whatever the size, cut to the frame
    assert crop_box((530, 730), "eigen_nyu_fixed") == (45, 471, 41, 601)
    assert crop_box((300, 400), "eigen_nyu_fixed") == (45, 300, 41, 400)


def test_kitti_kb_released_scores_the_kb_crop_as_the_release_does():
    """Scoring the full frame with ``kitti_kb_released`` equals scoring the 352 x 1216 crop alone
    under the Garg fractions of that crop (the release's online evaluation), computed here by hand."""
    from clipdepth.evaluation.metrics import MetricAccumulator
    from clipdepth.evaluation.protocol import get_protocol, kb_crop_paste, postprocess, valid_mask

    rng = np.random.default_rng(0)
    gt = np.where(rng.random((375, 1242)) < 0.3, rng.uniform(1, 79, (375, 1242)), 0).astype(np.float32)
    pred_crop = rng.uniform(1, 79, (352, 1216))
    protocol = get_protocol("kitti_kb_released")
    ours = MetricAccumulator()
    full = kb_crop_paste(pred_crop, gt.shape)
    ours.add(postprocess(full, gt.shape, protocol), gt, valid_mask(gt, protocol))

    crop_gt = gt[375 - 352 :, 13 : 13 + 1216]
    mask = np.zeros(crop_gt.shape, bool)
    mask[143:349, 43:1172] = True
    mask &= (crop_gt > 1e-3) & (crop_gt < 80)
    p, g = np.clip(pred_crop, 1e-3, 80)[mask], crop_gt[mask].astype(np.float64)
    assert ours.mean()["abs_rel"] == pytest.approx(np.mean(np.abs(p - g) / g), rel=1e-12)
    assert ours.mean()["d1"] == pytest.approx(np.mean(np.maximum(p / g, g / p) < 1.25), rel=1e-12)


def test_the_device_mask_compares_float32_ground_truth_to_the_caps_as_the_host_does():
    """float32(1e-3) is a hair above 1e-3: valid on the host (float64); a float32 comparison on the
    device would round the cap to the same float32 and drop it."""
    from clipdepth.evaluation.protocol import get_protocol, valid_mask, valid_mask_tensor

    protocol = get_protocol("synthetic_indoor")  # 1e-3 .. 10 m, no crop
    gt = np.array([[np.float32(1e-3), np.float32(10.0), np.float32(5.0)]], np.float32)
    assert valid_mask(gt, protocol).tolist() == [[True, False, True]]
    assert valid_mask_tensor(torch.from_numpy(gt), protocol).tolist() == [[True, False, True]]
