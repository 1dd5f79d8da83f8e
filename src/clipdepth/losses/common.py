"""Losses more than one model trains with: the scale-invariant log loss (SILog) of TR2M's L_si and
pseudo loss and of the learned depth prompts (docs/tr2m.md "Losses", docs/baselines.md).

Like every loss here it reduces over the whole batch with masked sums, never boolean indexing or a
branch on a device value, so that a training step does not wait for the device.
"""

from __future__ import annotations

import torch

_SILOG_EPS = 1e-12  # added to the sqrt argument: keeps the gradient finite at a perfect fit


def silog_losses(pred: torch.Tensor, targets: torch.Tensor, masks: torch.Tensor, variance_focus: float = 0.85) -> torch.Tensor:
    """``silog_loss`` of one prediction against K targets at once: ``pred`` (B, H, W) and ``targets`` /
    ``masks`` (K, B, H, W) -> (K,) losses, each over its own mask (one pass for TR2M's L_si and pseudo
    loss instead of two). The gradient flows to ``pred`` only."""
    return _SILog.apply(pred, targets.detach(), masks, variance_focus)


class _SILog(torch.autograd.Function):
    """``silog_losses`` with its gradient written out, 5 kernels where autograd's chain launches ~20: with
    ``c = (g - mean g) * m``, ``d loss / d pred = (c + (1 - vf) * mean g * m) / (n * loss * pred)``, summed
    over the K terms (0 for a term with an empty mask)."""

    @staticmethod
    def forward(ctx, pred: torch.Tensor, targets: torch.Tensor, masks: torch.Tensor, variance_focus: float):
        dims = tuple(range(1, targets.dim()))
        m = masks.to(pred.dtype)
        # Off-mask entries of both become 1 (log 0 is -inf, NaN stays NaN), so that g = log(pred / target)
        # is finite everywhere and 0 off the mask, where its gradient is 0.
        safe_target = targets.masked_fill(~masks, 1.0)
        safe = torch.where(masks, pred, safe_target)
        g = torch.log(safe / safe_target)
        n = m.sum(dims)
        n_safe = n.clamp_min(1)
        mean = g.sum(dims) / n_safe
        mean_view = mean.view(-1, *[1] * len(dims))
        centred = torch.addcmul(g, mean_view, m, value=-1.0)  # g is 0 off the mask already
        # mean(g^2) - vf*mean^2 == var(g) + (1 - vf)*mean^2; the centred form avoids cancellation when
        # pred is (nearly) a scaled copy of target.
        arg = (centred.square().sum(dims) / n_safe).addcmul(mean, mean, value=1.0 - variance_focus)
        # eps keeps the gradient finite at a perfect fit; it is below arg's rounding unless arg is ~0
        root = torch.sqrt(arg + _SILOG_EPS)
        ctx.save_for_backward(safe, m, centred, mean_view, n_safe * root)
        ctx.variance_focus = variance_focus
        return root * (n > 0)  # an empty mask: 0, and a 0 gradient (its centred and m are 0)

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        safe, m, centred, mean_view, n_root = ctx.saved_tensors
        slope = torch.addcmul(centred, mean_view, m, value=1.0 - ctx.variance_focus)
        grad_pred = (slope * (grad / n_root).view_as(mean_view) / safe).sum(0)
        return grad_pred, None, None, None


def silog_loss(pred: torch.Tensor, target: torch.Tensor, mask: torch.Tensor, variance_focus: float = 0.85) -> torch.Tensor:
    """Scale-invariant log loss over the masked pixels of the whole batch (BTS/AdaBins, no x10).

    ``sqrt(mean(g^2) - variance_focus * mean(g)^2)`` with ``g = log(pred) - log(target)``; ``pred`` and
    ``target`` must be positive on ``mask``. An empty mask gives 0, still attached to ``pred``'s graph.
    """
    return silog_losses(pred, target[None], mask[None], variance_focus)[0]
