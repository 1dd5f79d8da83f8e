"""Frozen CLIP encoder: patch tokens and CLS in the joint image-text space from ONE vision pass.

The reference code takes every token of the last layer through the final LayerNorm and the
visual projection (pureclip-depth.md, "Encoder"). In ``transformers`` the vision tower's
``last_hidden_state`` is taken BEFORE ``post_layernorm``, so both are applied here to all tokens;
token 0 then equals the model's own image embedding and no second pass is needed for CLS.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from huggingface_hub.utils import HFValidationError, validate_repo_id
from safetensors import SafetensorError
from tokenizers.pre_tokenizers import ByteLevel
from torch import nn
from transformers import CLIPConfig, CLIPModel, CLIPTokenizer
from transformers.image_utils import OPENAI_CLIP_MEAN, OPENAI_CLIP_STD

from ..config import EncoderConfig
from ..errors import EncoderLoadError
from .loading import first_line, quiet_transformers, weights_fingerprint

TEXT_CONTEXT_LENGTH = 77  # CLIP's text positions
TOKENIZER_PROBE = "1.00 meter"  # a depth phrase: a usable tokenizer must have real tokens for it
SAVED_FOLDER_HINT = (
    "a folder saved by CLIPModel.save_pretrained plus its tokenizer files (CLIPTokenizer.save_pretrained)"
)


@dataclass
class EncoderOutput:
    patch_tokens: torch.Tensor  # (B, h, w, D) in the joint embedding space, NOT L2-normalised
    cls: torch.Tensor  # (B, D) L2-normalised


def char_level_tokenizer() -> CLIPTokenizer:
    """A CLIP tokenizer with one token per byte and no merges.

    CLIP's BPE vocabulary is not available offline; a random-weight encoder only needs phrases
    to map to distinct, deterministic token sequences that end in a real EOS token.
    """
    chars = sorted(ByteLevel.alphabet())
    tokens = chars + [c + "</w>" for c in chars] + ["<|startoftext|>", "<|endoftext|>"]
    vocab = {token: index for index, token in enumerate(tokens)}
    return CLIPTokenizer(vocab=vocab, merges=[], model_max_length=TEXT_CONTEXT_LENGTH)


def _random_clip_config(cfg: EncoderConfig, tokenizer: CLIPTokenizer) -> CLIPConfig:
    text_config = dict(
        vocab_size=len(tokenizer),
        hidden_size=cfg.text_hidden_size,
        intermediate_size=4 * cfg.text_hidden_size,
        num_hidden_layers=cfg.text_num_layers,
        num_attention_heads=cfg.text_num_heads,
        max_position_embeddings=TEXT_CONTEXT_LENGTH,
        # The defaults are ids of CLIP's 49408-token vocabulary: out of range here (transformers warns),
        # and the text tower pools at the first eos_token_id, so it must be the tokenizer's EOS.
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    vision_config = dict(
        image_size=cfg.image_size,
        patch_size=cfg.patch_size,
        hidden_size=cfg.hidden_size,
        intermediate_size=cfg.intermediate_size,
        num_hidden_layers=cfg.num_layers,
        num_attention_heads=cfg.num_heads,
    )
    return CLIPConfig(
        text_config=text_config,
        vision_config=vision_config,
        projection_dim=cfg.projection_dim,
        attn_implementation="sdpa",
    )


def _load_hint(name_or_path: str) -> str:
    """What to supply instead, for a folder or a hub id that failed to load."""
    if Path(name_or_path).is_dir():
        return (
            f"save the model into '{name_or_path}' with CLIPModel.save_pretrained "
            "and its tokenizer with CLIPTokenizer.save_pretrained"
        )
    return f"run once with network access so it is cached, or set encoder.name to {SAVED_FOLDER_HINT}"


def _check_source_exists(name_or_path: str) -> None:
    """A path that is neither a folder nor a possible hub id would reach the Hub as a confusing id error."""
    if Path(name_or_path).is_dir():
        return
    try:
        validate_repo_id(name_or_path)
    except HFValidationError:
        raise EncoderLoadError(
            f"cannot load CLIP weights '{name_or_path}': no such folder; pass {SAVED_FOLDER_HINT}, "
            "or a Hugging Face Hub id such as 'openai/clip-vit-large-patch14-336'"
        ) from None


def _check_tokenizer(tokenizer: CLIPTokenizer, text_vocab_size: int, name_or_path: str) -> None:
    """A CLIP tokenizer without its vocabulary files loads without error but maps every word to a special token."""
    ids = tokenizer(TOKENIZER_PROBE)["input_ids"]
    if all(i in tokenizer.all_special_ids for i in ids):
        raise EncoderLoadError(
            f"cannot load the CLIP tokenizer of '{name_or_path}' (it is empty: {len(tokenizer)} entries, "
            f"{TOKENIZER_PROBE!r} gives only special tokens): {_load_hint(name_or_path)}"
        )
    if len(tokenizer) > text_vocab_size:
        raise EncoderLoadError(
            f"cannot load the CLIP tokenizer of '{name_or_path}': it has {len(tokenizer)} entries but the "
            f"text tower only {text_vocab_size}, so it belongs to other weights: {_load_hint(name_or_path)}"
        )


class CLIPEncoder(nn.Module):
    """Frozen CLIP: ``forward`` gives patch tokens and CLS, ``encode_text`` the text embeddings."""

    def __init__(self, model: CLIPModel, tokenizer: CLIPTokenizer, description: str) -> None:
        super().__init__()
        self.model = model.eval().requires_grad_(False)
        self.tokenizer = tokenizer
        self.description = description
        vision = model.config.vision_config
        self.embed_dim: int = model.config.projection_dim
        self.image_size: int = vision.image_size
        self.patch_size: int = vision.patch_size
        side = self.image_size // self.patch_size
        self.grid_size: tuple[int, int] = (side, side)
        self.image_mean: tuple[float, float, float] = tuple(OPENAI_CLIP_MEAN)
        self.image_std: tuple[float, float, float] = tuple(OPENAI_CLIP_STD)
        # Buffers so that the normalisation follows the module across devices.
        self.register_buffer("pixel_mean", torch.tensor(self.image_mean).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("pixel_std", torch.tensor(self.image_std).view(1, 3, 1, 1), persistent=False)

    @classmethod
    def from_config(cls, cfg: EncoderConfig) -> CLIPEncoder:
        if not cfg.random_init:
            return cls.from_pretrained(cfg.name)
        tokenizer = char_level_tokenizer()
        # Weights are a function of cfg.seed alone; the caller's RNG stream is left untouched.
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(cfg.seed)
            model = CLIPModel(_random_clip_config(cfg, tokenizer))
        return cls(model, tokenizer, f"random-weight CLIP ViT, seed {cfg.seed} (untrained; for tests and the demo)")

    @classmethod
    def from_pretrained(cls, name_or_path: str) -> CLIPEncoder:
        """CLIP weights and tokenizer from a Hugging Face Hub id or a folder saved by ``save_pretrained``."""
        _check_source_exists(name_or_path)
        with quiet_transformers():
            try:
                model, loading_info = CLIPModel.from_pretrained(
                    name_or_path, attn_implementation="sdpa", output_loading_info=True
                )
                tokenizer = CLIPTokenizer.from_pretrained(name_or_path)
            except (OSError, ValueError, RuntimeError, SafetensorError) as exc:
                raise EncoderLoadError(
                    f"cannot load CLIP weights '{name_or_path}' ({first_line(exc)}): {_load_hint(name_or_path)}"
                ) from None
        # transformers fills weights absent from the checkpoint with random values, silently.
        missing = loading_info["missing_keys"]
        if missing:
            raise EncoderLoadError(
                f"cannot load CLIP weights '{name_or_path}': the checkpoint lacks {len(missing)} CLIP tensors "
                f"(e.g. {sorted(missing)[0]}), so it is not a full CLIPModel: {_load_hint(name_or_path)}"
            )
        _check_tokenizer(tokenizer, model.config.text_config.vocab_size, name_or_path)
        return cls(model, tokenizer, name_or_path)

    def train(self, mode: bool = True) -> CLIPEncoder:
        # Frozen: a parent's .train() must not switch the encoder out of eval mode.
        return super().train(False)

    def normalize(self, images: torch.Tensor) -> torch.Tensor:
        """(B, 3, H, W) float images in [0, 1] -> CLIP pixel_values."""
        return (images - self.pixel_mean) / self.pixel_std

    def forward(self, pixel_values: torch.Tensor) -> EncoderOutput:
        expected = (3, self.image_size, self.image_size)
        if pixel_values.ndim != 4 or tuple(pixel_values.shape[1:]) != expected:
            raise ValueError(
                f"expected pixel_values of shape (B, {', '.join(map(str, expected))}), got {tuple(pixel_values.shape)}"
            )
        vision = self.model.vision_model
        hidden = vision(pixel_values=pixel_values).last_hidden_state  # (B, 1 + h*w, Dv), before post_layernorm
        tokens = self.model.visual_projection(vision.post_layernorm(hidden))
        height, width = self.grid_size
        return EncoderOutput(
            patch_tokens=tokens[:, 1:].reshape(tokens.shape[0], height, width, self.embed_dim),
            cls=F.normalize(tokens[:, 0], dim=-1),
        )

    def encode_text(self, phrases: list[str], normalize: bool = True) -> torch.Tensor:
        """(N, D) text embeddings: the projected EOS token, as ``get_text_features``; L2-normalised
        unless ``normalize`` is False (TR2M feeds the raw embedding of its caption)."""
        batch = self.tokenizer(
            phrases,
            padding=True,
            truncation=True,
            max_length=self.model.config.text_config.max_position_embeddings,
            return_tensors="pt",
        ).to(self.model.device)
        text = self.model.text_model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"])
        embeddings = self.model.text_projection(text.pooler_output)
        return F.normalize(embeddings, dim=-1) if normalize else embeddings

    def fingerprint(self) -> str:
        return weights_fingerprint(self.model)
