"""Encoder outputs computed once per frame and kept in memory.

The encoder is frozen and training uses no augmentation, so its outputs for a frame never
change: computing them once turns training into work on the head alone. Tokens are stored in
half precision (as the on-disk cache will be) and handed out as float32.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch.utils.data import Dataset
from tqdm.auto import tqdm

from ..data.transforms import Preprocessor, split_tiles
from ..encoders import EncoderOutput

STORAGE_DTYPE = torch.float16


@dataclass
class EncodedSplit:
    """One split's frames, encoded: what training and validation need, nothing else.

    A frame resized to S x (tiles * S) is encoded as ``tiles`` square tiles, stored frame-major:
    tile t of frame i is entry i * tiles + t.
    """

    names: list[str]
    tokens: torch.Tensor  # (N * tiles, h, w, D) half precision
    cls: torch.Tensor  # (N * tiles, D) half precision
    flipped_tokens: torch.Tensor | None  # features of the mirrored images, for flip TTA
    flipped_cls: torch.Tensor | None
    depth_input: torch.Tensor  # (N, S, tiles * S) GT at the encoder input size, 0 = invalid
    gt: list[np.ndarray]  # GT at its own resolution, metres, 0 = invalid
    tiles: int = 1

    def __len__(self) -> int:
        return len(self.names)

    def tile_index(self, frames: slice) -> slice:
        """Entries of all tiles of a contiguous range of frames."""
        return slice(frames.start * self.tiles, frames.stop * self.tiles)

    def random_tiles(
        self, frames: torch.Tensor, generator: torch.Generator, device: torch.device | str = "cpu"
    ) -> tuple[EncoderOutput, torch.Tensor]:
        """Features and (B, S, S) input-size GT of one random tile per frame, as the reference code
        trains on KITTI's four tiles (with one tile, simply the frames)."""
        tile = torch.randint(self.tiles, (len(frames),), generator=generator)
        return self.features(frames * self.tiles + tile, device), pick_tiles(self.depth_input[frames], tile).to(device)

    def features(self, index: torch.Tensor | slice, device: torch.device | str = "cpu") -> EncoderOutput:
        return EncoderOutput(self.tokens[index].to(device).float(), self.cls[index].to(device).float())

    def flipped_features(self, index: torch.Tensor | slice, device: torch.device | str = "cpu") -> EncoderOutput | None:
        if self.flipped_tokens is None or self.flipped_cls is None:
            return None
        return EncoderOutput(self.flipped_tokens[index].to(device).float(), self.flipped_cls[index].to(device).float())


def pick_tiles(depth: torch.Tensor, tile: torch.Tensor) -> torch.Tensor:
    """(B, S, k * S) -> (B, S, S): tile ``tile[b]`` of frame b."""
    return depth.unflatten(-1, (-1, depth.shape[-2]))[torch.arange(len(tile)), :, tile]


class OnTheFlySplit:
    """Training frames decoded and encoded again at every step, as uncached training does: for
    comparison with the cache, or for users who add augmentation. Same interface for training as
    ``EncodedSplit``."""

    def __init__(self, model: torch.nn.Module, dataset: Dataset, preprocessor: Preprocessor) -> None:
        self.model, self.dataset, self.preprocessor = model, dataset, preprocessor
        self.tiles = preprocessor.tiles

    def __len__(self) -> int:
        return len(self.dataset)

    def random_tiles(
        self, frames: torch.Tensor, generator: torch.Generator, device: torch.device | str = "cpu"
    ) -> tuple[EncoderOutput, torch.Tensor]:
        tile = torch.randint(self.tiles, (len(frames),), generator=generator)
        samples = [self.dataset[int(i)] for i in frames]
        images = torch.cat([self.preprocessor.images(s.image[None]) for s in samples]).to(device)
        depth = torch.cat([self.preprocessor.depths(s.depth[None]) for s in samples])
        picked = torch.arange(len(frames)) * self.tiles + tile
        with torch.no_grad():  # not inference_mode: the head's autograd takes these as inputs
            features = self.model.encode(split_tiles(images, self.preprocessor.input_size))
        return EncoderOutput(features.patch_tokens[picked], features.cls[picked]), pick_tiles(depth, tile).to(device)


@torch.inference_mode()
def encode_split(
    model: torch.nn.Module,
    dataset: Dataset,
    preprocessor: Preprocessor,
    batch_size: int = 8,
    flip: bool = False,
    desc: str = "encode",
) -> EncodedSplit:
    """Run ``model.encode`` once per frame (and once per mirrored frame when ``flip``)."""
    device = next(model.head.parameters()).device
    names: list[str] = []
    gts: list[np.ndarray] = []
    parts: dict[str, list[torch.Tensor]] = {"tokens": [], "cls": [], "ftokens": [], "fcls": [], "depth": []}
    for start in tqdm(range(0, len(dataset), batch_size), desc=desc, unit="batch", leave=False):
        samples = [dataset[i] for i in range(start, min(start + batch_size, len(dataset)))]
        # One frame at a time: frames of a real dataset need not share a size.
        images = torch.cat([preprocessor.images(s.image[None]) for s in samples]).to(device)
        out = model.encode(split_tiles(images, preprocessor.input_size))
        parts["tokens"].append(out.patch_tokens.to("cpu", STORAGE_DTYPE))
        parts["cls"].append(out.cls.to("cpu", STORAGE_DTYPE))
        if flip:
            mirrored = model.encode(split_tiles(images.flip(-1), preprocessor.input_size))
            parts["ftokens"].append(mirrored.patch_tokens.to("cpu", STORAGE_DTYPE))
            parts["fcls"].append(mirrored.cls.to("cpu", STORAGE_DTYPE))
        parts["depth"] += [preprocessor.depths(s.depth[None]) for s in samples]
        names += [s.name for s in samples]
        gts += [s.depth for s in samples]
    return EncodedSplit(
        names=names,
        tokens=torch.cat(parts["tokens"]),
        cls=torch.cat(parts["cls"]),
        flipped_tokens=torch.cat(parts["ftokens"]) if flip else None,
        flipped_cls=torch.cat(parts["fcls"]) if flip else None,
        depth_input=torch.cat(parts["depth"]),
        gt=gts,
        tiles=preprocessor.tiles,
    )
