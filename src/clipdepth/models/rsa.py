"""RSA (Zeng et al., "RSA: Resolving Scale Ambiguities in Monocular Depth Estimators through Language
Descriptions", NeurIPS 2024, arXiv 2410.02924; docs/baselines.md "RSA"): one global scale and shift
per image, predicted from a caption alone, turn a frozen model's relative inverse depth into metres.

Frozen parts (``RSAEncoders``): CLIP RN50's text tower (``encoders/clip_resnet.py``, the
``depthclip`` section's weights, as the release's ``clip.load("RN50")``) embeds each caption line
(1024-d, not normalised); a relative-depth source (``rsa.relative``: Depth Anything small, the
release's ``da`` model, or the ground-truth oracle of the tests and the demo) gives relative inverse
depth. Trained head (``RSAHead``): the release's ``LanScaleModel`` (``lanscale.py``), an MLP with
LeakyReLU to a 256-d scene feature, then two MLPs to one log scale and one log shift; scale and
shift are their exponentials, and depth = 1 / (scale * relative + shift) (``train_3d.py``), clamped
to [min_depth, max_depth] at test. Sizes are ``rsa.scene_widths`` / ``rsa.head_widths``.
"""

from __future__ import annotations

import dataclasses
import hashlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ..config import Config, RSAConfig
from ..encoders.clip_resnet import ResNetCLIPEncoder
from ..encoders.relative import RelativeDepthSource, build_relative_source
from ..errors import ConfigError
from ..io.stored import EncodedRows
from ..registry import DemoVariant, FrozenParts, ModelSpec, register
from .base import FEATURE_DTYPE, DepthModel, Features, FrameBatch, caption_embeddings
from .tr2m import to_metric

SECTION = "rsa"  # its config section (and ``rsa.relative``, its relative-depth source's)
# The release's precision of each frozen part on CUDA ("auto" and "released"): clip.load("RN50",
# device="cuda") keeps OpenAI's fp16 weights; Depth Anything runs in fp32 (train_3d.py).
RELEASED_PRECISIONS = {"text": "fp16", "relative": "fp32"}


def leaky_mlp(widths: list[int]) -> nn.Sequential:
    """Linear layers widths[0] -> widths[1] -> ... -> widths[-1], a LeakyReLU (slope 0.01, torch's
    default, as released) after each but the last; the release's ``nn.Sequential`` layout, so that
    its parameter names (``0.weight``, ``2.weight``, ...) are the release's."""
    layers: list[nn.Module] = []
    for i, (a, b) in enumerate(zip(widths[:-1], widths[1:])):
        layers += [nn.Linear(a, b)] + ([nn.LeakyReLU()] if i < len(widths) - 2 else [])
    return nn.Sequential(*layers)


@dataclass
class RSAHeadOutput:
    scale: torch.Tensor  # (B,) > 0, float32
    shift: torch.Tensor  # (B,) > 0, float32


class RSAHead(nn.Module):
    """The release's ``LanScaleModel`` (lanscale.py): caption embedding (B, text_dim) -> scale, shift (B,).

    ``scene_feat_net``: text_dim -> scene_widths (LeakyReLU between); ``shift_net`` and ``scale_net``:
    scene_widths[-1] -> head_widths -> 1 each; scale = exp(scale_net(scene)), shift =
    exp(shift_net(scene)). Built in the release's order (scene, shift, scale), each layer at PyTorch's
    default init, as released.
    """

    def __init__(self, text_dim: int, scene_widths: list[int], head_widths: list[int]) -> None:
        super().__init__()
        self.scene_feat_net = leaky_mlp([text_dim, *scene_widths])
        self.shift_net = leaky_mlp([scene_widths[-1], *head_widths, 1])
        self.scale_net = leaky_mlp([scene_widths[-1], *head_widths, 1])

    def forward(self, text: torch.Tensor) -> RSAHeadOutput:
        scene = self.scene_feat_net(text)
        # exp in float32: under bf16 autocast the log factors would keep 3 significant digits
        return RSAHeadOutput(scale=torch.exp(self.scale_net(scene).float()[:, 0]), shift=torch.exp(self.shift_net(scene).float()[:, 0]))


class RSAEncoders(nn.Module):
    """RSA's frozen parts; ``description`` and ``fingerprint`` cover both."""

    def __init__(self, text: ResNetCLIPEncoder, relative: RelativeDepthSource) -> None:
        super().__init__()
        self.text, self.relative = text, relative
        self.description = f"text: {text.source}, its text tower; relative depth: {relative.description}"

    def fingerprint(self) -> str:
        parts = "|".join(m.fingerprint() for m in (self.text, self.relative))
        return hashlib.sha256(parts.encode()).hexdigest()[:16]

    def train(self, mode: bool = True) -> "RSAEncoders":
        return super().train(False)  # frozen, whatever the parent does


class RSA(DepthModel):
    """Frozen CLIP RN50 text tower + relative depth, and a trained MLP giving one scale and shift per
    image. ``infer(images, captions=[...])`` returns metres."""

    display_name = "RSA"
    citation = """@inproceedings{zeng2024rsa,
  title     = {RSA: Resolving Scale Ambiguities in Monocular Depth Estimators through Language Descriptions},
  author    = {Zeng, Ziyao and Wu, Yangchao and Park, Hyoungseob and Wang, Daniel and Yang, Fengyu and
               Soatto, Stefano and Lao, Dong and Hong, Byung-Woo and Wong, Alex},
  booktitle = {Advances in Neural Information Processing Systems (NeurIPS)},
  year      = {2024},
  note      = {arXiv:2410.02924}
}"""
    paper = (
        'RSA, Zeng et al., "RSA: Resolving Scale Ambiguities in Monocular Depth Estimators through Language '
        'Descriptions" (NeurIPS 2024, [arXiv 2410.02924](https://arxiv.org/abs/2410.02924))'
    )
    uses_captions = True
    released_precision = RELEASED_PRECISIONS["text"]
    auto_precision = released_precision  # a baseline: as released (RELEASED_PRECISIONS per part)
    # The release resizes frames for Depth Anything with F.interpolate(..., "bicubic",
    # align_corners=False): half-pixel centres, no antialiasing, which "linear" keeps (bilinear).
    released_resize = "linear"
    dataset_recipes = {"nyu": "rsa_nyu", "kitti": "rsa_kitti"}
    encoder: RSAEncoders
    head: RSAHead

    @classmethod
    def build_encoder(cls, cfg: Config) -> RSAEncoders:
        return RSAEncoders(ResNetCLIPEncoder.from_config(cfg.depthclip), build_relative_source(cfg.rsa.relative, f"{SECTION}.relative"))

    @classmethod
    def build_head(cls, cfg: Config, encoder: RSAEncoders, initialise: bool) -> RSAHead:
        return RSAHead(encoder.text.embed_dim, cfg.rsa.scene_widths, cfg.rsa.head_widths)

    @property
    def input_size(self) -> tuple[int, int]:
        return self.cfg.rsa.input_height, self.cfg.rsa.input_width

    @property
    def max_depth(self) -> float:
        return self.cfg.rsa.max_depth

    @classmethod
    def part_precision(cls, part: str, setting: str) -> str:
        """A frozen part's precision setting resolved for CUDA: "auto" and "released" are the
        release's for that part (``RELEASED_PRECISIONS``), the others as ``precision_name``."""
        return RELEASED_PRECISIONS[part] if setting in ("auto", "released") else cls.precision_name(setting)

    @property
    def frozen_precisions(self) -> dict[str, str]:
        return {
            "text": self.part_precision("text", self.cfg.depthclip.precision),
            "relative": self.part_precision("relative", self.cfg.rsa.relative.precision),
        }

    @classmethod
    def needs_ground_truth(cls, cfg: Config) -> bool:
        return cfg.rsa.relative.source == "oracle"

    def encode_frames(self, batch: FrameBatch) -> Features:
        """Relative depth (B, H, W) and the caption lines' CLIP embeddings (B, max_caption_lines,
        1024; zero rows past a frame's lines) in fp16, and the line counts (B,)."""
        if batch.captions is None:
            raise ConfigError("RSA needs a caption per image (data.caption_dir or data.caption, or captions= to infer)")
        precisions = self.frozen_precisions
        with self.autocast(batch.images.device, precisions["relative"], self.cfg.precision):
            relative = self.encoder.relative(batch.images, batch.depth, batch.names)
        encode = lambda lines: self.encoder.text.encode_text(lines, normalize=False)  # noqa: E731
        with self.autocast(batch.images.device, precisions["text"], self.cfg.precision):
            text, lines = caption_embeddings(encode, batch.captions, self.cfg.rsa.max_caption_lines)
        return {"relative": relative.float().to(FEATURE_DTYPE), "text": text.to(FEATURE_DTYPE), "text_lines": lines}

    def storage(self, purpose: str) -> dict[str, Any]:
        """The relative depth as ``rsa.cache_relative`` says (png: its fp16 values, losslessly)."""
        return {"relative": self.cfg.rsa.cache_relative}

    def stored(self, features: Features, purpose: str) -> dict[str, Any]:
        if self.cfg.rsa.cache_relative != "png":
            return features
        return {**features, "relative": EncodedRows.encode(features["relative"], "fp16_png")}

    def metric(self, features: Features, text: torch.Tensor, clamp: bool = True) -> tuple[torch.Tensor, RSAHeadOutput]:
        """Depth (B, H, W) metres from stored features and one caption embedding (B, D) per frame:
        1 / (scale * relative + shift), the denominator clamped as ``to_metric`` does."""
        out = self.head(text)
        relative = features["relative"]
        factors = [f.view(-1, 1, 1).expand_as(relative) for f in (out.scale, out.shift)]
        return to_metric(relative, *factors, self.cfg.rsa.min_depth, self.cfg.rsa.max_depth, clamp), out

    def predict_from_features(
        self, features: Features, flipped: Features | None = None, tiles: int = 1
    ) -> tuple[torch.Tensor, RSAHeadOutput]:
        """Depth (B, H, W) with caption line 0, as the release evaluates; with ``flipped`` the mirrored
        frames' prediction (the same factors: the caption does not change), mirrored back, is averaged in."""
        if tiles != 1:
            raise ConfigError("RSA takes whole frames (data.tiles must be 1)")
        depth, out = self.metric(features, features["text"][:, 0])
        if flipped is not None:
            depth = 0.5 * (depth + self.metric(flipped, flipped["text"][:, 0])[0].flip(-1))
        return depth, out

    def infer_outputs(self, features: Features, head_output: RSAHeadOutput, tiles: int, to_image) -> dict[str, torch.Tensor]:
        """The ``relative`` depth it rescaled (B, H, W), and its ``scale`` and ``shift`` (B,)."""
        return {"relative": to_image(features["relative"]), "scale": head_output.scale, "shift": head_output.shift}


def frozen_parts(cfg: Config) -> FrozenParts:
    """CLIP RN50 (``depthclip``) and the relative-depth source: random where their sections say so;
    the ground-truth oracle is no model at all."""
    oracle = cfg.rsa.relative.source == "oracle"
    random = ["depthclip"] if cfg.depthclip.random_init else []
    random += [f"{SECTION}.relative"] if not oracle and cfg.rsa.relative.random_init else []
    return FrozenParts(random, oracle)


def demo_variant(cfg: Config, cache: Path) -> DemoVariant:
    """RSA's row in TR2M's demo (``demo_tr2m``): the recipe's ``rsa`` (MLP, optimiser) and
    ``depthclip`` (a small random-weight RN50 text tower) sections, with TR2M's relative-depth source,
    input size and depth range, so that both read the same oracle relative depth of the same frames;
    its own arrays are cached under ``<cache>/rsa``."""
    t = cfg.tr2m
    rsa = dataclasses.replace(
        cfg.rsa, relative=t.relative, input_height=t.input_height, input_width=t.input_width, min_depth=t.min_depth, max_depth=t.max_depth
    )
    train = dataclasses.replace(cfg.train, feature_cache=str(cache / SECTION))
    variant = dataclasses.replace(cfg, model=SECTION, rsa=rsa, train=train)
    return DemoVariant(SECTION, "RSA, one scale and shift per image from the caption alone", variant, SECTION)


SPEC = register(
    ModelSpec(
        SECTION,
        RSA,
        SECTION,
        RSAConfig,
        reads=("depthclip",),
        objective="clipdepth.training.objectives.rsa:RSAObjective",
        inference_overrides=(
            "depthclip.weights",
            "depthclip.tokenizer",
            "depthclip.precision",
            "rsa.relative.name",
            "rsa.relative.precision",
        ),
        converters=(("rsa-released", "clipdepth.models.released:convert_rsa_released"),),
        frozen_parts=frozen_parts,
    )
)
