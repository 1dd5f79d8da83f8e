"""PureCLIP-Depth targets and losses (paper eqs. 11-15; pureclip-depth.md "Targets", "Losses").

Targets are built from GT depth at the encoder's input resolution: one mean depth and one bin
index per patch, and a mask of the patches that supervise. Two masking rules exist:

- ``reference`` (default; the reference code): a pixel is valid when GT > 0.1 m and <= max;
  a patch supervises when any of its pixels is valid.
- ``paper``: a pixel is valid when min <= GT <= max (0 = missing never counts); a patch is
  ignored when more than half of its pixels are invalid.

Either way a patch is also dropped unless more than half of it lies inside an optional region
mask (the Garg mask on KITTI).
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

PATCH_RULES = ("reference", "paper")
REFERENCE_MIN_VALID_DEPTH = 0.1  # metres; the reference code's validity threshold


@dataclass
class PatchTargets:
    depth: torch.Tensor  # (B, h, w) mean of the valid GT pixels of each patch (0 where none)
    bins: torch.Tensor  # (B, h, w) long, index of the uniform bin holding that mean
    mask: torch.Tensor  # (B, h, w) bool, patches that supervise
    pixel_valid: torch.Tensor  # (B, H, W) bool, pixels the RMSE loss uses


def valid_pixels(depth: torch.Tensor, min_depth: float, max_depth: float, rule: str) -> torch.Tensor:
    if rule not in PATCH_RULES:
        raise ValueError(f"loss.patch_rule must be one of {PATCH_RULES}, got {rule!r}")
    low = REFERENCE_MIN_VALID_DEPTH if rule == "reference" else min_depth
    # 0 encodes "no measurement" in every dataset, so it is invalid even when min_depth is 0.
    above = depth > low if (rule == "reference" or low <= 0) else depth >= low
    return above & (depth <= max_depth) & torch.isfinite(depth)


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
    rule: str = "reference",
    region: torch.Tensor | None = None,
) -> PatchTargets:
    """Per-patch targets from GT ``depth`` (B, H, W), H and W multiples of ``patch_size``."""
    if depth.shape[-2] % patch_size or depth.shape[-1] % patch_size:
        raise ValueError(f"depth size {tuple(depth.shape[-2:])} is not a multiple of the patch size {patch_size}")
    valid = valid_pixels(depth, min_depth, max_depth, rule)
    if region is not None:
        valid = valid & region.bool()
    count = _patch_sums(valid.float(), patch_size)
    total = _patch_sums(torch.where(valid, depth, torch.zeros_like(depth)), patch_size)
    mean = torch.where(count > 0, total / count.clamp_min(1), torch.zeros_like(total))
    if rule == "reference":
        mask = count > 0
    else:
        mask = count >= 0.5 * patch_size**2  # ignored when MORE than half are invalid
    if region is not None:
        inside = _patch_sums(region.float(), patch_size)
        mask = mask & (inside > 0.5 * patch_size**2)
    width = (max_depth - min_depth) / num_bins
    bins = ((mean - min_depth) / width).floor().long().clamp(0, num_bins - 1)
    return PatchTargets(depth=mean, bins=bins, mask=mask, pixel_valid=valid)


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
