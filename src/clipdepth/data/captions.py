"""Captions for TR2M and RSA: the text that conditions each frame's scale and shift.

A caption file ``<frame name>.txt`` holds one caption per line (TR2M's released data: about 15
per image). Training draws a random line, so the model does not overfit one wording; evaluation
always reads line 0, so scores are reproducible.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

import torch

from ..config import DataConfig
from ..errors import DataError
from .sample import RGBDSample

__all__ = ["CaptionLookup", "caption_lines", "caption_lookup", "pick_embeddings", "pick_lines", "read_caption_file"]

CaptionLookup = Callable[[RGBDSample], list[str]]
"""A frame's caption lines."""


def read_caption_file(path: str | os.PathLike) -> list[str]:
    """The non-empty lines of a caption file, stripped."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise DataError(
            f"{path}: no caption file for this frame (write one with `clipdepth caption`, or give one caption "
            "for all: --caption, data.caption)"
        ) from None
    except (OSError, UnicodeDecodeError) as exc:
        raise DataError(f"{path}: cannot read caption file ({exc.__class__.__name__}: {exc})".splitlines()[0]) from None
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    if not lines:
        raise DataError(f"{path}: caption file is empty")
    return lines


def caption_lines(sample: RGBDSample, data: DataConfig) -> list[str]:
    """The captions of one frame: data.caption, else its file in data.caption_dir, else the
    dataset's own; a frame with none is an error rather than a silently empty text."""
    if data.caption is not None:
        return [data.caption]
    if data.caption_dir is not None:
        return read_caption_file(Path(data.caption_dir) / f"{sample.name}.txt")
    if sample.captions:
        return list(sample.captions)
    raise DataError(
        f"{sample.name}: no caption (TR2M needs one per frame: set data.caption_dir to a folder of "
        "<frame name>.txt files written by `clipdepth caption`, or data.caption for one caption for all)"
    )


def pick_lines(counts: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
    """Which caption line each frame uses, given its number of lines: line 0 without a generator
    (evaluation), a uniformly random line with one (training), as the reference does."""
    if generator is None:
        return torch.zeros_like(counts)
    # Drawn where the generator lives and kept on the counts' device: no wait for the device.
    draw = torch.rand(len(counts), generator=generator, device=generator.device).to(counts.device)
    return (draw * counts).long().clamp_max(counts - 1)


def pick_embeddings(texts: torch.Tensor, counts: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
    """One caption embedding per frame: ``texts`` (B, L, D) the embeddings of each frame's lines,
    ``counts`` (B,) how many are real -> (B, D), line ``pick_lines`` chooses (0 without a generator)."""
    line = pick_lines(counts, generator)
    return texts.gather(1, line.view(-1, 1, 1).expand(-1, 1, texts.shape[2])).squeeze(1)


def caption_lookup(data: DataConfig) -> CaptionLookup:
    """A frame's caption lines under these data settings (for models that read captions)."""
    return lambda sample: caption_lines(sample, data)
