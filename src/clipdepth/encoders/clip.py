"""Frozen CLIP encoder: patch tokens and CLS in the joint image-text space from ONE vision pass.

The released PureCLIP-Depth code takes every token of the last layer through the final LayerNorm
and the visual projection (docs/pureclip-depth.md, "Encoder"). In ``transformers`` the vision tower's
``last_hidden_state`` is taken BEFORE ``post_layernorm``, so both are applied here to all tokens;
token 0 then equals the model's own image embedding and no second pass is needed for CLS.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from tokenizers.pre_tokenizers import ByteLevel
from transformers import CLIPConfig, CLIPModel, CLIPTokenizer
from transformers.image_utils import OPENAI_CLIP_MEAN, OPENAI_CLIP_STD

from ..config import CLIPEncoderConfig
from ..errors import EncoderLoadError
from .frozen import FrozenImageModel, load_pretrained, random_weights
from .loading import first_line, quiet_transformers

TEXT_CONTEXT_LENGTH = 77  # CLIP's text positions
TOKENIZER_PROBE = "1.00 meter"  # a depth phrase: a usable tokenizer must have real tokens for it
SAVED_FOLDER_HINT = "a folder saved by CLIPModel.save_pretrained plus its tokenizer files (CLIPTokenizer.save_pretrained)"


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


def _random_clip_config(cfg: CLIPEncoderConfig, tokenizer: CLIPTokenizer) -> CLIPConfig:
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
    return CLIPConfig(text_config=text_config, vision_config=vision_config, projection_dim=cfg.projection_dim, attn_implementation="sdpa")


def _load_hint(name_or_path: str) -> str:
    """What to supply instead, for a folder or a hub id whose tokenizer failed to load."""
    if Path(name_or_path).is_dir():
        return f"save the model into '{name_or_path}' with CLIPModel.save_pretrained and its tokenizer with CLIPTokenizer.save_pretrained"
    return f"run once with network access so it is cached, or set clip.name to {SAVED_FOLDER_HINT}"


def _load_tokenizer(name_or_path: str, text_vocab_size: int) -> CLIPTokenizer:
    """The tokenizer saved with the weights. One without its vocabulary files loads without error
    but maps every word to a special token: that, too, is an EncoderLoadError."""
    with quiet_transformers():
        try:
            tokenizer = CLIPTokenizer.from_pretrained(name_or_path)
        except (OSError, ValueError) as exc:
            raise EncoderLoadError(
                f"cannot load the CLIP tokenizer of '{name_or_path}' ({first_line(exc)}): {_load_hint(name_or_path)}"
            ) from None
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
    return tokenizer


class CLIPEncoder(FrozenImageModel):
    """Frozen CLIP: ``forward`` gives patch tokens and CLS, ``encode_text`` the text embeddings."""

    part = "clip"

    def __init__(self, model: CLIPModel, tokenizer: CLIPTokenizer, description: str) -> None:
        vision = model.config.vision_config
        super().__init__(model, description, OPENAI_CLIP_MEAN, OPENAI_CLIP_STD, vision.patch_size)
        self.tokenizer = tokenizer
        self.embed_dim: int = model.config.projection_dim
        self.image_size: int = vision.image_size
        side = self.image_size // self.patch_size
        self.grid_size: tuple[int, int] = (side, side)

    @classmethod
    def from_config(cls, cfg: CLIPEncoderConfig) -> CLIPEncoder:
        """The CLIP a config names, or (``random_init``) its architecture with seeded random weights."""
        if not cfg.random_init:
            return cls.from_pretrained(cfg.name)
        tokenizer = char_level_tokenizer()
        model = random_weights(lambda: CLIPModel(_random_clip_config(cfg, tokenizer)), cfg.seed)
        return cls(model, tokenizer, f"random-weight CLIP ViT, seed {cfg.seed} (untrained; for tests and the demo)")

    @classmethod
    def from_pretrained(cls, name_or_path: str) -> CLIPEncoder:
        """CLIP weights and tokenizer from a Hugging Face Hub id or a folder saved by ``save_pretrained``;
        every failure is one EncoderLoadError line naming the source."""
        model = load_pretrained(CLIPModel, name_or_path, SAVED_FOLDER_HINT, attn_implementation="sdpa")
        return cls(model, _load_tokenizer(name_or_path, model.config.text_config.vocab_size), name_or_path)

    def forward(self, pixel_values: torch.Tensor) -> EncoderOutput:
        expected = (3, self.image_size, self.image_size)
        if pixel_values.ndim != 4 or tuple(pixel_values.shape[1:]) != expected:
            raise ValueError(f"expected pixel_values of shape (B, {', '.join(map(str, expected))}), got {tuple(pixel_values.shape)}")
        vision = self.model.vision_model
        hidden = vision(pixel_values=pixel_values).last_hidden_state  # (B, 1 + h*w, Dv), before post_layernorm
        tokens = self.model.visual_projection(vision.post_layernorm(hidden))
        height, width = self.grid_size
        return EncoderOutput(
            patch_tokens=tokens[:, 1:].reshape(tokens.shape[0], height, width, self.embed_dim), cls=F.normalize(tokens[:, 0], dim=-1)
        )

    def encode_text(self, phrases: list[str], normalize: bool = True) -> torch.Tensor:
        """(N, D) text embeddings: the projected EOS token, as ``get_text_features``; L2-normalised
        unless ``normalize`` is False (TR2M feeds the raw embedding of its caption)."""
        batch = self.tokenizer(
            phrases, padding=True, truncation=True, max_length=self.model.config.text_config.max_position_embeddings, return_tensors="pt"
        ).to(self.model.device)
        text = self.model.text_model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"])
        embeddings = self.model.text_projection(text.pooler_output)
        return F.normalize(embeddings, dim=-1) if normalize else embeddings
