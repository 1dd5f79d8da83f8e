"""Frozen-part outputs computed once per frame and kept in memory.

The frozen parts of a model (encoders, relative-depth source) never change and training uses no
augmentation, so their outputs for a frame never change either: computing them once turns
training into work on the head alone. Each model names its arrays (PureCLIP-Depth: tokens and
CLS; TR2M: DINOv2 tokens, relative depth, caption embeddings, the input image) and returns them
in the dtype they are kept in (half precision for features); the head gets them as float32.

A split is held in memory only where it fits: ``frame_bytes`` sizes it from one encoded frame,
``plan_memory`` shares a budget among a run's splits (``training.run`` streams the others to a
cache folder), and ``encode_split`` fills arrays allocated once at their final size.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, replace
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset, Subset
from tqdm.auto import tqdm

from ..data.augment import Augmentation
from ..data.captions import CaptionLookup
from ..data.loader import PreparedFrame, frame_loader, prepared_batches, raise_errors
from ..data.transforms import Preprocessor
from ..models.base import Features, FrameBatch, as_float
from ..io.depth_store import TrainingDepth
from ..io.stored import QuantizedRows, concat, held_bytes

PURPOSES = ("train", "score")  # what a split is encoded for: training keeps input-size depth, scoring the GT


@dataclass
class TrainBatch:
    """One training step's input: one tile of each of B frames."""

    features: Features  # the model's arrays of the tiles, float32 for the head
    depth: torch.Tensor  # (B, H, W) GT of the tiles at the input size, metres, 0 = invalid
    frame_shapes: list[tuple[int, int]]  # (height, width) of each full frame (its GT), known on the host
    tile: torch.Tensor  # (B,) which tile of its frame each row is (0 .. tiles - 1), on the batch's device
    tiles: int  # tiles per frame


@dataclass
class EncodedSplit:
    """One split's frames, encoded: what training or scoring needs, nothing else.

    A frame resized to H x (tiles * W) may be encoded as ``tiles`` tiles (PureCLIP-Depth on
    KITTI), stored frame-major: tile t of frame i is row i * tiles + t of every array. A split
    encoded for training keeps the input-size depth (``depth``); one encoded for scoring keeps
    the full-resolution GT (``gt``); ``io.depth_store`` says how compactly.
    """

    names: list[str]
    arrays: dict[str, torch.Tensor]  # name -> (N * tiles, ...) rows, as the model stores them
    flipped_arrays: dict[str, torch.Tensor] | None  # the mirrored frames', for flip TTA
    shapes: np.ndarray  # (N, 2) height, width of each full frame (its GT)
    depth: TrainingDepth | None = None  # (N, H, tiles * W) GT at the model input size, 0 = invalid
    gt: Sequence[np.ndarray] | None = None  # GT at its own resolution, metres, 0 = invalid
    tiles: int = 1
    # Training: the probability of taking a frame's mirrored copy (flip augmentation; needs
    # ``flipped_arrays``).
    flip_prob: float = 0.0

    def __len__(self) -> int:
        return len(self.names)

    def tile_index(self, frames: slice) -> slice:
        """Rows of all tiles of a contiguous range of frames."""
        return slice(frames.start * self.tiles, frames.stop * self.tiles)

    def random_tiles(self, frames: torch.Tensor, generator: torch.Generator, device: torch.device | str = "cpu") -> TrainBatch:
        """One random tile per frame, as the released code trains on KITTI's four tiles (with
        one tile, simply the frames), and the mirrored frame with probability ``flip_prob``.
        ``frames`` (B,) and ``generator`` live on the host; the draws reach the data's device in one
        non-blocking copy, and nothing is read back from it. Raises ValueError for a split encoded
        for scoring, or flips without ``flipped_arrays``."""
        if self.depth is None:
            raise ValueError("this split was encoded for scoring: it keeps no input-size depth to train on")
        if self.flip_prob > 0 and self.flipped_arrays is None:
            raise ValueError("flip augmentation needs the mirrored frames: encode the training split with flip")
        tile = torch.randint(self.tiles, (len(frames),), generator=generator)
        draws = [frames, tile]
        if self.flip_prob > 0:
            draws.append((torch.rand(len(frames), generator=generator) < self.flip_prob).long())
        frames_on, tile_on, *flips = to_device(torch.stack(draws), self.resident_on or "cpu")
        rows, depth = frames_on * self.tiles + tile_on, self.depth.rows(frames_on)
        features = self.features(rows, device)
        if flips:
            # Every row of both copies, then a choice per row: no branch on the draws.
            on = flips[0].bool().to(device)
            mirrored = self.flipped_features(rows, device)
            features = {k: torch.where(on.view(-1, *[1] * (v.dim() - 1)), mirrored[k], v) for k, v in features.items()}
            # tile t of the mirrored frame is the mirror image of the frame's tile tiles-1-t
            depth = torch.where(on.to(depth.device).view(-1, 1, 1), depth.flip(-1), depth)
        return TrainBatch(
            features,
            pick_tiles(depth, tile_on, self.tiles).to(device, non_blocking=True),
            [tuple(map(int, shape)) for shape in self.shapes[frames.numpy()]],
            tile_on.to(device, non_blocking=True),
            self.tiles,
        )

    def batches(self, frames: list[torch.Tensor], generator: torch.Generator, device: torch.device | str = "cpu") -> Iterator[TrainBatch]:
        """``random_tiles`` of each index batch, in order. Rows read from memory-mapped shards are
        gathered one batch ahead on a thread while the head trains on the current one."""
        if self.resident_on is not None:
            yield from (self.random_tiles(index, generator, device) for index in frames)
            return
        yield from prefetched(lambda index: self.random_tiles(index, generator, device), frames)

    @property
    def resident_on(self) -> torch.device | None:
        """The device every training array is loaded on, or None where rows are read from disk."""
        arrays = list(self.arrays.values())
        if not all(isinstance(v, torch.Tensor) for v in arrays) or (self.depth is not None and self.depth.units is None):
            return None
        devices = {v.device for v in arrays}
        return devices.pop() if len(devices) == 1 else None

    def nbytes(self) -> int:
        """Bytes of what training reads (arrays and decoded depth) once loaded into memory."""
        rows = sum(int(np.prod(v.shape)) * v.dtype.itemsize for v in self.arrays.values())
        return rows + (self.depth.loaded_nbytes() if self.depth is not None else 0)

    def resident(self, device: torch.device | str) -> "EncodedSplit":
        """This split with every training array and the depth read once into memory on ``device``
        (the GPU where they fit), so that batches are indexed there without touching the disk."""
        loaded = {k: _loaded(v, device) for k, v in self.arrays.items()}
        return replace(
            self,
            arrays=loaded,
            flipped_arrays=None if self.flipped_arrays is None else {k: _loaded(v, device) for k, v in self.flipped_arrays.items()},
            depth=self.depth.unpacked(device) if self.depth is not None else None,
        )

    def features(self, index: torch.Tensor | slice, device: torch.device | str = "cpu") -> Features:
        return as_float({k: _rows(v, index) for k, v in self.arrays.items()}, device)

    def flipped_features(self, index: torch.Tensor | slice, device: torch.device | str = "cpu") -> Features | None:
        if self.flipped_arrays is None:
            return None
        return as_float({k: _rows(v, index) for k, v in self.flipped_arrays.items()}, device)


def to_device(index: torch.Tensor, device: torch.device | str) -> torch.Tensor:
    """A small host tensor (indices, draws) on ``device``: to a GPU by one non-blocking copy from
    pinned memory, which the host does not wait for."""
    device = torch.device(device)
    if device.type != "cuda":
        return index.to(device)
    return index.pin_memory().to(device, non_blocking=True)


def _rows(array, index: torch.Tensor | slice):
    if isinstance(array, torch.Tensor) and isinstance(index, torch.Tensor):
        index = index.to(array.device)
    return array[index]


def _loaded(array, device: torch.device | str) -> torch.Tensor:
    return array.to(device)  # a tensor, or rows read from shards or decoded (io.stored)


def prefetched(make: Callable[[Any], Any], items: list) -> Iterator[Any]:
    """``make(item)`` for each item in order, the next one made on a thread while the caller works
    on the current one (reading rows and decoding PNGs release the GIL)."""
    with ThreadPoolExecutor(max_workers=1) as pool:
        pending = pool.submit(make, items[0]) if items else None
        for item in items[1:]:
            current = pending.result()
            pending = pool.submit(make, item)
            yield current
        if pending is not None:
            yield pending.result()


def pick_tiles(depth: torch.Tensor, tile: torch.Tensor, tiles: int) -> torch.Tensor:
    """(B, H, tiles * W) -> (B, H, W): tile ``tile[b]`` of frame b (``tile`` on ``depth``'s device)."""
    return depth.unflatten(-1, (tiles, -1))[torch.arange(len(tile), device=tile.device), :, tile]


def frame_batch(frames: list[PreparedFrame], captions: CaptionLookup | None, device: torch.device | str) -> FrameBatch:
    """Prepared frames -> what a model's frozen parts take, on ``device``."""
    images = torch.stack([f.image for f in frames]).to(device, non_blocking=True)
    depth = torch.stack([f.depth for f in frames]).to(device, non_blocking=True)
    lines = [captions(f.sample) for f in frames] if captions is not None else None
    return FrameBatch(images, [f.sample.name for f in frames], depth, lines)


class OnTheFlySplit:
    """Training frames decoded (in ``workers`` processes) and encoded again at every step, as
    uncached training does: for comparison with the cache, or for users who add augmentation.
    Same interface for training as ``EncodedSplit``."""

    def __init__(
        self,
        model: torch.nn.Module,
        dataset: Dataset,
        preprocessor: Preprocessor,
        captions: CaptionLookup | None = None,
        workers: int | None = None,
        augmentation: Augmentation | None = None,
    ) -> None:
        self.model, self.dataset, self.preprocessor, self.captions = model, dataset, preprocessor, captions
        self.tiles, self.workers, self.augmentation = preprocessor.tiles, workers, augmentation

    def __len__(self) -> int:
        return len(self.dataset)

    def batches(self, frames: list[torch.Tensor], generator: torch.Generator, device: torch.device | str = "cpu") -> Iterator[TrainBatch]:
        """Each index batch decoded and prepared by the workers ahead of the step, then encoded;
        one random tile per frame drawn here, in order, so the draws do not depend on workers."""
        loader = frame_loader(
            self.dataset,
            self.preprocessor,
            [f.tolist() for f in frames],
            self.workers,
            pin_memory=torch.device(device).type == "cuda",
            keep_gt=False,
        )
        for items in loader:
            yield self._encoded(raise_errors(items), generator, device)

    def random_tiles(self, frames: torch.Tensor, generator: torch.Generator, device: torch.device | str = "cpu") -> TrainBatch:
        return next(self.batches([frames], generator, device))

    def _encoded(self, prepared: list[PreparedFrame], generator: torch.Generator, device) -> TrainBatch:
        tile = torch.randint(self.tiles, (len(prepared),), generator=generator)
        batch = frame_batch(prepared, self.captions, device)
        if self.augmentation is not None:
            flips = self.augmentation.flips(len(prepared), generator).to(device)
            batch = replace(
                batch,
                images=self.augmentation.colours(torch.where(flips.view(-1, 1, 1, 1), batch.images.flip(-1), batch.images), generator),
                depth=torch.where(flips.view(-1, 1, 1), batch.depth.flip(-1), batch.depth),
            )
        tile = to_device(tile, batch.depth.device)
        picked = torch.arange(len(prepared), device=tile.device) * self.tiles + tile
        with torch.no_grad():  # not inference_mode: the head's autograd takes these as inputs
            features = self.model.encode_frames(batch)
        return TrainBatch(
            as_float({k: v[picked.to(v.device)] for k, v in features.items()}),
            pick_tiles(batch.depth, tile, self.tiles).to(device),
            [tuple(f.sample.depth.shape) for f in prepared],
            tile.to(device),
            self.tiles,
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
    purpose: str = "score",
    workers: int | None = None,
) -> EncodedSplit:
    """Run the model's frozen parts once per frame (and once per mirrored frame when ``flip``),
    the frames decoded and prepared by ``workers`` processes (``data.loader``).

    ``purpose`` "train" keeps each frame's input-size depth (16-bit, ``quantize`` at the GT's own
    scale), "score" its full-resolution GT. Each array is allocated once at its final (N * tiles,
    ...) size when the first batch shows its row shape, and every batch is copied into its rows
    (the input-size depth likewise, ``TrainingDepth.empty``): the peak is the split plus one batch,
    never a list of batches and their concatenation at once. Raises DataError naming a frame that
    cannot be read.
    """
    if purpose not in PURPOSES:
        raise ValueError(f"purpose must be one of {PURPOSES}, got {purpose!r}")
    device, n = model.device, len(dataset)
    names: list[str] = []
    shapes = np.zeros((n, 2), dtype=np.int64)
    gts: list[np.ndarray] = []
    arrays: dict[str, torch.Tensor] = {}
    flipped: dict[str, torch.Tensor] = {}
    depth = TrainingDepth.empty(n, preprocessor.input_shape) if purpose == "train" else None
    frame_batches = prepared_batches(dataset, preprocessor, batch_size, workers, gt_scale=purpose == "train", keep_gt=purpose == "score")
    for frames in tqdm(frame_batches, total=-(-n // batch_size), desc=desc, unit="batch", leave=False):
        batch, start = frame_batch(frames, captions, device), len(names)
        _fill(arrays, model.stored(model.encode_frames(batch), purpose), start, len(frames), n)
        if flip:
            _fill(flipped, model.stored(model.encode_frames(batch.flipped()), purpose), start, len(frames), n)
        for i, frame in enumerate(frames, start):
            names.append(frame.sample.name)
            shapes[i] = frame.sample.depth.shape
            if depth is not None:
                depth.put(i, frame.depth, frame.gt_scale)
            else:
                gts.append(frame.sample.depth)
    return EncodedSplit(
        names=names,
        arrays=_joined(arrays),
        flipped_arrays=_joined(flipped) if flip else None,
        shapes=shapes,
        depth=depth,
        gt=gts if purpose == "score" else None,
        tiles=preprocessor.tiles,
    )


def _fill(arrays: dict[str, Any], encoded: dict[str, Any], start: int, frames: int, total: int) -> None:
    """Copy one batch's stored arrays (``frames`` frames, from frame ``start``) into the split's host
    arrays of ``total`` frames, allocated on the first batch (a frame is ``rows`` rows: its tiles).
    Quantised tokens fill preallocated values and scales alike; compressed rows (``EncodedRows``,
    bytes of unknown length) are listed per batch and joined without copying (``_joined``)."""
    for key, value in encoded.items():
        if isinstance(value, QuantizedRows):
            parts = [("values", value.values), ("scale", value.scale)]
            into = arrays.setdefault(key, {})
        elif isinstance(value, torch.Tensor):
            parts, into = [(key, value)], arrays
        else:
            arrays.setdefault(key, []).append(value)
            continue
        for name, part in parts:
            rows = len(part) // frames
            if name not in into:
                into[name] = torch.empty((total * rows, *part.shape[1:]), dtype=part.dtype)
            into[name][start * rows : (start + frames) * rows].copy_(part)


def _joined(arrays: dict[str, Any]) -> dict[str, Any]:
    """``_fill``'s arrays as the split keeps them."""
    return {
        key: QuantizedRows(value["values"], value["scale"])
        if isinstance(value, dict)
        else concat(value)
        if isinstance(value, list)
        else value
        for key, value in arrays.items()
    }


def held_nbytes(split: EncodedSplit) -> int:
    """Bytes a split encoded into memory holds: its arrays (and mirrored copies) as stored
    (``io.stored``: compressed or quantised where the model says so), input-size depth and
    scales, full-resolution GT."""
    groups = [split.arrays, split.flipped_arrays or {}]
    rows = sum(held_bytes(v) for group in groups for v in group.values())
    depth = split.depth.loaded_nbytes() if split.depth is not None else 0
    return rows + depth + sum(int(g.nbytes) for g in split.gt or ())


@dataclass(frozen=True)
class SplitSize:
    """What encoding one split into memory would hold."""

    name: str  # e.g. "nyu train"
    frames: int
    frame_bytes: int  # one frame's arrays (and mirrored copies) and depth, ``held_nbytes``

    @property
    def nbytes(self) -> int:
        return self.frames * self.frame_bytes


def frame_bytes(
    model: torch.nn.Module,
    dataset: Dataset,
    preprocessor: Preprocessor,
    flip: bool = False,
    captions: CaptionLookup | None = None,
    purpose: str = "score",
) -> int:
    """Bytes one frame of ``dataset`` takes once encoded into memory, found by encoding its first
    frame (the arrays' shapes and dtypes are the model's; a split's frames share them, the GT of
    a scored split its first frame's size). 0 for an empty dataset."""
    if len(dataset) == 0:
        return 0
    one = encode_split(model, Subset(dataset, [0]), preprocessor, 1, flip, desc="size", captions=captions, purpose=purpose, workers=0)
    return held_nbytes(one)


def plan_memory(splits: Sequence[SplitSize], budget: float) -> list[bool]:
    """Which splits are encoded into memory (True) and which are streamed to a cache folder
    (False): in order, each split that still fits in ``budget`` bytes beside those kept before it.
    A run holds all its splits at once (a mixture's datasets, training and validation), so the
    budget is shared; ``training.run`` uses ``train.memory_share`` of the RAM available."""
    held, plan = 0, []
    for split in splits:
        fits = held + split.nbytes <= budget
        held += split.nbytes if fits else 0
        plan.append(fits)
    return plan
