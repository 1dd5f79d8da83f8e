"""Frozen relative-depth sources whose output TR2M rescales to metric depth (docs/tr2m.md, "Components").

Every source is called as ``source(images, depth, names)``: images (B, 3, H, W) in [0, 1], depth
(B, H, W) metres with 0 = invalid (or None), the frame names; it returns a (B, H, W) float32
relative inverse-depth-like map at the input resolution.

- ``DepthAnythingSource``: the paper's source, a ``DepthAnythingForDepthEstimation``; ignores depth.
- ``OracleRelativeSource``: relative depth MADE FROM THE GROUND TRUTH, for tests, the synthetic
  demo and ablations only; it cannot run on images without depth.

Every model that rescales relative depth (TR2M, RSA) builds its source with ``build_relative_source``
from a ``RelativeDepthConfig`` of its own section, whose name (``section``) the messages and the
checkpoints' record of untrained parts give.
"""

from __future__ import annotations

import hashlib
import math
from typing import Protocol

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from transformers import DepthAnythingConfig, DepthAnythingForDepthEstimation, Dinov2Config

from ..config import RelativeDepthConfig
from ..errors import ConfigError, DataError
from .frozen import FrozenImageModel, load_pretrained, random_weights

DEPTH_ANYTHING_HINT = (
    "Depth Anything weights (e.g. LiheYoung/depth-anything-small-hf, or a folder saved by DepthAnythingForDepthEstimation.save_pretrained)"
)
DEPTH_ANYTHING_PATCH_SIZE = 14
DPT_STAGES = 4  # the DPT neck reassembles four backbone stages
ORACLE_DESCRIPTION = "ORACLE relative depth from ground truth (tests/demo/ablations only)"


class RelativeDepthSource(Protocol):
    """What TR2M needs of a source; ``is_oracle`` marks maps made from the ground truth."""

    is_oracle: bool
    description: str

    def __call__(self, images: torch.Tensor, depth: torch.Tensor | None, names: list[str]) -> torch.Tensor: ...

    def fingerprint(self) -> str: ...


class DepthAnythingSource(FrozenImageModel):
    """Frozen Depth Anything: relative inverse depth (disparity-like) from the image alone."""

    is_oracle = False
    part = "tr2m.relative"

    def __init__(self, model: DepthAnythingForDepthEstimation, description: str) -> None:
        super().__init__(model, description)

    @classmethod
    def from_config(cls, cfg: RelativeDepthConfig, section: str = "tr2m.relative") -> DepthAnythingSource:
        source = cls._from_config(cfg, section)
        source.part = section  # the section that names these weights (``untrained_parts``)
        return source

    @classmethod
    def _from_config(cls, cfg: RelativeDepthConfig, section: str) -> DepthAnythingSource:
        if not cfg.random_init:
            return cls.from_pretrained(cfg.name)
        if cfg.num_layers < DPT_STAGES or len(cfg.neck_hidden_sizes) != DPT_STAGES:
            raise ConfigError(
                f"{section}: a random Depth Anything needs num_layers >= {DPT_STAGES} and {DPT_STAGES} "
                f"neck_hidden_sizes (one per DPT stage), got {cfg.num_layers} and {cfg.neck_hidden_sizes}"
            )
        backbone = Dinov2Config(
            hidden_size=cfg.hidden_size,
            num_hidden_layers=cfg.num_layers,
            num_attention_heads=cfg.num_heads,
            patch_size=DEPTH_ANYTHING_PATCH_SIZE,
            # Depth Anything V1 feeds the last four layers to the DPT neck (stage 0 is the embedding).
            out_indices=list(range(cfg.num_layers - DPT_STAGES + 1, cfg.num_layers + 1)),
            reshape_hidden_states=False,
        )
        config = DepthAnythingConfig(
            backbone_config=backbone,
            patch_size=DEPTH_ANYTHING_PATCH_SIZE,
            reassemble_hidden_size=cfg.hidden_size,
            neck_hidden_sizes=list(cfg.neck_hidden_sizes),
            fusion_hidden_size=cfg.fusion_hidden_size,
        )
        model = random_weights(lambda: DepthAnythingForDepthEstimation(config), cfg.seed)
        return cls(model, f"random-weight Depth Anything, seed {cfg.seed} (untrained; for tests and the demo)")

    @classmethod
    def from_pretrained(cls, name_or_path: str) -> DepthAnythingSource:
        """Weights from a Hugging Face Hub id or a folder saved by ``save_pretrained``."""
        return cls(load_pretrained(DepthAnythingForDepthEstimation, name_or_path, DEPTH_ANYTHING_HINT), name_or_path)

    def forward(self, images: torch.Tensor, depth: torch.Tensor | None, names: list[str]) -> torch.Tensor:
        """(B, 3, H, W) in [0, 1] -> (B, H, W) float32; ``depth`` and ``names`` are not used."""
        height, width = images.shape[-2:]
        pixel_values = self.normalize(images)
        # The model works on whole patches: as Depth Anything's own processor does, other sizes are
        # resized to the nearest multiple of the patch size, and the prediction back to (H, W).
        patch = self.patch_size
        size = (max(patch, round(height / patch) * patch), max(patch, round(width / patch) * patch))
        if size != (height, width):
            pixel_values = F.interpolate(pixel_values, size=size, mode="bilinear", align_corners=False)
        predicted = self.model(pixel_values=pixel_values).predicted_depth.unsqueeze(1).float()
        if predicted.shape[-2:] != (height, width):
            predicted = F.interpolate(predicted, size=(height, width), mode="bilinear", align_corners=False)
        return predicted.squeeze(1)


def fill_invalid(values: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
    """Dense (H, W) map equal to ``values`` on valid pixels, holes filled from their surroundings.

    Pull-push: masked sums and counts are halved repeatedly down to one pixel; going back up, each
    pixel keeps its own level's masked average where that level has data and otherwise takes the
    bilinear upsampling of the coarser filled level. Small holes get their neighbours' values; a large
    invalid region (sky at the top of an outdoor frame) gets the values of the nearest valid content,
    smoothly, rather than "infinitely far". Valid pixels keep their values exactly.
    """
    sums = (values * valid)[None, None]
    counts = valid.to(values.dtype)[None, None]
    pyramid = [(sums, counts)]
    while max(sums.shape[-2:]) > 1:
        # Zero padding adds neither sum nor count; a length-1 side stays 1.
        pad = (0, sums.shape[-1] % 2, 0, sums.shape[-2] % 2)
        sums = F.avg_pool2d(F.pad(sums, pad), 2)
        counts = F.avg_pool2d(F.pad(counts, pad), 2)
        pyramid.append((sums, counts))
    filled = sums / counts  # the top level is one pixel with every valid pixel in it
    for sums, counts in reversed(pyramid[:-1]):
        coarse = F.interpolate(filled, size=sums.shape[-2:], mode="bilinear", align_corners=False)
        filled = torch.where(counts > 0, sums / counts, coarse)
    return filled[0, 0]


def _frame_rng(seed: int, name: str) -> np.random.Generator:
    """A generator that depends only on (seed, frame name): the same frame gets the same map in any batch."""
    digest = hashlib.sha256(f"{seed}\0{name}".encode()).digest()
    return np.random.default_rng(int.from_bytes(digest[:16], "little"))


def _check_range(label: str, bounds: list[float], positive: bool, section: str) -> tuple[float, float]:
    if len(bounds) != 2 or bounds[0] > bounds[1] or (positive and bounds[0] <= 0):
        need = "0 < low <= high" if positive else "low <= high"
        raise ConfigError(f"{section}.{label} must be [low, high] with {need}, got {bounds}")
    return float(bounds[0]), float(bounds[1])


class OracleRelativeSource(nn.Module):
    """ORACLE: relative depth made from the ground truth (tests, the synthetic demo, ablations only).

    Per frame: inverse depth, holes filled (``fill_invalid``), divided by its maximum, raised to a
    power gamma, times exp(distortion * smooth random field), then scale * u + shift. Gamma, the
    field and the affine map are drawn from (seed, frame name), so a frame's map never changes.
    With gamma = 1 and distortion = 0 it is exactly an affine map of 1/depth on valid pixels.
    """

    is_oracle = True

    def __init__(
        self,
        seed: int = 0,
        scale: tuple[float, float] = (0.5, 2.0),
        shift: float = 0.1,
        gamma: tuple[float, float] = (1.0, 1.0),
        distortion: float = 0.1,
        cells: int = 4,
        section: str = "tr2m.relative",
    ) -> None:
        super().__init__()
        self.seed = seed
        self.section = section  # the config section it was made from (its messages name it)
        self.scale = _check_range("oracle_scale", list(scale), True, section)
        self.gamma = _check_range("oracle_gamma", list(gamma), True, section)
        if shift < 0 or distortion < 0 or cells < 1:
            raise ConfigError(
                f"{section}: oracle_shift and oracle_distortion must be >= 0 and oracle_distortion_cells >= 1, "
                f"got {shift}, {distortion} and {cells}"
            )
        self.shift = float(shift)
        self.distortion = float(distortion)
        self.cells = cells
        self.description = (
            f"{ORACLE_DESCRIPTION}: seed {seed}, scale log-uniform in {list(self.scale)}, shift up to {self.shift} "
            f"x scale, gamma in {list(self.gamma)}, distortion {self.distortion} on a {cells}x{cells}-cell field"
        )

    @classmethod
    def from_config(cls, cfg: RelativeDepthConfig, section: str = "tr2m.relative") -> OracleRelativeSource:
        return cls(
            seed=cfg.oracle_seed,
            scale=tuple(cfg.oracle_scale),
            shift=cfg.oracle_shift,
            gamma=tuple(cfg.oracle_gamma),
            distortion=cfg.oracle_distortion,
            cells=cfg.oracle_distortion_cells,
            section=section,
        )

    def forward(self, images: torch.Tensor, depth: torch.Tensor | None, names: list[str]) -> torch.Tensor:
        """(B, H, W) float32 on ``depth``'s device; ``images`` are not used."""
        if depth is None:
            which = f"frame {names[0]!r}" + (f" (and {len(names) - 1} more)" if len(names) > 1 else "")
            raise DataError(
                f"this {self.section.partition('.')[0].upper()} model takes its relative depth from the ground truth "
                f"(the oracle source of the synthetic demo and tests), which {which} has none of: it cannot predict "
                f"from images alone; train one with {self.section}.source=depth_anything to predict on photos"
            )
        frames = [self._frame(d, name) for d, name in zip(depth.detach().cpu().double(), names, strict=True)]
        return torch.stack(frames).to(device=depth.device, dtype=torch.float32)

    def _frame(self, depth: torch.Tensor, name: str) -> torch.Tensor:
        valid = depth > 0
        if not valid.any():
            raise DataError(f"the oracle relative-depth source needs ground truth; frame {name!r} has no valid pixel")
        rng = _frame_rng(self.seed, name)
        gamma = rng.uniform(*self.gamma)
        scale = math.exp(rng.uniform(math.log(self.scale[0]), math.log(self.scale[1])))
        shift = scale * rng.uniform(0.0, self.shift)
        grid = torch.from_numpy(rng.standard_normal((1, 1, self.cells + 1, self.cells + 1)))
        field = F.interpolate(grid, size=depth.shape, mode="bilinear", align_corners=True)[0, 0]
        inverse = fill_invalid(torch.where(valid, 1.0 / depth.clamp_min(1e-12), 0.0), valid)
        u = (inverse / inverse.max()) ** gamma * torch.exp(self.distortion * field)
        return scale * u + shift

    def fingerprint(self) -> str:
        """Hash of the parameters: the oracle has no weights, its maps are a function of these alone."""
        params = f"oracle|{self.seed}|{self.scale}|{self.shift}|{self.gamma}|{self.distortion}|{self.cells}"
        return hashlib.sha256(params.encode()).hexdigest()[:16]


RELATIVE_SOURCES: dict[str, type[DepthAnythingSource | OracleRelativeSource]] = {
    "depth_anything": DepthAnythingSource,
    "oracle": OracleRelativeSource,
}


def build_relative_source(cfg: RelativeDepthConfig, section: str = "tr2m.relative") -> RelativeDepthSource:
    """The source ``cfg`` names; ``section`` is where ``cfg`` sits in the config (``tr2m.relative``,
    ``rsa.relative``), named by its errors. ConfigError for an unknown source or bad oracle values."""
    if cfg.source not in RELATIVE_SOURCES:
        choices = ", ".join(repr(name) for name in RELATIVE_SOURCES)
        raise ConfigError(f"{section}.source must be one of {choices}, got {cfg.source!r}")
    return RELATIVE_SOURCES[cfg.source].from_config(cfg, section)
