"""DepthCLIP (Zhang et al., "Can Language Understand Depth?", ACM MM 2022): zero-shot metric depth
from a frozen CLIP, nothing trained (docs/baselines.md).

CLIP RN50's layer-4 map (attention pool skipped) is L2-normalised per location over its 2048
channels, reduced to the 1024-d text width along the channel axis, and compared with the text
embeddings of seven depth-word prompts ("This object is giant", ..., "This object is unseen");
the softmax of the similarities x100 / 0.1 weights the words' depths (1.00 ... 3.00 m). As released
(``monoclip.py``): the 416 x 544 NYU crop gives a 13 x 17 map, flip TTA averages there, and the
map is upsampled bilinearly (align_corners) to the input. ``depthclip.backbone=vit`` runs the same
head on the projected patch tokens of the ``clip`` section's ViT (the variant).

A checkpoint is a config folder with no trained weights: ``model.safetensors`` is empty and the
config names the frozen CLIP, whose text embeddings are recomputed when it is loaded.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from ..config import Config, DepthCLIPConfig
from ..encoders import CLIPEncoder
from ..encoders.clip_resnet import ResNetCLIPEncoder
from ..errors import ConfigError
from ..registry import FrozenParts, ModelSpec, register
from .base import FEATURE_DTYPE, DepthModel, Features, FrameBatch


def depth_prompts(cfg: DepthCLIPConfig) -> list[list[str]]:
    """Per depth word, every ``template.format(object, word)`` (the release's loop order)."""
    return [[t.format(obj, word) for obj in cfg.objects for t in cfg.templates] for word in cfg.depth_words]


def prompt_embeddings(encoder: nn.Module, cfg: DepthCLIPConfig) -> torch.Tensor:
    """(K, D) text embeddings of the depth words: each prompt's embedding L2-normalised, averaged
    over a word's prompts, normalised again (the release's ``zeroshot_classifier``)."""
    rows = [F.normalize(encoder.encode_text(prompts).float().mean(dim=0), dim=-1) for prompts in depth_prompts(cfg)]
    return torch.stack(rows)


def reduce_channels(features: torch.Tensor, width: int, mode: str) -> torch.Tensor:
    """(..., C) -> (..., width) by interpolation along the channel axis, as the release's
    ``F.interpolate(img_f, scale_factor=0.5)`` (default mode "nearest": channels 0, 2, 4, ... of
    2048); "linear" (half-pixel centres) averages each channel pair. Unchanged when C == width."""
    if features.shape[-1] == width:
        return features
    shape = features.shape
    flat = features.reshape(-1, 1, shape[-1])
    out = F.interpolate(flat, size=width, mode=mode, **({} if mode == "nearest" else {"align_corners": False}))
    return out.reshape(*shape[:-1], width)


@dataclass
class HeadOutput:
    logits: torch.Tensor  # (B, h, w, K) scaled similarities
    probs: torch.Tensor  # (B, h, w, K) softmax over the depth words
    depth: torch.Tensor  # (B, h, w) metres


class DepthCLIPHead(nn.Module):
    """The zero-shot head: nothing trained. The text embeddings (K, D) and bin depths are buffers
    that are not saved (they follow from the frozen text tower and the config)."""

    def __init__(self, cfg: DepthCLIPConfig, text: torch.Tensor) -> None:
        super().__init__()
        if len(cfg.bins) != len(cfg.depth_words):
            raise ConfigError(f"depthclip.bins has {len(cfg.bins)} depths for {len(cfg.depth_words)} depth_words: give one per word")
        self.cfg = cfg
        self.register_buffer("text", text.float(), persistent=False)
        self.register_buffer("bins", torch.tensor(cfg.bins, dtype=torch.float32), persistent=False)

    def forward(self, features: torch.Tensor) -> HeadOutput:
        """``features`` (B, h, w, C) image features (C = the text width, or more: reduced)."""
        f = features.float()
        if self.cfg.normalize_image:
            f = F.normalize(f, dim=-1)  # over all C channels, before the reduction (as released)
        f = reduce_channels(f, self.text.shape[-1], self.cfg.channel_reduction)
        logits = self.cfg.logit_scale * (f @ self.text.T) / self.cfg.temperature
        probs = logits.softmax(dim=-1)
        return HeadOutput(logits, probs, probs @ self.bins)


class DepthCLIP(DepthModel):
    """Frozen CLIP (RN50 as released, or the ViT of ``clip``) + the zero-shot head."""

    display_name = "DepthCLIP"
    paper = 'DepthCLIP, Zhang et al., "Can Language Understand Depth?" ([arXiv 2207.01077](https://arxiv.org/abs/2207.01077))'
    citation = """@inproceedings{zhang2022depthclip,
  title     = {Can Language Understand Depth?},
  author    = {Zhang, Renrui and Zeng, Ziyao and Guo, Ziyu and Li, Yafeng},
  booktitle = {Proceedings of the 30th ACM International Conference on Multimedia (ACM MM)},
  year      = {2022},
  note      = {arXiv:2207.01077}
}"""
    released_precision = "fp16"  # OpenAI's clip.load gives fp16 weights on CUDA
    auto_precision = released_precision  # a baseline: as released
    # The release feeds the 416 x 544 crop unresized (any mode is the identity at that size).
    released_resize = "align_corners"
    dataset_recipes = {"nyu": "depthclip_nyu"}
    head: DepthCLIPHead

    @classmethod
    def build_encoder(cls, cfg: Config) -> nn.Module:
        if cfg.depthclip.backbone == "vit":
            return CLIPEncoder.from_config(cfg.clip)
        return ResNetCLIPEncoder.from_config(cfg.depthclip)

    @classmethod
    def build_head(cls, cfg: Config, encoder: nn.Module, initialise: bool) -> DepthCLIPHead:
        """Built the same way when loading: the text embeddings are recomputed, never stored."""
        device = next(encoder.parameters()).device
        with torch.no_grad(), cls.autocast(device, cls._precision_setting(cfg), cfg.precision):
            text = prompt_embeddings(encoder, cfg.depthclip)
        return DepthCLIPHead(cfg.depthclip, text)

    @staticmethod
    def _precision_setting(cfg: Config) -> str:
        return cfg.clip.precision if cfg.depthclip.backbone == "vit" else cfg.depthclip.precision

    @property
    def device(self) -> torch.device:
        return self.head.bins.device  # the head has no parameters

    @property
    def input_size(self) -> int | tuple[int, int]:
        if self.cfg.depthclip.backbone == "vit":
            return self.encoder.image_size
        return self.cfg.depthclip.input_height, self.cfg.depthclip.input_width

    @property
    def frozen_precisions(self) -> dict[str, str]:
        part = "clip" if self.cfg.depthclip.backbone == "vit" else "depthclip"
        return {part: self.precision_name(self._precision_setting(self.cfg))}

    @property
    def max_depth(self) -> float:
        return max(self.cfg.depthclip.bins)

    def encode(self, images: torch.Tensor) -> torch.Tensor:
        """(B, 3, H, W) images in [0, 1] at the input size -> (B, h, w, C) float32 image features:
        the RN50 layer-4 map, or the ViT's projected patch tokens."""
        with self.autocast(images.device, self._precision_setting(self.cfg), self.cfg.precision):
            out = self.encoder(self.encoder.normalize(images))
        return (out.patch_tokens if self.cfg.depthclip.backbone == "vit" else out).float()

    def encode_frames(self, batch: FrameBatch) -> Features:
        return {"features": self.encode(batch.images).to(FEATURE_DTYPE)}

    def predict_from_features(self, features: Features, flipped: Features | None = None, tiles: int = 1) -> tuple[torch.Tensor, HeadOutput]:
        """Depth (B, H, W) at the input size: the per-location depth (flip TTA averaged there, as
        released), upsampled bilinearly with align_corners to the size the features came from."""
        out = self.head(features["features"])
        depth = out.depth
        if flipped is not None:
            depth = 0.5 * (depth + self.head(flipped["features"]).depth.flip(-1))
        step = self.encoder.patch_size if self.cfg.depthclip.backbone == "vit" else self.encoder.stride
        size = (out.depth.shape[1] * step, out.depth.shape[2] * step)
        return F.interpolate(depth[:, None], size=size, mode="bilinear", align_corners=True)[:, 0], out


def write_checkpoint(model: DepthCLIP, directory: str | Path) -> Path:
    """A DepthCLIP checkpoint folder: its config and the frozen weights' fingerprint, no trained
    weights (``zero_shot`` in config.json says so)."""
    return model.save_pretrained(directory, extra={"zero_shot": True})


def resnet_frozen_parts(cfg: Config, resnet: bool) -> FrozenParts:
    """A model on CLIP RN50 (the depthclip section's weights) or the ViT of the clip section."""
    section = cfg.depthclip if resnet else cfg.clip
    return FrozenParts([("depthclip" if resnet else "clip")] if section.random_init else [])


SPEC = register(
    ModelSpec(
        "depthclip",
        DepthCLIP,
        "depthclip",
        DepthCLIPConfig,
        reads=("clip",),
        objective=None,  # nothing to train (training/zero_shot.py writes its checkpoint)
        inference_overrides=("clip.name", "clip.precision", "depthclip.weights", "depthclip.tokenizer", "depthclip.precision"),
        frozen_parts=lambda cfg: resnet_frozen_parts(cfg, cfg.depthclip.backbone == "resnet"),
    )
)
