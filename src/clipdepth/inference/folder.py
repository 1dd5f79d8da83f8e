"""Predicting many images into files, resumably: what ``clipdepth predict`` runs.

For each image, the files of ``clipdepth.io.predictions`` (16-bit depth PNG recording what it was
made from, colour PNG, and on request npy, PLY, uncertainty and side-by-side) under names no two
images share. "Already done" is decided from content (``_finished``, ``io.fingerprint``): a rerun
keeps the outputs made from the same image content, caption, checkpoint and depth options
(``DEPTH_OPTIONS``) and writes what is missing; an image rewritten in place is predicted again; an
output made from another image or with other settings is never taken for this one's. Point clouds
take each image's camera from ``clipdepth.io.intrinsics`` and record it in ``cameras.json``.
"""

from __future__ import annotations

import hashlib
import json
from collections import deque
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path

import numpy as np
import torch
from tqdm.auto import tqdm

from ..config import config_to_dict, merged_section
from ..data.captions import read_caption_file
from ..data.loader import read_ahead
from ..device import usable_cpus
from ..errors import ConfigError, DataError
from ..io.atomic import clean_stale
from ..io.depth_io import MAX_PHOTO_PIXELS, depth_png_scale, open_header, png_made, read_rgb, require_exr
from ..io.fingerprint import Made, file_digest, text_digest
from ..io.pointcloud import VERTEX
from ..io.intrinsics import RECORD_EVERY_S, RECORD_FILE, Camera, CameraRecord, CameraSources, describe_cameras
from ..io.predictions import DEPTH_FORMATS, OUTPUT_KINDS, OUTPUT_TAILS, output_paths, write_prediction
from ..models.base import INFER_CROPS, MAX_TILES, DepthModel
from ..registry import inference_overrides

# Threads writing the outputs (PNG encoding and numpy run outside the GIL) while the model works on the
# next batch: at zlib level 1 one thread writes a 480x640 image's depth and colour PNGs in about 20 ms
# (benchmarks/png_write.py), so 4 threads cap a run near 200 images/s; a host with more cores gets up
# to 16 threads (about 800 images/s, where the cores are free).
WRITE_THREADS = min(16, max(4, usable_cpus() // 2))


@dataclass
class PredictOptions:
    """What ``predict_to_folder`` writes and how it runs the model."""

    npy: bool = False  # also N.npy (float32 metres); the same as "npy" in ``formats``
    # Depth files besides the 16-bit PNG N.png, which is always written (it records what the depth
    # was made from): "npy", "tiff", "exr" (float32 metres; exr needs the exr extra). DEPTH_FORMATS.
    formats: tuple[str, ...] = ()
    ply_stride: int = 1  # the point clouds keep every ply_stride-th pixel of every ply_stride-th row
    ply: bool = False  # also N.ply, back-projected with each image's camera (io.intrinsics.CameraSources)
    uncertainty: bool = False  # also N_uncertainty.png (and .npy with ``npy``)
    side_by_side: bool = False  # also N_side.png: the image | its colour depth
    # The point clouds' camera for every image (pixels), above any other source when one is given:
    fx: float | None = None  # None: fy, else the next source (intrinsics file, EXIF, 60 degrees)
    fy: float | None = None  # None: fx
    cx: float | None = None  # None (with cy): the image centre
    cy: float | None = None
    intrinsics: Path | None = None  # a JSON file of cameras by image name (io.intrinsics)
    vmin: float | None = None  # colour depth from vmin (default 0) ...
    vmax: float | None = None  # ... to vmax metres (default each image's max, up to the model's max_depth)
    tta: bool = False  # flip test-time augmentation
    # What the model is fed (DepthModel.processor_for): "none", the whole image (photos have no
    # dataset border to drop); "trained", the checkpoint's trained input crop / KB crop and tiles,
    # as evaluate feeds dataset frames, so that predict + score gives evaluate's numbers.
    crop: str = "none"
    dataset: str | None = None  # crop "trained": whose frames these are (default: the checkpoint's own dataset)
    tiles: int | None = None  # square tiles across an image; None: the model's choice
    max_tiles: int = MAX_TILES  # images that need more are refused (bounds memory)
    max_pixels: int = MAX_PHOTO_PIXELS  # larger images are refused before decoding
    batch_size: int = 8  # consecutive images of one size go through the model together
    overwrite: bool = False  # replace outputs that exist (default: write only the missing ones)
    caption: str | None = None  # models that read captions: one for every image ...
    captions: Path | None = None  # ... or a folder of <name>.txt files (caption_file), or one .txt for all (line 0)
    workers: int | None = None  # processes decoding images ahead (0: this one); None: data.loader.resolve_workers

    def __post_init__(self) -> None:
        unknown = [name for name in self.formats if name not in DEPTH_FORMATS]
        if unknown:
            raise ConfigError(f"unknown depth format {unknown[0]!r}; choose from {', '.join(DEPTH_FORMATS)}", setting="formats")
        if "exr" in self.formats:
            require_exr()
        wanted = {*self.formats, *(["npy"] if self.npy else [])}
        self.formats = tuple(name for name in DEPTH_FORMATS if name in wanted)
        self.npy = "npy" in self.formats
        if self.vmin is not None and self.vmax is not None and not self.vmin < self.vmax:
            raise ConfigError(f"vmin {self.vmin:g} must be below vmax {self.vmax:g} (metres)", setting="vmin")

    def tails(self) -> list[str]:
        return [
            ".png",
            "_color.png",
            *(DEPTH_FORMATS[name] for name in self.formats if name != "png16"),
            *(["_uncertainty.png", *(["_uncertainty.npy"] if self.npy else [])] if self.uncertainty else []),
            *([".ply"] if self.ply else []),
            *(["_side.png"] if self.side_by_side else []),
        ]


@dataclass
class PredictReport:
    done: int = 0  # images predicted now
    kept: int = 0  # images whose outputs an earlier run had finished
    completed: int = 0  # of ``done``, images an earlier run had begun: only their missing outputs were written
    again: int = 0  # of ``done``, images (or captions) rewritten since an earlier run made their outputs: all replaced
    removed: int = 0  # outputs of those ``again`` images that this run does not write (made from the old content): deleted
    failed: list[str] = field(default_factory=list)  # one line per image skipped, naming it
    ply_files: int = 0  # point clouds written now ...
    ply_points: int = 0  # ... and their points
    ply_stride: int = 1  # the point clouds' stride (PredictOptions.ply_stride)
    scale: float = 1000.0  # the 16-bit PNGs' depth_scale (value / scale = metres)
    # cameras recorded, of point clouds written now or kept from a run stopped before it recorded theirs:
    # source (Camera.describe) -> names
    cameras: dict[str, list[str]] = field(default_factory=dict)

    def lines(self, out: Path) -> list[str]:
        """What the run did, for its summary: images written and kept, outputs replaced or completed,
        the cameras of the point clouds (recorded in ``out``)."""
        unit = "millimetres" if self.scale == 1000.0 else f"metres = value / {self.scale:g}"
        lines = [
            (f"wrote depth for {self.done} image(s) to {out} (16-bit PNG: {unit})" if self.done else "wrote no depth")
            + (f"; kept {self.kept} finished before (--overwrite to replace)" if self.kept else "")
        ]
        if self.again:
            lines.append(
                f"  {self.again} of them had changed since an earlier run made their outputs: those were replaced"
                + (f" ({self.removed} that this run does not write were removed)" if self.removed else "")
            )
        if self.completed:
            lines.append(
                f"  {self.completed} of them had outputs from an earlier run: only the missing files were written, "
                "the others keep that run's options (colour range, camera); --overwrite writes them all again"
            )
        if self.ply_files:
            size = self.ply_points * VERTEX.itemsize  # bytes, the header's few hundred aside
            shown = f"{size / 1e6:.1f} MB" if size >= 1e5 else f"{size / 1e3:.0f} kB"
            stride = self.ply_stride
            thin = " (--ply-stride thins them)" if stride == 1 else f" (--ply-stride {stride}: one pixel in {stride}x{stride})"
            lines.append(f"wrote {self.ply_files} point cloud(s): {self.ply_points:,} points, {shown}{thin}")
        if self.cameras:
            lines += describe_cameras(self.cameras, out / RECORD_FILE)
        return lines


def caption_file(folder: Path, image: Path, name: Path) -> Path:
    """The caption file of ``image`` in a captions ``folder``, ``name`` being its output name
    (``collect_inputs``, ``collect_videos``): ``<name>.txt``, as ``clipdepth caption`` names the
    caption of each image it is given (``data.captioning.images_to_caption``: ``sub1/b.txt``,
    ``a.jpg.txt`` where ``a.png`` is beside it); where that is missing and the name has no folder
    part, ``<image stem>.txt`` if there is one (a folder of captions written by hand by stem)."""
    named = folder / f"{name.as_posix()}.txt"
    by_stem = folder / f"{image.stem}.txt"
    return by_stem if len(name.parts) == 1 and not named.is_file() and by_stem.is_file() else named


def _caption_source(model: DepthModel, options: PredictOptions) -> Callable[[Path, Path], str | None]:
    """Each input's caption from its path and output name (None for models that read none);
    ConfigError for a caption a model cannot use or one it lacks, DataError for a captions path
    that does not exist."""
    given = options.caption is not None or options.captions is not None
    if not model.uses_captions:
        if given:
            raise ConfigError(f"{model.display_name} takes no caption: give none", setting="caption")
        return lambda image, name: None
    if not given:
        raise ConfigError(
            f"{model.display_name} reads a caption per image: give a caption (one for all, or a captions folder)", setting="caption"
        )
    if options.captions is None:
        return lambda image, name: options.caption
    if not options.captions.exists():
        raise DataError(
            f"{options.captions}: no such caption folder or file (a folder of caption files as `clipdepth "
            "caption` writes them, or one .txt)",
            setting="captions",
        )
    if options.captions.is_file():
        shared = read_caption_file(options.captions)[0]
        return lambda image, name: shared
    return lambda image, name: read_caption_file(caption_file(options.captions, image, name))[0]


# The options that change the depth values, recorded in each depth PNG; the others choose the files
# written, their colours and cameras, or how a run goes (tests/test_already_done.py holds the split).
DEPTH_OPTIONS = ("tta", "tiles", "crop", "dataset")


def model_digest(model: DepthModel) -> str:
    """A short hash of what a model's depth depends on: its architecture, its config (but where the
    frozen parts are loaded from, their precision and the device: ``registry.inference_overrides``), the
    frozen weights' fingerprint and every value of the trained head. Another checkpoint, or one
    trained again into the same folder, has another; a local copy of the same frozen weights
    (``--encoder``) has the same."""
    config = config_to_dict(model.cfg)
    for key in inference_overrides():
        *sections, last = key.split(".")
        parent = config
        for part in sections:
            parent = parent.get(part, {})
        parent.pop(last, None)
    digest = hashlib.sha256(json.dumps([model.architecture, config, model.encoder.fingerprint()], sort_keys=True, default=str).encode())
    for name, tensor in sorted(model.head.state_dict().items()):
        digest.update(f"{name}|{tuple(tensor.shape)}|{tensor.dtype};".encode())
        digest.update(tensor.detach().reshape(-1).cpu().contiguous().view(torch.uint8).numpy())
    return digest.hexdigest()[:16]


def depth_settings(model: DepthModel, options: PredictOptions) -> dict:
    """What the depth of an image depends on besides the image and its caption: the model
    (``model_digest``, as ``checkpoint``), its frozen parts' precision (as the feature cache keys
    it) and the ``DEPTH_OPTIONS``."""
    return {
        "checkpoint": model_digest(model),
        "precision": model.frozen_run_precisions,
        **{key: getattr(options, key) for key in DEPTH_OPTIONS},
    }


def _read_photo(path: Path, max_pixels: int) -> tuple[np.ndarray, str]:
    """The image as ``read_rgb`` reads a photo, and the digest of the file's content (its record)."""
    return read_rgb(path, photo=True, max_pixels=max_pixels), file_digest(path)


def _finished(path: Path, name: Path, out: Path, tails: list[str], overwrite: bool, now: Callable[[Path, Path], Made]) -> str | None:
    """Whether an earlier run finished this image, from its depth PNG's record against ``now(path, name)``,
    what this run would make (``io.fingerprint``): "kept" (made from this content and these
    settings, every output there), "again" (made from content the image no longer has: predicted
    again, its outputs replaced), a message (another image's, or other settings: left as it is),
    or None (to predict what is missing). An output of a clipdepth that recorded only the source
    image is taken as made from it."""
    outputs = output_paths(out, name, tails)
    if overwrite or not outputs[0].exists():
        return None
    earlier = png_made(outputs[0])
    try:
        made = now(path, name)
    except DataError as exc:
        return str(exc) if str(exc).startswith(str(path)) else f"{path}: {exc}"
    refused = made.refusal(earlier, outputs[0], "the depth")
    if refused is not None:
        return f"{path}: {refused}"
    if made.compare(earlier) == "inputs changed":
        return "again"
    return "kept" if all(p.exists() for p in outputs) else None


def infer_batch(model: DepthModel, images: np.ndarray, options: PredictOptions, captions: list[str | None] | None) -> dict:
    """``model.infer`` on (B, H, W, 3) uint8 ``images`` with the options' TTA, crop and tiles: the
    one inference path of image folders and video frames."""
    return model.infer(
        images,
        tta=options.tta,
        tiles=options.tiles,
        captions=captions,
        max_tiles=options.max_tiles,
        crop=options.crop,
        dataset=options.dataset,
    )


def input_lines(model: DepthModel, options: PredictOptions) -> list[str]:
    """What the model is fed, for the start of a run: the images' geometry and flip TTA, and where
    that differs from how ``evaluate`` would feed the frames of the checkpoint's dataset (its trained
    crop, its ``eval.tta``), what to give for evaluate's numbers. ConfigError for an unknown crop or
    dataset, or a dataset without crop "trained"."""
    if options.crop not in INFER_CROPS:
        raise ConfigError(f"crop must be one of {', '.join(INFER_CROPS)}, got {options.crop!r}", setting="crop")
    tta = f"flip TTA {'on' if options.tta else 'off'}"
    if options.crop == "none":
        if options.dataset is not None:
            raise ConfigError(
                f"dataset {options.dataset!r} says how a dataset's frames are fed: it goes with crop trained", setting="dataset"
            )
        lines = [f"input: each whole image, resized to the model's input (--crop none); {tta}"]
        trained = model.trained_preprocessor()
        if trained.crop or trained.kb_crop:
            lines.append(
                f"note: the checkpoint was trained on its frames' {trained.part()}; on that dataset's frames "
                "--crop trained gives evaluate's numbers (photos are best fed whole)"
            )
        return lines
    dataset = options.dataset or model.cfg.data.dataset
    lines = [
        f"input: {model.trained_preprocessor(options.dataset).describe()}, as evaluate feeds {dataset}'s frames (--crop trained); {tta}"
    ]
    trained_on = [merged_section(model.cfg.data, entry.data).dataset for entry in model.cfg.mixture]
    if options.dataset is None and len(trained_on) > 1:
        lines.append(
            f"note: the checkpoint trained on {', '.join(trained_on)}, each fed its own way: --dataset NAME feeds "
            f"the images as that dataset's frames (here {dataset}'s)"
        )
    if options.tta != model.cfg.eval.tta:
        lines.append(
            f"note: evaluate uses flip TTA {'on' if model.cfg.eval.tta else 'off'} (the checkpoint's eval.tta): "
            f"{'add --tta' if model.cfg.eval.tta else 'drop --tta'} here, or give evaluate "
            f"{'--no-tta' if model.cfg.eval.tta else '--tta'}, for its numbers"
        )
    return lines


def check_image(model: DepthModel, height: int, width: int, options: PredictOptions) -> None:
    """DataError (without a file name) for an image the options cannot feed: over the tile limit,
    smaller than the trained crop or mostly cut away by it; checked before the image joins a batch."""
    model.processor_for(height, width, options.crop, options.tiles, options.max_tiles, options.dataset)


def predict_to_folder(
    model: DepthModel, jobs: list[tuple[Path, Path]], out: Path, options: PredictOptions, progress: bool = True
) -> PredictReport:
    """Predict each (image, name) of ``jobs`` (``collect_inputs``) into ``out`` with ``model`` (on
    its device). An image that cannot be read or is over a limit is skipped and named in the
    report, the others go on. Unless ``options.overwrite``, an earlier run's outputs are taken as
    ``_finished`` decides from their depth PNG's record: made from this image's content (and
    caption) with this model and these ``DEPTH_OPTIONS``, they are kept and what is missing is
    written, so a rerun completes what an interrupted one left; made from content the image no
    longer has, they are replaced (``again``, ``removed``); another image's or other settings' are
    left as they are and the image is named in ``failed``. Raises ConfigError for options the
    model cannot use, DataError for an intrinsics file (``options.intrinsics``, or an
    ``intrinsics.json`` beside the images) that is not one, before any image is predicted.

    Point clouds take each image's camera from ``CameraSources`` (the report's ``cameras`` says
    which source each took) and record it in ``out/cameras.json``; a kept point cloud that the
    record lacks (a run stopped between writing it and saving the record) gets its entry too, the
    camera derived by the same rules at its depth's size. Images are decoded ahead in
    ``options.workers`` processes (``read_ahead``), and each batch's files are written by
    ``WRITE_THREADS`` threads while the model runs the next batch; a write that fails (an OSError
    such as a full disk) is raised once the writes under way have ended.
    """
    if options.uncertainty and not model.gives_uncertainty:
        raise ConfigError(f"{model.display_name} gives no uncertainty", setting="uncertainty")
    if options.tiles is not None and options.tiles > options.max_tiles:
        raise ConfigError(f"tiles {options.tiles} is over max_tiles {options.max_tiles}", setting="tiles")
    input_lines(model, options)  # an unknown crop or dataset, before any work
    caption_for = _caption_source(model, options)
    report = PredictReport(scale=depth_png_scale(model.max_depth), ply_stride=options.ply_stride)
    tails = options.tails()
    settings = depth_settings(model, options)

    def made(path: Path, digest: str, caption: str | None) -> Made:
        inputs = {"image": digest, **({"caption": text_digest(caption)} if caption is not None else {})}
        return Made(str(path.resolve()), inputs, settings)

    def made_now(path: Path, name: Path) -> Made:
        return made(path, file_digest(path), caption_for(path, name))

    # Names are distinct (collect_inputs), so what is left to do does not change as images are written.
    earlier = [_finished(path, name, out, tails, options.overwrite, made_now) for path, name in jobs]
    todo_images = [path for (path, _), state in zip(jobs, earlier) if state in (None, "again")]
    record = CameraRecord(out) if options.ply else None
    # A run stopped after writing a point cloud but before saving the record left it out, and its
    # image is kept now: its camera is recorded from the same sources, at its depth PNG's size.
    unrecorded = [
        (path, name)
        for (path, name), state in zip(jobs, earlier)
        if record is not None and state == "kept" and name.as_posix() not in record.entries
    ]
    cameras = CameraSources(options, options.intrinsics, [*todo_images, *(path for path, _ in unrecorded)]) if options.ply else None
    clean_stale(out)  # what a killed run left half-written
    images = read_ahead([partial(_read_photo, path, options.max_pixels) for path in todo_images], options.workers)
    # (image, path, name, caption, its content's digest, whether it replaces outputs of its earlier content)
    batch: list[tuple[np.ndarray, Path, Path, str | None, str, bool]] = []
    writing: deque[tuple[Future, Path, Path, Camera | None]] = deque()

    def took(path: Path, name: Path, camera: Camera | None) -> None:
        if camera is not None:
            record.add(name, path, camera)
            report.cameras.setdefault(camera.describe(), []).append(name.as_posix())

    for path, name in unrecorded:
        with open_header(output_paths(out, name, tails)[0]) as depth_png:  # as large as the image as shown
            took(path, name, cameras.camera(path, depth_png.height, depth_png.width))

    def written(keep: int) -> None:
        """Wait until at most ``keep`` images are being written; raises a writer's error."""
        while len(writing) > keep or (writing and writing[0][0].done()):
            future, path, name, camera = writing.popleft()
            points = future.result()  # of the point cloud written now, if any
            report.ply_points, report.ply_files = report.ply_points + points, report.ply_files + (points > 0)
            report.done += 1
            took(path, name, camera)
        if record is not None:
            record.save(every=RECORD_EVERY_S)

    def flush(pool: ThreadPoolExecutor) -> None:
        if not batch:
            return
        captions = [entry[3] for entry in batch] if model.uses_captions else None
        result = infer_batch(model, np.stack([entry[0] for entry in batch]), options, captions)
        # one copy to the host per batch, not one (and one device sync) per image
        depths = result["depth"].float().cpu().numpy()
        spreads = result["uncertainty"].float().cpu().numpy() if options.uncertainty else None
        for i, (image, path, name, caption, digest, again) in enumerate(batch):
            paths = output_paths(out, name, tails)
            todo = {OUTPUT_KINDS[p.name[len(name.name) :]]: p for p in paths if options.overwrite or again or not p.exists()}
            report.completed += len(todo) < len(paths)
            if "depth" in todo:  # the record last: a depth PNG vouches for the files written before it
                todo["depth"] = todo.pop("depth")
            if again:  # what this run does not write would show the image's old content beside its new depth
                stale = [p for p in output_paths(out, name, list(OUTPUT_TAILS)) if p not in paths and p.exists()]
                for p in stale:
                    p.unlink()
                report.again, report.removed = report.again + 1, report.removed + len(stale)
            depth = depths[i]
            spread = spreads[i] if spreads is not None else None
            # a point cloud kept from a run killed before its depth PNG and record were written is recorded too
            unrecorded_ply = options.ply and "ply" not in todo and name.as_posix() not in record.entries
            camera = cameras.camera(path, *depth.shape) if "ply" in todo or unrecorded_ply else None
            writing.append(
                (
                    pool.submit(
                        write_prediction,
                        todo,
                        depth,
                        image,
                        model.max_depth,
                        uncertainty=spread,
                        intrinsics=camera.intrinsics if camera else None,
                        made=made(path, digest, caption),
                        vmin=options.vmin,
                        vmax=options.vmax,
                        ply_stride=options.ply_stride,
                    ),
                    path,
                    name,
                    camera,
                )
            )
        # This batch is written while the model runs the next; the one before must be done by now.
        written(keep=len(batch))
        batch.clear()

    with ThreadPoolExecutor(WRITE_THREADS, thread_name_prefix="predict-write") as pool:
        try:
            for (path, name), state in zip(tqdm(jobs, desc="predict", unit="image", dynamic_ncols=True, disable=not progress), earlier):
                if state == "kept":
                    report.kept += 1
                    continue
                if state not in (None, "again"):
                    report.failed.append(state)
                    continue
                read = next(images)
                try:  # one bad file must not lose the others' results
                    if isinstance(read, str):
                        raise DataError(read)
                    image, digest = read
                    check_image(model, image.shape[0], image.shape[1], options)
                    caption = caption_for(path, name)
                except DataError as exc:
                    message = str(exc)
                    report.failed.append(message if message.startswith(str(path)) else f"{path}: {message}")
                    continue
                if batch and (image.shape != batch[0][0].shape or len(batch) == options.batch_size):
                    flush(pool)
                batch.append((image, path, name, caption, digest, state == "again"))
            flush(pool)
            written(keep=0)
        except BaseException:
            pool.shutdown(cancel_futures=True)  # the writes begun finish (each file whole or absent)
            for future, path, name, camera in writing:  # a rerun keeps these: their cameras are recorded now
                if not future.cancelled() and future.exception() is None:
                    took(path, name, camera)
            raise
        finally:
            if record is not None:  # the cameras of what was written, also when a run stops early
                record.save()
    return report
