"""Training on several datasets at once (TR2M's mixture): the datasets, and which batch is whose.

Every batch holds frames of ONE dataset, prepared at that dataset's own input geometry (input
size, crop, KB crop), as TR2M's released loaders give whole single-dataset batches. Which dataset
a step takes is drawn per epoch from the trainer's epoch generator (``epoch_schedule``): by weight
(``train.mixture_order: weighted``) or in turn (``round_robin``, the released
RepetitiveRoundRobinDataLoader). The draw happens at the start of an epoch and the generator's
state is saved with every epoch, so a resumed run draws the same sequence. Validation scores each
dataset with its own protocol; the trainer's "improved" compares their mean.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator, Sequence
from typing import Any
from dataclasses import dataclass

import torch

from ..config import Config, DataConfig, merged_section
from ..data import DATASET_PROTOCOLS
from ..data.transforms import Preprocessor
from ..errors import ConfigError
from ..evaluation.protocol import Protocol
from ..features import EncodedSplit, OnTheFlySplit
from ..features.memory import TrainBatch
from .distributed import shard_bounds

__all__ = ["SourceData", "SourceSettings", "epoch_schedule", "mixed_batches", "steps_per_epoch", "training_sources"]


@dataclass(frozen=True)
class SourceSettings:
    """One training dataset as a run reads it: its data section, validation protocol, input size
    (None: the model's) and weight (None: its number of training frames)."""

    name: str
    data: DataConfig
    protocol: str
    input_size: tuple[int, int] | None = None
    weight: float | None = None


@dataclass
class SourceData:
    """One training dataset's encoded splits, and how its frames are prepared and scored."""

    name: str
    train: EncodedSplit | OnTheFlySplit
    val: EncodedSplit
    preprocessor: Preprocessor
    protocol: Protocol
    weight: float | None = None
    # The first validation frame (an ``RGBDSample``: the RGB of the trackers' validation panel),
    # read when a panel is drawn; None: no panel.
    panel_frame: Callable[[], Any] | None = None


def training_sources(cfg: Config) -> list[SourceSettings]:
    """The datasets a run trains on: each entry of ``cfg.mixture`` (its ``data`` fields over the
    recipe's ``data`` section), or the ``data`` section alone. Raises ConfigError naming the entry
    for a bad field, a repeated name, a weight that is not positive or an input size that is not
    [height, width]."""
    if not cfg.mixture:
        return [SourceSettings(cfg.data.dataset, cfg.data, cfg.eval.protocol)]
    sources: list[SourceSettings] = []
    for i, entry in enumerate(cfg.mixture):
        where = f"mixture[{i}]"
        try:
            data = merged_section(cfg.data, entry.data)
        except ConfigError as exc:
            raise ConfigError(f"{where}.data: {exc}") from None
        if data.dataset not in DATASET_PROTOCOLS:
            raise ConfigError(f"{where}.data.dataset: unknown dataset {data.dataset!r}; available: {sorted(DATASET_PROTOCOLS)}")
        name = entry.name or data.dataset
        if any(s.name == name for s in sources):
            raise ConfigError(f"{where}: a second dataset named {name!r}; give each its own `name`")
        if entry.weight is not None and not 0 < entry.weight < math.inf:
            raise ConfigError(f"{where}.weight={entry.weight!r}: must be a positive number (or unset: its size)")
        size = entry.input_size
        if size is not None and (len(size) != 2 or min(size) < 1):
            raise ConfigError(f"{where}.input_size={list(size)!r}: must be [height, width]")
        sources.append(
            SourceSettings(
                name, data, entry.protocol or DATASET_PROTOCOLS[data.dataset], tuple(size) if size is not None else None, entry.weight
            )
        )
    return sources


def steps_per_epoch(n_frames: int, batch_size: int, drop_last: bool) -> int:
    """Optimisation steps over ``n_frames`` in batches, the last partial one dropped if asked."""
    return n_frames // batch_size if drop_last else math.ceil(n_frames / batch_size)


def epoch_schedule(
    sizes: Sequence[int],
    weights: Sequence[float],
    batch_size: int,
    drop_last: bool,
    order: str,
    generator: torch.Generator,
    rank: int = 0,
    world: int = 1,
) -> list[tuple[int, torch.Tensor]]:
    """This rank's steps of one epoch: (dataset index, frame indices) per step, the indices into this
    rank's block of that dataset (``distributed.rank_share`` of ``sizes[k]`` frames; with one rank,
    the dataset itself).

    Every rank holds ``ceil(n / world)`` frames of a dataset of ``n``, a block one frame short
    wrapping round to its first frame (as DistributedSampler pads), and draws the same random
    numbers: one dataset: a permutation of the block, cut into batches. Several: each step's dataset
    is drawn with probability proportional to ``weights`` (``order`` "weighted"; as many steps as
    the datasets' batches together) or taken in turn (``round_robin``; each dataset gives as many
    batches as the largest has); each dataset's frames come from consecutive permutations of its
    block, so every batch is full and no frame repeats before all of the block have been seen. The
    epoch generator is seeded alike on every rank, so all take the same dataset at every step.
    """
    per_rank = [math.ceil(n / world) for n in sizes]
    held = [stop - start for start, stop in (shard_bounds(n, rank, world) for n in sizes)]
    if len(sizes) == 1:
        frames = torch.randperm(per_rank[0], generator=generator) % held[0]
        steps = steps_per_epoch(per_rank[0], batch_size, drop_last)
        return [(0, frames[s * batch_size : (s + 1) * batch_size]) for s in range(steps)]
    batches = [steps_per_epoch(n, batch_size, drop_last) for n in per_rank]
    if order == "round_robin":
        sequence = [k for _ in range(max(batches)) for k in range(len(sizes))]
    else:
        p = torch.tensor(weights, dtype=torch.float64)
        sequence = torch.multinomial(p / p.sum(), sum(batches), replacement=True, generator=generator).tolist()
    streams = []
    for k, n in enumerate(per_rank):
        needed = sequence.count(k) * batch_size
        permutations = [torch.randperm(n, generator=generator) % held[k] for _ in range(-(-needed // n))]
        streams.append(torch.cat(permutations or [torch.empty(0, dtype=torch.long)]))
    taken = [0] * len(sizes)
    schedule = []
    for k in sequence:
        schedule.append((k, streams[k][taken[k] : taken[k] + batch_size]))
        taken[k] += batch_size
    return schedule


def mixed_batches(
    splits: Sequence[EncodedSplit | OnTheFlySplit],
    schedule: list[tuple[int, torch.Tensor]],
    generators: Sequence[torch.Generator],
    device: torch.device | str,
) -> Iterator[tuple[int, TrainBatch]]:
    """The schedule's batches in order, as (dataset index, batch). Each dataset reads its own batches
    ahead as its split does alone (shards a batch ahead, workers decoding), and draws its random
    tiles from its own generator, so the draws do not depend on how the reads interleave."""
    reads = [split.batches([f for s, f in schedule if s == k], generators[k], device) for k, split in enumerate(splits)]
    for k, _ in schedule:
        yield k, next(reads[k])
