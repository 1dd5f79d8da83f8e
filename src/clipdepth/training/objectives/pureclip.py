"""Alternating Embedding/Depth optimisation of the PureCLIP-Depth head (paper sec. 2.5, 3).

- Two AdamW optimisers; the phase switches every ``phase_steps`` global steps, Embedding first.
  Embedding phase: L_align + lambda * L_InfoNCE. Depth phase: pixel RMSE on the upsampled map.
- Released code: both optimisers hold phi, psi and W. Paper: W is frozen in the Depth phase.
- The LR stays constant until ``decay_start`` epochs pass without improvement of any validation
  metric, then decays linearly to ``final_lr_factor`` at ``patience`` epochs, where training stops.
- With ``loss.patch_region`` (released KITTI: the Garg crop) each training tile's patches are gated
  by that tile's own part of the crop, built on the full frame and carried through the input crop,
  the nearest-neighbour resize and the tiling (released ``main_train_kitti.py``, ``load_garg_masks``).
"""

from __future__ import annotations

from typing import Any

import torch

from ...config import Config, PureCLIPConfig
from ...data.transforms import Preprocessor
from ...errors import ConfigError
from ...evaluation.protocol import CROPS, crop_mask
from ...features.memory import TrainBatch, pick_tiles
from ...losses import embedding_loss, patch_targets, rmse_loss
from ...models.pureclip_depth import PureCLIPDepth
from .base import Objective

EMBEDDING, DEPTH = "embedding", "depth"


def phase_at(step: int, phase_steps: int) -> str:
    """Phase of a 0-based global step: Embedding for steps [0, n), Depth for [n, 2n), ..."""
    return EMBEDDING if (step // phase_steps) % 2 == 0 else DEPTH


def lr_factor(epochs_without_improvement: int, decay_start: int, patience: int, final_lr_factor: float) -> float:
    """1 until ``decay_start``, then linear down to ``final_lr_factor`` at ``patience``."""
    if epochs_without_improvement <= decay_start:
        return 1.0
    span = max(patience - decay_start, 1)
    progress = min((epochs_without_improvement - decay_start) / span, 1.0)
    return 1.0 - progress * (1.0 - final_lr_factor)


def build_optimizers(model: PureCLIPDepth, cfg: PureCLIPConfig) -> dict[str, torch.optim.AdamW]:
    head = model.head
    mlps = [] if cfg.freeze_mlps else head.fusion_parameters()
    for p in head.fusion_parameters():
        p.requires_grad_(not cfg.freeze_mlps)
    depth_params = mlps if cfg.freeze_table_in_depth_phase else [*mlps, head.table]
    # fused: one kernel for all parameters instead of a loop over them (~10% of a cached step on CPU)
    return {
        EMBEDDING: torch.optim.AdamW([*mlps, head.table], lr=cfg.embed_lr, weight_decay=cfg.embed_weight_decay, fused=True),
        DEPTH: torch.optim.AdamW(depth_params, lr=cfg.depth_lr, weight_decay=cfg.depth_weight_decay, fused=True),
    }


class PureCLIPObjective(Objective):
    model: PureCLIPDepth

    def __init__(self, model: PureCLIPDepth, cfg: Config, trained_head: torch.nn.Module, preprocessor: Preprocessor) -> None:
        super().__init__(model, cfg, trained_head, preprocessor)
        self.optimizers = build_optimizers(model, cfg.pureclip)
        self._regions: dict[tuple[int, int], torch.Tensor] = {}  # frame size -> region at the input size

    @classmethod
    def check_config(cls, cfg: Config) -> None:
        if cfg.pureclip.patch_region not in (None, *CROPS):
            raise ConfigError(f"pureclip.patch_region must be one of {list(CROPS)} or null, got {cfg.pureclip.patch_region!r}")
        if cfg.pureclip.freeze_mlps and cfg.pureclip.freeze_table_in_depth_phase:
            raise ConfigError("pureclip.freeze_mlps with pureclip.freeze_table_in_depth_phase leaves the Depth phase nothing to train")

    def lr_factor(self, epoch: int, since_improvement: int) -> float:
        p = self.cfg.pureclip
        return lr_factor(since_improvement, p.decay_start, self.cfg.train.patience, p.final_lr_factor)

    def start_epoch(self, epoch: int, since_improvement: int) -> None:
        factor = self.lr_factor(epoch, since_improvement)
        base = {EMBEDDING: self.cfg.pureclip.embed_lr, DEPTH: self.cfg.pureclip.depth_lr}
        for phase, opt in self.optimizers.items():
            for group in opt.param_groups:
                group["lr"] = base[phase] * factor

    def patch_region(self, batch: TrainBatch) -> torch.Tensor | None:
        """(B, H, W) bool: each training tile's part of ``loss.patch_region`` at the input size,
        or None without one. The crop is built on each frame's own size (KITTI's differ by drive)."""
        crop = self.cfg.pureclip.patch_region
        if crop is None:
            return None
        for shape in set(batch.frame_shapes) - set(self._regions):
            # built on the host once per frame size and kept on the device: a step copies nothing to it
            self._regions[shape] = self.preprocessor.region(crop_mask(shape, crop)[None])[0].to(batch.depth.device)
        frames = torch.stack([self._regions[shape] for shape in batch.frame_shapes])
        return pick_tiles(frames, batch.tile, batch.tiles)

    def step(self, batch: TrainBatch, step: int, generator: torch.Generator) -> dict[str, Any]:
        cfg, head = self.cfg, self.model.head
        features, depth = batch.features, batch.depth
        phase = phase_at(step, cfg.pureclip.phase_steps)
        targets = patch_targets(
            depth,
            self.model.encoder.patch_size,
            cfg.pureclip.min_depth,
            cfg.pureclip.max_depth,
            cfg.pureclip.num_bins,
            cfg.pureclip.patch_rule,
            self.patch_region(batch),
        )
        head.train()
        out = self.trained_head(features["tokens"], features["cls"])
        if phase == EMBEDDING:
            losses = embedding_loss(out.z, out.logits, head.normalized_table(), targets, cfg.pureclip.infonce_weight)
        else:
            losses = {"loss": rmse_loss(self.model.depth_at_input(out), depth, targets.pixel_valid)}
        # Zero every head gradient, not only the active optimiser's: a parameter the other
        # phase does not step (W, when frozen in the Depth phase) must not carry gradient over.
        head.zero_grad(set_to_none=True)
        losses["loss"].backward()
        self.optimizers[phase].step()
        return {"phase": phase, **{k: v.detach() for k, v in losses.items()}}  # no host sync here
