"""Frames decoded and preprocessed in worker processes, delivered in order, batch by batch.

Everything that reads a dataset (cache build, on-the-fly training, evaluation) goes through
``frame_loader``: a torch ``DataLoader`` whose workers decode each frame (JPEG/PNG/HDF5) and
run the ``Preprocessor`` (crop, resize, mask-aware depth resize), so that the main process only
moves finished tensors to the model. Order is the sampler's whatever the number of workers, and
no step draws random numbers in a worker, so results do not depend on ``workers``.

A frame that cannot be read (a corrupt file, a crop that does not fit) comes back as a
``FrameError`` holding the one-line ``DataError`` message naming it, never as DataLoader's
multi-line worker traceback: the caller re-raises it, or skips the frame where its command goes
on past bad files. A worker process that dies (killed for memory, a crash) and shared memory
that runs out (``/dev/shm`` full), which DataLoader reports as a RuntimeError wherever it notices,
are one ``DataError`` line too, saying what to do (``loader_failure``; the CLI's last resort
uses it for the same errors raised outside a loop over the loader).
"""

from __future__ import annotations

import contextlib
import errno
import shutil
import weakref
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, replace

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from ..device import usable_cpus
from ..errors import DataError
from ..io.depth_store import file_scale
from .sample import RGBDSample
from .transforms import Preprocessor

__all__ = [
    "FrameError",
    "PreparedFrame",
    "default_workers",
    "frame_loader",
    "loader_failure",
    "prepared_batches",
    "raise_errors",
    "read_ahead",
    "resolve_workers",
]

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
    return min(usable_cpus(), MAX_AUTO_WORKERS)


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

    def __init__(self, dataset: Dataset, preprocessor: Preprocessor | None, keep_image: bool, keep_gt: bool, gt_scale: bool) -> None:
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


# Shared-memory buffers each worker reuses for its batches: one being filled, the DataLoader's two
# ahead, one the caller holds. A fresh segment per batch costs a file, a mapping and a page fault per
# 4 KiB on both sides (12 ms for a NYU batch of 8, as much as decoding a frame and a half).
SLOTS_PER_WORKER = 4
SLOT_HEADROOM = 1.25  # a slot outgrown by a batch is replaced by one this much larger


@dataclass
class _Shipment:
    """A batch on its way from a worker: all its arrays in one shared-memory buffer, so that it
    crosses to the main process as one segment, or as none when it reuses one of the worker's slots
    (``slot``): then ``buffer`` is sent with the slot's first batch only."""

    items: list  # PreparedFrame (arrays taken out) or FrameError, in order
    parts: dict[str, tuple[int, torch.dtype, tuple[int, ...]]]  # images, depths, photos, gts: offset, dtype, shape
    size: int  # bytes of the buffer the parts take
    buffer: torch.Tensor | None  # uint8 shared memory
    slot: tuple[int, int, int] | None = None  # (worker, slot, generation) of a reused buffer


class _Packer:
    """The DataLoader's collate_fn (in a worker): a batch into a ``_Shipment``, in a free slot of
    the worker's when there is one. ``busy`` (workers, SLOTS_PER_WORKER), in shared memory, says
    which slots hold a batch the main process still uses; it clears them (``_Unpacker``)."""

    def __init__(self, workers: int) -> None:
        self.busy = torch.zeros(workers, SLOTS_PER_WORKER, dtype=torch.int32).share_memory_()
        self.slots: list[tuple[int, torch.Tensor]] = []  # this worker's: (generation, uint8 buffer)

    def __call__(self, batch: list) -> _Shipment:
        frames = [f for f in batch if isinstance(f, PreparedFrame)]
        images = [f.image for f in frames if f.image.numel()]
        depths = [f.depth for f in frames if f.depth.numel()]
        photos = [f.sample.image for f in frames]
        gts = [f.sample.depth for f in frames if f.sample.depth.strides != (0, 0)]
        shapes = {
            "images": (torch.float32, (len(images), *images[0].shape) if images else (0,)),
            "depths": (torch.float32, (len(depths), *depths[0].shape) if depths else (0,)),
            "photos": (torch.uint8, (sum(a.size for a in photos),)),
            "gts": (torch.float32, (sum(a.size for a in gts),)),
        }
        parts, size = {}, 0
        for name, (dtype, shape) in shapes.items():
            size = -(-size // 64) * 64  # each part aligned
            parts[name] = (size, dtype, shape)
            size += int(np.prod(shape)) * dtype.itemsize
        buffer, slot, send = self._buffer(size)
        views = {name: _part(buffer, *part) for name, part in parts.items()}
        if images:
            torch.stack(images, out=views["images"])
        if depths:
            torch.stack(depths, out=views["depths"])
        for name, arrays, dtype in (("photos", photos, np.uint8), ("gts", gts, np.float32)):
            if arrays:
                np.concatenate([np.ascontiguousarray(a, dtype).reshape(-1) for a in arrays], out=views[name].numpy())
        items = [
            replace(
                f,
                image=None,
                depth=None,
                sample=replace(  # the arrays travel in the buffer; their shapes here
                    f.sample, image=f.sample.image.shape, depth=(f.sample.depth.shape, f.sample.depth.strides == (0, 0))
                ),
            )
            if isinstance(f, PreparedFrame)
            else f
            for f in batch
        ]
        return _Shipment(items, parts, size, buffer if send else None, slot)

    def _buffer(self, size: int) -> tuple[torch.Tensor, tuple[int, int, int] | None, bool]:
        """A buffer of at least ``size`` bytes: a free slot (replaced when too small), a new slot,
        or, with every slot in use, a fresh segment; whether the main process must be sent it."""
        worker = torch.utils.data.get_worker_info().id
        busy = self.busy[worker]
        free = [k for k in range(len(self.slots)) if busy[k] == 0]
        if not free and len(self.slots) == SLOTS_PER_WORKER:
            return _shared((size,), torch.uint8), None, True
        if free and self.slots[free[0]][1].numel() >= size:
            k = free[0]
            busy[k] = 1
            generation, buffer = self.slots[k]
            return buffer, (worker, k, generation), False
        k = free[0] if free else len(self.slots)
        generation = self.slots[k][0] + 1 if free else 0
        buffer = _shared((int(size * SLOT_HEADROOM) + 64,), torch.uint8)
        if free:
            self.slots[k] = (generation, buffer)
        else:
            self.slots.append((generation, buffer))
        busy[k] = 1
        return buffer, (worker, k, generation), True


def _part(buffer: torch.Tensor | np.ndarray, offset: int, dtype: torch.dtype, shape: tuple[int, ...]):
    """A part of a shipment's byte buffer as a tensor (worker) or an array (main process)."""
    size = int(np.prod(shape)) * dtype.itemsize
    if isinstance(buffer, torch.Tensor):
        return buffer[offset : offset + size].view(dtype).view(shape)
    return buffer[offset : offset + size].view(torch.empty(0, dtype=dtype).numpy().dtype).reshape(shape)


def _shared(shape: tuple[int, ...], dtype: torch.dtype) -> torch.Tensor:
    """An empty tensor in shared memory: written there once, it crosses to the main process
    without the copy pickling a private tensor costs (about as much as the packing itself)."""
    numel = int(np.prod(shape))
    storage = torch.UntypedStorage._new_shared(numel * dtype.itemsize)  # as default_collate does
    return torch.empty(0, dtype=dtype).set_(storage, 0, (numel,)).view(shape)


class _Unpacker:
    """In the main process: a shipment's frames again, their arrays views of its buffer. A slot's
    buffer is mapped once; each batch in it gets an array of its own over it, and when the last
    view of that array is gone (the caller has let go of the frames) the slot is freed for the
    worker to fill again, so frames a caller keeps are never overwritten."""

    def __init__(self, packer: _Packer) -> None:
        self.busy = packer.busy.numpy()
        self.mapped: dict[tuple[int, int], tuple[int, np.ndarray]] = {}  # (worker, slot) -> (generation, bytes)

    def __call__(self, shipment: _Shipment) -> list:
        if shipment.slot is None:
            data = shipment.buffer.numpy()
        else:
            worker, k, generation = shipment.slot
            if shipment.buffer is not None:
                self.mapped[worker, k] = (generation, shipment.buffer.numpy())
            mapped_generation, whole = self.mapped[worker, k]
            assert mapped_generation == generation, "a slot's buffer came out of order"
            # An array of this batch's own (its base the memoryview, so views of it keep it alive).
            data = np.frombuffer(memoryview(whole), np.uint8, shipment.size)
            weakref.finalize(data, self.busy[worker].__setitem__, k, 0)
        return _frames(shipment, {name: _part(data, *part) for name, part in shipment.parts.items()})


def _frames(shipment: _Shipment, parts: dict[str, np.ndarray]) -> list:
    out, frame, photo_at, gt_at = [], 0, 0, 0
    images, depths = (torch.from_numpy(parts[name]) for name in ("images", "depths"))
    for item in shipment.items:
        if isinstance(item, FrameError):
            out.append(item)
            continue
        photo_shape, (gt_shape, gt_dropped) = item.sample.image, item.sample.depth
        photo_size, gt_size = int(np.prod(photo_shape)), int(np.prod(gt_shape))
        photo = parts["photos"][photo_at : photo_at + photo_size].reshape(photo_shape)
        if gt_dropped:
            gt = np.broadcast_to(np.float32(0), gt_shape)
        else:
            gt = parts["gts"][gt_at : gt_at + gt_size].reshape(gt_shape)
            gt_at += gt_size
        photo_at += photo_size
        image = images[frame] if images.numel() else torch.empty(0)
        depth = depths[frame] if depths.numel() else torch.empty(0)
        out.append(replace(item, image=image, depth=depth, sample=replace(item.sample, image=photo, depth=gt)))
        frame += 1
    return out


class FrameLoader:
    """Batches of ``PreparedFrame`` / ``FrameError`` from a DataLoader over ``prepared``, its
    ``batches`` of indices in order, their arrays numpy again. Each pass starts ``workers`` worker
    processes with slots of their own."""

    def __init__(self, prepared: "_Prepared", batches: list[list[int]], workers: int, pin_memory: bool) -> None:
        self.prepared, self.batches, self.workers, self.pin_memory = prepared, batches, workers, pin_memory

    def __len__(self) -> int:
        return len(self.batches)

    def __iter__(self) -> Iterator[list[PreparedFrame | FrameError]]:
        # A packer per pass: slots a previous pass's frames still hold are never handed out again.
        packer = _Packer(self.workers) if self.workers else None
        loader = _data_loader(self.prepared, self.batches, self.workers, packer or list, self.pin_memory)
        if packer is None:
            return iter(loader)
        unpack = _Unpacker(packer)
        return (unpack(batch) for batch in _started(loader))


SHM = "/dev/shm"  # where torch's worker processes put the batches they hand over


def loader_failure(exc: BaseException) -> DataError | None:
    """What DataLoader raises when its workers fail for want of resources (in a loop over it, or from
    its SIGCHLD handler wherever this process is then), as one line saying what to do (setting
    ``workers``): a worker that died ("DataLoader worker (pid(s) N) exited
    unexpectedly", "... is killed by signal: Killed"; the kernel's out-of-memory killer, a crash), or
    shared memory that ran out (torch's "unable to write to file </torch_...>: No space left on
    device", a worker's Bus error, no room for a queue's semaphore). None for anything else."""
    text = str(exc)
    shm_full = (
        "</torch_" in text or "shared memory" in text or (isinstance(exc, OSError) and exc.errno == errno.ENOSPC and exc.filename is None)
    )
    if shm_full:
        try:
            free = f" ({shutil.disk_usage(SHM).free / 2**20:.0f} MiB free there now)"
        except OSError:
            free = ""
        return DataError(
            f"the processes reading the data ran out of shared memory in {SHM}{free}; free space there "
            "(in a container, give it more, e.g. docker run --shm-size=8g), or read with fewer worker "
            "processes (0: none, no shared memory)",
            setting="workers",
        )
    if "DataLoader worker" in text and ("exited unexpectedly" in text or "killed by signal" in text):
        reason = next(line for line in text.splitlines() if "DataLoader worker" in line).strip().rstrip(".")
        return DataError(
            f"a process reading the data stopped ({reason}), most often killed for lack of memory; "
            "read with fewer worker processes (0: none, all in this one)",
            setting="workers",
        )
    return None


def _started(loader: DataLoader) -> Iterator:
    """``loader``'s batches, its workers started now; ``loader_failure``'s failures as its DataError."""
    try:
        return _reported(iter(loader))
    except (RuntimeError, OSError) as exc:
        if (error := loader_failure(exc)) is None:
            raise
        raise error from None


def _reported(batches: Iterator) -> Iterator:
    try:
        yield from batches
        return
    except (RuntimeError, OSError) as exc:
        if (error := loader_failure(exc)) is None:
            raise
    # The error's traceback keeps this frame: without the loader in it, its workers are shut down
    # now rather than when the error is collected (a process forked meanwhile would inherit them).
    batches = None
    raise error


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

    ``workers`` (None: ``resolve_workers``) processes decode in parallel, each one thread (one
    that dies, or shared memory that runs out, is a DataError with setting ``workers``);
    ``pin_memory`` pins the tensors for a fast copy to the GPU.
    """
    batches = [list(b) for b in batches]
    n = resolve_workers(workers, sum(len(b) for b in batches))
    return FrameLoader(_Prepared(dataset, preprocessor, keep_image, keep_gt, gt_scale), batches, n, pin_memory)


def _data_loader(dataset: Dataset, batches: list[list[int]], workers: int, collate, pin_memory: bool = False) -> DataLoader:
    """A DataLoader over index ``batches`` with ``workers`` one-thread processes."""
    return DataLoader(
        dataset,
        batch_sampler=batches,
        num_workers=workers,
        collate_fn=collate,
        pin_memory=pin_memory,
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
    loader = frame_loader(
        dataset,
        preprocessor,
        [index[i : i + batch_size] for i in index[::batch_size]],
        workers,
        keep_image,
        gt_scale=gt_scale,
        keep_gt=keep_gt,
    )
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
    below 0 (ValueError); a worker that dies or shared memory that runs out is a DataError (setting
    ``workers``). ``loads`` must be picklable where processes are spawned rather than forked."""
    n = min(resolve_workers(workers, len(loads)), len(loads))
    loader = _data_loader(_Reads(loads), [[i] for i in range(len(loads))], n, list)
    # Started now, so that the workers are forked before any thread of the caller's exists.
    batches = _started(loader)
    return (item for batch in batches for item in batch)
