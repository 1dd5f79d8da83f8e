"""Frozen-part outputs computed once per frame and kept in memory.

The frozen parts of a model (encoders, relative-depth source) never change and training uses no
augmentation, so their outputs for a frame never change either: computing them once turns
training into work on the head alone. Each model names its arrays (PureCLIP-Depth: tokens and
CLS; TR2M: DINOv2 tokens, relative depth, caption embeddings, the input image) and returns them
in the dtype they are kept in (half precision for features); the head gets them as float32.
"""
from __future__ import annotations

from dataclasses import dataclass
import numpy as np
import torch
from torch.utils.data import Dataset
from tqdm.auto import tqdm

from ..data.captions import CaptionLookup
from ..errors import DataError
from ..data.sample import RGBDSample
from ..data.transforms import Preprocessor
from ..models.base import Features, FrameBatch, as_float


@dataclass
class TrainBatch:
    """One training step's input: one tile of each of B frames."""

    features: Features  # the model's arrays of the tiles, float32 for the head
    depth: torch.Tensor  # (B, H, W) GT of the tiles at the input size, metres, 0 = invalid
    frame_shapes: list[tuple[int, int]]  # (height, width) of each full frame (its GT)
    tile: torch.Tensor  # (B,) which tile of its frame each row is (0 .. tiles - 1)
    tiles: int  # tiles per frame


@dataclass
class EncodedSplit:
    """One split's frames, encoded: what training and validation need, nothing else.

    A frame resized to H x (tiles * W) may be encoded as ``tiles`` tiles (PureCLIP-Depth on
    KITTI), stored frame-major: tile t of frame i is row i * tiles + t of every array.
    """

    names: list[str]
    arrays: dict[str, torch.Tensor]  # name -> (N * tiles, ...) rows, as the model stores them
    flipped_arrays: dict[str, torch.Tensor] | None  # the mirrored frames', for flip TTA
    depth_input: torch.Tensor  # (N, H, tiles * W) GT at the model input size, 0 = invalid
    gt: list[np.ndarray]  # GT at its own resolution, metres, 0 = invalid
    tiles: int = 1

    def __len__(self) -> int:
        return len(self.names)

    def tile_index(self, frames: slice) -> slice:
        """Rows of all tiles of a contiguous range of frames."""
        return slice(frames.start * self.tiles, frames.stop * self.tiles)

    def random_tiles(
        self, frames: torch.Tensor, generator: torch.Generator, device: torch.device | str = "cpu"
    ) -> TrainBatch:
        """One random tile per frame, as the reference code trains on KITTI's four tiles (with
        one tile, simply the frames)."""
        tile = torch.randint(self.tiles, (len(frames),), generator=generator)
        return TrainBatch(
            self.features(frames * self.tiles + tile, device),
            pick_tiles(self.depth_input[frames], tile, self.tiles).to(device),
            [tuple(self.gt[int(i)].shape) for i in frames], tile, self.tiles,
        )

    def features(self, index: torch.Tensor | slice, device: torch.device | str = "cpu") -> Features:
        return as_float({k: v[index] for k, v in self.arrays.items()}, device)

    def flipped_features(self, index: torch.Tensor | slice, device: torch.device | str = "cpu") -> Features | None:
        if self.flipped_arrays is None:
            return None
        return as_float({k: v[index] for k, v in self.flipped_arrays.items()}, device)


def pick_tiles(depth: torch.Tensor, tile: torch.Tensor, tiles: int) -> torch.Tensor:
    """(B, H, tiles * W) -> (B, H, W): tile ``tile[b]`` of frame b."""
    return depth.unflatten(-1, (tiles, -1))[torch.arange(len(tile)), :, tile]


def _frame(prepare, array, name: str) -> torch.Tensor:
    """One frame through a Preprocessor step; a crop that does not fit it is a DataError naming it."""
    try:
        return prepare(array[None])
    except ValueError as exc:
        raise DataError(f"frame {name}: {exc} (see data.input_crop / data.kb_crop)") from None


def frame_batch(
    samples: list[RGBDSample], preprocessor: Preprocessor, captions: CaptionLookup | None, device: torch.device | str
) -> tuple[FrameBatch, torch.Tensor]:
    """Samples -> what a model's frozen parts take, and the input-size GT. A frame the crop does
    not fit is a DataError naming the frame."""
    # One frame at a time: frames of a real dataset need not share a size.
    images = torch.cat([_frame(preprocessor.images, s.image, s.name) for s in samples]).to(device)
    depth = torch.cat([_frame(preprocessor.depths, s.depth, s.name) for s in samples])
    lines = [captions(s) for s in samples] if captions is not None else None
    return FrameBatch(images, [s.name for s in samples], depth.to(device), lines), depth


class OnTheFlySplit:
    """Training frames decoded and encoded again at every step, as uncached training does: for
    comparison with the cache, or for users who add augmentation. Same interface for training as
    ``EncodedSplit``."""

    def __init__(
        self, model: torch.nn.Module, dataset: Dataset, preprocessor: Preprocessor, captions: CaptionLookup | None = None
    ) -> None:
        self.model, self.dataset, self.preprocessor, self.captions = model, dataset, preprocessor, captions
        self.tiles = preprocessor.tiles

    def __len__(self) -> int:
        return len(self.dataset)

    def random_tiles(
        self, frames: torch.Tensor, generator: torch.Generator, device: torch.device | str = "cpu"
    ) -> TrainBatch:
        tile = torch.randint(self.tiles, (len(frames),), generator=generator)
        samples = [self.dataset[int(i)] for i in frames]
        batch, depth = frame_batch(samples, self.preprocessor, self.captions, device)
        picked = torch.arange(len(frames)) * self.tiles + tile
        with torch.no_grad():  # not inference_mode: the head's autograd takes these as inputs
            features = self.model.encode_frames(batch)
        return TrainBatch(
            as_float({k: v[picked] for k, v in features.items()}), pick_tiles(depth, tile, self.tiles).to(device),
            [tuple(s.depth.shape) for s in samples], tile, self.tiles,
        )


@torch.inference_mode()
def encode_split(
    model: torch.nn.Module,
    dataset: Dataset,
    preprocessor: Preprocessor,
    batch_size: int = 8,
    flip: bool = False,
    desc: str = "encode",
    captions: CaptionLookup | None = None,
) -> EncodedSplit:
    """Run the model's frozen parts once per frame (and once per mirrored frame when ``flip``)."""
    device = model.device
    names: list[str] = []
    gts: list[np.ndarray] = []
    arrays: dict[str, list[torch.Tensor]] = {}
    flipped: dict[str, list[torch.Tensor]] = {}
    depths: list[torch.Tensor] = []
    for start in tqdm(range(0, len(dataset), batch_size), desc=desc, unit="batch", leave=False):
        samples = [dataset[i] for i in range(start, min(start + batch_size, len(dataset)))]
        batch, depth = frame_batch(samples, preprocessor, captions, device)
        for key, value in model.encode_frames(batch).items():
            arrays.setdefault(key, []).append(value.cpu())
        if flip:
            for key, value in model.encode_frames(batch.flipped()).items():
                flipped.setdefault(key, []).append(value.cpu())
        depths.append(depth)
        names += batch.names
        gts += [s.depth for s in samples]
    return EncodedSplit(
        names=names,
        arrays={k: torch.cat(v) for k, v in arrays.items()},
        flipped_arrays={k: torch.cat(v) for k, v in flipped.items()} if flip else None,
        depth_input=torch.cat(depths),
        gt=gts,
        tiles=preprocessor.tiles,
    )
