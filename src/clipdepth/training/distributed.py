"""Running under `torchrun`: one process per GPU (or per CPU worker with gloo); rank 0 writes.

Each rank holds one contiguous block of every split (``shard_bounds``, ``rank_share``): it trains on
batches of its block and scores its block of the validation frames; the per-frame sums are added up
across ranks (``Distributed.all_reduce_sum``). Outside torchrun everything here is a no-op, so the
same commands run on one device.
"""

from __future__ import annotations

import atexit
import copy
import os
from dataclasses import dataclass, replace
from typing import Any

import torch
import torch.distributed as dist
from torch.utils.data import Subset

from ..features import EncodedSplit, OnTheFlySplit
from ..features.cache import ShardedRows
from ..io.depth_store import PackedBlobs, ScoringGT, TrainingDepth


@dataclass(frozen=True)
class Distributed:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def enabled(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def barrier(self) -> None:
        if self.enabled:
            dist.barrier()

    def broadcast(self, obj: Any) -> Any:
        """Rank 0's ``obj`` on every rank (e.g. validation metrics computed once)."""
        if not self.enabled:
            return obj
        box = [obj]
        dist.broadcast_object_list(box, src=0)
        return box[0]

    def all_reduce_sum(self, tensor: torch.Tensor) -> torch.Tensor:
        """``tensor`` summed over the ranks, in place and returned (on the device, no host sync)."""
        if self.enabled:
            dist.all_reduce(tensor)
        return tensor


def from_environment() -> Distributed:
    """The process group torchrun describes in the environment, initialised once."""
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    if world_size == 1:
        return Distributed()
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    if not dist.is_initialized():
        if torch.cuda.is_available():
            torch.cuda.set_device(local_rank)
        dist.init_process_group("nccl" if torch.cuda.is_available() else "gloo")
        # A process group left to the interpreter's exit can abort it ("terminate called without an
        # active exception" from gloo's threads): every rank takes it down in order instead.
        atexit.register(_shut_down)
    return Distributed(dist.get_rank(), dist.get_world_size(), local_rank)


def shard_bounds(n: int, rank: int, world: int) -> tuple[int, int]:
    """[start, stop) of rank ``rank``'s contiguous block of ``n`` frames; the ``world`` blocks cover
    them all once and differ in size by at most one frame."""
    return n * rank // world, n * (rank + 1) // world


def rank_share(split: EncodedSplit | OnTheFlySplit, rank: int, world: int) -> EncodedSplit | OnTheFlySplit:
    """The frames of rank ``rank``'s block of ``split`` (``shard_bounds``), as a split of their own:
    rows of memory-mapped shards are not read here (placing the share reads them, ``Trainer``), so a
    rank never touches the other ranks' rows; arrays already in memory are copied, so that the whole
    split can be freed. ``split`` itself with one rank."""
    if world == 1:
        return split
    start, stop = shard_bounds(len(split), rank, world)
    if isinstance(split, OnTheFlySplit):
        share = copy.copy(split)
        share.dataset = Subset(split.dataset, range(start, stop))
        return share
    rows = slice(start * split.tiles, stop * split.tiles)
    depth, gt = split.depth, split.gt
    if depth is not None:
        units = None if depth.units is None else depth.units[start:stop].clone()
        packed = None if depth.packed is None else _blobs_window(depth.packed, start, stop)
        depth = TrainingDepth(depth.scale[start:stop].clone(), units=units, packed=packed)
    if isinstance(gt, ScoringGT):
        gt = ScoringGT(_blobs_window(gt.blobs, start, stop), gt.scales[start:stop], gt.shapes[start:stop])
    elif gt is not None:
        gt = gt[start:stop]
    flipped = split.flipped_arrays
    return replace(
        split,
        names=split.names[start:stop],
        arrays={k: _window(v, rows) for k, v in split.arrays.items()},
        flipped_arrays=None if flipped is None else {k: _window(v, rows) for k, v in flipped.items()},
        shapes=split.shapes[start:stop],
        depth=depth,
        gt=gt,
    )


def _window(array: torch.Tensor | ShardedRows, rows: slice) -> torch.Tensor | ShardedRows:
    """Rows ``rows`` of an array: of a sharded one, the shards' memory maps cut to them."""
    if not isinstance(array, ShardedRows):
        return array[rows].clone()
    parts = []
    for part, offset in zip(array.parts, array.offsets):
        low, high = max(rows.start - int(offset), 0), min(rows.stop - int(offset), len(part))
        if low < high:
            parts.append(part[low:high])
    return ShardedRows(parts) if parts else array.parts[0][:0].clone()


def _blobs_window(blobs: PackedBlobs, start: int, stop: int) -> PackedBlobs:
    """Frames [start, stop) of packed byte strings; their bytes stay where they are (memory-mapped)."""
    parts = []
    for (data, offsets), first in zip(blobs.parts, blobs.starts):
        low, high = max(start - int(first), 0), min(stop - int(first), len(offsets) - 1)
        if low < high:
            parts.append((data, offsets[low : high + 1]))
    return PackedBlobs(parts)


def _shut_down() -> None:
    if dist.is_initialized():
        dist.destroy_process_group()
