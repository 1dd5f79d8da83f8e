"""TR2M losses (docs/tr2m.md "Losses"): the scale-invariant log loss (``common``), threshold-gated pseudo-metric loss,
image- and pixel-level scale-oriented contrast, edge-aware smoothness, and the EMA update of the
key network.

All functions take plain tensors, work on any device and reduce over the whole batch. None of them
waits for the device: masks enter as masked reductions (``where``, sums and counts), never as boolean
indexing or a branch on a device value, and pixels are sampled on the device with fixed shapes, so a
training step queues its kernels without a host sync (``benchmarks/step_overhead.py``).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from .common import silog_loss

_NORM_EPS = 1e-12  # F.normalize's floor of the norm


def _zero(like: torch.Tensor) -> torch.Tensor:
    """A scalar zero still attached to ``like``'s (finite) graph, so ``backward()`` works on an empty loss."""
    return like.sum() * 0


def fit_affine(relative: torch.Tensor, target: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-image least squares of ``alpha * relative + beta ~ target`` on ``mask`` (no gradient).

    Degenerate images (fewer than 2 valid pixels, or constant ``relative``) get ``alpha = 0`` and
    ``beta`` = the mean valid target (0 with no valid pixel).
    """
    alpha, beta, _, _ = _fit_affine(relative, target, mask)
    return alpha, beta


@torch.no_grad()
def _fit_affine(
    relative: torch.Tensor, target: torch.Tensor, mask: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """``fit_affine``'s ``(alpha, beta)``, and the valid-pixel count (B,) and the masked target (B, H * W),
    both float64, for ``pseudo_metric``'s d1.

    All the sums come from one batched product: with x = [relative, target, 1] on the mask (0 off it),
    x x^T holds sum r^2, sum r t, sum r, sum t and n per image. float64 keeps the one-pass moments
    n sum r^2 - (sum r)^2 exact to ~1e-16 of their terms, far below the degeneracy threshold.
    """
    valid = mask.flatten(1)
    x = torch.stack([relative.flatten(1), target.flatten(1), valid], 1).double()  # (B, 3, N)
    # masked_fill rather than a product: unmasked pixels may hold inf/NaN, and NaN * 0 is NaN.
    x = x.masked_fill(~valid[:, None], 0.0)
    moments = torch.bmm(x, x.transpose(1, 2))  # (B, 3, 3)
    n, sums = moments[:, 2, 2], moments[:, 2, :2]  # n and [sum r, sum t]
    scaled = n[:, None] * moments[:, 0, :2]  # n * [sum r^2, sum r t]
    var, cov = torch.addcmul(scaled, moments[:, 0, 2:], sums, value=-1.0).unbind(1)  # n^2 * (var r, cov(r, t))
    # Relative threshold: a constant map leaves only rounding noise (~1e-16 of n sum r^2) in var; with
    # fewer than 2 pixels var is 0 (up to rounding) too.
    alpha = (cov / var).masked_fill(var <= 1e-12 * scaled[:, 0], 0.0)  # var may be 0 there: that value is not taken
    n_safe = n.clamp_min(1.0)
    beta = torch.addcmul(sums[:, 1], alpha, sums[:, 0], value=-1.0) / n_safe  # mean t - alpha * mean r
    return alpha.to(relative.dtype), beta.to(relative.dtype), n_safe, x[:, 1]


@dataclass
class PseudoMetric:
    depth: torch.Tensor  # (B, H, W) metres, 1 / (alpha * relative + beta), in [min_depth, max_depth]
    alpha: torch.Tensor  # (B,) pseudo scale (image-level contrast sorts by it)
    beta: torch.Tensor  # (B,) pseudo shift
    d1: torch.Tensor  # (B,) fraction of GT pixels with max(p/g, g/p) < 1.25 (0 with no GT pixel), float64


def pseudo_metric(
    relative: torch.Tensor, gt: torch.Tensor, mask: torch.Tensor, min_depth: float = 1e-3, max_depth: float = 10.0
) -> PseudoMetric:
    """Globally rescaled relative map as pseudo GT, and its per-image d1 against the GT.

    ``relative`` is inverse-depth-like (Depth Anything), so the affine fit is done against 1/gt,
    consistent with the model's ``D_m = 1 / (A * D_r + B)``.
    """
    with torch.no_grad():
        alpha, beta, n, inv_gt = _fit_affine(relative, gt.reciprocal(), mask)  # inv_gt (B, H * W): 0 off the mask
        inv = torch.addcmul(beta[:, None, None], alpha[:, None, None], relative).clamp(1.0 / max_depth, 1.0 / min_depth)
        # max(p/g, g/p) < 1.25  <=>  p/g = (1/g) / (1/p) in (1/1.25, 1.25), an interval centred on 1.025; pixels
        # off the mask have p/g = 0 and do not count
        ratio = inv_gt / inv.flatten(1)
        d1 = ((ratio - 1.025).abs() < 0.225).sum(1) / n
    return PseudoMetric(depth=inv.reciprocal(), alpha=alpha, beta=beta, d1=d1)


def pseudo_gate(pseudo: PseudoMetric, rho: float) -> torch.Tensor:
    """(B,) bool: the images whose pseudo d1 > ``rho``, supervised by their pseudo depth."""
    return pseudo.d1 > rho


def pseudo_metric_loss(
    pred: torch.Tensor, pseudo: PseudoMetric, rho: float, variance_focus: float = 0.85
) -> tuple[torch.Tensor, torch.Tensor]:
    """SILog of ``pred`` against the pseudo depth on images whose pseudo d1 > ``rho``.

    Uses ALL pixels of the gated images: the point is to supervise where the GT is missing.
    Returns ``(loss, gate)`` with ``gate`` (B,) bool; 0 (graph-keeping) when no image is gated.
    """
    gate = pseudo_gate(pseudo, rho)
    return silog_loss(pred, pseudo.depth.detach(), gate[:, None, None].expand_as(pred), variance_focus), gate


class _Normalize(torch.autograd.Function):
    """``scale * F.normalize(x, dim=-1)`` with its gradient written out: ``(g - y (y . g) / scale^2) / d`` for
    ``y = x / d``, ``d = |x| / scale``, 4 kernels where autograd's chain through the norm and the clamp
    launches ~13. ``scale = 1 / sqrt(temperature)`` puts a contrast's temperature into the features, so
    that their products are the logits. Below the norm floor (never for features) it is the projection's
    gradient divided by the floor, where ``F.normalize``'s is ``g`` divided by the floor; both are 0 for
    an all-zero ``x``."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, scale: float) -> torch.Tensor:
        divisor = torch.linalg.vector_norm(x, dim=-1, keepdim=True).clamp_min(_NORM_EPS) / scale
        y = x / divisor
        ctx.save_for_backward(y, divisor)
        ctx.scale = scale
        return y

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        y, divisor = ctx.saved_tensors
        return torch.addcmul(grad, y, (y * grad).sum(-1, keepdim=True), value=-1.0 / ctx.scale**2) / divisor, None


def _excluded(logits: torch.Tensor) -> float:
    """What an entry left out of a softmax holds: the dtype's lowest finite value, not -inf, so that
    ``exp`` gives exactly 0 yet products with a 0 weight stay 0 (-inf * 0 is NaN)."""
    return torch.finfo(logits.dtype).min


def _sup_con(logits: torch.Tensor, positive: torch.Tensor) -> torch.Tensor:
    """Supervised-contrastive InfoNCE: per anchor (row), mean over its positives of -log softmax.

    Entries to leave out of the softmax must already hold ``_excluded(logits)``. Averages over anchors
    with at least one positive; a graph-keeping zero when there is none.
    """
    with torch.no_grad():  # each positive's weight: -1 / (its anchor's positives * anchors with a positive)
        count = positive.sum(1)
        weight = positive / (count.clamp_min(1) * (count > 0).sum().clamp_min(1).neg())[:, None]
    return (torch.log_softmax(logits, dim=1) * weight).sum()


def image_contrast_loss(features: torch.Tensor, scale: torch.Tensor, rank_threshold: int = 1, temperature: float = 0.1) -> torch.Tensor:
    """Image-level scale-oriented contrast over pooled features (B, C), ordered by pseudo ``scale`` (B,).

    docs/tr2m.md calls pairs with rank distance < t positives, which for t = 1 leaves only the image itself;
    here two different images are positives when ``0 < |rank_i - rank_j| <= rank_threshold`` (with the
    default 1: neighbours in the scale ordering). All other images are negatives; self is excluded.
    """
    b = features.shape[0]
    if b < 2:
        return _zero(features)
    # the inverse permutation
    rank = torch.argsort(torch.argsort(scale.detach().to(features.device), stable=True), stable=True)
    dist = (rank[:, None] - rank[None, :]).abs()
    self_pair = dist == 0  # the ranks are a permutation: the diagonal alone
    f = _Normalize.apply(features, temperature**-0.5)
    logits = f @ f.T  # cosine / temperature (bf16 under autocast, whatever f's dtype)
    logits = logits.masked_fill(self_pair, _excluded(logits))  # self left out
    return _sup_con(logits, (dist <= rank_threshold) ^ self_pair)


def depth_classes(depth: torch.Tensor, d_min: float, d_max: float, num_classes: int) -> torch.Tensor:
    """Depth class ``Y = round((d_max - D) / (d_max - d_min) * num_classes)`` in [0, num_classes] (docs/tr2m.md).

    Near is a high class; ``torch.round`` rounds halves to even. There are ``num_classes + 1`` labels.
    """
    return _class_values(depth, d_min, d_max, num_classes).long()


def _class_values(depth: torch.Tensor, d_min: float, d_max: float, num_classes: int) -> torch.Tensor:
    """``depth_classes`` in ``depth``'s floating dtype: the pixel contrast only compares them."""
    return torch.round((d_max - depth) / (d_max - d_min) * num_classes).clamp(0, num_classes)


def sample_pixels(mask: torch.Tensor, samples: int, generator: torch.Generator | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Up to ``samples`` pixels of each image of ``mask`` (B, H, W), uniformly without replacement
    among its valid ones, drawn on the device: ``(index, valid)``, (B, n) each with
    n = min(samples, H * W), flat pixel indices and whether each is a draw (the first
    min(valid count, samples) of a row are; the rest pad the row to a fixed shape).

    Each pixel gets a uniform random key in [0, 1), plus 1 if it is valid, so that every invalid key is
    below every valid one; the n largest keys of a row are a uniform draw without replacement of
    min(count, n) valid pixels.
    """
    valid = mask.flatten(1)
    device = generator.device if generator is not None else valid.device
    # drawn where the generator lives: the trainer's is on the training device, so nothing is copied
    keys = torch.rand(valid.shape, generator=generator, device=device).to(valid.device)
    index = (keys + valid).topk(min(samples, valid.shape[1]), dim=1).indices
    return index, valid.gather(1, index)


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

    Per image, up to ``samples`` valid pixels of ``mask`` (B, H, W) are drawn uniformly without
    replacement (``sample_pixels``; the same pixels for ``query`` and ``key``, both (B, C, H, W)); the
    samples of all images are pooled. Query pixels are anchors; key pixels (detached: they come from
    the EMA network) are candidates; positives are keys of the same depth class (``depth`` (B, H, W)
    metres), including the key of the anchor's own pixel (the MoCo positive). Padding entries of
    the fixed-shape sample take no part. 0 (graph-keeping) with no valid pixel.
    """
    index, valid = sample_pixels(mask, samples, generator)
    gather = index[..., None].expand(-1, -1, query.shape[1])
    q, k = _Normalize.apply(
        torch.stack(
            [  # both normalised in one pass; q . k is cosine / temperature
                query.flatten(2).transpose(1, 2).gather(1, gather),
                key.detach().flatten(2).transpose(1, 2).gather(1, gather),
            ]
        ).flatten(1, 2),
        temperature**-0.5,
    )
    padding = ~valid.flatten()
    # padding pixels get class NaN, equal to none: neither anchors nor keys of a positive pair
    c = _class_values(depth.flatten(1).gather(1, index), d_min, d_max, num_classes).flatten().masked_fill(padding, float("nan"))
    logits = q @ k.T
    logits = logits.masked_fill(padding[None, :], _excluded(logits))  # padding keys out of every softmax
    return _sup_con(logits, c[:, None] == c[None, :])


def edge_aware_smoothness(maps: torch.Tensor, image: torch.Tensor) -> torch.Tensor:
    """Edge-aware smoothness (monodepth2): mean ``|d map| * exp(-mean_c |d image|)`` along x plus along y.

    ``maps`` is (B, H, W) or (B, K, H, W): the sum of the K maps' smoothness, in one pass (TR2M's
    log A and log B). ``image`` (B, 3, h, w) in [0, 1] is resized bilinearly to the maps' size when it
    differs, so map gradients are allowed where the image has edges.
    """
    if maps.dim() == 3:
        maps = maps.unsqueeze(1)
    if image.shape[-2:] != maps.shape[-2:]:
        image = F.interpolate(image, size=maps.shape[-2:], mode="bilinear", align_corners=False)
    with torch.no_grad():  # x / exp(e) is x * exp(-e) up to rounding, without a negation
        ex = torch.exp((image[..., :, 1:] - image[..., :, :-1]).abs().mean(1, keepdim=True))
        ey = torch.exp((image[..., 1:, :] - image[..., :-1, :]).abs().mean(1, keepdim=True))
    return _EdgeAwareSmoothness.apply(maps, ex, ey)


class _EdgeAwareSmoothness(torch.autograd.Function):
    """K * (mean(|dx maps| / ex) + mean(|dy maps| / ey)) for maps (B, K, H, W) and edge divisors ex
    (B, 1, H, W - 1), ey (B, 1, H - 1, W) (the mean over K maps times K: each map's mean, summed).

    |d| / e = d * sign(d) / e, and the signed weights sign(d) / e are the gradient with respect to each
    difference (sign(0) = 0, as autograd's subgradient of abs), so the backward scatters them onto the
    map in 6 kernels where autograd's chain through slices and abs launches ~18."""

    @staticmethod
    def forward(ctx, maps: torch.Tensor, ex: torch.Tensor, ey: torch.Tensor) -> torch.Tensor:
        dx = maps[..., :, 1:] - maps[..., :, :-1]
        dy = maps[..., 1:, :] - maps[..., :-1, :]
        wx, wy = dx.sgn().div_(ex), dy.sgn().div_(ey)
        ctx.scales = maps.shape[1] / dx.numel(), maps.shape[1] / dy.numel()
        ctx.shape = maps.shape
        ctx.save_for_backward(wx, wy)
        return torch.add((dx * wx).sum() * ctx.scales[0], (dy * wy).sum(), alpha=ctx.scales[1])

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        wx, wy = ctx.saved_tensors
        (cx, cy), grad_maps = ctx.scales, wx.new_zeros(ctx.shape)
        grad_maps[..., :, 1:].add_(wx, alpha=cx)
        grad_maps[..., :, :-1].sub_(wx, alpha=cx)
        grad_maps[..., 1:, :].add_(wy, alpha=cy)
        grad_maps[..., :-1, :].sub_(wy, alpha=cy)
        return grad_maps.mul_(grad), None, None


def _paired(target, source, kind: str) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
    """Two modules' named parameters (or buffers), checked to match name by name."""
    targets, sources = [], []
    for (tn, t), (sn, s) in zip(target, source, strict=True):
        if tn != sn:
            raise ValueError(f"EMA {kind} mismatch: {tn!r} vs {sn!r}")
        targets.append(t)
        sources.append(s.detach())
    return targets, sources


@torch.no_grad()
def ema_update(target: nn.Module, source: nn.Module, momentum: float) -> None:
    """Key-network update: ``t = momentum * t + (1 - momentum) * s`` for parameters; buffers copied.

    One foreach kernel for all parameters (``t += (1 - momentum) * (s - t)``, the same update up to
    rounding). ValueError when the two modules' parameter or buffer names differ.
    """
    targets, sources = _paired(target.named_parameters(), source.named_parameters(), "parameter")
    if targets:
        torch._foreach_lerp_(targets, sources, 1.0 - momentum)
    targets, sources = _paired(target.named_buffers(), source.named_buffers(), "buffer")
    if targets:
        torch._foreach_copy_(targets, sources)
