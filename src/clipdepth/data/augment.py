"""Training augmentation as TR2M's released loaders apply it (docs/tr2m.md, "Training augmentation").

- NYU, KITTI, VOID (``dataset_nyukiti.py``, ``datasets_void.py``): a horizontal flip of image and GT
  with p = 0.5; with p = 0.5 the colour change of BTS's ``augment_image`` ("gamma_brightness"):
  gamma U(0.9, 1.1), brightness U(0.75, 1.25) on NYU and U(0.9, 1.1) elsewhere, a per-channel
  factor U(0.9, 1.1), then a clip to [0, 1].
- C3VD (``dataset_c3vd.py``): with p = 0.5 torchvision's ColorJitter(brightness, contrast and
  saturation 0.8 .. 1.2, hue +-0.1) ("jitter"), and the flip.

Every draw comes from the generator the caller passes (the trainer's per-dataset generator, saved
in resume states), in the main process, so a run does not depend on the number of workers. The
changes apply to the prepared input image in [0, 1]; the flip to the input-size GT as well.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from ..config import DataConfig

__all__ = ["Augmentation"]

GREY = (0.299, 0.587, 0.114)  # ITU-R 601 luma, as torchvision's rgb_to_grayscale
JITTER = 0.2  # ColorJitter's brightness, contrast and saturation: factors in [1 - 0.2, 1 + 0.2]
JITTER_HUE = 0.1
CHANNEL_FACTOR = (0.9, 1.1)
GAMMA = (0.9, 1.1)


@dataclass(frozen=True)
class Augmentation:
    """A dataset's training augmentation (``data.augment_*``, when ``data.augment``)."""

    flip: float = 0.0  # probability of mirroring a frame
    colour: str | None = None  # COLOUR_AUGMENTATIONS, or None
    colour_prob: float = 0.5
    brightness: tuple[float, float] = (0.9, 1.1)  # "gamma_brightness" factor range

    @classmethod
    def from_data(cls, data: DataConfig) -> "Augmentation | None":
        """The augmentation ``data`` asks for, or None when it asks for none (``augment`` off)."""
        if not data.augment:
            return None
        augmentation = cls(data.augment_flip, data.augment_colour, data.augment_colour_prob, tuple(data.augment_brightness))
        return augmentation if augmentation.flip > 0 or augmentation.colour else None

    @property
    def needs_encoder(self) -> bool:
        """True when augmented frames differ from anything a cache can hold: the frozen parts must
        run on every training step (a flip alone is served from the cache's mirrored copies)."""
        return self.colour is not None

    def flips(self, n: int, generator: torch.Generator) -> torch.Tensor:
        """(n,) bool: which frames to mirror (no draw when the flip is off)."""
        if self.flip <= 0:
            return torch.zeros(n, dtype=torch.bool)
        return torch.rand(n, generator=generator) < self.flip

    def colours(self, images: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        """(B, 3, H, W) in [0, 1] -> the same with each frame's colour change (with probability
        ``colour_prob`` each); the images unchanged when the colour change is off."""
        if self.colour is None:
            return images
        out = []
        for image in images:
            apply = float(torch.rand((), generator=generator)) < self.colour_prob
            if not apply:
                out.append(image)
            elif self.colour == "gamma_brightness":
                out.append(self._gamma_brightness(image, generator))
            else:
                out.append(self._jitter(image, generator))
        return torch.stack(out)

    def _gamma_brightness(self, image: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        gamma = _uniform(*GAMMA, generator)
        brightness = _uniform(*self.brightness, generator)
        channel = torch.tensor([_uniform(*CHANNEL_FACTOR, generator) for _ in range(3)], dtype=image.dtype, device=image.device)
        return (image.pow(gamma) * brightness * channel[:, None, None]).clamp(0, 1)

    def _jitter(self, image: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        """ColorJitter: the four changes in a random order, each factor drawn once."""
        order = torch.randperm(4, generator=generator).tolist()
        factors = [_uniform(1 - JITTER, 1 + JITTER, generator) for _ in range(3)] + [_uniform(-JITTER_HUE, JITTER_HUE, generator)]
        for change in order:
            if change == 0:  # brightness
                image = (image * factors[0]).clamp(0, 1)
            elif change == 1:  # contrast: towards the mean grey level
                mean = _grey(image).mean()
                image = _blend(image, mean, factors[1])
            elif change == 2:  # saturation: towards the grey image
                image = _blend(image, _grey(image)[None], factors[2])
            else:
                image = _shift_hue(image, factors[3])
        return image


def _uniform(low: float, high: float, generator: torch.Generator) -> float:
    return low + (high - low) * float(torch.rand((), generator=generator, dtype=torch.float64))


def _grey(image: torch.Tensor) -> torch.Tensor:
    return GREY[0] * image[0] + GREY[1] * image[1] + GREY[2] * image[2]


def _blend(image: torch.Tensor, other: torch.Tensor, factor: float) -> torch.Tensor:
    return (factor * image + (1 - factor) * other).clamp(0, 1)


def _shift_hue(image: torch.Tensor, shift: float) -> torch.Tensor:
    """Hue rotated by ``shift`` turns (of [-0.5, 0.5]) in HSV, value and saturation kept."""
    r, g, b = image
    value, _ = image.max(0)
    low, _ = image.min(0)
    chroma = value - low
    safe = torch.where(chroma > 0, chroma, torch.ones_like(chroma))
    hue = torch.where(value == r, ((g - b) / safe) % 6, torch.where(value == g, (b - r) / safe + 2, (r - g) / safe + 4)) / 6
    hue = torch.where(chroma > 0, hue, torch.zeros_like(hue))
    hue = (hue + shift) % 1.0
    # back to RGB: each channel from its offset on the hue circle
    k = (torch.stack([torch.full_like(hue, n) for n in (5.0, 3.0, 1.0)]) + hue * 6) % 6
    return value - chroma * torch.clamp(torch.minimum(k, 4 - k), 0, 1)
