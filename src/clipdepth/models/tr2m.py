"""TR2M (arXiv 2506.13387): relative depth to metric depth with language and per-pixel rescale maps.

Frozen parts (``TR2MEncoders``): a relative-depth source (Depth Anything small, or the labelled
GT oracle for tests and the synthetic demo), DINOv2 patch tokens and the CLIP text embedding of a
caption. Trained head (``TR2MHead``): the caption token projected to the image width, one pre-norm
cross-modal block, a convolutional decoder and two heads giving a scale map A and a shift map B;
metric depth = 1 / (A * D_r + B) (``to_metric``). Sizes follow ``docs/tr2m.md``
("Components"); ``tr2m.global_factor`` is the RSA-style ablation (one A and B per image);
``tr2m.head_init`` chooses the initial weights ("Scale and shift maps").
"""

from __future__ import annotations

import hashlib
import dataclasses
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from ..config import Config, TR2MConfig
from ..encoders import CLIPEncoder
from ..encoders.dinov2 import DINOv2Encoder
from ..encoders.relative import RelativeDepthSource, build_relative_source
from ..errors import ConfigError
from ..io.stored import EncodedRows, QuantizedRows
from ..registry import DemoPlan, DemoVariant, FrozenParts, ModelSpec, clip_frozen_parts, register
from .base import FEATURE_DTYPE, DepthModel, Features, FrameBatch, caption_embeddings, set_missing

# A = BASE * exp(head_A), B = BASE * exp(head_B): the paper's parametrisation keeps A, B > 0 (the
# release's coef_scale = coef_shift = 0.01, options.py, applied so in scalemap_depth.py's forward).
BASE = 0.01


class QuickGELU(nn.Module):
    """CLIP's GELU approximation x * sigmoid(1.702 x), used by the paper's fusion block.

    Computed as silu(1.702 x) / 1.702, equal up to rounding, whose backward is one fused kernel."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.silu(1.702 * x) * (1 / 1.702)


class CrossModalBlock(nn.Module):
    """One pre-norm block: self-attention over image tokens, cross-attention to the text, MLP.

    With a single text token the cross-attention softmax runs over one key, so its output is the
    projected text value for every query: the text acts as a learned, caption-dependent shift of
    all tokens, which the following MLP and decoder turn into spatially varying effects.
    """

    def __init__(self, dim: int, num_heads: int, mlp_ratio: int) -> None:
        super().__init__()
        if num_heads <= 0 or dim % num_heads:
            raise ValueError(f"num_heads={num_heads} must be positive and divide the image dim {dim}")
        self.norm_self = nn.LayerNorm(dim)
        self.self_attn = nn.MultiheadAttention(dim, num_heads, batch_first=True)
        self.norm_query = nn.LayerNorm(dim)
        self.norm_text = nn.LayerNorm(dim)
        self.cross_attn = nn.MultiheadAttention(dim, num_heads, batch_first=True)
        self.norm_mlp = nn.LayerNorm(dim)
        self.mlp = nn.Sequential(nn.Linear(dim, mlp_ratio * dim), QuickGELU(), nn.Linear(mlp_ratio * dim, dim))

    def forward(self, x: torch.Tensor, text: torch.Tensor) -> torch.Tensor:
        """``x`` (B, N, dim) image tokens, ``text`` (B, T, dim) text tokens -> fused (B, N, dim)."""
        h = self.norm_self(x)
        x = x + _attention(self.self_attn, h, h)
        x = x + _attention(self.cross_attn, self.norm_query(x), self.norm_text(text))
        return x + self.mlp(self.norm_mlp(x))


def _attention(attn: nn.MultiheadAttention, query: torch.Tensor, context: torch.Tensor) -> torch.Tensor:
    """``attn(query, context, context, need_weights=False)[0]`` for a batch-first ``nn.MultiheadAttention``
    without dropout, from its own parameters: (B, N, dim) queries attend to (B, T, dim) context -> (B, N, dim).

    The same projections and scaled dot-product attention as ``F.multi_head_attention_forward``, up to
    rounding, in about a fifth fewer kernels forward and backward (no (L, B, dim) transposes, packed
    projections split by views instead of ``contiguous`` copies and selects)."""
    dim, heads = attn.embed_dim, attn.num_heads
    weight, bias = attn.in_proj_weight, attn.in_proj_bias
    if query is context:  # self-attention: one packed projection
        q, k, v = F.linear(query, weight, bias).unflatten(-1, (3, heads, dim // heads)).permute(2, 0, 3, 1, 4).unbind(0)
    else:  # split, not sliced: the backward joins the two parts in one kernel
        (weight_q, weight_kv), (bias_q, bias_kv) = weight.split([dim, 2 * dim]), bias.split([dim, 2 * dim])
        q = F.linear(query, weight_q, bias_q).unflatten(-1, (heads, dim // heads)).transpose(1, 2)
        k, v = F.linear(context, weight_kv, bias_kv).unflatten(-1, (2, heads, dim // heads)).permute(2, 0, 3, 1, 4).unbind(0)
    out = F.scaled_dot_product_attention(q, k, v).transpose(1, 2).flatten(2)  # (B, N, heads * head_dim)
    return F.linear(out, attn.out_proj.weight, attn.out_proj.bias)


class ResidualConvUnit(nn.Module):
    """DPT's residual unit (no batch norm): ReLU-conv3x3-ReLU-conv3x3 plus the skip."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(channels, channels, 3, padding=1)
        self.conv2 = nn.Conv2d(channels, channels, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.conv2(F.relu(self.conv1(F.relu(x))))


class UpStage(nn.Module):
    """Residual unit -> 1x1 conv -> bilinear x2 (one DPT fusion stage without a lateral input)."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.unit = ResidualConvUnit(channels)
        self.proj = nn.Conv2d(channels, channels, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.proj(self.unit(x))
        return F.interpolate(x, scale_factor=2, mode="bilinear", align_corners=True)


class Decoder(nn.Module):
    """Fused token grid (B, dim, h, w) -> pixel features (B, decoder_channels, 8h, 8w)."""

    def __init__(self, dim: int, neck_channels: int, decoder_channels: int, conv_bias: bool = False) -> None:
        super().__init__()
        self.neck = nn.Sequential(
            nn.Conv2d(dim, neck_channels, 1),
            nn.ConvTranspose2d(neck_channels, neck_channels, 2, stride=2),
            # bias-free, as the released ``layer1_rn``
            nn.Conv2d(neck_channels, decoder_channels, 3, padding=1, bias=conv_bias),
        )
        self.stages = nn.Sequential(UpStage(decoder_channels), UpStage(decoder_channels))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.stages(self.neck(x))


class MapHead(nn.Module):
    """The layers of one raw map at patch resolution from pixel features (Depth Anything's output-head
    layout): conv3x3, bilinear resize, conv3x3, ReLU, conv1x1. It only holds them: ``TR2MHead`` runs its
    two map heads together (``_map_pair``)."""

    def __init__(self, in_channels: int, head_channels: int, hidden: int, zero_init: bool) -> None:
        super().__init__()
        self.conv_in = nn.Conv2d(in_channels, head_channels, 3, padding=1)
        self.conv_hidden = nn.Conv2d(head_channels, hidden, 3, padding=1)
        self.conv_out = nn.Conv2d(hidden, 1, 1)
        if zero_init:
            _zero_init(self.conv_out)


def _map_pair(first: MapHead, second: MapHead, x: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Both map heads on pixel features (B, C, H', W') -> raw maps (B, 2, *size), ``first``'s then
    ``second``'s: conv_in, bilinear resize (align_corners=True), conv_hidden, ReLU, conv_out. The first
    conv stacks the two heads' filters and the others are grouped (groups=2), so each layer is one
    kernel for both heads; the maps equal running the heads one by one, up to rounding."""

    def both(layer: str, part: str) -> torch.Tensor:
        return torch.cat([getattr(getattr(head, layer), part) for head in (first, second)])

    x = F.conv2d(x, both("conv_in", "weight"), both("conv_in", "bias"), padding=1)
    x = F.interpolate(x, size=size, mode="bilinear", align_corners=True)
    x = F.relu(F.conv2d(x, both("conv_hidden", "weight"), both("conv_hidden", "bias"), padding=1, groups=2))
    return F.conv2d(x, both("conv_out", "weight"), both("conv_out", "bias"), groups=2)


class GlobalHead(nn.Module):
    """Pooled fused feature -> one raw log factor per image (the RSA-style ablation)."""

    def __init__(self, dim: int, hidden: int, zero_init: bool) -> None:
        super().__init__()
        self.net = nn.Sequential(nn.Linear(dim, hidden), nn.ReLU(), nn.Linear(hidden, 1))
        if zero_init:
            _zero_init(self.net[-1])

    def forward(self, pooled: torch.Tensor) -> torch.Tensor:
        return self.net(pooled).squeeze(1)


def _zero_init(layer: nn.Conv2d | nn.Linear) -> None:
    """Zero weight and bias: at init every factor is exactly BASE. Draws nothing from the RNG (the
    layer's default init already did), so both ``tr2m.head_init`` values consume the same draws."""
    nn.init.zeros_(layer.weight)
    nn.init.zeros_(layer.bias)


class _TokenGrid(torch.autograd.Function):
    """(B, h * w, dim) tokens -> a contiguous (B, dim, h, w) grid, and its gradient back as contiguous tokens.

    The transposed view alone is channels-last: the decoder's weight gradients would follow that layout
    and be copied into the parameters' own (one copy per weight and step), and a plain copy would hand the
    block a transposed gradient that each of its linear layers copies again. One copy each way instead."""

    @staticmethod
    def forward(ctx, tokens: torch.Tensor, grid: tuple[int, int]) -> torch.Tensor:
        return tokens.transpose(1, 2).reshape(tokens.shape[0], tokens.shape[2], *grid).contiguous()

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        return grad.flatten(2).transpose(1, 2).contiguous(), None


@dataclass
class TR2MHeadOutput:
    """What the losses need; maps are at patch resolution (patch_size*h, patch_size*w).

    ``log_maps`` stacks log A and log B (the smoothness loss acts on them); ``log_scale`` / ``log_shift``
    are its two maps.
    """

    scale: torch.Tensor  # (B, ph, pw) A > 0
    shift: torch.Tensor  # (B, ph, pw) B > 0
    pooled: torch.Tensor  # (B, image_dim) mean of the fused tokens (image-level contrast)
    pixel_features: torch.Tensor | None  # (B, decoder_channels, 8h, 8w); None for global factors
    log_maps: torch.Tensor  # (B, 2, ph, pw) log A, log B

    @property
    def log_scale(self) -> torch.Tensor:
        """(B, ph, pw) log A."""
        return self.log_maps[:, 0]

    @property
    def log_shift(self) -> torch.Tensor:
        """(B, ph, pw) log B."""
        return self.log_maps[:, 1]


class TR2MHead(nn.Module):
    """Text projection + cross-modal block + decoder + scale/shift heads (TR2M's trainable part).

    Every layer starts at PyTorch's default init (``cfg.head_init="released"``): the released
    ``ScaleMapModel.init_weights`` (scalemap_depth.py) tests ``isinstance(self, nn.Conv2d)`` on the
    model itself and so initialises nothing, and A = 0.01 * exp(head_A) then varies from the first
    step. ``cfg.head_init="zero"`` zeroes the last layer of each head (weight and bias), so that
    A = B = 0.01 everywhere at init. With ``cfg.global_factor`` the decoder is replaced by two MLPs
    on the pooled fused tokens that give one A and one B per image (the paper's "global factors"
    ablation); ``head_init`` acts on their last layers alike.
    """

    def __init__(self, cfg: TR2MConfig, image_dim: int, text_dim: int, patch_size: int = 14) -> None:
        super().__init__()
        self.patch_size = patch_size
        self.global_factor = cfg.global_factor
        self.text_proj = nn.Sequential(nn.Linear(text_dim, image_dim), QuickGELU())
        self.block = CrossModalBlock(image_dim, cfg.num_heads, cfg.mlp_ratio)
        self.decoder: Decoder | None = None
        self.scale_head: MapHead | GlobalHead
        self.shift_head: MapHead | GlobalHead
        zero = cfg.head_init == "zero"
        if cfg.global_factor:
            self.scale_head = GlobalHead(image_dim, cfg.head_hidden, zero)
            self.shift_head = GlobalHead(image_dim, cfg.head_hidden, zero)
        else:
            self.decoder = Decoder(image_dim, cfg.neck_channels, cfg.decoder_channels, cfg.decoder_conv_bias)
            self.scale_head = MapHead(cfg.decoder_channels, cfg.head_channels, cfg.head_hidden, zero)
            self.shift_head = MapHead(cfg.decoder_channels, cfg.head_channels, cfg.head_hidden, zero)

    def _fused(self, tokens: torch.Tensor, text: torch.Tensor) -> torch.Tensor:
        """(B, h, w, image_dim) tokens and (B, text_dim) text -> (B, h * w, image_dim) fused tokens."""
        b, h, w, dim = tokens.shape
        return self.block(tokens.reshape(b, h * w, dim), self.text_proj(text).unsqueeze(1))

    def _decoded(self, fused: torch.Tensor, grid: tuple[int, int]) -> torch.Tensor:
        return self.decoder(_TokenGrid.apply(fused, grid))

    def pixel_features(self, tokens: torch.Tensor, text: torch.Tensor) -> torch.Tensor:
        """The decoder's pixel features (B, decoder_channels, 8h, 8w) alone, as ``forward`` computes
        them: all the pixel-level contrast's key network needs (no scale or shift heads). ValueError
        for a head with global factors, which has no decoder."""
        if self.decoder is None:
            raise ValueError("a TR2M head with global factors (tr2m.global_factor) has no pixel features")
        return self._decoded(self._fused(tokens, text), tuple(tokens.shape[1:3]))

    def forward(self, tokens: torch.Tensor, text: torch.Tensor) -> TR2MHeadOutput:
        """``tokens`` (B, h, w, image_dim) patch tokens, ``text`` (B, text_dim) caption embedding."""
        b, h, w, _ = tokens.shape
        size = (self.patch_size * h, self.patch_size * w)
        fused = self._fused(tokens, text)
        pooled = fused.mean(dim=1)
        if self.decoder is None:
            raw = torch.stack([self.scale_head(pooled), self.shift_head(pooled)], 1)
            raw = raw[..., None, None].expand(b, 2, *size)
            pixel_features = None
        else:
            pixel_features = self._decoded(fused, (h, w))
            raw = _map_pair(self.scale_head, self.shift_head, pixel_features, size)
        # A and B stacked: each step below is one kernel for both; exp(log A) is BASE * exp(head_A) up to rounding.
        # In float32: bf16 holds log(0.01) + raw only to 1/32 (3 % of A and B), raw near 0 to far finer.
        log_maps = raw.float() + math.log(BASE)
        scale, shift = torch.exp(log_maps).unbind(1)
        return TR2MHeadOutput(scale=scale, shift=shift, pooled=pooled, pixel_features=pixel_features, log_maps=log_maps)


def to_metric(
    relative: torch.Tensor, scale: torch.Tensor, shift: torch.Tensor, min_depth: float, max_depth: float, clamp: bool = True
) -> torch.Tensor:
    """Metric depth 1 / (A * D_r + B), clamped to [min_depth, max_depth] unless ``clamp`` is False
    (training: a clamp would stop the gradient of every pixel outside the range).

    ``relative`` (B, H, W) is D_r, an inverse-depth-like map (larger = nearer, as Depth Anything
    outputs), so A * D_r + B is a metric inverse depth. ``scale`` / ``shift`` (B, h, w) are
    resized bilinearly (align_corners=True) to (H, W) when they differ. The denominator is
    clamped to [1/max_depth, 1/min_depth], which bounds the output and avoids division by ~0.
    """
    if not 0 < min_depth < max_depth:
        raise ValueError(f"need 0 < min_depth < max_depth, got {min_depth}, {max_depth}")
    size = relative.shape[-2:]
    if scale.shape[-2:] != size:
        scale = F.interpolate(scale.unsqueeze(1), size=size, mode="bilinear", align_corners=True).squeeze(1)
    if shift.shape[-2:] != size:
        shift = F.interpolate(shift.unsqueeze(1), size=size, mode="bilinear", align_corners=True).squeeze(1)
    inverse = torch.addcmul(shift, scale, relative)
    inverse = inverse.clamp(1.0 / max_depth, 1.0 / min_depth) if clamp else inverse.clamp_min(1e-6)
    return 1.0 / inverse


# -- the model: frozen parts + head --------------------------------------------------------------


class TR2MEncoders(nn.Module):
    """TR2M's frozen parts; ``description`` and ``fingerprint`` cover all three."""

    def __init__(self, text: CLIPEncoder, image: DINOv2Encoder, relative: RelativeDepthSource) -> None:
        super().__init__()
        self.text, self.image, self.relative = text, image, relative
        self.description = f"text: {text.description}; image: {image.description}; relative depth: {relative.description}"

    def fingerprint(self) -> str:
        parts = "|".join(m.fingerprint() for m in (self.text, self.image, self.relative))
        return hashlib.sha256(parts.encode()).hexdigest()[:16]

    def train(self, mode: bool = True) -> "TR2MEncoders":
        return super().train(False)  # frozen, whatever the parent does


class TR2M(DepthModel):
    """Frozen relative depth + DINOv2 + CLIP text, and a trained head that rescales per pixel.

    ``infer(images, captions=[...])`` returns metres; ``from_pretrained`` / ``save_pretrained``
    handle head-only checkpoints like every clipdepth model.
    """

    display_name = "TR2M"
    paper = "TR2M ([arXiv 2506.13387](https://arxiv.org/abs/2506.13387))"
    citation = """@inproceedings{cui2026tr2m,
  title     = {TR2M: Transferring Monocular Relative Depth to Metric Depth with
               Language Descriptions and Dual-Level Scale-Oriented Contrast},
  author    = {Cui, Beilei and Huang, Yiming and Bai, Long and Ren, Hongliang},
  booktitle = {Proceedings of the IEEE/CVF Conference on Computer Vision and Pattern Recognition (CVPR)},
  year      = {2026},
  note      = {arXiv:2506.13387}
}"""  # as the authors' README asks
    uses_captions = True
    released_precision = "fp32"  # the released evaluation runs its encoders in fp32
    auto_precision = "bf16"  # DINOv2, CLIP text and the relative-depth model on the tensor cores, fp32's range
    released_resize = "align_corners"  # F.interpolate(..., "bilinear", align_corners=True)
    dataset_recipes = {"nyu": "tr2m_nyu", "kitti": "tr2m_kitti"}
    encoder: TR2MEncoders
    head: TR2MHead

    @classmethod
    def build_encoder(cls, cfg: Config) -> TR2MEncoders:
        return TR2MEncoders(
            CLIPEncoder.from_config(cfg.clip), DINOv2Encoder.from_config(cfg.tr2m.image_encoder), build_relative_source(cfg.tr2m.relative)
        )

    @classmethod
    def build_head(cls, cfg: Config, encoder: TR2MEncoders, initialise: bool) -> TR2MHead:
        return TR2MHead(cfg.tr2m, encoder.image.embed_dim, encoder.text.embed_dim, encoder.image.patch_size)

    @property
    def input_size(self) -> tuple[int, int]:
        return self.cfg.tr2m.input_height, self.cfg.tr2m.input_width

    @property
    def frozen_precisions(self) -> dict[str, str]:
        t = self.cfg.tr2m
        return {
            "text": self.precision_name(self.cfg.clip.precision),
            "image": self.precision_name(t.image_encoder.precision),
            "relative": self.precision_name(t.relative.precision),
        }

    @property
    def max_depth(self) -> float:
        return self.cfg.tr2m.max_depth

    @classmethod
    def needs_ground_truth(cls, cfg: Config) -> bool:
        return cfg.tr2m.relative.source == "oracle"

    @classmethod
    def upgrade_config(cls, config: dict, state: dict[str, torch.Tensor]) -> dict:
        """clipdepth 0.1 checkpoints had a bias in the decoder's 3x3 conv (and 16 heads, saved);
        checkpoints saved before ``tr2m.head_init`` existed were trained from the zero init."""
        config = set_missing(super().upgrade_config(config, state), "tr2m.decoder_conv_bias", "decoder.neck.2.bias" in state)
        return set_missing(config, "tr2m.head_init", "zero")

    def caption_embeddings(self, captions: list[list[str]]) -> tuple[torch.Tensor, torch.Tensor]:
        """Caption lines per frame -> (B, L, D) raw CLIP text embeddings (zero-padded to
        ``max_caption_lines``) and (B,) line counts."""
        encode = lambda lines: self.encoder.text.encode_text(lines, normalize=False)  # noqa: E731
        with self.autocast(self.device, self.cfg.clip.precision, self.cfg.precision):
            return caption_embeddings(encode, captions, self.cfg.tr2m.max_caption_lines)

    def encode_frames(self, batch: FrameBatch) -> Features:
        """DINOv2 tokens (B, h, w, D) and relative depth (B, H, W) in fp16, caption embeddings
        (B, max_caption_lines, D_text) fp16 and line counts (B,), and the input image (B, 3, H, W)
        uint8, which only the edge-aware smoothness loss reads (``stored`` keeps it compressed)."""
        if batch.captions is None:
            raise ConfigError("TR2M needs a caption per image (data.caption_dir or data.caption, or captions= to infer)")
        patch = self.encoder.image.patch_size
        if any(side % patch for side in batch.images.shape[-2:]):  # a mixture's datasets each have their own size
            raise ValueError(f"TR2M expects frames whose sides are multiples of {patch}, got {tuple(batch.images.shape[-2:])}")
        images = batch.images
        with self.autocast(images.device, self.cfg.tr2m.image_encoder.precision, self.cfg.precision):
            tokens = self.encoder.image(images)
        with self.autocast(images.device, self.cfg.tr2m.relative.precision, self.cfg.precision):
            relative = self.encoder.relative(images, batch.depth, batch.names)
        text, lines = self.caption_embeddings(batch.captions)
        return {
            "image_tokens": tokens.to(FEATURE_DTYPE),
            "relative": relative.float().to(FEATURE_DTYPE),
            "text": text.to(FEATURE_DTYPE),
            "text_lines": lines,
            "image": (images * 255).round().to(torch.uint8),  # for the edge-aware smoothness loss
        }

    def storage(self, purpose: str) -> dict[str, Any]:
        """How a split keeps its arrays (``tr2m.cache_image``, ``cache_image_quality``,
        ``cache_relative``, ``cache_tokens``; docs/tr2m.md, "The feature cache"). A split encoded
        for scoring keeps no image (no loss reads it) and fp16 tokens, so that validation, ``evaluate``
        and ``infer`` see the same features. The values are checked with the config (``config.IMAGE_STORAGE``, ...)."""
        t = self.cfg.tr2m
        if purpose != "train":
            return {"image": "none", "relative": t.cache_relative, "tokens": "fp16"}
        image = {"image": t.cache_image, **({"image_quality": t.cache_image_quality} if t.cache_image == "jpeg" else {})}
        return {**image, "relative": t.cache_relative, "tokens": t.cache_tokens}

    def stored(self, features: Features, purpose: str) -> dict[str, Any]:
        """``encode_frames``' arrays in the forms ``storage`` names (``io.stored``): the image as
        JPEG or PNG bytes (or dropped), the relative depth as lossless PNGs of its fp16 values, the
        tokens as int8 with a scale per token; their rows read back as (B, 3, H, W) uint8, (B, H, W)
        and (B, h, w, D) float."""
        how, out = self.storage(purpose), dict(features)
        image = out.pop("image")
        if how["image"] in ("jpeg", "png"):
            out["image"] = EncodedRows.encode(image, how["image"], self.cfg.tr2m.cache_image_quality)
        elif how["image"] == "raw":
            out["image"] = image
        if how["relative"] == "png":
            out["relative"] = EncodedRows.encode(out["relative"], "fp16_png")
        if how["tokens"] == "int8":
            out["image_tokens"] = QuantizedRows.quantize(out["image_tokens"])
        return out

    def metric(self, features: Features, text: torch.Tensor, clamp: bool = True) -> tuple[torch.Tensor, TR2MHeadOutput]:
        """Depth at the input size from stored features and one caption embedding per frame."""
        out = self.head(features["image_tokens"], text)
        depth = to_metric(features["relative"], out.scale, out.shift, self.cfg.tr2m.min_depth, self.cfg.tr2m.max_depth, clamp)
        return depth, out

    def predict_from_features(
        self, features: Features, flipped: Features | None = None, tiles: int = 1
    ) -> tuple[torch.Tensor, TR2MHeadOutput]:
        """Depth (B, H, W) with caption line 0, as the reference evaluates; with ``flipped`` the
        mirrored frames' prediction, mirrored back, is averaged in."""
        if tiles != 1:
            raise ConfigError("TR2M takes whole frames (data.tiles must be 1)")
        depth, out = self.metric(features, features["text"][:, 0])
        if flipped is not None:
            depth = 0.5 * (depth + self.metric(flipped, flipped["text"][:, 0])[0].flip(-1))
        return depth, out

    def infer_outputs(self, features: Features, head_output: TR2MHeadOutput, tiles: int, to_image) -> dict[str, torch.Tensor]:
        """The ``relative`` depth it rescaled and the ``scale`` and ``shift`` maps, (B, H, W) each."""
        return {"relative": to_image(features["relative"]), "scale": to_image(head_output.scale), "shift": to_image(head_output.shift)}


def frozen_parts(cfg: Config) -> FrozenParts:
    """The CLIP text encoder (``clip``), DINOv2 and the relative-depth source: random where their
    sections say so; the ground-truth oracle is no model at all."""
    random = clip_frozen_parts(cfg).random
    random += ["tr2m.image_encoder"] if cfg.tr2m.image_encoder.random_init else []
    oracle = cfg.tr2m.relative.source == "oracle"
    random += ["tr2m.relative"] if not oracle and cfg.tr2m.relative.random_init else []
    return FrozenParts(random, oracle)


def demo_plan(cfg: Config) -> DemoPlan:
    """The demo (``--config demo_tr2m``): per-pixel maps and the global-factor variant on the same
    cached features and the ORACLE relative depth, the paper's main ablation in kind, and RSA (one
    scale and shift per image from the caption alone: ``rsa.demo_variant``) on the same relative depth."""
    from .rsa import demo_variant  # RSA imports this module (to_metric)

    # Both TR2M variants read the frozen parts' outputs from one cache: they differ only in the head.
    cache = Path(cfg.train.feature_cache or Path(cfg.output_dir) / "feature_cache")
    train = dataclasses.replace(cfg.train, feature_cache=str(cache))

    def variant(global_factor: bool) -> Config:
        return dataclasses.replace(cfg, train=train, tr2m=dataclasses.replace(cfg.tr2m, global_factor=global_factor))

    return DemoPlan(
        [
            DemoVariant("tr2m", "TR2M, per-pixel scale and shift maps", variant(False), "tr2m"),
            DemoVariant("global_factor", "TR2M, one global scale and shift per image", variant(True), "global_factor"),
            demo_variant(cfg, cache),
        ],
        lambda model: (
            "NOTE: the TR2M demo uses small RANDOM-WEIGHT DINOv2 and CLIP text encoders (RSA: a small RANDOM-WEIGHT\n"
            f"CLIP RN50 text tower) and the ORACLE relative-depth source ({model.encoder.relative.description}).\n"
            "It shows the pipeline and the per-pixel vs global-factor ablation in kind; its numbers say nothing about "
            "TR2M or RSA with Depth Anything, DINOv2 and CLIP weights."
        ),
        "global_factor",
        "{metric}: per-pixel maps {gain:.1f}% {direction} than global factors;",
    )


SPEC = register(
    ModelSpec(
        "tr2m",
        TR2M,
        "tr2m",
        TR2MConfig,
        reads=("clip",),
        objective="clipdepth.training.objectives.tr2m:TR2MObjective",
        inference_overrides=(
            "clip.name",
            "clip.precision",
            "tr2m.image_encoder.name",
            "tr2m.image_encoder.precision",
            "tr2m.relative.name",
            "tr2m.relative.precision",
        ),
        converters=(("tr2m-released", "clipdepth.models.released:convert_tr2m_released"),),
        demo=demo_plan,
        frozen_parts=frozen_parts,
    )
)
