"""Frozen parts of the models, each from a hub id or folder through ``transformers``: CLIP (image
and text), DINOv2 and relative-depth sources; all on one base (``frozen.FrozenImageModel``)."""

from __future__ import annotations

from .clip import CLIPEncoder, EncoderOutput

__all__ = ["CLIPEncoder", "EncoderOutput"]
