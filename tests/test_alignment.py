"""Per-image alignment (`score --align`) against numpy's own least-squares solution."""

import numpy as np
import pytest

from clipdepth.errors import ConfigError, DataError
from clipdepth.evaluation.protocol import align_prediction, get_protocol, score_pair, valid_mask

PROTOCOL = get_protocol("synthetic_indoor")


pytestmark = pytest.mark.filterwarnings("ignore:divide by zero:RuntimeWarning")  # 1 / 0 for the missing pixels, on purpose


def _scene(seed=0, shape=(12, 16)):
    rng = np.random.default_rng(seed)
    gt = rng.uniform(0.5, 9.0, size=shape)
    gt[0, :3] = 0.0  # missing pixels stay out of the fit
    return gt


def _lstsq(pred, target):
    (scale, shift), *_ = np.linalg.lstsq(np.stack([pred, np.ones_like(pred)], 1), target, rcond=None)
    return scale, shift


def test_lsq_recovers_an_affine_transform_of_depth_exactly():
    gt = _scene()
    mask = valid_mask(gt, PROTOCOL)
    pred = (gt - 0.7) / 3.0  # gt = 3 * pred + 0.7 on the valid pixels
    pred[~mask] = 42.0  # invalid pixels must not move the fit
    aligned = align_prediction(pred, gt, mask, "lsq")
    np.testing.assert_allclose(aligned[mask], gt[mask], rtol=1e-10)
    assert score_pair(pred, gt, PROTOCOL, align="lsq")["abs_rel"] == pytest.approx(0.0, abs=1e-10)


def test_lsq_equals_numpy_lstsq_on_a_noisy_prediction():
    gt = _scene(1)
    mask = valid_mask(gt, PROTOCOL)
    pred = gt / 2 + np.random.default_rng(2).uniform(0.0, 1.0, size=gt.shape)
    scale, shift = _lstsq(pred[mask], gt[mask])
    np.testing.assert_allclose(align_prediction(pred, gt, mask, "lsq")[mask], scale * pred[mask] + shift, rtol=1e-9)


def test_lsq_disparity_recovers_an_affine_transform_of_inverse_depth():
    gt = _scene(3)
    mask = valid_mask(gt, PROTOCOL)
    disparity = 5.0 / gt + 0.2  # what a relative (affine-invariant inverse depth) model writes
    aligned = align_prediction(disparity, gt, mask, "lsq-disparity", pred_kind="disparity")
    np.testing.assert_allclose(aligned[mask], gt[mask], rtol=1e-9)
    # Against numpy on a noisy one: the fit is in inverse depth, the result its inverse.
    noisy = disparity * np.random.default_rng(4).uniform(0.9, 1.1, size=gt.shape)
    scale, shift = _lstsq(noisy[mask], 1.0 / gt[mask])
    aligned = align_prediction(noisy, gt, mask, "lsq-disparity", pred_kind="disparity")
    np.testing.assert_allclose(aligned[mask], 1.0 / (scale * noisy[mask] + shift), rtol=1e-9)


def test_a_disparity_input_scores_equal_to_the_equivalent_depth_input():
    gt = _scene(5)
    depth = gt * np.random.default_rng(6).uniform(0.8, 1.25, size=gt.shape)
    for align in ("median", "lsq", "lsq-disparity"):
        as_depth = score_pair(depth, gt, PROTOCOL, align=align)
        as_inverse = score_pair(1.0 / depth, gt, PROTOCOL, align=align, pred_kind="inverse")
        as_disparity = score_pair(1.0 / depth, gt, PROTOCOL, align=align, pred_kind="disparity")
        for name, value in as_depth.items():
            assert as_inverse[name] == pytest.approx(value, rel=1e-9, abs=1e-12), (align, name)
            assert as_disparity[name] == pytest.approx(value, rel=1e-9, abs=1e-12), (align, name)
    inverse_metrics = score_pair(1.0 / depth, gt, PROTOCOL, pred_kind="inverse")
    assert inverse_metrics["abs_rel"] == pytest.approx(score_pair(depth, gt, PROTOCOL)["abs_rel"], rel=1e-12)


def test_a_fit_that_would_mirror_the_prediction_is_one_line():
    gt = _scene(7)
    mask = valid_mask(gt, PROTOCOL)
    with pytest.raises(DataError, match="scale .* <= 0"):
        align_prediction(-gt, gt, mask, "lsq")
    with pytest.raises(DataError, match="constant"):
        align_prediction(np.ones_like(gt), gt, mask, "lsq")
    with pytest.raises(ConfigError, match="--align lsq-disparity"):
        align_prediction(gt, gt, mask, "none", pred_kind="disparity")
    with pytest.raises(ConfigError, match="unknown alignment"):
        align_prediction(gt, gt, mask, "mean")
