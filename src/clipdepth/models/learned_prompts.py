"""Learned depth prompts (Auty & Mikolajczyk, "Learning to Prompt CLIP for Monocular Depth
Estimation: Exploring the Limits of Human Language", ICCV 2023 workshops; docs/baselines.md).

DepthCLIP's recipe with the human depth words replaced by LEARNED token embeddings: a frozen CLIP
gives dense image features; one prompt per depth bin, "This object appears to be <d_i>", where
<d_i> is a learnable vector in the text transformer's INPUT space (where word embeddings live),
goes through CLIP's frozen text transformer; the per-location softmax of the image-text
similarities weights the bin centres. Only the prompt token embeddings are trained: they are the
head's parameters (so head-only checkpoints hold them), while the frozen text transformer runs
inside the head's forward, once per step for the N prompts (never per pixel), and the gradient
flows through it to the tokens alone. The image side is frozen and comes from the feature cache.

The frozen CLIP is ``prompts.backbone``: "resnet", CLIP RN50 as the release's reported runs (the
self-contained tower of ``encoders/clip_resnet.py`` that DepthCLIP uses, its raw layer-4 map; the
learned tokens go into its OpenAI-style text tower through ``encode_text(inputs_embeds=...)``), or
"vit", the ViT of the ``clip`` section (transformers CLIPModel).

Shapes and constants follow the authors' release (github.com/DylanAuty/PromptLearningCLIP-MDE,
``modules/DepthCLIP.py``, ``CLIP/clip/model.py``): learned tokens drawn from N(0, 0.02^2) and
substituted for word embeddings before the positional embedding; the sentence feature at the end
token; text features normalised per row and then by the norm of the whole N x D matrix; image
features normalised per location and, when wider than the text features (RN50: 2048 vs 1024),
reduced by nearest-neighbour interpolation along the channels; logits 100 * cos / 0.1.
"""

from __future__ import annotations

import dataclasses
import math
import re
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from ..config import Config, PromptsConfig
from ..encoders import CLIPEncoder
from ..encoders.clip_resnet import ResNetCLIPEncoder
from ..errors import ConfigError
from .base import FEATURE_DTYPE, DepthModel, Features, FrameBatch
from ..registry import BASELINE, DemoPlan, DemoVariant, ModelSpec, register
from .depthclip import DepthCLIP, reduce_channels, resnet_frozen_parts
from .pureclip_depth import PureCLIPDepth

TextEncoder = CLIPEncoder | ResNetCLIPEncoder

DEPTH_SLOT, CONTEXT_SLOT = "{depth}", "{ctx}"


def bin_centres(min_depth: float, max_depth: float, num_bins: int, scheme: str) -> torch.Tensor:
    """Centres (metres, float64) of ``num_bins`` bins over [min_depth, max_depth], as the release's
    ``depth_bin_centres`` options: "even" (``dset-even-N``): min + (i + 0.5) * (max - min) / N;
    "log" (``dset-log-N``, and ``const80-log-N`` with the range 0.001-80): the same in log depth,
    exp(log min + (i + 0.5) * (log max - log min) / N)."""
    steps = torch.arange(num_bins, dtype=torch.float64) + 0.5
    if scheme == "even":
        return min_depth + steps * (max_depth - min_depth) / num_bins
    low, high = math.log(min_depth), math.log(max_depth)
    return torch.exp(low + steps * (high - low) / num_bins)


@dataclass
class PromptLayout:
    """Where the learned tokens sit in the prompt's token sequence (the same for every bin)."""

    ids: torch.Tensor  # (L,) token ids: start, the template's words, end; learned slots hold a placeholder
    depth_positions: list[int]  # the tokens_per_bin slots of the bin's own tokens
    context_positions: list[int]  # one slot per "{ctx}": context tokens shared by all bins


def prompt_layout(template: str, tokenizer, tokens_per_bin: int, max_length: int) -> PromptLayout:
    """The template's words tokenised around its slots: "{depth}" takes the bin's
    ``tokens_per_bin`` learned tokens, each "{ctx}" one shared learned token. The sequence is not
    padded: every prompt has the same length and the text transformer is causal, so the end
    token's output (the sentence feature) is what the release's padded sequence gives."""
    ids, depth, context = [tokenizer.bos_token_id], [], []
    for part in re.split(r"(\{depth\}|\{ctx\})", template):
        if part == DEPTH_SLOT:
            depth = list(range(len(ids), len(ids) + tokens_per_bin))
            ids += [tokenizer.bos_token_id] * tokens_per_bin
        elif part == CONTEXT_SLOT:
            context.append(len(ids))
            ids.append(tokenizer.bos_token_id)
        elif part.strip():
            ids += tokenizer(part.strip(), add_special_tokens=False)["input_ids"]
    ids.append(tokenizer.eos_token_id)
    if len(ids) > max_length:
        raise ConfigError(f"prompts.template gives {len(ids)} tokens, more than the text encoder's {max_length}")
    return PromptLayout(torch.tensor(ids), depth, context)


class PaddedIdsTokenizer:
    """The part of a transformers tokenizer ``prompt_layout`` uses, over a CLIP ResNet encoder's
    ``tokenize`` (phrases -> padded ids "start, words, end, ..."; a transformers CLIPTokenizer or
    open_clip's): the start and end ids, and a phrase's word ids without them."""

    def __init__(self, tokenize) -> None:
        self.tokenize = tokenize
        empty = tokenize([""])[0].tolist()
        self.bos_token_id, self.eos_token_id = int(empty[0]), int(empty[1])

    def __call__(self, text: str, add_special_tokens: bool = False) -> dict[str, list[int]]:
        ids = self.tokenize([text])[0].tolist()
        words = ids[1 : ids.index(self.eos_token_id, 1)]
        return {"input_ids": [self.bos_token_id, *words, self.eos_token_id] if add_special_tokens else words}


def text_tokenizer(encoder: TextEncoder):
    return PaddedIdsTokenizer(encoder.tokenize) if isinstance(encoder, ResNetCLIPEncoder) else encoder.tokenizer


def token_embedding(encoder: TextEncoder) -> nn.Embedding:
    """The frozen text tower's word embedding table (the input space the learned tokens live in)."""
    if isinstance(encoder, ResNetCLIPEncoder):
        return encoder.model.token_embedding
    return encoder.model.text_model.embeddings.token_embedding


def text_context_length(encoder: TextEncoder) -> int:
    if isinstance(encoder, ResNetCLIPEncoder):
        return encoder.model.context_length
    return encoder.model.config.text_config.max_position_embeddings


@dataclass
class PromptsHeadOutput:
    logits: torch.Tensor  # (B, h, w, N) image-text similarities * scale
    probs: torch.Tensor  # (B, h, w, N) soft bin assignment
    depth: torch.Tensor  # (B, h, w) metres, expected bin centre
    text: torch.Tensor  # (N, D) the prompts' text features as compared


class LearnedPromptsHead(nn.Module):
    """The learned prompt tokens (the only trained part) and the frozen text transformer they go
    through. The text encoder is held by reference, not as a submodule: it is never saved with the
    head, never handed to an optimiser, and moves with the model that owns it."""

    def __init__(self, cfg: PromptsConfig, encoder: TextEncoder) -> None:
        super().__init__()
        self.cfg = cfg
        self._frozen = (encoder,)  # a tuple: not registered, so not in state_dict() or parameters()
        self.layout = prompt_layout(cfg.template, text_tokenizer(encoder), cfg.tokens_per_bin, text_context_length(encoder))
        width = token_embedding(encoder).embedding_dim
        self.depth_tokens = nn.Parameter(torch.randn(cfg.num_bins, cfg.tokens_per_bin, width) * cfg.init_std)
        count = len(self.layout.context_positions)
        self.context_tokens = nn.Parameter(torch.randn(count, width) * cfg.init_std) if count else None
        self.register_buffer(
            "bin_centres", bin_centres(cfg.min_depth, cfg.max_depth, cfg.num_bins, cfg.bin_scheme).float(), persistent=False
        )
        self.register_buffer("prompt_ids", self.layout.ids, persistent=False)

    @property
    def encoder(self) -> TextEncoder:
        return self._frozen[0]

    def prompt_embeddings(self) -> torch.Tensor:
        """(N, L, W): the word embeddings of the template, the learned tokens in their slots."""
        frozen = token_embedding(self.encoder)(self.prompt_ids)
        x = frozen.to(self.depth_tokens.dtype).expand(self.cfg.num_bins, -1, -1).clone()
        x[:, self.layout.depth_positions] = self.depth_tokens
        if self.context_tokens is not None:
            x[:, self.layout.context_positions] = self.context_tokens.expand(self.cfg.num_bins, -1, -1)
        return x

    def text_features(self) -> torch.Tensor:
        """(N, D) the prompts' features: ``encode_token_embeddings`` of ``prompt_embeddings``,
        normalised per row, then ("matrix", the release) divided by the norm of the whole matrix."""
        text = F.normalize(encode_token_embeddings(self.encoder, self.prompt_embeddings()), dim=-1)
        return text / text.norm() if self.cfg.text_norm == "matrix" else text

    def forward(self, tokens: torch.Tensor) -> PromptsHeadOutput:
        """``tokens`` (B, h, w, C) dense CLIP image features (cached, raw) -> per-location bins and depth."""
        text = self.text_features().float()
        # normalised over all C channels, then (RN50: 2048 > 1024) reduced to the text width as DepthCLIP
        # does; the release: F.interpolate(img_f, size=D), nearest. Unchanged when C == D (the ViT).
        image = reduce_channels(F.normalize(tokens.float(), dim=-1), text.shape[-1], "nearest")
        logits = self.cfg.logit_scale * (image @ text.T) / self.cfg.temperature
        probs = logits.softmax(dim=-1)
        return PromptsHeadOutput(logits=logits, probs=probs, depth=probs @ self.bin_centres, text=text)


def encode_token_embeddings(encoder: TextEncoder, embeddings: torch.Tensor) -> torch.Tensor:
    """(N, L, W) token embeddings (the text transformer's input, before positions) -> (N, D)
    projected sentence features at the last position (the end token), as CLIP's text tower computes
    them from token ids; the encoder stays frozen, the gradient reaches ``embeddings``."""
    if isinstance(encoder, ResNetCLIPEncoder):
        return encoder.model.encode_text(inputs_embeds=embeddings)
    from transformers.masking_utils import create_causal_mask

    text = encoder.model.text_model
    hidden = text.embeddings(inputs_embeds=embeddings)
    mask = create_causal_mask(config=text.config, inputs_embeds=hidden, attention_mask=None, cache=None)
    hidden = text.encoder(inputs_embeds=hidden, attention_mask=mask, is_causal=True).last_hidden_state
    return encoder.model.text_projection(text.final_layer_norm(hidden)[:, -1])


class LearnedPrompts(DepthModel):
    """Frozen CLIP (image and text; RN50 or the ``clip`` section's ViT) + learned depth prompt tokens.
    ``infer`` takes images and returns metres."""

    display_name = "Learned depth prompts"
    paper = (
        'learned depth prompts, Auty and Mikolajczyk, "Learning to Prompt CLIP for Monocular Depth Estimation: '
        'Exploring the Limits of Human Language" (ICCV 2023 Workshops)'
    )
    citation = """@inproceedings{auty2023learning,
  title     = {Learning to Prompt CLIP for Monocular Depth Estimation: Exploring the Limits of Human Language},
  author    = {Auty, Dylan and Mikolajczyk, Krystian},
  booktitle = {Proceedings of the IEEE/CVF International Conference on Computer Vision (ICCV) Workshops},
  year      = {2023}
}"""
    released_precision = "fp32"  # clip.load(..., device="cpu") gives fp32 weights; Lightning's default precision
    auto_precision = released_precision  # a baseline: as released
    # The release never resizes inputs (random crops in training, full frames at test); its one
    # interpolation, of the prediction to the GT, is bilinear with align_corners=True.
    released_resize = "align_corners"
    dataset_recipes = {"nyu": "prompts_nyu", "kitti": "prompts_kitti"}
    encoder: TextEncoder
    head: LearnedPromptsHead

    @classmethod
    def build_encoder(cls, cfg: Config) -> TextEncoder:
        if cfg.prompts.backbone == "resnet":
            return ResNetCLIPEncoder.from_config(cfg.depthclip)  # weights, tokenizer, sizes: the depthclip section
        return CLIPEncoder.from_config(cfg.clip)

    @classmethod
    def build_head(cls, cfg: Config, encoder: TextEncoder, initialise: bool) -> LearnedPromptsHead:
        return LearnedPromptsHead(cfg.prompts, encoder)

    @staticmethod
    def _precision_setting(cfg: Config) -> str:
        return cfg.depthclip.precision if cfg.prompts.backbone == "resnet" else cfg.clip.precision

    @property
    def input_size(self) -> tuple[int, int]:
        return self.cfg.prompts.input_height, self.cfg.prompts.input_width

    @property
    def frozen_precisions(self) -> dict[str, str]:
        part = "depthclip" if self.cfg.prompts.backbone == "resnet" else "clip"
        return {part: self.precision_name(self._precision_setting(self.cfg))}

    @property
    def stride(self) -> int:
        """Input pixels per feature location: the ViT's patch size, or RN50's 32."""
        return self.encoder.stride if self.cfg.prompts.backbone == "resnet" else self.encoder.patch_size

    @property
    def max_depth(self) -> float:
        return self.cfg.prompts.max_depth

    def encode(self, images: torch.Tensor) -> torch.Tensor:
        """(B, 3, H, W) frames in [0, 1], sides multiples of the stride p -> (B, H/p, W/p, C) float32
        features. RN50: the raw layer-4 map (C = 2048, attention pool skipped; the release's
        ``encode_image``), as DepthCLIP encodes it. ViT: the patch tokens through the final LayerNorm
        and the visual projection (the release's ViT path: ``ln_post(x[:, 1:]) @ proj``), CLIP's
        position embeddings interpolated to the frame's grid."""
        patch = self.stride
        height, width = images.shape[-2:]
        if height % patch or width % patch:
            raise ValueError(f"{self.display_name} expects frames whose sides are multiples of {patch}, got {(height, width)}")
        if self.cfg.prompts.backbone == "resnet":
            with self.autocast(images.device, self.cfg.depthclip.precision, self.cfg.precision):
                return self.encoder(self.encoder.normalize(images)).float()
        clip = self.encoder.model
        with self.autocast(images.device, self.cfg.clip.precision, self.cfg.precision):
            hidden = clip.vision_model(pixel_values=self.encoder.normalize(images), interpolate_pos_encoding=True).last_hidden_state
            tokens = clip.visual_projection(clip.vision_model.post_layernorm(hidden[:, 1:]))
        return tokens.float().reshape(len(images), height // patch, width // patch, -1)

    def encode_frames(self, batch: FrameBatch) -> Features:
        return {"tokens": self.encode(batch.images).to(FEATURE_DTYPE)}

    def depth_at_input(self, depth: torch.Tensor) -> torch.Tensor:
        """(B, h, w) per-location depth -> (B, h * p, w * p) at the input size, bilinear with
        align_corners=True as the release upsamples its prediction (straight from the feature grid,
        RN50's 15 x 20 at 480 x 640, to the GT's size: there is no intermediate upsampling)."""
        patch = self.stride
        size = (depth.shape[-2] * patch, depth.shape[-1] * patch)
        return F.interpolate(depth[:, None], size=size, mode="bilinear", align_corners=True)[:, 0]

    def predict_from_features(
        self, features: Features, flipped: Features | None = None, tiles: int = 1
    ) -> tuple[torch.Tensor, PromptsHeadOutput]:
        """Depth (B, H, W) at the input size; with ``flipped`` the mirrored frames' prediction,
        mirrored back, is averaged in (the release's validation)."""
        if tiles != 1:
            raise ConfigError(f"{self.display_name} takes whole frames (data.tiles must be 1)")
        out = self.head(features["tokens"])
        depth = self.depth_at_input(out.depth)
        if flipped is not None:
            depth = 0.5 * (depth + self.depth_at_input(self.head(flipped["tokens"]).depth).flip(-1))
        return depth, out


def demo_plan(cfg: Config) -> DemoPlan:
    """The CLIP baselines side by side on one random-weight CLIP ViT (the `clip` section;
    ``--config demo_baselines``): the learned depth prompts (the recipe) and a PureCLIP-Depth head
    trained, DepthCLIP (its ViT variant, the release's words and bins) run zero-shot."""
    depthclip = dataclasses.replace(cfg, model=DepthCLIP.architecture, depthclip=dataclasses.replace(cfg.depthclip, backbone="vit"))
    return DemoPlan(
        [
            DemoVariant("learned_prompts", f"Learned depth prompts ({cfg.prompts.num_bins} bins)", cfg, "learned_prompts"),
            DemoVariant("pureclip", "PureCLIP-Depth head", dataclasses.replace(cfg, model=PureCLIPDepth.architecture), "pureclip"),
            DemoVariant("depthclip", "DepthCLIP (zero-shot)", depthclip, "depthclip"),
        ],
        lambda model: (
            f"NOTE: all three models share one small CLIP ViT with RANDOM weights ({model.encoder.description}).\n"
            "It is not a trained model: the numbers show the pipeline, and say nothing about the accuracy of the\n"
            "learned prompts, PureCLIP-Depth or DepthCLIP with OpenAI's CLIP (DepthCLIP, zero-shot, has nothing to\n"
            "learn from random features)."
        ),
        BASELINE,
        "{metric}: learned prompts {gain:.1f}% {direction} than the mean-depth predictor;",
    )


# RN50 (weights, tokenizer, sizes) is the depthclip section's, the ViT the clip section's.
SPEC = register(
    ModelSpec(
        "learned_prompts",
        LearnedPrompts,
        "prompts",
        PromptsConfig,
        reads=("clip", "depthclip"),
        objective="clipdepth.training.objectives.learned_prompts:LearnedPromptsObjective",
        inference_overrides=("clip.name", "clip.precision", "depthclip.weights", "depthclip.tokenizer", "depthclip.precision"),
        demo=demo_plan,
        frozen_parts=lambda cfg: resnet_frozen_parts(cfg, cfg.prompts.backbone == "resnet"),
    )
)
