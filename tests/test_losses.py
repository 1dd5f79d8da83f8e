"""Targets and losses against hand-worked values (paper eqs. 13-15; released ``final_model.py``)."""

import math

import pytest
import torch

from clipdepth.losses import alignment_loss, bin_index, embedding_loss, infonce_loss, patch_targets, rmse_loss

# One 4 x 6 depth map = 2 x 3 patches of 2 x 2 pixels; 0 = missing; bins of 2 m over 0..10 m,
# so the bin edges are 0, 2, 4, 6, 8, 10.
DEPTH = torch.tensor(
    [[[1.0, 2.0, 0.0, 0.0, 0.0, 0.0], [3.0, 0.0, 4.0, 6.0, 0.0, 7.0], [0.05, 0.05, 0.0, 0.0, 8.0, 8.0], [11.0, 13.0, 0.0, 0.0, 8.0, 8.0]]]
)


def targets(rule, region=None):
    return patch_targets(DEPTH, patch_size=2, min_depth=0.0, max_depth=10.0, num_bins=5, rule=rule, region=region)


def test_released_rule_counts_pixels_above_01_m_without_upper_limit():
    t = targets("released")
    # counted = > 0.1 m, no upper limit: the 0.05 m pixels do not count, 11 and 13 m do
    assert t.depth[0].flatten().tolist() == pytest.approx([2.0, 5.0, 7.0, 12.0, 0.0, 8.0])
    assert t.mask[0].tolist() == [[True, True, True], [True, False, True]]
    # 2.0 and 8.0 lie on edges: the LOWER bin (0 and 3); 12 m is beyond 10 m: the LAST bin (4), kept
    assert t.bins[0].tolist() == [[0, 2, 3], [4, 0, 3]]


def test_paper_rule_ignores_patches_more_than_half_invalid():
    t = targets("paper")
    # valid = 0 < d <= 10: the two 0.05 m pixels count, 11 and 13 m do not
    assert t.depth[0, 1, 0].item() == pytest.approx(0.05)
    # 3/4, 2/4 (exactly half invalid is kept), 1/4 | 2/4, 0/4, 4/4 valid
    assert t.mask[0].tolist() == [[True, True, False], [True, False, True]]
    assert t.bins[0].tolist() == [[0, 2, 3], [0, 0, 3]]


def test_bin_index_edges_go_down_and_beyond_max_to_the_last_bin():
    # bucketize(mean, edges) - 1 clamped to [-1, K - 1], edges 0, 2, ..., 10
    means = torch.tensor([0.0, 1e-6, 1.999, 2.0, 2.001, 9.999, 10.0, 10.001, 80.0])
    assert bin_index(means, 0.0, 10.0, 5).tolist() == [-1, 0, 0, 0, 1, 4, 4, 4, 4]
    # the released NYU range: a mean at the 1 mm start has no bin; 10 m is the last of 15
    released = bin_index(torch.tensor([1e-3, 0.3, 0.7, 10.0, 30.0]), 1e-3, 10.0, 15)
    assert released.tolist() == [-1, 0, 1, 14, 14]  # edges 0.001, 0.6676, 1.3342, ...


def test_region_mask_drops_patches_not_mostly_inside():
    region = torch.zeros_like(DEPTH, dtype=torch.bool)
    region[..., :3] = True  # patch column 1 is exactly half inside: not more than half
    t = targets("released", region)
    assert t.mask[0].tolist() == [[True, False, False], [True, False, False]]


def test_rmse_pixels_are_strictly_inside_min_and_max():
    t = targets("released")
    # min 0 < g < max 10: 0, 11 and 13 are out; 0.05 m is in (unlike for the patch means)
    assert t.pixel_valid[0].tolist() == [
        [True, True, False, False, False, False],
        [True, False, True, True, False, True],
        [True, True, False, False, True, True],
        [False, False, False, False, True, True],
    ]
    ends = patch_targets(torch.tensor([[[1e-3, 2e-3], [10.0, 9.99]]]), 2, 1e-3, 10.0, 15)
    assert ends.pixel_valid[0].tolist() == [[False, True], [False, True]]


def test_infonce_is_masked_mean_cross_entropy():
    logits = torch.tensor([[2.0, 0.0, 0.0], [0.0, 1.0, 0.0]])
    bins = torch.tensor([0, 2])
    ce0 = math.log(1 + 2 * math.exp(-2))  # -log(e^2 / (e^2 + 1 + 1))
    ce1 = math.log(2 + math.e)  # -log(e^0 / (1 + e + 1))
    assert infonce_loss(logits, bins, torch.tensor([True, True])).item() == pytest.approx((ce0 + ce1) / 2)
    assert infonce_loss(logits, bins, torch.tensor([True, False])).item() == pytest.approx(ce0)


def test_alignment_is_masked_mean_of_one_minus_cosine():
    z = torch.tensor([[1.0, 0.0], [0.6, 0.8], [0.0, 1.0]])
    table = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    bins = torch.tensor([0, 0, 0])
    mask = torch.tensor([True, True, False])
    assert alignment_loss(z, table, bins, mask).item() == pytest.approx((0.0 + 0.4) / 2)


def test_rmse_is_over_the_valid_pixels_only():
    pred = torch.tensor([1.0, 2.0, 3.0, 4.0])
    gt = torch.tensor([1.0, 1.0, 1.0, 0.0])
    valid = gt > 0
    assert rmse_loss(pred, gt, valid).item() == pytest.approx(math.sqrt(5 / 3))


def test_losses_without_valid_patch_are_zero_not_nan():
    logits = torch.zeros(2, 3, requires_grad=True)
    loss = infonce_loss(logits, torch.tensor([0, 1]), torch.tensor([False, False]))
    loss.backward()
    assert loss.item() == 0.0 and torch.all(logits.grad == 0)


def test_embedding_loss_weights_infonce():
    z = torch.tensor([[[[1.0, 0.0]]]])
    table = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    logits = z @ table.T  # tau = 1 keeps float32 exact enough here
    t = patch_targets(torch.full((1, 2, 2), 1.0), 2, 0.0, 10.0, 2)
    out = embedding_loss(z, logits, table, t, infonce_weight=0.5)
    nce = math.log(1 + math.exp(-1))
    assert out["align"].item() == pytest.approx(0.0)
    assert out["infonce"].item() == pytest.approx(nce)
    assert out["loss"].item() == pytest.approx(0.5 * nce)


def test_patch_targets_copy_nothing_to_the_device_after_the_first_step():
    from clipdepth.training.op_count import count_ops

    patch_targets(DEPTH, 2, 0.0, 10.0, 5)  # the bin edges are made once per device
    with count_ops() as counted:
        again = patch_targets(DEPTH, 2, 0.0, 10.0, 5)
    # no edges rebuilt on the host (then copied to the device at every step)
    assert "arange" not in counted.count.ops, dict(counted.count.ops)
    assert counted.count.host_syncs == 0
    assert torch.equal(again.bins, patch_targets(DEPTH, 2, 0.0, 10.0, 5).bins)
