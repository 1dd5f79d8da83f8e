"""TR2M losses (docs/tr2m.md "Losses"): scale-invariant log loss, threshold-gated pseudo-metric loss,
image- and pixel-level scale-oriented contrast, edge-aware smoothness, and the EMA update of the
key network.

All functions take plain tensors, work on any device and reduce over the whole batch.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

_SILOG_EPS = 1e-12  # floor of the sqrt argument: keeps the gradient finite at a perfect fit


def _zero(like: torch.Tensor) -> torch.Tensor:
    """A scalar zero still attached to ``like``'s graph, so ``backward()`` works on an empty loss.

    Callers pass only selected (finite) entries, often an empty selection: NaN * 0 would be NaN.
    """
    return like.sum() * 0


def silog_loss(
    pred: torch.Tensor, target: torch.Tensor, mask: torch.Tensor, variance_focus: float = 0.85
) -> torch.Tensor:
    """Scale-invariant log loss over the masked pixels of the whole batch (BTS/AdaBins, no x10).

    ``sqrt(mean(g^2) - variance_focus * mean(g)^2)`` with ``g = log(pred) - log(target)``; ``pred`` and
    ``target`` must be positive on ``mask``.
    """
    if not mask.any():
        return _zero(pred[mask])
    g = torch.log(pred[mask]) - torch.log(target[mask])
    mean = g.mean()
    # mean(g^2) - vf*mean^2 == var(g) + (1 - vf)*mean^2; the centred form avoids cancellation when
    # pred is (nearly) a scaled copy of target.
    arg = (g - mean).pow(2).mean() + (1.0 - variance_focus) * mean.pow(2)
    return torch.sqrt(arg.clamp_min(_SILOG_EPS))


def fit_affine(
    relative: torch.Tensor, target: torch.Tensor, mask: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-image least squares of ``alpha * relative + beta ~ target`` on ``mask`` (no gradient).

    Degenerate images (fewer than 2 valid pixels, or constant ``relative``) get ``alpha = 0`` and
    ``beta`` = the mean valid target (0 with no valid pixel).
    """
    m = mask.detach().flatten(1).to(torch.float64)
    # where() rather than a product: unmasked pixels may hold inf/NaN, and NaN * 0 is NaN.
    r = torch.where(mask.flatten(1), relative.detach().flatten(1).to(torch.float64), 0.0)
    t = torch.where(mask.flatten(1), target.detach().flatten(1).to(torch.float64), 0.0)
    n = m.sum(1)
    n_safe = n.clamp_min(1.0)
    mean_r = r.sum(1) / n_safe
    mean_t = t.sum(1) / n_safe
    dr = (r - mean_r[:, None]) * m
    var = dr.pow(2).sum(1)
    cov = (dr * (t - mean_t[:, None])).sum(1)
    # Relative threshold: a constant map leaves only rounding noise (~1e-32 of sum r^2) in var.
    degenerate = (n < 2) | (var <= 1e-12 * r.pow(2).sum(1))
    alpha = torch.where(degenerate, torch.zeros_like(var), cov / torch.where(degenerate, 1.0, var))
    beta = mean_t - alpha * mean_r
    return alpha.to(relative.dtype), beta.to(relative.dtype)


@dataclass
class PseudoMetric:
    depth: torch.Tensor  # (B, H, W) metres, 1 / (alpha * relative + beta), in [min_depth, max_depth]
    alpha: torch.Tensor  # (B,) pseudo scale (image-level contrast sorts by it)
    beta: torch.Tensor  # (B,) pseudo shift
    d1: torch.Tensor  # (B,) fraction of GT pixels with max(p/g, g/p) < 1.25 (0 with no GT pixel)


def pseudo_metric(
    relative: torch.Tensor, gt: torch.Tensor, mask: torch.Tensor, min_depth: float = 1e-3, max_depth: float = 10.0
) -> PseudoMetric:
    """Globally rescaled relative map as pseudo GT, and its per-image d1 against the GT.

    ``relative`` is inverse-depth-like (Depth Anything), so the affine fit is done against 1/gt,
    consistent with the model's ``D_m = 1 / (A * D_r + B)``.
    """
    with torch.no_grad():
        inv_gt = torch.where(mask, 1.0 / gt, torch.zeros_like(gt))
        alpha, beta = fit_affine(relative, inv_gt, mask)
        inv = (alpha[:, None, None] * relative + beta[:, None, None]).clamp(1.0 / max_depth, 1.0 / min_depth)
        depth = 1.0 / inv
        safe_gt = torch.where(mask, gt, depth)  # avoid 0-division on missing GT; those pixels are not counted
        ratio = torch.maximum(depth / safe_gt, safe_gt / depth)
        hits = ((ratio < 1.25) & mask).flatten(1).sum(1)
        d1 = hits.to(depth.dtype) / mask.flatten(1).sum(1).clamp_min(1).to(depth.dtype)
    return PseudoMetric(depth=depth, alpha=alpha, beta=beta, d1=d1)


def pseudo_metric_loss(
    pred: torch.Tensor, pseudo: PseudoMetric, rho: float, variance_focus: float = 0.85
) -> tuple[torch.Tensor, torch.Tensor]:
    """SILog of ``pred`` against the pseudo depth on images whose pseudo d1 > ``rho``.

    Uses ALL pixels of the gated images: the point is to supervise where the GT is missing.
    Returns ``(loss, gate)`` with ``gate`` (B,) bool.
    """
    gate = pseudo.d1 > rho
    if not gate.any():
        return _zero(pred), gate
    p = pred[gate]
    return silog_loss(p, pseudo.depth[gate].detach(), torch.ones_like(p, dtype=torch.bool), variance_focus), gate


def _sup_con(logits: torch.Tensor, positive: torch.Tensor) -> torch.Tensor:
    """Supervised-contrastive InfoNCE: per anchor (row), mean over its positives of -log softmax.

    Entries to leave out of the softmax must already be -inf in ``logits``. Averages over anchors with
    at least one positive; a graph-keeping zero when there is none.
    """
    count = positive.sum(1)
    has_pos = count > 0
    if not has_pos.any():
        return _zero(logits[positive])
    log_prob = logits - torch.logsumexp(logits, dim=1, keepdim=True)
    # where() keeps -inf (excluded entries) out of the sum and out of the gradient.
    pos_sum = torch.where(positive, log_prob, torch.zeros_like(log_prob)).sum(1)
    return -(pos_sum[has_pos] / count[has_pos]).mean()


def image_contrast_loss(
    features: torch.Tensor, scale: torch.Tensor, rank_threshold: int = 1, temperature: float = 0.1
) -> torch.Tensor:
    """Image-level scale-oriented contrast over pooled features (B, C), ordered by pseudo ``scale`` (B,).

    docs/tr2m.md calls pairs with rank distance < t positives, which for t = 1 leaves only the image itself;
    here two different images are positives when ``0 < |rank_i - rank_j| <= rank_threshold`` (with the
    default 1: neighbours in the scale ordering). All other images are negatives; self is excluded.
    """
    b = features.shape[0]
    if b < 2:
        return _zero(features)
    rank = torch.empty(b, dtype=torch.long, device=scale.device)
    rank[torch.argsort(scale.detach(), stable=True)] = torch.arange(b, device=scale.device)
    dist = (rank[:, None] - rank[None, :]).abs()
    positive = (dist > 0) & (dist <= rank_threshold)
    f = F.normalize(features, dim=1)
    eye = torch.eye(b, dtype=torch.bool, device=features.device)
    logits = (f @ f.T / temperature).masked_fill(eye, float("-inf"))
    return _sup_con(logits, positive.to(features.device))


def depth_classes(depth: torch.Tensor, d_min: float, d_max: float, num_classes: int) -> torch.Tensor:
    """Depth class ``Y = round((d_max - D) / (d_max - d_min) * num_classes)`` in [0, num_classes] (docs/tr2m.md).

    Near is a high class; ``torch.round`` rounds halves to even. There are ``num_classes + 1`` labels.
    """
    y = torch.round((d_max - depth) / (d_max - d_min) * num_classes)
    return y.clamp(0, num_classes).long()


def pixel_contrast_loss(
    query: torch.Tensor,
    key: torch.Tensor,
    depth: torch.Tensor,
    mask: torch.Tensor,
    d_min: float,
    d_max: float,
    num_classes: int,
    temperature: float = 0.1,
    samples: int = 256,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """Pixel-level scale-oriented contrast, MoCo-style.

    Per image, up to ``samples`` valid pixels are drawn uniformly without replacement (the same pixels
    for ``query`` and ``key``, both (B, C, H, W)); the samples of all images are pooled. Query pixels are
    anchors; key pixels (detached: they come from the EMA network) are candidates; positives are keys
    of the same depth class, including the key of the anchor's own pixel (the MoCo positive).
    """
    qs, ks, cs = [], [], []
    for b in range(query.shape[0]):
        idx = mask[b].flatten().nonzero().squeeze(1)
        if idx.numel() > samples:
            gen_device = generator.device if generator is not None else "cpu"
            perm = torch.randperm(idx.numel(), generator=generator, device=gen_device).to(idx.device)
            idx = idx[perm[:samples]]
        qs.append(query[b].flatten(1)[:, idx].T)
        ks.append(key[b].detach().flatten(1)[:, idx].T)
        cs.append(depth_classes(depth[b].flatten()[idx], d_min, d_max, num_classes))
    q = F.normalize(torch.cat(qs), dim=1)
    if q.shape[0] == 0:
        return _zero(q)
    k = F.normalize(torch.cat(ks), dim=1)
    c = torch.cat(cs)
    return _sup_con(q @ k.T / temperature, c[:, None] == c[None, :])


def edge_aware_smoothness(maps: torch.Tensor, image: torch.Tensor) -> torch.Tensor:
    """Edge-aware smoothness (monodepth2): mean ``|d map| * exp(-mean_c |d image|)`` along x plus along y.

    ``maps`` is (B, 1, H, W) or (B, H, W); ``image`` (B, 3, h, w) in [0, 1] is resized bilinearly to the
    maps' size when it differs, so map gradients are allowed where the image has edges.
    """
    if maps.dim() == 3:
        maps = maps.unsqueeze(1)
    if image.shape[-2:] != maps.shape[-2:]:
        image = F.interpolate(image, size=maps.shape[-2:], mode="bilinear", align_corners=False)
    dx = (maps[..., :, 1:] - maps[..., :, :-1]).abs()
    dy = (maps[..., 1:, :] - maps[..., :-1, :]).abs()
    ix = (image[..., :, 1:] - image[..., :, :-1]).abs().mean(1, keepdim=True)
    iy = (image[..., 1:, :] - image[..., :-1, :]).abs().mean(1, keepdim=True)
    return (dx * torch.exp(-ix)).mean() + (dy * torch.exp(-iy)).mean()


@torch.no_grad()
def ema_update(target: nn.Module, source: nn.Module, momentum: float) -> None:
    """Key-network update: ``t = momentum * t + (1 - momentum) * s`` for parameters; buffers copied."""
    for (tn, tp), (sn, sp) in zip(target.named_parameters(), source.named_parameters(), strict=True):
        if tn != sn:
            raise ValueError(f"EMA parameter mismatch: {tn!r} vs {sn!r}")
        tp.mul_(momentum).add_(sp.detach(), alpha=1.0 - momentum)
    for (tn, tb), (sn, sb) in zip(target.named_buffers(), source.named_buffers(), strict=True):
        if tn != sn:
            raise ValueError(f"EMA buffer mismatch: {tn!r} vs {sn!r}")
        tb.copy_(sb)
