"""TR2M's training step (docs/tr2m.md, "Losses" and "Training").

Loss = w_si * L_si(D_m, GT)
     + w_pseudo * L_si(D_m, D_pseudo) on images whose least-squares fit of D_r to the GT has d1 > rho
     + w_contrast * (image-level contrast sorted by the fit's scale + pixel-level contrast against an
       EMA key network, GT depth classes)
     + w_smooth * edge-aware smoothness of log A and log B (log: A and B live near 0.01, and
       their relative change is what matters).
One AdamW (lr, weight decay, eps from the config), a linear warm-up over ``warmup_steps`` steps,
then x ``lr_decay`` per epoch. A random caption line per frame and step, as the reference trains.

A step never waits for the device: the losses are masked reductions, the caption lines and the
contrast's pixels are drawn with the trainer's generator on the device, the key network computes
only the decoder's pixel features (``TR2MHead.pixel_features``), its EMA is one foreach kernel and
AdamW is fused.
"""

from __future__ import annotations

import copy
from typing import Any

import torch

from ...config import Config
from ...data.captions import pick_embeddings
from ...data.transforms import Preprocessor, resize_depth_masked
from ...encoders.relative import RELATIVE_SOURCES
from ...errors import ConfigError
from ...losses.tr2m import edge_aware_smoothness, ema_update, image_contrast_loss, pixel_contrast_loss, pseudo_gate, pseudo_metric
from ...losses.common import silog_losses
from ...features.memory import TrainBatch
from ...models.tr2m import TR2M, to_metric
from .base import Objective

TRAIN = "train"
LOSS_TERMS = ("si", "pseudo", "contrast", "smooth")  # weighted by tr2m.<term>_weight


class TR2MObjective(Objective):
    model: TR2M
    mixes_datasets = True  # the paper trains on NYU + KITTI + VOID + C3VD

    def __init__(self, model: TR2M, cfg: Config, trained_head: torch.nn.Module, preprocessor: Preprocessor) -> None:
        super().__init__(model, cfg, trained_head, preprocessor)
        t = cfg.tr2m
        self.optimizers = {
            # fused: one kernel for all parameters, and no per-parameter loop on the host
            TRAIN: torch.optim.AdamW(model.head.parameters(), lr=t.lr, weight_decay=t.weight_decay, eps=t.eps, fused=True)
        }
        # Key network of the pixel-level contrast: an EMA copy of the head, never trained directly.
        self.key_head = copy.deepcopy(model.head).requires_grad_(False)
        self.epoch_factor = 1.0
        self._loss_weights: torch.Tensor | None = None

    @classmethod
    def check_config(cls, cfg: Config) -> None:
        t = cfg.tr2m
        if t.relative.source not in RELATIVE_SOURCES:
            raise ConfigError(f"tr2m.relative.source must be one of {sorted(RELATIVE_SOURCES)}, got {t.relative.source!r}")
        patch = t.image_encoder.patch_size
        if t.input_height % patch or t.input_width % patch:
            raise ConfigError(
                f"tr2m.input_height/input_width must be multiples of the patch size {patch}, got {t.input_height} x {t.input_width}"
            )
        for i, entry in enumerate(cfg.mixture):
            if entry.input_size and any(side % patch for side in entry.input_size):
                raise ConfigError(
                    f"mixture[{i}].input_size={list(entry.input_size)}: both sides must be multiples of the patch size {patch}"
                )
        if cfg.data.tiles != 1:
            raise ConfigError("TR2M takes whole frames: data.tiles must be 1")

    def lr_factor(self, epoch: int, since_improvement: int) -> float:
        return self.cfg.tr2m.lr_decay ** (epoch - 1)

    def start_epoch(self, epoch: int, since_improvement: int) -> None:
        self.epoch_factor = self.lr_factor(epoch, since_improvement)

    def _weights(self, like: torch.Tensor) -> torch.Tensor:
        """The loss weights as one tensor on ``like``'s device, copied there once (not at every step)."""
        if self._loss_weights is None or self._loss_weights.device != like.device:
            weights = [getattr(self.cfg.tr2m, f"{k}_weight") for k in LOSS_TERMS]
            self._loss_weights = torch.tensor(weights).to(like.device)
        return self._loss_weights.to(like.dtype)

    def step(self, batch: TrainBatch, step: int, generator: torch.Generator) -> dict[str, Any]:
        t, head = self.cfg.tr2m, self.model.head
        features, depth = batch.features, batch.depth
        warmup = min(1.0, (step + 1) / t.warmup_steps) if t.warmup_steps > 0 else 1.0
        optimizer = self.optimizers[TRAIN]
        for group in optimizer.param_groups:
            group["lr"] = t.lr * self.epoch_factor * warmup

        text = pick_embeddings(features["text"], features["text_lines"], generator)  # one line per frame
        relative, image = features["relative"], features["image"] / 255.0
        mask = (depth > t.min_depth) & (depth < t.max_depth)

        head.train()
        out = self.trained_head(features["image_tokens"], text)
        pred = to_metric(relative, out.scale, out.shift, t.min_depth, t.max_depth, clamp=False)
        pseudo = pseudo_metric(relative, depth, mask, t.min_depth, t.max_depth)
        gate = pseudo_gate(pseudo, t.pseudo_rho)
        # L_si against the GT on its pixels and the pseudo loss on all pixels of the gated images, in one pass
        si_pseudo = silog_losses(
            pred, torch.stack([depth, pseudo.depth]), torch.stack([mask, gate[:, None, None].expand_as(mask)]), t.si_variance_focus
        )
        contrast = image_contrast_loss(out.pooled, pseudo.alpha, t.contrast_rank_threshold, t.contrast_temperature)
        if out.pixel_features is not None:
            with torch.no_grad():
                keys = self.key_head.pixel_features(features["image_tokens"], text)
            size = tuple(out.pixel_features.shape[-2:])
            small = resize_depth_masked(depth, size, "antialias")  # class maps of the decoder grid
            contrast = contrast + pixel_contrast_loss(
                out.pixel_features,
                keys,
                small,
                (small > t.min_depth) & (small < t.max_depth),
                t.min_depth,
                t.max_depth,
                t.contrast_classes,
                t.contrast_temperature,
                t.contrast_pixels,
                generator,
            )
        smooth = edge_aware_smoothness(out.log_maps, image)
        terms = torch.cat([si_pseudo, contrast[None], smooth[None]])  # in LOSS_TERMS order
        total = torch.dot(terms, self._weights(pred))
        head.zero_grad(set_to_none=True)
        total.backward()
        optimizer.step()
        ema_update(self.key_head, head, t.ema_momentum)
        return {
            "phase": TRAIN,
            "loss": total.detach(),
            **dict(zip(LOSS_TERMS, terms.detach())),
            # read back with the losses (``trainer.check_finite``)
            "pseudo_gated": torch.mean(gate, dtype=torch.float32),
        }

    def extra_state(self) -> dict[str, Any]:
        return {"key_head": self.key_head.state_dict()}

    def load_extra_state(self, state: dict[str, Any]) -> None:
        self.key_head.load_state_dict(state["key_head"])
