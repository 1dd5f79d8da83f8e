"""Frozen CLIP ResNet (OpenAI's ModifiedResNet image tower and its text transformer), self-contained.

transformers has no CLIP ResNet, so the architecture is written here with OpenAI's own parameter
names: the ``state_dict`` of OpenAI's released ``RN50.pt`` (or of open_clip's ``RN50``/``openai``
model) loads into ``CLIPResNet`` as it is, and its sizes are read from the file (RN101, RN50x4 load
too). The image side gives the raw layer-4 map (the attention pool is built, so the file loads
strictly, but never run): DepthCLIP's image features, and the learned depth prompts' with
``prompts.backbone=resnet``. The text tower takes token ids, or token embeddings
(``encode_text(inputs_embeds=...)``: the learned prompt tokens).

Weights come from ``depthclip.weights``: a file path, or "open_clip" (the optional open_clip
package). Without them every failure is one EncoderLoadError line saying what to supply.
"""

from __future__ import annotations

import warnings
from collections import OrderedDict
from pathlib import Path
from typing import Callable, Sequence

import torch
import torch.nn.functional as F
from torch import nn
from transformers import CLIPTokenizer
from transformers.activations import QuickGELUActivation
from transformers.image_utils import IMAGENET_DEFAULT_MEAN, IMAGENET_DEFAULT_STD, OPENAI_CLIP_MEAN, OPENAI_CLIP_STD

from ..config import DepthCLIPConfig, section_name
from ..errors import EncoderLoadError
from .clip import TEXT_CONTEXT_LENGTH, char_level_tokenizer
from .frozen import random_weights
from .loading import at_initialisation, first_line, quiet_transformers, weights_fingerprint

OPEN_CLIP = "open_clip"  # depthclip.weights value: take OpenAI's RN50 from the open_clip package
OPEN_CLIP_HINT = 'pip install -e ".[openclip]" in the clipdepth repository (or pip install open_clip_torch)'
WEIGHTS_HINT = (
    "download OpenAI's RN50.pt (the file the `clip` package's clip.load('RN50') fetches) and set "
    f"depthclip.weights to its path, or set depthclip.weights=open_clip with open_clip installed ({OPEN_CLIP_HINT}); "
    "depthclip.random_init=true builds it with random weights (to try the pipeline, never a trained model)"
)
NORMALIZATIONS = {"imagenet": (IMAGENET_DEFAULT_MEAN, IMAGENET_DEFAULT_STD), "clip": (OPENAI_CLIP_MEAN, OPENAI_CLIP_STD)}
# Entries of OpenAI's TorchScript archive that are not parameters (its build_model drops them too).
NON_PARAMETER_KEYS = ("input_resolution", "context_length", "vocab_size")


# -- image tower: OpenAI's ModifiedResNet -----------------------------------------------------------
class Bottleneck(nn.Module):
    """ResNet bottleneck whose stride is an average pool after the 3x3 conv (anti-aliased)."""

    expansion = 4

    def __init__(self, inplanes: int, planes: int, stride: int = 1) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(inplanes, planes, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.avgpool = nn.AvgPool2d(stride) if stride > 1 else nn.Identity()
        self.conv3 = nn.Conv2d(planes, planes * self.expansion, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(planes * self.expansion)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = None
        if stride > 1 or inplanes != planes * self.expansion:
            self.downsample = nn.Sequential(
                OrderedDict(
                    [
                        ("-1", nn.AvgPool2d(stride)),
                        ("0", nn.Conv2d(inplanes, planes * self.expansion, 1, stride=1, bias=False)),
                        ("1", nn.BatchNorm2d(planes * self.expansion)),
                    ]
                )
            )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(self.avgpool(out)))
        identity = x if self.downsample is None else self.downsample(x)
        return self.relu(out + identity)


class AttentionPool2d(nn.Module):
    """CLIP's attention pool: only its parameters (so OpenAI's file loads); DepthCLIP skips it."""

    def __init__(self, spacial_dim: int, embed_dim: int, num_heads: int, output_dim: int) -> None:
        super().__init__()
        self.positional_embedding = nn.Parameter(torch.randn(spacial_dim**2 + 1, embed_dim) / embed_dim**0.5)
        self.k_proj = nn.Linear(embed_dim, embed_dim)
        self.q_proj = nn.Linear(embed_dim, embed_dim)
        self.v_proj = nn.Linear(embed_dim, embed_dim)
        self.c_proj = nn.Linear(embed_dim, output_dim)
        self.num_heads = num_heads


class ModifiedResNet(nn.Module):
    """3-conv stem with an average pool, anti-aliased strided bottlenecks; ``forward`` returns the
    layer-4 map (B, 32 * width, H / 32, W / 32), the attention pool not applied."""

    def __init__(self, layers: Sequence[int], output_dim: int, heads: int, input_resolution: int = 224, width: int = 64) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, width // 2, kernel_size=3, stride=2, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(width // 2)
        self.conv2 = nn.Conv2d(width // 2, width // 2, kernel_size=3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(width // 2)
        self.conv3 = nn.Conv2d(width // 2, width, kernel_size=3, padding=1, bias=False)
        self.bn3 = nn.BatchNorm2d(width)
        self.avgpool = nn.AvgPool2d(2)
        self.relu = nn.ReLU(inplace=True)
        self._inplanes = width
        self.layer1 = self._make_layer(width, layers[0])
        self.layer2 = self._make_layer(width * 2, layers[1], stride=2)
        self.layer3 = self._make_layer(width * 4, layers[2], stride=2)
        self.layer4 = self._make_layer(width * 8, layers[3], stride=2)
        self.feature_dim = width * 32
        self.attnpool = AttentionPool2d(input_resolution // 32, self.feature_dim, heads, output_dim)

    def _make_layer(self, planes: int, blocks: int, stride: int = 1) -> nn.Sequential:
        layers = [Bottleneck(self._inplanes, planes, stride)]
        self._inplanes = planes * Bottleneck.expansion
        layers += [Bottleneck(self._inplanes, planes) for _ in range(1, blocks)]
        return nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for conv, bn in ((self.conv1, self.bn1), (self.conv2, self.bn2), (self.conv3, self.bn3)):
            x = self.relu(bn(conv(x)))
        x = self.avgpool(x)
        return self.layer4(self.layer3(self.layer2(self.layer1(x))))


# -- text tower: OpenAI's causal transformer -------------------------------------------------------
class ResidualAttentionBlock(nn.Module):
    def __init__(self, d_model: int, n_head: int) -> None:
        super().__init__()
        self.attn = nn.MultiheadAttention(d_model, n_head)
        self.ln_1 = nn.LayerNorm(d_model)
        self.mlp = nn.Sequential(
            OrderedDict(
                [("c_fc", nn.Linear(d_model, d_model * 4)), ("gelu", QuickGELUActivation()), ("c_proj", nn.Linear(d_model * 4, d_model))]
            )
        )
        self.ln_2 = nn.LayerNorm(d_model)

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        y = self.ln_1(x)
        x = x + self.attn(y, y, y, need_weights=False, attn_mask=mask)[0]
        return x + self.mlp(self.ln_2(x))


class Transformer(nn.Module):
    def __init__(self, width: int, layers: int, heads: int) -> None:
        super().__init__()
        self.width, self.layers = width, layers
        self.resblocks = nn.Sequential(*[ResidualAttentionBlock(width, heads) for _ in range(layers)])

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        for block in self.resblocks:
            x = block(x, mask)
        return x


class CLIPResNet(nn.Module):
    """OpenAI's CLIP with a ModifiedResNet image tower, its parameters under OpenAI's names."""

    def __init__(
        self,
        embed_dim: int,
        image_resolution: int,
        vision_layers: Sequence[int],
        vision_width: int,
        context_length: int,
        vocab_size: int,
        transformer_width: int,
        transformer_heads: int,
        transformer_layers: int,
    ) -> None:
        super().__init__()
        self.context_length = context_length
        self.visual = ModifiedResNet(vision_layers, embed_dim, vision_width * 32 // 64, image_resolution, vision_width)
        self.transformer = Transformer(transformer_width, transformer_layers, transformer_heads)
        self.token_embedding = nn.Embedding(vocab_size, transformer_width)
        self.positional_embedding = nn.Parameter(torch.randn(context_length, transformer_width) * 0.01)
        self.ln_final = nn.LayerNorm(transformer_width)
        self.text_projection = nn.Parameter(torch.randn(transformer_width, embed_dim) * transformer_width**-0.5)
        self.logit_scale = nn.Parameter(torch.ones([]) * torch.log(torch.tensor(1 / 0.07)))
        mask = torch.full((context_length, context_length), float("-inf")).triu_(1)
        self.register_buffer("attn_mask", mask, persistent=False)

    @classmethod
    def from_state_dict(cls, state: dict[str, torch.Tensor]) -> "CLIPResNet":
        """The architecture a ResNet CLIP state dict describes (as OpenAI's ``build_model``), with
        those weights; ValueError when it is not one."""
        if "visual.layer1.0.conv1.weight" not in state or "text_projection" not in state:
            raise ValueError("not a CLIP ResNet state dict (no visual.layer1 / text_projection)")
        layers = [len({k.split(".")[2] for k in state if k.startswith(f"visual.layer{b}.")}) for b in (1, 2, 3, 4)]
        grid = round((state["visual.attnpool.positional_embedding"].shape[0] - 1) ** 0.5)
        width = state["ln_final.weight"].shape[0]
        model = cls(
            embed_dim=state["text_projection"].shape[1],
            image_resolution=grid * 32,
            vision_layers=layers,
            vision_width=state["visual.layer1.0.conv1.weight"].shape[0],
            context_length=state["positional_embedding"].shape[0],
            vocab_size=state["token_embedding.weight"].shape[0],
            transformer_width=width,
            transformer_heads=width // 64,
            transformer_layers=len({k.split(".")[2] for k in state if k.startswith("transformer.resblocks.")}),
        )
        params = {k: v for k, v in state.items() if k not in NON_PARAMETER_KEYS and k != "attn_mask"}
        model.load_state_dict({k: v.float() for k, v in params.items()}, strict=True)
        return model

    @property
    def embed_dim(self) -> int:
        return self.text_projection.shape[1]

    def encode_text(self, ids: torch.Tensor | None = None, inputs_embeds: torch.Tensor | None = None) -> torch.Tensor:
        """(N, context) token ids -> (N, embed_dim): the projected state at the EOT token (the
        largest id of each row, as OpenAI's ``encode_text``), not normalised.

        ``inputs_embeds`` (N, L, width), L <= context, instead of ids: token embeddings in the
        transformer's input space (where ``token_embedding`` puts words, before the positions),
        e.g. learned prompt tokens; the sequence is not padded and the state at its LAST position
        (its end token) is projected. The causal mask makes that equal to the padded sequence's."""
        if (ids is None) == (inputs_embeds is None):
            raise ValueError("encode_text takes ids or inputs_embeds (one of them)")
        x = self.token_embedding(ids) if inputs_embeds is None else inputs_embeds
        length = x.shape[1]
        if length > self.context_length:
            raise ValueError(f"{length} tokens, more than the text tower's context of {self.context_length}")
        x = x + self.positional_embedding[:length]
        x = self.transformer(x.permute(1, 0, 2), self.attn_mask[:length, :length].to(x.dtype)).permute(1, 0, 2)
        x = self.ln_final(x)
        rows = torch.arange(x.shape[0], device=x.device)
        end = ids.argmax(dim=-1) if ids is not None else torch.full_like(rows, length - 1)
        return x[rows, end] @ self.text_projection


# -- the frozen encoder DepthCLIP uses ---------------------------------------------------------------
def _read_weights_file(path: str) -> dict[str, torch.Tensor]:
    """OpenAI's TorchScript archive (``torch.jit.load(...).state_dict()``), or a plain state dict."""
    if not Path(path).is_file():
        raise EncoderLoadError(f"cannot load CLIP RN50 weights '{path}': no such file; {WEIGHTS_HINT}")
    try:
        with warnings.catch_warnings():
            # OpenAI's released RN50.pt is a TorchScript archive, which only torch.jit.load reads (its
            # suggested successor, torch.export, cannot): its deprecation says nothing the user can act on.
            warnings.filterwarnings("ignore", message=r"`torch\.jit\.load` is deprecated", category=DeprecationWarning)
            return dict(torch.jit.load(path, map_location="cpu").state_dict())
    except (RuntimeError, ValueError):
        pass
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - pickle and zip errors come in many types
        reason = f"not a TorchScript archive or torch file: {type(exc).__name__} {first_line(exc)}"
        raise EncoderLoadError(f"cannot load CLIP RN50 weights '{path}' ({reason}); {WEIGHTS_HINT}") from None
    state = state.get("state_dict", state) if isinstance(state, dict) else state
    if not isinstance(state, dict):
        raise EncoderLoadError(f"cannot load CLIP RN50 weights '{path}' (not a state dict); {WEIGHTS_HINT}")
    return state


def _open_clip_weights() -> tuple[dict[str, torch.Tensor], Callable[[list[str]], torch.Tensor]]:
    try:
        import open_clip  # optional extra
    except ImportError:
        raise EncoderLoadError(
            f"depthclip.weights=open_clip needs the open_clip package: {OPEN_CLIP_HINT}, or set depthclip.weights "
            "to the path of OpenAI's RN50.pt"
        ) from None
    try:
        model = open_clip.create_model("RN50", pretrained="openai")
    except Exception as exc:  # noqa: BLE001 - download and cache errors
        raise EncoderLoadError(
            f"cannot load open_clip's RN50/openai weights ({first_line(exc)}): run once with network access so they "
            "are cached, or set depthclip.weights to the path of OpenAI's RN50.pt"
        ) from None
    return model.state_dict(), open_clip.get_tokenizer("RN50")


def _hf_tokenizer(tokenizer: CLIPTokenizer) -> Callable[[list[str]], torch.Tensor]:
    def tokenize(phrases: list[str]) -> torch.Tensor:
        return tokenizer(phrases, padding="max_length", truncation=True, max_length=TEXT_CONTEXT_LENGTH, return_tensors="pt")["input_ids"]

    return tokenize


def _load_tokenizer(name: str) -> CLIPTokenizer:
    with quiet_transformers():
        try:
            return CLIPTokenizer.from_pretrained(name)
        except (OSError, ValueError) as exc:
            raise EncoderLoadError(
                f"cannot load the CLIP tokenizer '{name}' for the RN50 text tower ({first_line(exc)}): set "
                "depthclip.tokenizer to a folder saved by CLIPTokenizer.save_pretrained (any OpenAI CLIP's), or run "
                "once with network access so it is cached"
            ) from None


class ResNetCLIPEncoder(nn.Module):
    """Frozen CLIP ResNet (DepthCLIP's, and the learned prompts' RN50): ``forward`` gives the layer-4
    map channels-last, ``encode_text`` the text embeddings. Images in [0, 1] are normalised with
    ``normalize`` (ImageNet's statistics by default, as DepthCLIP's loader). ``untrained``: its
    weights are at their random initialisation, wherever they came from (``loading.at_initialisation``)."""

    part = section_name(DepthCLIPConfig)  # the config section that names these weights

    def __init__(
        self, model: CLIPResNet, tokenize: Callable[[list[str]], torch.Tensor], description: str, normalization: str = "imagenet"
    ) -> None:
        super().__init__()
        self.model = model.eval().requires_grad_(False)
        self.tokenize = tokenize
        mean, std = NORMALIZATIONS[normalization]
        self.source = description  # where the weights come from (a model of its text tower alone says this)
        self.description = f"{description}, layer-4 map, {normalization} input normalisation"
        self.embed_dim: int = model.embed_dim
        self.feature_dim: int = model.visual.feature_dim
        self.stride = 32
        self.register_buffer("pixel_mean", torch.tensor(mean, dtype=torch.float32).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("pixel_std", torch.tensor(std, dtype=torch.float32).view(1, 3, 1, 1), persistent=False)

    @classmethod
    def from_config(cls, cfg: DepthCLIPConfig) -> "ResNetCLIPEncoder":
        """The weights ``cfg`` names, or (``random_init``) its sizes with seeded random weights."""
        if cfg.random_init:
            tokenizer = char_level_tokenizer()
            model = random_weights(
                lambda: CLIPResNet(
                    embed_dim=cfg.embed_dim,
                    image_resolution=224,
                    vision_layers=cfg.layers,
                    vision_width=cfg.width,
                    context_length=TEXT_CONTEXT_LENGTH,
                    vocab_size=len(tokenizer),
                    transformer_width=cfg.text_width,
                    transformer_heads=cfg.text_heads,
                    transformer_layers=cfg.text_layers,
                ),
                cfg.seed,
            )
            return cls(
                model, _hf_tokenizer(tokenizer), f"random-weight CLIP ResNet, seed {cfg.seed} (untrained; for tests)", cfg.normalization
            )
        if cfg.weights == OPEN_CLIP:
            state, tokenize = _open_clip_weights()
        else:
            state, tokenize = _read_weights_file(cfg.weights), None
        try:
            model = CLIPResNet.from_state_dict(state)
        except (ValueError, RuntimeError, KeyError) as exc:
            raise EncoderLoadError(f"cannot load CLIP RN50 weights '{cfg.weights}' ({first_line(exc)}); {WEIGHTS_HINT}") from None
        if tokenize is None:
            tokenize = _hf_tokenizer(_load_tokenizer(cfg.tokenizer))
        return cls(model, tokenize, f"CLIP ResNet from {cfg.weights}", cfg.normalization)

    def train(self, mode: bool = True) -> "ResNetCLIPEncoder":
        return super().train(False)  # frozen: a parent's .train() leaves it in eval mode

    def normalize(self, images: torch.Tensor) -> torch.Tensor:
        return (images - self.pixel_mean) / self.pixel_std

    @property
    def untrained(self) -> bool:
        return at_initialisation(self.model)

    def fingerprint(self) -> str:
        return weights_fingerprint(self.model)

    def forward(self, pixel_values: torch.Tensor) -> torch.Tensor:
        """(B, 3, H, W) normalised images, H and W multiples of 32 -> (B, H / 32, W / 32, 32 * width)."""
        if pixel_values.ndim != 4 or pixel_values.shape[1] != 3 or pixel_values.shape[-1] % 32 or pixel_values.shape[-2] % 32:
            raise ValueError(f"expected pixel_values of shape (B, 3, H, W) with H, W multiples of 32, got {tuple(pixel_values.shape)}")
        return self.model.visual(pixel_values).permute(0, 2, 3, 1)

    def encode_text(self, phrases: list[str], normalize: bool = True) -> torch.Tensor:
        """(N, D) text embeddings of ``phrases``, L2-normalised unless ``normalize`` is False."""
        ids = self.tokenize(phrases).to(self.model.token_embedding.weight.device)
        embeddings = self.model.encode_text(ids)
        return F.normalize(embeddings, dim=-1) if normalize else embeddings
