"""RSA's training loss (the release's ``loss.py``, ``L1Loss`` with ``--loss_type``), on metric depth.

Per image b with H x W pixels and valid pixels V_b (GT in (min_depth, max_depth)):
``sum_{p in V_b} rho(pred_p - gt_p) / (H * W)``, summed over the batch. The release divides the
per-image sum by |V_b| + 1e-6 and multiplies it by (|V_b| + 1e-6) / (H * W), which is this up to
rounding. Masked sums, no boolean indexing: a step never waits for the device.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

# The release's L1Loss(reduction="none"), HuberLoss(reduction="none", delta) and MSELoss(reduction="none").
_PENALTIES = {
    "l1": lambda d, delta: d.abs(),
    "huber": lambda d, delta: F.huber_loss(d, torch.zeros_like(d), reduction="none", delta=delta),
    "l2": lambda d, delta: d.square(),
}


def rsa_depth_loss(pred: torch.Tensor, gt: torch.Tensor, mask: torch.Tensor, kind: str = "huber", delta: float = 1.0) -> torch.Tensor:
    """``pred``, ``gt`` (B, H, W) metres, ``mask`` (B, H, W) the pixels that count -> the 0-d loss
    above, with rho ``kind`` ("huber" with ``delta``, "l1" or "l2"). Pixels off the mask add 0 and
    pass no gradient (also where ``pred`` is not finite there). ValueError for another ``kind``."""
    if kind not in _PENALTIES:
        raise ValueError(f"rsa loss must be one of {list(_PENALTIES)}, got {kind!r}")
    difference = torch.where(mask, pred - gt, torch.zeros_like(pred))
    per_pixel = torch.where(mask, _PENALTIES[kind](difference, delta), torch.zeros_like(pred))
    return per_pixel.sum() / (pred.shape[-2] * pred.shape[-1])
