"""Saved predictions and ground truth: folders matched by name and read as the protocol needs.

What ``clipdepth score`` and ``clipdepth analyze`` read, usable from Python too:

- ``depth_files``: a folder's depth maps by stem, ``.npy`` (metres) preferred over a ``.png`` of
  the same stem; ``clipdepth predict``'s other outputs beside a map (``<stem>_color.png``,
  ``<stem>_uncertainty.png|npy``) are skipped, so its folder scores as it is.
- ``match_by_stem``: prediction/GT pairs by stem, also across NYU's own naming (an image
  ``rgb_00001`` against ``sync_depth_00001``).
- ``SavedPairs``: each pair read (PNG scales as the files declare them, ground truth in a
  dataset's own format with ``gt_format``) and the prediction put on the GT frame.
"""
from __future__ import annotations

import contextlib
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator

import numpy as np
from tqdm import tqdm

from ..errors import ConfigError, DataError
from ..io.depth_io import read_depth
from .protocol import KB_CROP_SHAPE, Protocol, kb_crop_paste

DEPTH_SUFFIXES = (".npy", ".png")  # in order of preference for one stem
SIDE_OUTPUTS = ("_color", "_side", "_uncertainty")  # `clipdepth predict` writes these beside <stem>.png
NYU_NAMES = ("rgb_", "sync_depth_")  # an NYU image and its depth map share the number
# A prediction whose aspect ratio is this close to the GT's is taken as a resized prediction.
ASPECT_TOLERANCE = 0.02
# Ground truth decoded the way a dataset stores it: `score --gt-format NAME`.
GT_FORMATS = ("nyu", "kitti", "sun_rgbd", "tum", "ibims", "diode", "hypersim")
GT_FORMAT_SUFFIXES = {"diode": (".npy",), "hypersim": (".hdf5", ".h5")}  # the others: 16-bit PNGs


def gt_reader(gt_format: str) -> Callable[[Path], np.ndarray]:
    """The decoder of a dataset's GT files (metres, 0 = missing); ConfigError for an unknown name."""
    from ..data.kitti import read_kitti_depth
    from ..data.nyu import NYU_DEPTH_SCALE
    from ..data.zeroshot import (
        read_diode_depth, read_hypersim_depth, read_ibims_depth, read_sun_rgbd_depth, read_tum_depth,
    )

    readers: dict[str, Callable[[Path], np.ndarray]] = {
        "nyu": lambda path: read_depth(path, NYU_DEPTH_SCALE), "kitti": read_kitti_depth,
        "sun_rgbd": read_sun_rgbd_depth, "tum": read_tum_depth, "ibims": read_ibims_depth,
        "diode": read_diode_depth, "hypersim": read_hypersim_depth,
    }
    if gt_format not in readers:
        raise ConfigError(f"unknown ground-truth format {gt_format!r}; choose one of {', '.join(GT_FORMATS)}")
    return readers[gt_format]


def depth_files(folder: Path, role: str, suffixes: tuple[str, ...] = DEPTH_SUFFIXES) -> dict[str, Path]:
    """Depth files of ``folder`` by stem (``.npy`` preferred over ``.png``), without
    ``clipdepth predict``'s side outputs. DataError for a missing or empty folder, naming it by
    ``role`` (the setting that gave it: ``predictions``, ``gt``)."""
    if not folder.is_dir():
        raise DataError(f"{folder}: {role} folder not found", setting=role)
    by_stem: dict[str, dict[str, Path]] = {}
    for path in sorted(folder.iterdir()):
        suffix = path.suffix.lower()
        if path.is_file() and suffix in suffixes:
            by_stem.setdefault(path.stem, {})[suffix] = path
    files = {stem: next(found[s] for s in suffixes if s in found) for stem, found in by_stem.items()}
    for stem in list(files):
        side = next((tail for tail in SIDE_OUTPUTS if stem.endswith(tail) and stem[: -len(tail)] in files), None)
        if side is not None:
            del files[stem]
    if not files:
        raise DataError(f"{folder}: no {' or '.join(suffixes)} files in the {role} folder", setting=role)
    return files


def _by_nyu_number(files: dict[str, Path], prefix: str) -> dict[str, Path]:
    return {stem[len(prefix):]: path for stem, path in files.items() if stem.startswith(prefix)}


def match_by_stem(
    pred_dir: Path, gt_dir: Path, gt_format: str | None = None
) -> list[tuple[Path, Path]]:
    """(prediction, GT) pairs with the same stem, or NYU's ``rgb_N`` predictions against the
    ``sync_depth_N`` maps of a GT folder (which may hold the ``rgb_N`` images too). DataError naming
    the first file without a partner."""
    preds = depth_files(pred_dir, "predictions")
    gts = depth_files(gt_dir, "gt", GT_FORMAT_SUFFIXES.get(gt_format or "", DEPTH_SUFFIXES))
    # NYU's folders hold rgb_N images (so the predictions are named rgb_N) beside sync_depth_N maps
    nyu_preds, nyu_gts = _by_nyu_number(preds, NYU_NAMES[0]), _by_nyu_number(gts, NYU_NAMES[1])
    if nyu_gts and nyu_preds and len(nyu_preds) == len(preds):
        preds, gts = nyu_preds, nyu_gts
    unmatched = sorted(
        [(stem, path, gt_dir) for stem, path in preds.items() if stem not in gts]
        + [(stem, path, pred_dir) for stem, path in gts.items() if stem not in preds]
    )
    if unmatched:
        stem, path, other_dir = unmatched[0]
        raise DataError(f"{path}: no file with stem {stem!r} in {other_dir} (unmatched files: {len(unmatched)})")
    return [(preds[stem], gts[stem]) for stem in sorted(preds)]


@contextlib.contextmanager
def errors_naming(path: Path) -> Iterator[None]:
    """Prefix ``path`` to DataErrors from checks that know array sizes but not files."""
    try:
        yield
    except DataError as exc:
        raise DataError(f"{path}: {exc}", setting=exc.setting) from None


def to_gt_frame(pred: np.ndarray, pred_path: Path, gt_shape: tuple[int, int], kb_crop: bool) -> np.ndarray:
    """Paste a KB crop into the GT frame, or check that the prediction is a resize of the GT frame."""
    if kb_crop and pred.shape == KB_CROP_SHAPE:
        with errors_naming(pred_path):
            return kb_crop_paste(pred, gt_shape)
    (pred_h, pred_w), (gt_h, gt_w) = pred.shape, gt_shape
    if abs((pred_w / pred_h) / (gt_w / gt_h) - 1) > ASPECT_TOLERANCE:
        is_kb_crop = pred.shape == KB_CROP_SHAPE
        raise DataError(
            f"{pred_path}: prediction is {pred_h}x{pred_w} but the ground truth is {gt_h}x{gt_w}; "
            f"aspect ratios differ, so it is not a resize{'; KB-crop predictions are pasted with kb_crop' if is_kb_crop else ''}",
            setting="kb_crop" if is_kb_crop else None,
        )
    return pred


@dataclass
class SavedPairs:
    """Iterate (prediction on the GT frame, GT, GT path) over matched files.

    PNGs are read with the scale they declare (clipdepth writes it); otherwise with ``pred_scale``
    / ``gt_scale``, or the protocol's GT scale when those are None. A scale given explicitly
    that contradicts a file's declared one is a DataError. ``gt_format`` reads GT as a dataset
    stores it (``GT_FORMATS``) instead. After iterating, ``beyond_cap_fraction`` is the share of
    positive GT values at or above the protocol's cap: most of them there means a wrong format.
    """

    pairs: list[tuple[Path, Path]]
    protocol: Protocol
    pred_scale: float | None = None
    gt_scale: float | None = None
    kb_crop: bool = False
    gt_format: str | None = None
    desc: str = "reading"
    n_positive: int = 0
    n_beyond_cap: int = 0
    n_bad_predictions: int = 0  # predictions holding NaN, inf or values <= 0, which the protocol clamps

    def _read_gt(self, path: Path) -> np.ndarray:
        if self.gt_format is not None:
            return gt_reader(self.gt_format)(path)
        scale = self.protocol.gt_scale if self.gt_scale is None else self.gt_scale
        return read_depth(path, scale, strict_scale=self.gt_scale is not None)

    def __iter__(self) -> Iterator[tuple[np.ndarray, np.ndarray, Path]]:
        pred_scale = self.protocol.gt_scale if self.pred_scale is None else self.pred_scale
        for pred_path, gt_path in tqdm(self.pairs, desc=self.desc, unit="image", file=sys.stderr, disable=None, leave=False):
            gt = self._read_gt(gt_path)
            positive = gt[np.isfinite(gt) & (gt > 0)]
            self.n_positive += positive.size
            self.n_beyond_cap += int(np.count_nonzero(positive >= self.protocol.max_depth))
            pred = read_depth(pred_path, pred_scale, prediction=True, strict_scale=self.pred_scale is not None)
            with np.errstate(invalid="ignore"):
                self.n_bad_predictions += bool(not np.all(np.isfinite(pred)) or np.any(pred <= 0))
            yield to_gt_frame(pred, pred_path, gt.shape, self.kb_crop), gt, gt_path

    @property
    def beyond_cap_fraction(self) -> float:
        return self.n_beyond_cap / self.n_positive if self.n_positive else 0.0

    def prediction_warning(self) -> str | None:
        """A line for the user when predictions hold values the protocol has to clamp, else None."""
        if not self.n_bad_predictions:
            return None
        return (
            f"warning: {self.n_bad_predictions} of {len(self.pairs)} predictions hold NaN, inf or values <= 0; the "
            "protocol clamps them (NaN -> min, inf -> max), which rarely means the model works"
        )

    def range_warning(self) -> str | None:
        """A line for the user when most GT lies beyond the cap, else None."""
        if self.beyond_cap_fraction <= 0.5:
            return None
        return (
            f"warning: {self.beyond_cap_fraction:.0%} of the ground-truth values are at or beyond the "
            f"{self.protocol.max_depth:g} m cap of protocol {self.protocol.name}, so they are not scored; is the "
            "ground truth read right (its format and scale)?"
        )


@dataclass
class SavedScore:
    metrics: dict[str, float]  # the protocol's nine metrics (means over images) and n_images
    n_skipped: int  # ground-truth maps without a valid pixel
    # lines for the user by the setting they are about: gt_format (GT mostly beyond the cap),
    # predictions (values the protocol clamps)
    warnings: dict[str, str]


def score_saved(
    predictions: Path, gt: Path, protocol: Protocol, *, pred_scale: float | None = None, gt_scale: float | None = None,
    kb_crop: bool = False, gt_format: str | None = None, median_scaling: bool = False,
) -> SavedScore:
    """Score the depth maps of folder ``predictions`` against those of ``gt`` matched by stem:
    each prediction read (``SavedPairs``), post-processed and scored per image under ``protocol``
    (``median_scaling`` only for relative-depth models), then averaged over images. DataError for
    missing or unmatched folders, or when no ground-truth map has a valid pixel."""
    from .metrics import METRIC_NAMES, MetricAccumulator
    from .protocol import score_pair

    pairs = match_by_stem(predictions, gt, gt_format=gt_format)
    saved = SavedPairs(pairs, protocol, pred_scale, gt_scale, kb_crop, gt_format, "scoring")
    accumulator = MetricAccumulator()
    for pred, gt_map, gt_path in saved:
        with errors_naming(gt_path):  # e.g. the NYU crop refusing a GT that is not 480x640
            score_pair(pred, gt_map, protocol, median_scaling=median_scaling, accumulator=accumulator)
    warnings = {k: w for k, w in (("gt_format", saved.range_warning()), ("predictions", saved.prediction_warning())) if w}
    if accumulator.n_images == 0:
        beyond = warnings.get("gt_format", "").removeprefix("warning: ")
        raise DataError(f"{gt}: none of the {len(pairs)} ground-truth maps has a valid pixel under protocol "
                        f"{protocol.name}{'; ' + beyond if beyond else ''}", setting="gt_format" if beyond else None)
    # The protocol's nine and the image count; abs_diff is no protocol metric.
    metrics = {k: v for k, v in accumulator.mean().items() if k in (*METRIC_NAMES, "n_images")}
    return SavedScore(metrics, accumulator.n_skipped, warnings)
