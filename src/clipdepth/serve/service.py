"""What the web page runs, without the page: the checkpoints it offers, their models (loaded on
first use and kept), and one prediction at a time into a per-server folder that keeps the newest
results only. No Gradio."""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import tempfile
import threading
import time
import uuid
from collections import OrderedDict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator, Sequence

import numpy as np

from ..data import DATASET_PROTOCOLS
from ..errors import CheckpointError, ConfigError, DataError
from ..io.atomic import is_temporary
from ..io.depth_io import MAX_PHOTO_PIXELS, read_rgb
from ..io.fingerprint import Made
from ..io.intrinsics import CameraSources
from ..io.predictions import write_depth_colour, write_prediction
from ..models import load_model, model_class, predicts_from_images
from ..registry import model_spec
from ..models.base import (
    CONFIG_NAME,
    INFER_CROPS,
    MAX_TILES,
    WEIGHTS_NAME,
    DepthModel,
    check_inference_overrides,
    checkpoint_folder,
    read_checkpoint_meta,
)
from .view3d import write_view_glb

MAX_UPLOAD_BYTES = 25 * 2**20
MAX_CAPTION_CHARS = 1000  # far beyond what CLIP's text encoder reads (77 tokens); longer is a paste gone wrong
KEEP_RESULTS = 16
# The depth's colour PNG that the page shows is stored, not deflated: deflating it (zlib level 1) took 2-5 ms of
# a 480 x 640 request (a rendered room, an NYU frame), up to a fifth of the model; stored it is ~1 MB, which a
# browser fetches from this server at once. The files written on demand stay deflated.
SHOWN_PNG_LEVEL = 0
# A result's files written only when the user asks for them (DepthService.result_file), from the result kept in
# memory: "view" (the 3-D view's GLB) or write_prediction's kind -> the file's name after the upload's stem. A
# request writes the depth's colour PNG alone, which the page shows at once.
ON_DEMAND = {"view": "_view.glb", "depth": "_depth16.png", "ply": ".ply", "uncertainty_color": "_uncertainty_color.png"}


@dataclass(frozen=True)
class Checkpoint:
    """A checkpoint the page offers: ``label`` (its folder as given, unique) names it in the picker."""

    label: str
    folder: Path
    model_class: type[DepthModel]

    @property
    def title(self) -> str:
        """The picker's line: the label and the kind of model."""
        return f"{self.label} ({self.model_class.display_name})"


def _checkpoint(label: str, folder: Path) -> Checkpoint:
    meta = read_checkpoint_meta(folder)
    checkpoint = Checkpoint(label, folder, model_class(meta.get("architecture", "")))
    if not predicts_from_images(folder):  # only an oracle relative-depth source reads ground truth
        section = model_spec(checkpoint.model_class.architecture).section  # its relative source: <section>.relative
        raise CheckpointError(
            f"{label}: this {checkpoint.model_class.display_name} checkpoint takes its relative depth from the ground "
            "truth (the oracle source of the synthetic demo and tests), so it cannot predict on uploaded images; train "
            f"one with {section}.relative.source=depth_anything to serve it",
            setting="checkpoints",
        )
    return checkpoint


def _is_checkpoint(folder: Path) -> bool:
    return (folder / CONFIG_NAME).is_file() and (folder / WEIGHTS_NAME).is_file()


def _run_has_model(folder: Path, root: Path) -> bool:
    """Whether ``folder`` is a checkpoint of a training run under ``root`` (``<run>/checkpoints/...``)
    whose final ``<run>/model`` checkpoint exists."""
    parts = folder.relative_to(root).parts
    return any(part == "checkpoints" and _is_checkpoint(root.joinpath(*parts[:i], "model")) for i, part in enumerate(parts[:-1]))


def find_checkpoints(
    checkpoints: Sequence[str | os.PathLike] = (), search: str | os.PathLike | None = None
) -> tuple[list[Checkpoint], list[str]]:
    """The checkpoints ``checkpoints`` names (folders, or Hub ids of cached ones) and those found
    in ``search`` and its sub-folders (folders holding config.json and model.safetensors), each
    folder once, given ones first. Of a training run, ``search`` gives its final ``model`` folder
    only, and its other checkpoints (``checkpoints/best_*``, ``last``) only when it has no
    ``model`` (an unfinished run); found ``model`` folders come first.

    Returns them and one line per checkpoint found in ``search`` that cannot be offered (a
    damaged config, an unknown model, a model that cannot predict on images alone:
    ``clipdepth.models.predicts_from_images``), which is skipped. Raises CheckpointError /
    ConfigError for a given checkpoint that cannot be offered, DataError when ``search`` is not a
    folder, and ConfigError when none is found at all.
    """
    found: dict[Path, Checkpoint] = {}
    for given in checkpoints:
        folder = checkpoint_folder(given)
        found.setdefault(folder.resolve(), _checkpoint(str(given), folder))
    skipped: list[str] = []
    if search is not None:
        root = Path(search)
        if not root.is_dir():
            raise DataError(f"{root}: not a folder (it is searched for checkpoint folders)", setting="checkpoints")
        # a run's final `model` folders first: the picker's default is the first
        for config in sorted(root.rglob(CONFIG_NAME), key=lambda p: (p.parent.name != "model", p)):
            folder = config.parent
            if not _is_checkpoint(folder) or any(is_temporary(p) for p in folder.relative_to(root).parts):
                continue  # another program's config.json, or what an interrupted save left
            if folder.resolve() in found or _run_has_model(folder, root):
                continue
            try:
                found[folder.resolve()] = _checkpoint(str(folder), folder)
            except (CheckpointError, ConfigError) as exc:
                skipped.append(str(exc))
    if not found:
        where = f" in {search}" if search is not None else ""
        raise ConfigError(f"no checkpoint to serve{where}: give checkpoint folders, or a folder holding some", setting="checkpoints")
    return list(found.values()), skipped


@contextlib.contextmanager
def serving_folder() -> Iterator[Path]:
    """A new temporary folder for one server's uploads, examples and results, removed on exit.

    While it is open, Gradio keeps its uploads and cache in it too (``GRADIO_TEMP_DIR``), so that
    results are not copied and nothing of the session stays behind when the server stops; enter
    it before Gradio is first imported (``clipdepth.serve.build_app``), which fixes some folders then.
    """
    before = os.environ.get("GRADIO_TEMP_DIR")
    with tempfile.TemporaryDirectory(prefix="clipdepth-serve-") as workdir:
        os.environ["GRADIO_TEMP_DIR"] = workdir
        try:
            yield Path(workdir)
        finally:
            if before is None:
                os.environ.pop("GRADIO_TEMP_DIR", None)
            else:
                os.environ["GRADIO_TEMP_DIR"] = before


def _one_line(text: str) -> str:
    return " ".join(text.split())


def _safe_stem(name: str) -> str:
    """The upload's stem as a file name part: letters, digits, ``-`` ``_`` ``.`` only."""
    return re.sub(r"[^\w.-]+", "_", Path(name).stem).strip("._")[:80] or "image"


@dataclass
class Prediction:
    """One upload's result: what the page shows at once, as files in a result folder of the server
    (each name begins with the upload's stem), and what the page says about it. Its other files
    are written when asked for: ``DepthService.result_file(key, kind)``."""

    key: str  # the result's name in its service (DepthService.result_file)
    depth_color: Path  # colour PNG with a metre scale
    uncertainty: bool  # whether the model gives an uncertainty (result_file's "uncertainty_color")
    depth: np.ndarray  # (H, W) float32 metres
    points: int  # pixels with a positive depth: the PLY download's points
    seconds: float  # model time (loading a model the first time included)
    camera: str = ""  # where the point cloud's intrinsics came from (the photo's EXIF, or the default)

    @property
    def summary(self) -> str:
        finite = np.isfinite(self.depth)
        valid = self.depth if finite.all() else self.depth[finite]  # a model's depth: no copy
        low, high = (float(valid.min()), float(valid.max())) if valid.size else (float("nan"),) * 2
        height, width = self.depth.shape
        return (
            f"{width}x{height}: depth {low:.3g} to {high:.3g} m, {self.points} points in the PLY "
            f"(camera: {self.camera}), {self.seconds:.2f} s"
        )


@dataclass
class _Kept:
    """What a result's files on demand are written from, while it is among the newest ``keep``:
    (H, W) float32 metres, the (H, W, 3) uint8 upload, the (H, W) float32 uncertainty (metres) or
    None, fx fy cx cy (pixels). ``lock`` is held while such a file is written and while the result
    is removed, so that neither meets the other half-done."""

    folder: Path
    stem: str
    name: str
    depth: np.ndarray
    rgb: np.ndarray
    spread: np.ndarray | None
    max_depth: float
    intrinsics: tuple[float, float, float, float]
    lock: threading.Lock = field(default_factory=threading.Lock)
    removed: bool = False


def concurrent_requests() -> int:
    """Requests worth handling at once: 2 where a model call leaves host cores free (a GPU, where the
    models' "auto" device puts them, or torch using fewer threads than this process's CPUs), so that
    one request's colour PNG is written while the next one's model runs; 1 where torch's threads take
    every core, since writing beside them makes them wait on each other (benchmarks/serve_overhead.py
    on 2 cores with 2 torch threads: 34 ms a request with 2 at once, 27 with 1)."""
    import torch

    from ..device import usable_cpus

    return 2 if torch.cuda.is_available() or torch.get_num_threads() < usable_cpus() else 1


class DepthService:
    """Predictions for uploaded images with any of ``checkpoints`` (``find_checkpoints``), written
    under ``workdir``: one model runs at a time, each loaded on first use (on its config's device)
    and kept; what the page shows of a result at once (the depth's colour PNG) is written after its
    model call, while another request's model runs (``predict`` may be called from several
    threads), and its other files (the 3-D view, the uncertainty's colour PNG, 16-bit depth PNG,
    PLY) when asked for (``result_file``). The newest ``keep`` results are kept, in memory for those files (7 bytes
    per pixel, 11 with an uncertainty: a 12-megapixel photo holds 84 or 132 MB) and on disk; older
    ones are dropped and their folders removed.

    ``crop`` is what each upload feeds the model (``DepthModel.processor_for``: "none", the whole
    image; "trained", the checkpoint's trained input crop and tiles, of ``dataset``'s frames). Limits, each a DataError
    naming the upload before the model runs: ``max_upload_bytes`` of file,
    ``max_pixels`` (from the image header, before decoding) and ``max_tiles`` square tiles.
    ``overrides`` point frozen parts elsewhere (``load_model``); ConfigError here, before any
    request, for one that is not ``KEY=VALUE`` or would change a trained setting.
    """

    def __init__(
        self,
        checkpoints: Sequence[Checkpoint],
        workdir: str | os.PathLike,
        *,
        tta: bool = False,
        crop: str = "none",
        dataset: str | None = None,
        keep: int = KEEP_RESULTS,
        max_upload_bytes: int = MAX_UPLOAD_BYTES,
        max_pixels: int = MAX_PHOTO_PIXELS,
        max_tiles: int = MAX_TILES,
        overrides: Sequence[str] = (),
    ) -> None:
        if not checkpoints:
            raise ConfigError("no checkpoint to serve", setting="checkpoints")
        if keep < 1:
            raise ConfigError(f"keep must be at least 1 (the result shown), got {keep}", setting="keep")
        check_inference_overrides(overrides)
        if crop not in INFER_CROPS:
            raise ConfigError(f"crop must be one of {', '.join(INFER_CROPS)}, got {crop!r}", setting="crop")
        if dataset is not None and crop != "trained":
            raise ConfigError(f"dataset {dataset!r} says how a dataset's frames are fed: it goes with crop trained", setting="dataset")
        if dataset is not None and dataset not in DATASET_PROTOCOLS:
            raise ConfigError(f"unknown dataset {dataset!r}; available: {sorted(DATASET_PROTOCOLS)}", setting="dataset")
        self.checkpoints = {c.label: c for c in checkpoints}
        self.workdir = Path(workdir)
        self.results_root = self.workdir / "results"
        self.results_root.mkdir(parents=True, exist_ok=True)
        self.tta, self.crop, self.dataset, self.keep, self.overrides = tta, crop, dataset, keep, list(overrides)
        self.max_upload_bytes, self.max_pixels, self.max_tiles = max_upload_bytes, max_pixels, max_tiles
        self._models: dict[str, DepthModel] = {}
        self._results: OrderedDict[str, _Kept] = OrderedDict()
        self._results_lock = threading.Lock()
        # One model call at a time (memory for one inference, not one per request); re-entered by model().
        # The files of a result are written outside it, while the next request's model runs.
        self._lock = threading.RLock()

    def checkpoint(self, label: str) -> Checkpoint:
        """The checkpoint of that label; ConfigError naming the ones offered otherwise."""
        if label not in self.checkpoints:
            raise ConfigError(f"no checkpoint {label!r} here; choose one of {', '.join(self.checkpoints)}", setting="checkpoint")
        return self.checkpoints[label]

    def model(self, label: str) -> DepthModel:
        """The model of ``label``, loaded on first use and kept (CheckpointError / EncoderLoadError
        when it cannot be loaded)."""
        from ..device import run_device

        with self._lock:
            if label not in self._models:
                model = load_model(self.checkpoint(label).folder, self.overrides)
                self._models[label] = model.to(run_device(model.cfg))
            return self._models[label]

    def _caption(self, checkpoint: Checkpoint, caption: str | None) -> list[str] | None:
        if not checkpoint.model_class.uses_captions:
            return None  # the page hides the box for these models; what it holds is not theirs
        text = _one_line(caption or "")
        if not text:
            raise ConfigError(
                f"{checkpoint.model_class.display_name} reads a caption: describe the scene in the caption box "
                "(e.g. 'a small kitchen with a window')",
                setting="caption",
            )
        if len(text) > MAX_CAPTION_CHARS:
            raise ConfigError(
                f"the caption has {len(text)} characters, more than the limit of {MAX_CAPTION_CHARS}: "
                "one sentence describing the scene is enough",
                setting="caption",
            )
        return [text]

    def _read(self, upload: Path, name: str) -> np.ndarray:
        """The upload as (H, W, 3) uint8 after the byte and pixel limits; errors name ``name``."""
        try:
            size = upload.stat().st_size
            if size == 0:
                raise DataError(f"{upload}: empty file")
            if size > self.max_upload_bytes:
                raise DataError(f"{upload}: {size / 2**20:.1f} MiB, over the upload limit of {self.max_upload_bytes / 2**20:g} MiB")
            return read_rgb(upload, photo=True, max_pixels=self.max_pixels)
        except FileNotFoundError:
            raise DataError(f"{name}: the upload is gone (uploaded too long ago): upload it again") from None
        except DataError as exc:  # named by the upload's name, never by the server's path of it
            raise DataError(_one_line(str(exc).replace(str(upload), name))) from None

    def predict(self, upload: str | os.PathLike, label: str, caption: str | None = None, name: str | None = None) -> Prediction:
        """Depth for the image file ``upload`` with the checkpoint ``label``; ``caption`` is read by
        models that use captions (TR2M) and ignored by the others. ``name`` (default: the file's
        name) is how messages and result files call the image. Writes what the page shows at once,
        the depth's colour PNG with its metre scale, and keeps the result for ``result_file``.

        Raises DataError (an unreadable or empty file, over a limit), ConfigError (a missing or
        overlong caption, an unknown label), CheckpointError / EncoderLoadError (a model that
        cannot be loaded): one line each, naming ``name``, never the server's path of the upload.
        """
        upload = Path(upload)
        name = name or upload.name
        checkpoint = self.checkpoint(label)
        rgb = self._read(upload, name)
        captions = self._caption(checkpoint, caption)
        depth, spread, max_depth, seconds = self._infer(label, rgb, captions, name)
        # a phone photo's EXIF 35 mm-equivalent focal length, else a 60 degree field of view
        camera = CameraSources().camera(upload, *depth.shape)
        kept = _Kept(self.results_root / uuid.uuid4().hex, _safe_stem(name), name, depth, rgb, spread, max_depth, camera.intrinsics)
        color = kept.folder / f"{kept.stem}_depth_color.png"
        # Outside the model lock and on this request's thread: a second request's model runs meanwhile (the page
        # takes two at once), and no hand-over to another thread waits for a core on a busy machine.
        try:
            write_depth_colour(color, depth, max_depth, level=SHOWN_PNG_LEVEL)
        except BaseException:
            shutil.rmtree(kept.folder, ignore_errors=True)
            raise
        with self._results_lock:
            self._results[kept.folder.name] = kept
            old = [self._results.popitem(last=False)[1] for _ in range(len(self._results) - self.keep)]
        for gone in old:
            with gone.lock:  # after a file of it being written
                gone.removed = True
                shutil.rmtree(gone.folder, ignore_errors=True)
        return Prediction(kept.folder.name, color, spread is not None, depth, int(np.count_nonzero(depth > 0)), seconds, camera.describe())

    def result_file(self, key: str, kind: str) -> Path:
        """The file ``kind`` of the result ``key`` (``Prediction.key``): ``"view"``, the 3-D view's
        GLB point cloud (``view3d.write_view_glb``: every k-th pixel, at most 200 000 points, glTF
        axes, ``<stem>_view.glb``); ``"depth"``, the 16-bit depth PNG ``<stem>_depth16.png``
        (metres = value / its ``depth_scale`` chunk, ``io.depth_io.write_depth_png``); ``"ply"``,
        every pixel with a positive depth as a coloured point (metres, camera frame, ``<stem>.ply``);
        ``"uncertainty_color"``, the model's uncertainty in colour over 0..its max with a metre scale
        (``<stem>_uncertainty_color.png``).
        Written atomically into the result's folder the first time it is asked for, from the result
        kept in memory; the same file after.

        Raises ConfigError for another ``kind`` or an uncertainty of a model that gives none,
        DataError for a result no longer kept (beyond the newest ``keep``), one line each.
        """
        if kind not in ON_DEMAND:
            raise ConfigError(f"no result file {kind!r}; choose one of {', '.join(ON_DEMAND)}", setting="kind")
        with self._results_lock:
            kept = self._results.get(key)
        gone = DataError(f"that result is no longer kept (the server keeps its newest {self.keep}): estimate the depth again")
        if kept is None:
            raise gone
        if kind == "uncertainty_color" and kept.spread is None:
            raise ConfigError("this result's model gives no uncertainty", setting="kind")
        path = kept.folder / f"{kept.stem}{ON_DEMAND[kind]}"
        with kept.lock:
            if kept.removed:
                raise gone
            if path.is_file():  # written before: the result's own folder, where only this method writes
                return path
            if kind == "view":
                write_view_glb(path, kept.depth, kept.rgb, kept.intrinsics)
            else:
                write_prediction(
                    {kind: path},
                    kept.depth,
                    kept.rgb,
                    kept.max_depth,
                    uncertainty=kept.spread,
                    intrinsics=kept.intrinsics,
                    made=Made(kept.name),
                )
        return path

    def _infer(
        self, label: str, rgb: np.ndarray, captions: list[str] | None, name: str
    ) -> tuple[np.ndarray, np.ndarray | None, float, float]:
        """The model of ``label`` on ``rgb`` (H, W, 3) uint8, holding the model lock for that alone:
        depth (H, W) float32 metres, the uncertainty (H, W) metres or None, the model's max depth
        (metres) and the seconds taken (loading the model the first time included)."""
        with self._lock:
            start = time.perf_counter()
            model = self.model(label)
            try:
                model.processor_for(*rgb.shape[:2], self.crop, max_tiles=self.max_tiles, dataset=self.dataset)
            except DataError as exc:  # the tile limit and the crop know no file
                raise DataError(f"{name}: {exc}") from None
            result = model.infer(
                np.ascontiguousarray(rgb), tta=self.tta, captions=captions, max_tiles=self.max_tiles, crop=self.crop, dataset=self.dataset
            )
            depth = result["depth"][0].float().cpu().numpy()
            spread = result["uncertainty"][0].float().cpu().numpy() if model.gives_uncertainty else None
            return depth, spread, float(model.max_depth), time.perf_counter() - start


__all__ = ["Checkpoint", "DepthService", "Prediction", "find_checkpoints", "serving_folder"]
