"""PureCLIP-Depth targets and losses (paper eqs. 11-15; released ``utils/final_model.py``).

Targets are built from GT depth at the encoder's input resolution: one mean depth and one bin
index per patch, and a mask of the patches that supervise. Two masking rules exist:

- ``released`` (default; ``PatchAligner._patchify_depth``): a pixel counts when GT > 0.1 m, with
  NO upper limit; the patch mean is over those pixels; a patch supervises when it has one. A mean
  beyond ``max_depth`` takes the LAST bin (it is not dropped).
- ``paper``: a pixel is valid when min <= GT <= max (0 = missing never counts); a patch is
  ignored when more than half of its pixels are invalid.

Either way the bin is ``bucketize(mean, edges) - 1`` with edges min + k (max - min) / K, so a
mean exactly on an edge goes to the LOWER bin, and a patch is also dropped unless more than half
of it lies inside an optional region mask (the released KITTI runs: each tile's own part of the
Garg crop). The RMSE of the Depth phase uses the pixels with min < GT < max (strict).
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from ..config import PATCH_RULES

REFERENCE_MIN_VALID_DEPTH = 0.1  # metres; the released code's pixel threshold for patch targets


@dataclass
class PatchTargets:
    depth: torch.Tensor  # (B, h, w) mean of the counted GT pixels of each patch (0 where none)
    bins: torch.Tensor  # (B, h, w) long bin index of that mean (0 where the patch does not supervise)
    mask: torch.Tensor  # (B, h, w) bool, patches that supervise
    pixel_valid: torch.Tensor  # (B, H, W) bool, pixels the RMSE loss uses: min < GT < max


def counted_pixels(depth: torch.Tensor, min_depth: float, max_depth: float, rule: str) -> torch.Tensor:
    """(B, H, W) bool: the GT pixels a patch's mean is taken over, under ``rule``."""
    if rule not in PATCH_RULES:
        raise ValueError(f"pureclip.patch_rule must be one of {PATCH_RULES}, got {rule!r}")
    if rule == "released":
        return torch.isfinite(depth) & (depth > REFERENCE_MIN_VALID_DEPTH)
    # 0 encodes "no measurement" in every dataset, so it is invalid even when min_depth is 0.
    above = depth > 0 if min_depth <= 0 else depth >= min_depth
    return above & (depth <= max_depth) & torch.isfinite(depth)


def bin_index(mean: torch.Tensor, min_depth: float, max_depth: float, num_bins: int) -> torch.Tensor:
    """Bin of each patch mean: ``bucketize(mean, edges) - 1`` clamped to [-1, K - 1], edges
    min + k (max - min) / K for k = 0..K (released ``_patchify_depth``). A value on an edge goes to
    the lower bin, one beyond ``max_depth`` to the last, one at or below ``min_depth`` to -1."""
    edges = _bin_edges(min_depth, max_depth, num_bins, mean.device, mean.dtype)
    return (torch.bucketize(mean, edges) - 1).clamp(-1, num_bins - 1)


@functools.lru_cache(maxsize=16)
def _bin_edges(min_depth: float, max_depth: float, num_bins: int, device: torch.device, dtype: torch.dtype) -> torch.Tensor:
    """The K + 1 edges, computed in float64 on the host and copied to ``device`` once, not every step."""
    width = (max_depth - min_depth) / num_bins
    return (min_depth + torch.arange(num_bins + 1, dtype=torch.float64) * width).to(device, dtype)


def _patch_sums(x: torch.Tensor, patch: int) -> torch.Tensor:
    """(B, H, W) -> (B, H/patch, W/patch) sums over each patch."""
    b, h, w = x.shape
    return x.reshape(b, h // patch, patch, w // patch, patch).sum(dim=(2, 4))


def patch_targets(
    depth: torch.Tensor,
    patch_size: int,
    min_depth: float,
    max_depth: float,
    num_bins: int,
    rule: str = "released",
    region: torch.Tensor | None = None,
) -> PatchTargets:
    """Per-patch targets from GT ``depth`` (B, H, W) metres (0 = missing), H and W multiples of
    ``patch_size``; ``region`` (B, H, W) bool gates patches (more than half inside).
    Raises ValueError for a size that is not a multiple of the patch, or an unknown rule."""
    if depth.shape[-2] % patch_size or depth.shape[-1] % patch_size:
        raise ValueError(f"depth size {tuple(depth.shape[-2:])} is not a multiple of the patch size {patch_size}")
    counted = counted_pixels(depth, min_depth, max_depth, rule)
    count = _patch_sums(counted.float(), patch_size)
    total = _patch_sums(torch.where(counted, depth, torch.zeros_like(depth)), patch_size)
    mean = torch.where(count > 0, total / count.clamp_min(1), torch.zeros_like(total))
    bins = bin_index(mean, min_depth, max_depth, num_bins)
    mask = bins >= 0  # a patch with no counted pixel has mean 0, below the first edge
    if rule == "paper":
        mask = mask & (count >= 0.5 * patch_size**2)  # ignored when MORE than half are invalid
    if region is not None:
        mask = mask & (_patch_sums(region.float(), patch_size) > 0.5 * patch_size**2)
    pixel_valid = torch.isfinite(depth) & (depth > min_depth) & (depth < max_depth)
    return PatchTargets(depth=mean, bins=bins.clamp_min(0), mask=mask, pixel_valid=pixel_valid)


def _masked_mean(values: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    # A batch with no valid patch contributes zero loss (and zero gradient), not NaN.
    return (values * mask).sum() / mask.sum().clamp_min(1)


def infonce_loss(logits: torch.Tensor, bins: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Masked mean over patches of cross-entropy(s_i / tau, y_i) (eq. 13)."""
    ce = F.cross_entropy(logits.flatten(0, -2), bins.flatten(), reduction="none").view_as(bins)
    return _masked_mean(ce, mask)


def alignment_loss(z: torch.Tensor, table: torch.Tensor, bins: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Masked mean of 1 - cos(z_i, w_{y_i}) (eq. 14); ``z`` and ``table`` are unit vectors."""
    return _masked_mean(1.0 - (z * table[bins]).sum(-1), mask)


def rmse_loss(pred: torch.Tensor, gt: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
    """sqrt(mean over valid pixels of (pred - gt)^2), pooled over the batch (eq. 15)."""
    sq = torch.where(valid, (pred - gt) ** 2, torch.zeros_like(pred))
    # The floor keeps the gradient of sqrt finite when the prediction is exact.
    return torch.sqrt((sq.sum() / valid.sum().clamp_min(1)).clamp_min(1e-12))


def embedding_loss(
    z: torch.Tensor, logits: torch.Tensor, table: torch.Tensor, targets: PatchTargets, infonce_weight: float
) -> dict[str, torch.Tensor]:
    """L_emb = L_align + lambda * L_InfoNCE (eq. 11), with both terms for logging."""
    align = alignment_loss(z, table, targets.bins, targets.mask)
    nce = infonce_loss(logits, targets.bins, targets.mask)
    return {"loss": align + infonce_weight * nce, "align": align, "infonce": nce}
