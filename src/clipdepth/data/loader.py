"""Frames decoded and preprocessed in worker processes, delivered in order, batch by batch.

Everything that reads a dataset (cache build, on-the-fly training, evaluation) goes through
``frame_loader``: a torch ``DataLoader`` whose workers decode each frame (JPEG/PNG/HDF5) and
run the ``Preprocessor`` (crop, resize, mask-aware depth resize), so that the main process only
moves finished tensors to the model. Order is the sampler's whatever the number of workers, and
no step draws random numbers in a worker, so results do not depend on ``workers``.

A frame that cannot be read (a corrupt file, a crop that does not fit) comes back as a
``FrameError`` holding the one-line ``DataError`` message naming it, never as DataLoader's
multi-line worker traceback: the caller re-raises it, or skips the frame where its command goes
on past bad files.
"""
from __future__ import annotations

import os
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, replace

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from ..errors import DataError
from ..io.depth_store import file_scale
from .sample import RGBDSample
from .transforms import Preprocessor

__all__ = ["FrameError", "PreparedFrame", "default_workers", "frame_loader", "prepared_batches", "raise_errors", "resolve_workers"]

MAX_AUTO_WORKERS = 8
# Starting a worker costs a fork and a first batch; a split this small is read faster in-process.
MIN_FRAMES_FOR_WORKERS = 64


@dataclass
class PreparedFrame:
    """One frame after decoding and preprocessing, as the model's frozen parts take it."""

    index: int  # position in the dataset
    sample: RGBDSample  # the frame itself (its full-resolution GT, name, intrinsics, captions)
    image: torch.Tensor  # (3, S, tiles * S) float in [0, 1]
    depth: torch.Tensor  # (S, tiles * S) metres at the model input size, 0 = invalid
    # units per metre the GT was decoded from (io.depth_store.file_scale), when asked for
    gt_scale: float | None = None


@dataclass
class FrameError:
    """A frame that could not be read or prepared; ``message`` names it and says what is wrong."""

    index: int
    message: str


def default_workers() -> int:
    """Worker processes when none are asked for: the CPUs this process may use, at most 8."""
    try:
        cpus = len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        cpus = os.cpu_count() or 1
    return min(cpus, MAX_AUTO_WORKERS)


def resolve_workers(workers: int | None, n_frames: int) -> int:
    """``workers`` as given, or for None ``default_workers()`` (none for fewer than
    ``MIN_FRAMES_FOR_WORKERS`` frames, where starting them costs more than they save)."""
    if workers is not None:
        if workers < 0:
            raise ValueError(f"workers must be >= 0, got {workers}")
        return workers
    return default_workers() if n_frames >= MIN_FRAMES_FOR_WORKERS else 0


class _Prepared(Dataset):
    """``dataset[i]`` decoded and preprocessed (in a worker when there are workers)."""

    def __init__(self, dataset: Dataset, preprocessor: Preprocessor | None, keep_image: bool, gt_scale: bool) -> None:
        self.dataset, self.preprocessor, self.keep_image, self.gt_scale = dataset, preprocessor, keep_image, gt_scale

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, index: int) -> PreparedFrame | FrameError:
        try:
            sample = self.dataset[index]
            if self.preprocessor is None:
                image = depth = torch.empty(0)
            else:
                image = _step(self.preprocessor.images, sample.image, sample.name)[0]
                depth = _step(self.preprocessor.depths, sample.depth, sample.name)[0]
        except DataError as exc:
            return FrameError(index, str(exc))
        scale = file_scale(sample.depth) if self.gt_scale else None
        if not self.keep_image:  # the decoded photo is not needed past preprocessing: do not ship it back
            sample = replace(sample, image=np.empty((0, 0, 3), np.uint8))
        return PreparedFrame(index, sample, image, depth, scale)


def _step(prepare, array: np.ndarray, name: str) -> torch.Tensor:
    """One frame through a Preprocessor step; a crop that does not fit is a DataError naming it."""
    try:
        return prepare(array[None])
    except ValueError as exc:
        raise DataError(f"frame {name}: {exc} (see data.input_crop / data.kb_crop)") from None


def _worker_init(worker_id: int) -> None:
    # One thread per worker: the workers are the parallelism, and oversubscribed cores run slower.
    torch.set_num_threads(1)
    # numpy's global generator is not reseeded per worker by torch; anything a dataset draws from it
    # then differs between workers yet repeats from run to run.
    np.random.seed(torch.initial_seed() % 2**32)


def _as_list(batch: list) -> list:
    return batch


def raise_errors(items: list[PreparedFrame | FrameError]) -> list[PreparedFrame]:
    """The prepared frames of a batch; the first frame that failed raises its DataError."""
    for item in items:
        if isinstance(item, FrameError):
            raise DataError(item.message)
    return items  # type: ignore[return-value]


def frame_loader(
    dataset: Dataset,
    preprocessor: Preprocessor | None,
    batches: Iterable[Sequence[int]],
    workers: int | None = None,
    keep_image: bool = False,
    pin_memory: bool = False,
    gt_scale: bool = False,
) -> DataLoader:
    """A DataLoader giving, per index batch of ``batches`` in order, a list of ``PreparedFrame``
    or ``FrameError``. ``preprocessor=None`` only decodes (``image``/``depth`` stay empty).
    ``keep_image`` keeps the decoded photo in ``sample.image``;
    ``gt_scale`` finds the scale the GT was stored at (``PreparedFrame.gt_scale``).

    ``workers`` (None: ``resolve_workers``) processes decode in parallel, each one thread;
    ``pin_memory`` pins the tensors for a fast copy to the GPU.
    """
    batches = [list(b) for b in batches]
    n = resolve_workers(workers, sum(len(b) for b in batches))
    return DataLoader(
        _Prepared(dataset, preprocessor, keep_image, gt_scale),
        batch_sampler=batches, num_workers=n, collate_fn=_as_list, pin_memory=pin_memory,
        worker_init_fn=_worker_init if n else None,
        # Its own generator for the workers' base seed: starting a loader must not draw from the
        # global RNG, which dropout and resume states depend on.
        generator=torch.Generator().manual_seed(0),
    )


def prepared_batches(
    dataset: Dataset,
    preprocessor: Preprocessor | None,
    batch_size: int,
    workers: int | None = None,
    keep_image: bool = False,
    skip_errors: bool = False,
    failed: list[str] | None = None,
    gt_scale: bool = False,
) -> Iterator[list[PreparedFrame]]:
    """Every frame of ``dataset`` in order, ``batch_size`` at a time, prepared by ``workers``.

    A frame that cannot be read raises its one-line DataError, or with ``skip_errors`` is left
    out and its message appended to ``failed``. Raises ValueError for a batch size below 1.
    """
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    index = range(len(dataset))
    loader = frame_loader(dataset, preprocessor, [index[i : i + batch_size] for i in index[::batch_size]],
                          workers, keep_image, gt_scale=gt_scale)
    for items in loader:
        frames = []
        for item in items:
            if isinstance(item, FrameError):
                if not skip_errors:
                    raise DataError(item.message)
                if failed is not None:
                    failed.append(item.message)
            else:
                frames.append(item)
        if frames:
            yield frames
