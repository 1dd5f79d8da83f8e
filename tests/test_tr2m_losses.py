"""TR2M losses (tr2m.md "Losses") against hand-worked values and behavioural checks."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from clipdepth.losses.tr2m import (
    PseudoMetric,
    depth_classes,
    edge_aware_smoothness,
    ema_update,
    fit_affine,
    image_contrast_loss,
    pixel_contrast_loss,
    pseudo_metric,
    pseudo_metric_loss,
    sample_pixels,
)
from clipdepth.losses.common import silog_loss, silog_losses
from clipdepth.training.op_count import count_ops

# --- silog -------------------------------------------------------------------------------------


def test_silog_hand_value_and_masked_pixels_ignored():
    # g = [log 2, 0] over two images; a masked-out garbage pixel must not count.
    pred = torch.tensor([[[2.0, 100.0]], [[1.0, 1e-6]]], requires_grad=True)
    target = torch.tensor([[[1.0, 1.0]], [[1.0, 5.0]]])
    mask = torch.tensor([[[True, False]], [[True, False]]])
    loss = silog_loss(pred, target, mask)
    # mean g^2 = ln2^2 / 2, mean g = ln2 / 2 -> ln2^2 * (1/2 - 0.85/4)
    assert loss.item() == pytest.approx(math.log(2) * math.sqrt(0.5 - 0.85 / 4), rel=1e-6)
    loss.backward()
    assert pred.grad[:, :, 1].abs().sum() == 0


def test_silog_scale_invariant_with_full_variance_focus():
    target = torch.rand(2, 5, 6) * 9 + 0.5
    mask = torch.rand(2, 5, 6) > 0.3
    assert silog_loss(3.0 * target, target, mask, variance_focus=1.0).item() == pytest.approx(0.0, abs=1e-5)
    # with 0.85 a pure scale error c leaves sqrt(0.15) * |log c|
    assert silog_loss(3.0 * target, target, mask).item() == pytest.approx(math.sqrt(0.15) * math.log(3.0), rel=1e-5)


def test_silog_empty_mask_is_graph_keeping_zero():
    pred = torch.rand(1, 3, 3, requires_grad=True)
    loss = silog_loss(pred, torch.ones(1, 3, 3), torch.zeros(1, 3, 3, dtype=torch.bool))
    assert loss.item() == 0.0
    loss.backward()
    assert pred.grad is not None and pred.grad.abs().sum() == 0


# --- affine fit and pseudo-metric depth ----------------------------------------------------------


def test_fit_affine_recovers_per_image_affine_despite_garbage():
    g = torch.Generator().manual_seed(0)
    relative = torch.rand(3, 6, 7, generator=g)
    mask = torch.rand(3, 6, 7, generator=g) > 0.4
    alphas, betas = torch.tensor([2.5, -1.0, 0.25]), torch.tensor([-0.3, 4.0, 0.0])
    target = alphas[:, None, None] * relative + betas[:, None, None]
    target[~mask] = float("nan")
    target[0, ~mask[0]] = 1e6
    alpha, beta = fit_affine(relative, target, mask)
    assert alpha.dtype == relative.dtype
    assert torch.allclose(alpha, alphas, atol=1e-6, rtol=0)
    assert torch.allclose(beta, betas, atol=1e-6, rtol=0)


def test_fit_affine_degenerate_images():
    relative = torch.tensor([[[1.0, 2.0, 3.0]], [[1.0, 2.0, 3.0]], [[4.0, 4.0, 4.0]]])
    target = torch.tensor([[[7.0, 9.0, 9.0]], [[5.0, 6.0, 7.0]], [[1.0, 2.0, 6.0]]])
    mask = torch.tensor([[[False, True, False]], [[False, False, False]], [[True, True, True]]])
    alpha, beta = fit_affine(relative, target, mask)
    # one pixel -> its target; no pixel -> 0; constant relative -> mean target
    assert alpha.tolist() == [0.0, 0.0, 0.0]
    assert beta.tolist() == pytest.approx([9.0, 0.0, 3.0])


def test_pseudo_metric_returns_gt_for_exact_inverse_affine():
    g = torch.Generator().manual_seed(1)
    gt = torch.rand(2, 5, 5, generator=g) * 8 + 0.5
    mask = torch.rand(2, 5, 5, generator=g) > 0.3
    relative = 3.0 / gt + 0.2
    relative[1] = 0.5 / gt[1] - 0.01
    gt[~mask] = 0.0  # missing GT
    relative[0, 0, 0] = 0.2  # inverse 0 -> clamped to 1 / max_depth
    mask[0, 0, 0] = False
    p = pseudo_metric(relative, gt, mask, max_depth=10.0)
    assert torch.allclose(p.alpha, torch.tensor([1 / 3, 2.0]), atol=1e-6, rtol=0)
    assert torch.allclose(p.beta, torch.tensor([-0.2 / 3, 0.02]), atol=1e-6, rtol=0)
    assert torch.allclose(p.depth[mask], gt[mask], rtol=1e-5, atol=0)
    assert p.depth[0, 0, 0].item() == pytest.approx(10.0)
    assert p.d1.tolist() == [1.0, 1.0]


def _three_of_four() -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    # relative = 1/gt exactly, but GT 20 m lies beyond max_depth 10: the clamped pseudo depth is 10,
    # a ratio of 2, so exactly 3 of 4 pixels pass -> d1 = 0.75.
    gt = torch.tensor([[[1.0, 2.0], [4.0, 20.0]]])
    return 1.0 / gt, gt, torch.ones_like(gt, dtype=torch.bool)


def test_pseudo_d1_counts_only_pixels_within_1_25():
    p = pseudo_metric(*_three_of_four(), max_depth=10.0)
    assert p.d1.tolist() == [0.75]
    assert torch.allclose(p.depth, torch.tensor([[[1.0, 2.0], [4.0, 10.0]]]), rtol=1e-6, atol=0)


def test_pseudo_loss_gate_switches_strictly_above_rho():
    p = pseudo_metric(*_three_of_four(), max_depth=10.0)
    pred = torch.tensor([[[1.0, 3.0], [2.0, 5.0]]], requires_grad=True)
    loss, gate = pseudo_metric_loss(pred, p, rho=0.74)
    assert gate.tolist() == [True] and loss.item() > 0.01
    loss, gate = pseudo_metric_loss(pred, p, rho=0.75)
    assert gate.tolist() == [False] and loss.item() == 0.0
    loss.backward()
    assert pred.grad is not None


def test_pseudo_loss_uses_all_pixels_of_gated_images_only():
    depth = torch.rand(3, 4, 4) + 1.0
    pseudo = PseudoMetric(depth=depth, alpha=torch.ones(3), beta=torch.zeros(3), d1=torch.tensor([0.9, 0.5, 0.95]))
    pred = torch.rand(3, 4, 4) + 0.5
    loss, gate = pseudo_metric_loss(pred, pseudo, rho=0.8)
    assert gate.tolist() == [True, False, True]
    # hand form over the 32 pixels of images 0 and 2
    g = (pred[[0, 2]].log() - depth[[0, 2]].log()).flatten()
    expected = math.sqrt(g.pow(2).mean().item() - 0.85 * g.mean().item() ** 2)
    assert loss.item() == pytest.approx(expected, rel=1e-5)


# --- depth classes -------------------------------------------------------------------------------


def test_depth_classes_hand_values():
    depth = torch.tensor([0.5, 10.0, 5.25, 3.3, 0.0, 12.0])
    # (10 - D) / 9.5 * 19: 19, 0, 9.5 -> 10 (half to even), 13.4 -> 13, 20 -> clamp 19, -4 -> clamp 0
    assert depth_classes(depth, 0.5, 10.0, 19).tolist() == [19, 0, 10, 13, 19, 0]


# --- smoothness ----------------------------------------------------------------------------------


def test_smoothness_zero_on_constant_map_with_texture():
    image = torch.rand(2, 3, 6, 8)
    assert edge_aware_smoothness(torch.full((2, 1, 6, 8), 3.0), image).item() == 0.0


def test_smoothness_ramp_and_edge_weighting():
    h, w = 4, 5
    flat = torch.full((1, 3, h, w), 0.5)
    ramp = torch.arange(w, dtype=torch.float32).expand(1, h, w)  # (B, H, W) accepted
    assert edge_aware_smoothness(ramp, flat).item() == pytest.approx(1.0)  # |dx| = 1 everywhere, dy = 0

    step = torch.zeros(1, 1, h, w)
    step[..., 2:] = 2.0
    edge = torch.zeros(1, 3, h, w)
    edge[..., 2:] = 1.0  # image edge at the same column as the map step
    # one of the w-1 x-differences is 2; weighted by exp(0) on a flat image and exp(-1) across the edge
    assert edge_aware_smoothness(step, flat).item() == pytest.approx(2 / (w - 1))
    assert edge_aware_smoothness(step, edge).item() == pytest.approx(2 * math.exp(-1) / (w - 1))


def test_smoothness_resizes_image_to_maps():
    step = torch.zeros(1, 1, 4, 4)
    step[..., 2:] = 1.0
    big_flat = torch.full((1, 3, 16, 16), 0.3)
    assert edge_aware_smoothness(step, big_flat).item() == pytest.approx(1 / 3)


def _sgd_step(param: torch.Tensor, loss: torch.Tensor, lr: float) -> None:
    # plain SGD by hand: torch.optim's first use costs about a second of imports
    (grad,) = torch.autograd.grad(loss, param)
    with torch.no_grad():
        param -= lr * grad


# --- image-level contrast ------------------------------------------------------------------------


def _on_circle(angles: torch.Tensor) -> torch.Tensor:
    return torch.stack([angles.cos(), angles.sin()], dim=1)


def test_image_contrast_hand_value_follows_scale_ranks():
    # scale ranks [1, 0, 2]; features at 90 deg per rank -> f(rank0).f(rank1) = 0, f(rank0).f(rank2) = -1
    scale = torch.tensor([0.5, 0.1, 0.9])
    feats = _on_circle(torch.tensor([1.0, 0.0, 2.0]) * math.pi / 2)
    loss = image_contrast_loss(feats, scale, rank_threshold=1, temperature=1.0)
    # ends: positive is the middle one, -log(1 / (1 + e^-1)); middle: both others positive, -log(1/2)
    expected = (2 * math.log(1 + math.exp(-1)) + math.log(2)) / 3
    assert loss.item() == pytest.approx(expected, rel=1e-6)


def test_image_contrast_two_images_and_single_image():
    # B = 2: the only other image is the positive and the only candidate -> exactly 0 (self excluded)
    assert image_contrast_loss(torch.randn(2, 4), torch.tensor([1.0, 2.0])).item() == pytest.approx(0.0, abs=1e-6)
    one = torch.randn(1, 4, requires_grad=True)
    loss = image_contrast_loss(one, torch.tensor([1.0]))
    assert loss.item() == 0.0
    loss.backward()
    assert one.grad is not None


def test_image_contrast_lower_when_features_follow_scale_order():
    g = torch.Generator().manual_seed(2)
    b = 8
    scale = torch.rand(b, generator=g)
    rank = torch.argsort(torch.argsort(scale))
    ordered = _on_circle(rank.float() * math.pi / (b - 1))
    good = image_contrast_loss(ordered, scale, rank_threshold=1)
    shuffled = [image_contrast_loss(ordered[torch.randperm(b, generator=g)], scale).item() for _ in range(10)]
    assert good.item() < min(shuffled)
    assert good.item() < image_contrast_loss(torch.randn(b, 2, generator=g), scale).item()


def test_image_contrast_optimisation_decreases_loss():
    g = torch.Generator().manual_seed(3)
    feats = torch.randn(8, 16, generator=g).requires_grad_()
    scale = torch.rand(8, generator=g)
    start = image_contrast_loss(feats, scale, rank_threshold=2).item()
    for _ in range(20):
        _sgd_step(feats, image_contrast_loss(feats, scale, rank_threshold=2), lr=0.5)
    assert image_contrast_loss(feats, scale, rank_threshold=2).item() < 0.8 * start


# --- pixel-level contrast ------------------------------------------------------------------------


def test_pixel_contrast_hand_value_includes_own_key():
    # one image, 1 x 4 pixels; classes (d_max=10, d_min=0, 10 classes): [0, 0, 5, -] and pixel 3 is masked out
    depth = torch.tensor([[[10.0, 10.0, 5.0, 0.0]]])
    mask = torch.tensor([[[True, True, True, False]]])
    feats = torch.tensor([[1.0, 1.0, 0.0, -1.0], [0.0, 0.0, 1.0, 0.0]])[None, :, None, :]  # (1, 2, 1, 4)
    loss = pixel_contrast_loss(feats, feats.clone(), depth, mask, 0.0, 10.0, 10, temperature=1.0)
    e = math.e
    # pixels 0, 1: logits [1, 1, 0], positives keys 0 and 1; pixel 2: logits [0, 0, 1], positive key 2
    expected = (2 * math.log((2 * e + 1) / e) + math.log((e + 2) / e)) / 3
    assert loss.item() == pytest.approx(expected, rel=1e-6)


def test_pixel_contrast_key_detached_and_empty_mask():
    q = torch.randn(2, 4, 3, 3, requires_grad=True)
    k = torch.randn(2, 4, 3, 3, requires_grad=True)
    depth = torch.rand(2, 3, 3) * 10
    pixel_contrast_loss(q, k, depth, depth > 2, 0.0, 10.0, 4).backward()
    assert q.grad.abs().sum() > 0 and k.grad is None
    loss = pixel_contrast_loss(q, k, depth, depth > 99, 0.0, 10.0, 4)
    assert loss.item() == 0.0 and loss.requires_grad


def test_pixel_contrast_sampling_is_reproducible_with_generator():
    q, k = torch.randn(2, 4, 8, 8), torch.randn(2, 4, 8, 8)
    depth = torch.rand(2, 8, 8) * 10
    mask = depth > 1

    def run(seed: int) -> float:
        gen = torch.Generator().manual_seed(seed)
        return pixel_contrast_loss(q, k, depth, mask, 0.0, 10.0, 4, samples=5, generator=gen).item()

    assert run(0) == run(0)
    assert len({run(s) for s in range(5)}) > 1  # 5 of ~57 pixels: different draws, different losses


def test_pixel_contrast_lower_when_features_encode_depth_class():
    g = torch.Generator().manual_seed(4)
    b, c, h, w, classes = 2, 8, 6, 6, 4
    depth = torch.rand(b, h, w, generator=g) * 10
    mask = torch.rand(b, h, w, generator=g) > 0.2
    labels = depth_classes(depth, 0.0, 10.0, classes)
    class_vectors = torch.eye(c)[: classes + 1]
    aligned = class_vectors[labels].permute(0, 3, 1, 2)  # one-hot per depth class
    random = torch.randn(b, c, h, w, generator=g)
    args = (depth, mask, 0.0, 10.0, classes)
    good = pixel_contrast_loss(aligned, aligned, *args).item()
    bad = pixel_contrast_loss(random, random + 0.1 * torch.randn(b, c, h, w, generator=g), *args).item()
    assert good < bad - 1.0


def test_pixel_contrast_optimisation_decreases_loss():
    g = torch.Generator().manual_seed(5)
    depth = torch.rand(1, 6, 6, generator=g) * 10
    mask = torch.ones(1, 6, 6, dtype=torch.bool)
    query = torch.randn(1, 8, 6, 6, generator=g).requires_grad_()

    def loss() -> torch.Tensor:
        return pixel_contrast_loss(query, query, depth, mask, 0.0, 10.0, 4)  # key = detached query (momentum 0)

    start = loss().item()
    for _ in range(20):
        _sgd_step(query, loss(), lr=5.0)
    assert loss().item() < 0.5 * start


# --- EMA -----------------------------------------------------------------------------------------


def test_ema_update_momentum_and_buffers():
    source, target = nn.Sequential(nn.Linear(3, 2), nn.BatchNorm1d(2)), nn.Sequential(nn.Linear(3, 2), nn.BatchNorm1d(2))
    with torch.no_grad():
        for p in source.parameters():
            p.fill_(1.0)
        for p in target.parameters():
            p.fill_(0.0)
        source[1].running_mean.fill_(3.0)
        source[1].num_batches_tracked.fill_(7)
    ema_update(target, source, 0.99)
    for p in target.parameters():
        assert torch.allclose(p, torch.full_like(p, 0.01), rtol=1e-6, atol=0)
    assert target[1].running_mean.tolist() == [3.0, 3.0] and target[1].num_batches_tracked.item() == 7
    ema_update(target, source, 0.99)
    for p in target.parameters():
        assert torch.allclose(p, torch.full_like(p, 0.0199), rtol=1e-6, atol=0)
    assert all(p.grad is None for p in target.parameters())


# --- the same numbers without host syncs ----------------------------------------------------------
# The old formulas, written with boolean indexing and branches on device values (host syncs), as an
# independent reference for the masked reductions.


def _silog_by_indexing(pred, target, mask, vf=0.85):
    if not mask.any():
        return torch.zeros(())
    g = torch.log(pred[mask]) - torch.log(target[mask])
    return torch.sqrt(((g - g.mean()).pow(2).mean() + (1 - vf) * g.mean().pow(2)).clamp_min(1e-12))


def _sup_con_by_indexing(logits, positive):
    count = positive.sum(1)
    has_pos = count > 0
    if not has_pos.any():
        return torch.zeros(())
    log_prob = logits - torch.logsumexp(logits, dim=1, keepdim=True)
    pos_sum = torch.where(positive, log_prob, torch.zeros_like(log_prob)).sum(1)
    return -(pos_sum[has_pos] / count[has_pos]).mean()


def _image_contrast_by_indexing(features, scale, t=1, temperature=0.1):
    b = features.shape[0]
    rank = torch.empty(b, dtype=torch.long)
    rank[torch.argsort(scale, stable=True)] = torch.arange(b)
    dist = (rank[:, None] - rank[None, :]).abs()
    f = torch.nn.functional.normalize(features, dim=1)
    logits = (f @ f.T / temperature).masked_fill(torch.eye(b, dtype=torch.bool), float("-inf"))
    return _sup_con_by_indexing(logits, (dist > 0) & (dist <= t))


def _no_syncs(fn):
    with count_ops() as counted:
        out = fn()
    assert counted.count.host_syncs == 0, dict(counted.count.syncs)
    return out


@pytest.mark.parametrize("case", ["random", "empty", "one_pixel", "garbage_off_mask"])
def test_silog_equals_the_indexed_formula_without_host_syncs(case):
    g = torch.Generator().manual_seed(7)
    pred = torch.rand(3, 5, 6, generator=g) * 5 + 0.1
    target = torch.rand(3, 5, 6, generator=g) * 5 + 0.1
    mask = torch.rand(3, 5, 6, generator=g) > 0.4
    if case == "empty":
        mask[:] = False
    elif case == "one_pixel":
        mask[:] = False
        mask[1, 2, 3] = True
    elif case == "garbage_off_mask":
        pred = torch.where(mask, pred, torch.tensor(0.0))  # log(0) off the mask must not leak
        target = torch.where(mask, target, torch.tensor(float("nan")))
    pred.requires_grad_(True)
    loss = _no_syncs(lambda: silog_loss(pred, target, mask))
    assert loss.item() == pytest.approx(_silog_by_indexing(pred.detach(), target, mask).item(), rel=1e-5, abs=1e-7)
    loss.backward()
    assert torch.isfinite(pred.grad).all() and (pred.grad[~mask] == 0).all()


def test_silog_losses_is_each_target_on_its_own_mask():
    g = torch.Generator().manual_seed(8)
    pred = torch.rand(2, 4, 4, generator=g) + 0.5
    targets = torch.rand(2, 2, 4, 4, generator=g) + 0.5
    masks = torch.rand(2, 2, 4, 4, generator=g) > 0.3
    masks[1] = False  # the second term has no pixel
    both = _no_syncs(lambda: silog_losses(pred, targets, masks, 0.5))
    assert both.shape == (2,) and both[1].item() == 0.0
    assert both[0].item() == pytest.approx(_silog_by_indexing(pred, targets[0], masks[0], 0.5).item(), rel=1e-6)


@pytest.mark.parametrize("gated", [[True, False, True], [False, False, False]])
def test_pseudo_loss_equals_the_indexed_formula_without_host_syncs(gated):
    g = torch.Generator().manual_seed(9)
    pred = (torch.rand(3, 4, 5, generator=g) + 0.2).requires_grad_(True)
    d1 = torch.tensor([0.9 if on else 0.1 for on in gated])
    pseudo = PseudoMetric(depth=torch.rand(3, 4, 5, generator=g) + 0.3, alpha=torch.ones(3), beta=torch.zeros(3), d1=d1)
    loss, gate = _no_syncs(lambda: pseudo_metric_loss(pred, pseudo, 0.5))
    assert gate.tolist() == gated
    on = torch.tensor(gated)
    expected = (
        _silog_by_indexing(pred.detach()[on], pseudo.depth[on], torch.ones_like(pred[on], dtype=torch.bool))
        if any(gated)
        else torch.zeros(())
    )
    assert loss.item() == pytest.approx(expected.item(), rel=1e-6, abs=0)
    loss.backward()  # graph-keeping even with no gated image
    assert (pred.grad[~on] == 0).all()


@pytest.mark.parametrize("b", [2, 3, 6])
def test_image_contrast_equals_the_indexed_formula_without_host_syncs(b):
    g = torch.Generator().manual_seed(b)
    features, scale = torch.randn(b, 5, generator=g), torch.rand(b, generator=g)
    loss = _no_syncs(lambda: image_contrast_loss(features, scale, rank_threshold=1 if b < 6 else 2))
    expected = _image_contrast_by_indexing(features, scale, t=1 if b < 6 else 2)
    assert loss.item() == pytest.approx(expected.item(), rel=1e-6)


def test_smoothness_of_stacked_maps_is_the_sum_of_each():
    g = torch.Generator().manual_seed(10)
    a, b, image = torch.randn(2, 5, 7, generator=g), torch.randn(2, 5, 7, generator=g), torch.rand(2, 3, 5, 7, generator=g)
    both = _no_syncs(lambda: edge_aware_smoothness(torch.stack([a, b], 1), image))
    assert both.item() == pytest.approx((edge_aware_smoothness(a, image) + edge_aware_smoothness(b, image)).item(), rel=1e-6)


def test_sampled_pixels_are_valid_distinct_and_min_of_count_and_samples():
    g = torch.Generator().manual_seed(11)
    mask = torch.rand(4, 6, 7, generator=g) > 0.5
    mask[1] = False  # no valid pixel
    mask[2] = False
    mask[2, 0, :3] = True  # 3 valid pixels, fewer than samples
    index, valid = _no_syncs(lambda: sample_pixels(mask, 5, torch.Generator().manual_seed(0)))
    assert index.shape == valid.shape == (4, 5)
    flat = mask.flatten(1)
    for b in range(4):
        count = int(flat[b].sum())
        drawn = index[b][valid[b]]
        assert len(drawn) == min(count, 5) and valid[b, : len(drawn)].all()  # the draws come first
        assert flat[b, drawn].all() and len(set(drawn.tolist())) == len(drawn)  # valid, no repeats
    assert sorted(index[2][valid[2]].tolist()) == [0, 1, 2]  # fewer valid than samples: all of them


def test_sampled_pixels_are_uniform_among_the_valid_ones():
    mask = torch.zeros(1, 1, 10, dtype=torch.bool)
    mask[0, 0, 2:8] = True  # 6 valid pixels, 3 drawn: each with probability 1/2
    gen = torch.Generator().manual_seed(1)
    hits = torch.zeros(10)
    for _ in range(2000):
        index, valid = sample_pixels(mask, 3, gen)
        hits[index[0][valid[0]]] += 1
    assert hits[~mask[0, 0]].sum() == 0
    assert torch.allclose(hits[2:8] / 2000, torch.full((6,), 0.5), atol=0.05)


def test_pixel_contrast_equals_brute_force_on_the_sampled_pixels():
    g = torch.Generator().manual_seed(12)
    b, c, h, w, classes, samples = 3, 4, 5, 6, 5, 7
    q = torch.randn(b, c, h, w, generator=g)
    k = torch.randn(b, c, h, w, generator=g)
    depth = torch.rand(b, h, w, generator=g) * 10
    mask = torch.rand(b, h, w, generator=g) > 0.3
    mask[1] = False
    mask[1, 0, 0] = True  # one valid pixel
    loss = _no_syncs(lambda: pixel_contrast_loss(q, k, depth, mask, 0.0, 10.0, classes, 0.5, samples, torch.Generator().manual_seed(3)))
    index, valid = sample_pixels(mask, samples, torch.Generator().manual_seed(3))  # the same draws
    qs, ks, cs = [], [], []
    for i in range(b):
        idx = index[i][valid[i]]  # the same pixels for query and key
        qs.append(q[i].flatten(1)[:, idx].T)
        ks.append(k[i].flatten(1)[:, idx].T)
        cs.append(depth_classes(depth[i].flatten()[idx], 0.0, 10.0, classes))
    qn, kn, cl = (torch.nn.functional.normalize(torch.cat(qs), dim=1), torch.nn.functional.normalize(torch.cat(ks), dim=1), torch.cat(cs))
    expected = _sup_con_by_indexing(qn @ kn.T / 0.5, cl[:, None] == cl[None, :])
    assert loss.item() == pytest.approx(expected.item(), rel=1e-5)


# --- the same numbers in fewer kernels -------------------------------------------------------------
# The formulas as autograd writes them (the code before the TR2M step's kernel count was cut), as an
# independent reference for the batched fit and the written-out gradients.


def _fit_two_pass(relative, target, mask):
    mask = mask.flatten(1)
    m = mask.double()
    r, t = torch.where(mask, torch.stack([relative.flatten(1), target.flatten(1)]).double(), 0.0)
    n = m.sum(1)
    mean_r, mean_t = r.sum(1) / n.clamp_min(1), t.sum(1) / n.clamp_min(1)
    dr = (r - mean_r[:, None]) * m
    var, cov = dr.square().sum(1), (dr * (t - mean_t[:, None])).sum(1)
    alpha = torch.where((n < 2) | (var <= 1e-12 * r.square().sum(1)), 0.0, cov / var)
    return alpha, mean_t - alpha * mean_r


def _pseudo_by_the_formula(relative, gt, mask, min_depth, max_depth):
    alpha, beta = _fit_two_pass(relative, torch.where(mask, 1.0 / gt, 0.0), mask)
    alpha, beta = alpha.to(relative.dtype), beta.to(relative.dtype)
    depth = 1.0 / (alpha[:, None, None] * relative + beta[:, None, None]).clamp(1.0 / max_depth, 1.0 / min_depth)
    safe_gt = torch.where(mask, gt, depth)
    hits = ((torch.maximum(depth / safe_gt, safe_gt / depth) < 1.25) & mask).flatten(1).sum(1)
    return alpha, beta, depth, hits / mask.flatten(1).sum(1).clamp_min(1)


def _silog_by_autograd(pred, targets, masks, vf):
    dims = tuple(range(1, targets.dim()))
    m = masks.to(pred.dtype)
    g = (torch.log(torch.where(masks, pred, 1.0)) - torch.log(torch.where(masks, targets, 1.0))) * m
    n = m.sum(dims)
    mean = g.sum(dims) / n.clamp_min(1)
    centred = (g - mean.view(-1, *[1] * len(dims))) * m
    arg = centred.square().sum(dims) / n.clamp_min(1) + (1.0 - vf) * mean.square()
    return torch.sqrt(arg.clamp_min(1e-12)) * (n > 0)


def _smoothness_by_autograd(maps, image):
    image = torch.nn.functional.interpolate(image, size=maps.shape[-2:], mode="bilinear", align_corners=False)
    dx, dy = (maps[..., :, 1:] - maps[..., :, :-1]).abs(), (maps[..., 1:, :] - maps[..., :-1, :]).abs()
    ix = (image[..., :, 1:] - image[..., :, :-1]).abs().mean(1, keepdim=True)
    iy = (image[..., 1:, :] - image[..., :-1, :]).abs().mean(1, keepdim=True)
    return maps.shape[1] * ((dx * torch.exp(-ix)).mean() + (dy * torch.exp(-iy)).mean())


def _sup_con_by_autograd(logits, positive):
    weight = positive.to(logits.dtype)
    count = weight.sum(1)
    log_prob = logits - torch.logsumexp(logits, dim=1, keepdim=True)
    return -((log_prob * weight).sum(1) / count.clamp_min(1)).sum() / (count > 0).sum().clamp_min(1)


def _kernels(loss, *args):
    """The value of ``loss(*args)`` and the kernels of its forward and backward (which leaves the gradients)."""
    with count_ops() as counted:
        out = loss(*args)
        out.backward()
    return out.detach(), counted.count.kernels


def test_pseudo_metric_equals_the_two_pass_fit_in_half_the_kernels():
    """One batched x x^T product gives all the sums of the float64 fit: the same alpha, beta, pseudo depth
    and d1 as the two-pass centred fit, for ordinary, constant-map, one-pixel and empty images, with
    half precision relative depth as the step stores it and GT that is missing (0) or beyond max_depth."""
    g = torch.Generator().manual_seed(13)
    gt = torch.rand(5, 6, 7, generator=g) * 12 + 0.2
    gt[:, ::3] = 0.0
    relative = (1.7 / gt.clamp_min(0.3) + 0.1 * torch.rand(5, 6, 7, generator=g)).half()
    relative[1] = 0.75  # constant: degenerate
    mask = (gt > 1e-3) & (gt < 10.0)
    mask[2] = False
    mask[2, 1, 1] = True  # one pixel
    mask[3] = False  # none
    with count_ops() as counted:
        p = pseudo_metric(relative, gt, mask, 1e-3, 10.0)
    with count_ops() as reference:
        alpha, beta, depth, d1 = _pseudo_by_the_formula(relative, gt, mask, 1e-3, 10.0)
    assert torch.allclose(p.alpha.float(), alpha.float(), rtol=1e-3, atol=0) and p.alpha[1] == 0 and p.alpha[3] == 0
    assert torch.allclose(p.beta.float(), beta.float(), rtol=1e-3, atol=1e-6)
    assert torch.allclose(p.depth.float(), depth.float(), rtol=2e-3, atol=0)  # half precision, as stored
    assert p.d1.tolist() == pytest.approx(d1.tolist(), abs=1e-6)  # the reference divides in float32
    assert counted.count.kernels <= 0.6 * reference.count.kernels, (counted.count.kernels, reference.count.kernels)


@pytest.mark.parametrize("case", ["random", "garbage_off_mask", "one_term_empty"])
def test_silog_gradient_equals_autograd_of_the_formula_in_fewer_kernels(case):
    """silog_losses writes its gradient out; value and gradient equal autograd's through the formula,
    including 0 and NaN off the masks and an empty term, with at least a third fewer kernels."""
    g = torch.Generator().manual_seed(14)
    pred = torch.rand(3, 5, 6, generator=g) * 5 + 0.1
    targets = torch.rand(2, 3, 5, 6, generator=g) * 5 + 0.1
    masks = torch.rand(2, 3, 5, 6, generator=g) > 0.4
    if case == "garbage_off_mask":
        pred = torch.where(masks.any(0), pred, 0.0)
        targets = torch.where(masks, targets, float("nan"))
    elif case == "one_term_empty":
        masks[1] = False
    results = []
    for fn in (silog_losses, _silog_by_autograd):
        x = pred.clone().requires_grad_(True)
        value, kernels = _kernels(lambda p, f: f(p, targets, masks, 0.85) @ torch.tensor([1.0, 0.5]), x, fn)
        results.append((value, x.grad, kernels))
    (value, grad, kernels), (ref_value, ref_grad, ref_kernels) = results
    assert value.item() == pytest.approx(ref_value.item(), rel=1e-6)
    assert torch.isfinite(grad).all() and torch.allclose(grad, ref_grad, rtol=1e-5, atol=1e-8)
    assert kernels <= 0.67 * ref_kernels, (kernels, ref_kernels)
    double = (pred.double() + 0.5).requires_grad_(True)
    assert torch.autograd.gradcheck(lambda p: silog_losses(p, targets.double().nan_to_num(1.0) + 0.5, masks), (double,))


def test_smoothness_gradient_equals_autograd_of_the_formula_in_fewer_kernels():
    """edge_aware_smoothness scatters its signed edge weights as the gradient: value and gradient equal
    autograd's through |d map| * exp(-mean |d image|), with at least a quarter fewer kernels."""
    g = torch.Generator().manual_seed(15)
    maps, image = torch.randn(2, 2, 5, 7, generator=g), torch.rand(2, 3, 10, 14, generator=g)
    results = []
    for fn in (edge_aware_smoothness, _smoothness_by_autograd):
        x = maps.clone().requires_grad_(True)
        value, kernels = _kernels(fn, x, image)
        results.append((value, x.grad, kernels))
    (value, grad, kernels), (ref_value, ref_grad, ref_kernels) = results
    assert value.item() == pytest.approx(ref_value.item(), rel=1e-6)
    assert torch.allclose(grad, ref_grad, rtol=1e-5, atol=1e-7)
    assert kernels <= 0.75 * ref_kernels, (kernels, ref_kernels)
    double = maps.double().requires_grad_(True)
    assert torch.autograd.gradcheck(lambda m: edge_aware_smoothness(m, image.double()), (double,))


def test_contrasts_equal_autograd_through_f_normalize_in_fewer_kernels():
    """Both contrasts normalise with a written-out gradient and the temperature inside the features:
    values and gradients equal autograd's through F.normalize, logits / temperature and -log softmax."""
    g = torch.Generator().manual_seed(16)
    features, scale = torch.randn(6, 5, generator=g), torch.rand(6, generator=g)
    q, k = torch.randn(2, 4, 5, 6, generator=g), torch.randn(2, 4, 5, 6, generator=g)
    depth, mask = torch.rand(2, 5, 6, generator=g) * 10, torch.rand(2, 5, 6, generator=g) > 0.3
    index, valid = sample_pixels(mask, 7, torch.Generator().manual_seed(4))

    def image_reference(f):
        rank = torch.argsort(torch.argsort(scale, stable=True), stable=True)
        dist = (rank[:, None] - rank[None, :]).abs()
        f = torch.nn.functional.normalize(f, dim=1)
        logits = (f @ f.T / 0.1).masked_fill(torch.eye(6, dtype=torch.bool), torch.finfo(f.dtype).min)
        return _sup_con_by_autograd(logits, (dist > 0) & (dist <= 1))

    def pixel_reference(query):
        gather = index[..., None].expand(-1, -1, 4)
        qs = torch.nn.functional.normalize(query.flatten(2).transpose(1, 2).gather(1, gather).flatten(0, 1), dim=1)
        ks = torch.nn.functional.normalize(k.flatten(2).transpose(1, 2).gather(1, gather).flatten(0, 1), dim=1)
        c = depth_classes(depth.flatten(1).gather(1, index), 0.0, 10.0, 5).flatten()
        v = valid.flatten()
        logits = torch.where(v[None, :], qs @ ks.T / 0.1, torch.finfo(qs.dtype).min)
        return _sup_con_by_autograd(logits, (c[:, None] == c[None, :]) & v[:, None] & v[None, :])

    cases = [
        (features, lambda f: image_contrast_loss(f, scale, 1, 0.1), image_reference),
        (q, lambda x: pixel_contrast_loss(x, k, depth, mask, 0.0, 10.0, 5, 0.1, 7, torch.Generator().manual_seed(4)), pixel_reference),
    ]
    for leaf, loss, reference in cases:
        results = []
        for fn in (loss, reference):
            x = leaf.clone().requires_grad_(True)
            value, kernels = _kernels(fn, x)
            results.append((value, x.grad, kernels))
        (value, grad, kernels), (ref_value, ref_grad, ref_kernels) = results
        assert value.item() == pytest.approx(ref_value.item(), rel=1e-5)
        assert torch.allclose(grad, ref_grad, rtol=1e-4, atol=1e-6)
        assert kernels <= 0.8 * ref_kernels, (kernels, ref_kernels)
