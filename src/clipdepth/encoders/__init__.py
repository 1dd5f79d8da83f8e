"""Frozen image/text encoders, built from an EncoderConfig."""
from __future__ import annotations

from ..config import EncoderConfig
from .clip import CLIPEncoder, EncoderOutput

# Every config builds CLIP for now; TR2M adds DINOv2 here.
ENCODERS: dict[str, type[CLIPEncoder]] = {"clip": CLIPEncoder}


def build_encoder(cfg: EncoderConfig) -> CLIPEncoder:
    return ENCODERS["clip"].from_config(cfg)


__all__ = ["CLIPEncoder", "ENCODERS", "EncoderOutput", "build_encoder"]
