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

import contextlib
import os
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, replace

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from ..errors import DataError
from ..io.depth_store import file_scale
from .sample import RGBDSample
from .transforms import Preprocessor

__all__ = ["FrameError", "PreparedFrame", "default_workers", "frame_loader", "prepared_batches", "raise_errors", "read_ahead", "resolve_workers"]

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

    def __init__(self, dataset: Dataset, preprocessor: Preprocessor | None, keep_image: bool, keep_gt: bool,
                 gt_scale: bool) -> None:
        self.dataset, self.preprocessor, self.gt_scale = dataset, preprocessor, gt_scale
        self.keep_image, self.keep_gt = keep_image, keep_gt

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, index: int) -> PreparedFrame | FrameError:
        try:
            sample = self.dataset[index]
            if self.preprocessor is None:
                image = depth = torch.empty(0)
            else:
                with _one_thread():
                    image = _step(self.preprocessor.images, sample.image, sample.name)[0]
                    depth = _step(self.preprocessor.depths, sample.depth, sample.name)[0]
        except DataError as exc:
            return FrameError(index, str(exc))
        scale = file_scale(sample.depth) if self.gt_scale else None
        # What is not needed past preprocessing is not shipped back (a NYU frame's photo and GT are
        # 2.1 MB): the decoded photo unless asked for, the GT when only its size is.
        if not self.keep_image:
            sample = replace(sample, image=np.empty((0, 0, 3), np.uint8))
        if not self.keep_gt:
            sample = replace(sample, depth=np.broadcast_to(np.float32(0), sample.depth.shape))
        return PreparedFrame(index, sample, image, depth, scale)


@contextlib.contextmanager
def _one_thread() -> Iterator[None]:
    """torch on one thread for the duration: the CPU bilinear resize rounds differently (in the
    last bit) with another number of threads, and a worker runs one, so the main process does too:
    results do not depend on the number of workers."""
    threads = torch.get_num_threads()
    if threads == 1:
        yield
        return
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


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


@dataclass
class _Shipment:
    """A batch on its way from a worker: each kind of array in one tensor, so that it crosses to the
    main process as one shared-memory segment (one per frame and array costs a file and a mapping
    each: more than the decoding saves on a NYU frame)."""

    items: list  # PreparedFrame (arrays taken out) or FrameError, in order
    images: torch.Tensor  # (B, 3, S, tiles * S) of the prepared frames
    depths: torch.Tensor  # (B, S, tiles * S)
    photos: torch.Tensor  # the decoded photos, flattened one after another (uint8)
    gts: torch.Tensor  # the full-resolution GTs, flattened one after another (float32)


def _pack(batch: list) -> _Shipment:
    """In the worker (the DataLoader's collate_fn)."""
    frames = [f for f in batch if isinstance(f, PreparedFrame)]

    def flat(arrays: list[np.ndarray], dtype) -> torch.Tensor:
        out = _shared((sum(a.size for a in arrays),), dtype)
        np.concatenate([np.ascontiguousarray(a, dtype).reshape(-1) for a in arrays] or [np.empty(0, dtype)],
                       out=out.numpy())
        return out

    def stacked(tensors: list[torch.Tensor]) -> torch.Tensor:
        if not tensors or not tensors[0].numel():
            return torch.empty(0)
        return torch.stack(tensors, out=_shared((len(tensors), *tensors[0].shape), tensors[0].dtype))

    shipment = _Shipment(
        [], stacked([f.image for f in frames]), stacked([f.depth for f in frames]),
        flat([f.sample.image for f in frames], np.uint8),
        flat([f.sample.depth for f in frames if f.sample.depth.strides != (0, 0)], np.float32),
    )
    for f in batch:  # the arrays travel in the tensors above; their shapes in the items
        shipment.items.append(replace(f, image=None, depth=None, sample=replace(
            f.sample, image=f.sample.image.shape, depth=(f.sample.depth.shape, f.sample.depth.strides == (0, 0))))
            if isinstance(f, PreparedFrame) else f)
    return shipment


def _shared(shape: tuple[int, ...], dtype) -> torch.Tensor:
    """An empty tensor in shared memory: written there once, it crosses to the main process
    without the copy pickling a private tensor costs (about as much as the packing itself)."""
    dtype = dtype if isinstance(dtype, torch.dtype) else torch.from_numpy(np.empty(0, dtype)).dtype
    numel = int(np.prod(shape))
    storage = torch.UntypedStorage._new_shared(numel * dtype.itemsize)  # as default_collate does
    return torch.empty(0, dtype=dtype).set_(storage, 0, (numel,)).view(shape)


def _unpack(shipment: _Shipment) -> list:
    """In the main process: the batch's frames again, their arrays views of the shipped tensors."""
    out, frame, photo_at, gt_at = [], 0, 0, 0
    for item in shipment.items:
        if isinstance(item, FrameError):
            out.append(item)
            continue
        photo_shape, (gt_shape, gt_dropped) = item.sample.image, item.sample.depth
        photo_size, gt_size = int(np.prod(photo_shape)), int(np.prod(gt_shape))
        photo = shipment.photos[photo_at:photo_at + photo_size].numpy().reshape(photo_shape)
        if gt_dropped:
            gt = np.broadcast_to(np.float32(0), gt_shape)
        else:
            gt = shipment.gts[gt_at:gt_at + gt_size].numpy().reshape(gt_shape)
            gt_at += gt_size
        photo_at += photo_size
        image = shipment.images[frame] if shipment.images.numel() else torch.empty(0)
        depth = shipment.depths[frame] if shipment.depths.numel() else torch.empty(0)
        out.append(replace(item, image=image, depth=depth, sample=replace(item.sample, image=photo, depth=gt)))
        frame += 1
    return out


class FrameLoader:
    """Batches of ``PreparedFrame`` / ``FrameError`` from a DataLoader, their arrays numpy again."""

    def __init__(self, loader: DataLoader) -> None:
        self.loader = loader

    def __len__(self) -> int:
        return len(self.loader)

    def __iter__(self) -> Iterator[list[PreparedFrame | FrameError]]:
        return (_unpack(batch) if isinstance(batch, _Shipment) else batch for batch in self.loader)


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
    keep_gt: bool = True,
) -> FrameLoader:
    """A DataLoader giving, per index batch of ``batches`` in order, a list of ``PreparedFrame``
    or ``FrameError``. ``preprocessor=None`` only decodes (``image``/``depth`` stay empty).
    ``keep_image`` keeps the decoded photo in ``sample.image``;
    ``gt_scale`` finds the scale the GT was stored at (``PreparedFrame.gt_scale``); without
    ``keep_gt`` ``sample.depth`` is a zero-strided array of the GT's shape (training reads only that).

    ``workers`` (None: ``resolve_workers``) processes decode in parallel, each one thread;
    ``pin_memory`` pins the tensors for a fast copy to the GPU.
    """
    batches = [list(b) for b in batches]
    n = resolve_workers(workers, sum(len(b) for b in batches))
    prepared = _Prepared(dataset, preprocessor, keep_image, keep_gt, gt_scale)
    return FrameLoader(_data_loader(prepared, batches, n, _pack if n else list, pin_memory))


def _data_loader(dataset: Dataset, batches: list[list[int]], workers: int, collate, pin_memory: bool = False) -> DataLoader:
    """A DataLoader over index ``batches`` with ``workers`` one-thread processes."""
    return DataLoader(
        dataset, batch_sampler=batches, num_workers=workers, collate_fn=collate, pin_memory=pin_memory,
        worker_init_fn=_worker_init if workers else None,
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
    keep_gt: bool = True,
) -> Iterator[list[PreparedFrame]]:
    """Every frame of ``dataset`` in order, ``batch_size`` at a time, as lists of ``PreparedFrame``
    (the sample; its image (3, S, tiles * S) in [0, 1] and depth (S, tiles * S) metres at the
    model input, by ``preprocessor``; None: decoded only).

    ``workers``: processes that decode and prepare ahead; None = ``resolve_workers`` (the CPUs,
    at most 8, none for fewer than 64 frames); 0 = here. Results do not depend on it.
    ``keep_image`` keeps the decoded photo in ``sample.image`` (else an empty array);
    ``keep_gt=False`` replaces ``sample.depth`` by a zero-strided array of the GT's shape (when
    only the size is needed, it saves shipping the GT); ``gt_scale`` fills
    ``PreparedFrame.gt_scale`` (``io.depth_store.file_scale`` of the GT).
    A frame that cannot be read raises its one-line DataError, or with ``skip_errors`` is left
    out and its message appended to ``failed``. Raises ValueError for a batch size below 1.
    """
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    index = range(len(dataset))
    loader = frame_loader(dataset, preprocessor, [index[i : i + batch_size] for i in index[::batch_size]],
                          workers, keep_image, gt_scale=gt_scale, keep_gt=keep_gt)
    for items in loader:
        if not skip_errors:
            yield raise_errors(items)
            continue
        if failed is not None:
            failed += [item.message for item in items if isinstance(item, FrameError)]
        frames = [item for item in items if isinstance(item, PreparedFrame)]
        if frames:
            yield frames


class _Reads(Dataset):
    """``loads[i]()``: an image, or the one-line message of the DataError it raised (DataLoader
    would wrap an exception in its worker's traceback)."""

    def __init__(self, loads: Sequence[Callable[[], np.ndarray]]) -> None:
        self.loads = loads

    def __len__(self) -> int:
        return len(self.loads)

    def __getitem__(self, index: int) -> np.ndarray | str:
        try:
            return self.loads[index]()
        except DataError as exc:
            return str(exc)


def read_ahead(loads: Sequence[Callable[[], np.ndarray]], workers: int | None = None) -> Iterator[np.ndarray | str]:
    """``loads[i]()`` for each i in order, called ahead in ``workers`` processes (None:
    ``resolve_workers``; 0: here, when its turn comes): each an (H, W, 3) uint8 image, or the
    message of the DataError it raised (``predict``, ``caption``). Fails at once for ``workers``
    below 0 (ValueError). ``loads`` must be picklable where processes are spawned rather than forked."""
    n = min(resolve_workers(workers, len(loads)), len(loads))
    loader = _data_loader(_Reads(loads), [[i] for i in range(len(loads))], n, list)
    # Started now, so that the workers are forked before any thread of the caller's exists.
    batches = iter(loader)
    return (item for batch in batches for item in batch)
