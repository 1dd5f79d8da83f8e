"""Saved predictions and ground truth: folders matched by name and read as the protocol needs.

What ``clipdepth score`` and ``clipdepth analyze`` read, usable from Python too:

- ``depth_files``: a folder's depth maps by stem, an array file (``.npy``, ``.npz``, TIFF, EXR:
  the values as written) preferred over a ``.png`` of the same stem; ``clipdepth predict``'s other
  outputs beside a map (``<stem>_color.png``, ``<stem>_uncertainty.png|npy``) are skipped, so its
  folder scores as it is.
- ``prediction_files``: those of a predictions folder, or the files a name pattern maps ground-truth
  stems to (``{stem}_raw_depth_meter.npy``: Depth Anything V2's metric run.py).
- ``match_files``: prediction/GT pairs by stem, also across NYU's own naming (an image
  ``rgb_00001`` against ``sync_depth_00001``), and each side's files without a partner.
- ``SavedPairs``: each pair read (PNG scales as the files declare them, ground truth in a
  dataset's own format with ``gt_format``), the prediction put on the GT frame, and a metric
  prediction whose unit was assumed (no ``pred_scale``, none declared) refused when its values
  look like another unit (millimetres read as metres).
- ``score_saved``: the protocol's mean metrics, and each image's, of such a folder, with the
  prediction converted and aligned per image as asked (``protocol.align_prediction``).
"""

from __future__ import annotations

import contextlib
import math
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator

import numpy as np
from tqdm import tqdm

from .. import __version__
from ..errors import ConfigError, DataError
from ..io.depth_io import DEPTH_FILE_SUFFIXES, SCALE_TEXT_KEY, UINT16_DEPTH_MODES, open_header, read_depth
from .protocol import KB_CROP_SHAPE, Protocol, kb_crop_paste, valid_mask

DEPTH_SUFFIXES = (".npy", ".png")  # ground truth, in order of preference for one stem
PREDICTION_SUFFIXES = DEPTH_FILE_SUFFIXES  # array files (values as written) before PNGs
STEM_FIELD = "{stem}"  # in a prediction name pattern: the ground-truth map's stem
SIDE_OUTPUTS = ("_color", "_side", "_uncertainty")  # `clipdepth predict` writes these beside <stem>.png
NYU_NAMES = ("rgb_", "sync_depth_")  # an NYU image and its depth map share the number
# A prediction whose aspect ratio is this close to the GT's is taken as a resized prediction.
ASPECT_TOLERANCE = 0.02
# Ground truth decoded the way a dataset stores it: `score --gt-format NAME`.
GT_FORMATS = ("nyu", "kitti", "sun_rgbd", "tum", "ibims", "diode", "hypersim")
GT_FORMAT_SUFFIXES = {"diode": (".npy",), "hypersim": (".hdf5", ".h5")}  # the others: 16-bit PNGs
# Units depth files come in, as values per metre (docs/protocol.md, "Caps and units").
UNIT_SCALES = {1.0: "metres", 100.0: "centimetres", 256.0: "1/256 m (KITTI's PNG unit)", 1000.0: "millimetres"}


def gt_reader(gt_format: str) -> Callable[[Path], np.ndarray]:
    """The decoder of a dataset's GT files (metres, 0 = missing); ConfigError for an unknown name."""
    from ..data.kitti import read_kitti_depth
    from ..data.nyu import NYU_DEPTH_SCALE
    from ..data.zeroshot import read_diode_depth, read_hypersim_depth, read_ibims_depth, read_sun_rgbd_depth, read_tum_depth

    readers: dict[str, Callable[[Path], np.ndarray]] = {
        "nyu": lambda path: read_depth(path, NYU_DEPTH_SCALE),
        "kitti": read_kitti_depth,
        "sun_rgbd": read_sun_rgbd_depth,
        "tum": read_tum_depth,
        "ibims": read_ibims_depth,
        "diode": read_diode_depth,
        "hypersim": read_hypersim_depth,
    }
    if gt_format not in readers:
        raise ConfigError(f"unknown ground-truth format {gt_format!r}; choose one of {', '.join(GT_FORMATS)}")
    return readers[gt_format]


def _require_folder(folder: Path, role: str) -> None:
    if not folder.is_dir():
        raise DataError(f"{folder}: {role} folder not found", setting=role)


def _without_side_outputs(files: dict[str, Path]) -> dict[str, Path]:
    """``files`` by stem less ``clipdepth predict``'s side outputs: ``<stem>_color`` and the like
    beside a ``<stem>`` of their own."""
    return {stem: path for stem, path in files.items() if not any(stem.endswith(t) and stem[: -len(t)] in files for t in SIDE_OUTPUTS)}


def depth_files(folder: Path, role: str, suffixes: tuple[str, ...] = DEPTH_SUFFIXES) -> dict[str, Path]:
    """Depth files of ``folder`` by stem (the first of ``suffixes`` where a stem has several),
    without ``clipdepth predict``'s side outputs. DataError for a missing or empty folder, naming
    it by ``role`` (the setting that gave it: ``predictions``, ``gt``)."""
    _require_folder(folder, role)
    by_stem: dict[str, dict[str, Path]] = {}
    for path in sorted(folder.iterdir()):
        suffix = path.suffix.lower()
        if path.is_file() and suffix in suffixes:
            by_stem.setdefault(path.stem, {})[suffix] = path
    files = _without_side_outputs({stem: next(found[s] for s in suffixes if s in found) for stem, found in by_stem.items()})
    if not files:
        raise DataError(f"{folder}: no {' or '.join(suffixes)} files in the {role} folder", setting=role)
    return files


def split_pattern(pattern: str) -> tuple[str, str]:
    """(before, after) ``{stem}`` in a prediction name pattern such as ``{stem}_depth.npy``.
    ConfigError (setting ``pred_pattern``) for a pattern without exactly one ``{stem}``, with a
    folder in it, or whose name ends in no depth file type (``PREDICTION_SUFFIXES``)."""
    if pattern.count(STEM_FIELD) != 1:
        raise ConfigError(
            f"prediction name pattern {pattern!r} must hold {STEM_FIELD} once, where the ground-truth map's stem goes "
            f"(e.g. {STEM_FIELD}_depth.npy)",
            setting="pred_pattern",
        )
    if "/" in pattern or "\\" in pattern:
        raise ConfigError(
            f"prediction name pattern {pattern!r} names a file, not a path: give its folder as predictions", setting="pred_pattern"
        )
    before, after = pattern.split(STEM_FIELD)
    suffix = Path(f"x{after}").suffix.lower()
    if suffix not in PREDICTION_SUFFIXES:
        raise ConfigError(
            f"prediction name pattern {pattern!r} must end in a depth file type: {', '.join(PREDICTION_SUFFIXES)}", setting="pred_pattern"
        )
    return before, after


def prediction_files(folder: Path, pattern: str | None = None) -> dict[str, Path]:
    """The prediction files of ``folder`` by the ground-truth stem they are for: without a
    ``pattern``, ``depth_files`` over ``PREDICTION_SUFFIXES``; with one, each file named as the
    pattern says (``{stem}_raw_depth_meter.npy``: ``a_raw_depth_meter.npy`` is for ``a``), other
    files ignored, side outputs skipped as ``depth_files`` does. DataError for a missing folder or
    one where no file matches; ConfigError for a bad pattern (``split_pattern``)."""
    if pattern is None:
        return depth_files(folder, "predictions", PREDICTION_SUFFIXES)
    before, after = split_pattern(pattern)
    _require_folder(folder, "predictions")
    files = {
        path.name[len(before) : len(path.name) - len(after)]: path
        for path in sorted(folder.iterdir())
        if path.name.startswith(before) and path.name.endswith(after) and len(path.name) > len(before) + len(after) and path.is_file()
    }
    if not files:
        raise DataError(f"{folder}: no file in the predictions folder is named as pattern {pattern!r} says", setting="pred_pattern")
    return _without_side_outputs(files)


def _by_nyu_number(files: dict[str, Path], prefix: str) -> dict[str, Path]:
    return {stem[len(prefix) :]: path for stem, path in files.items() if stem.startswith(prefix)}


def _is_image(path: Path) -> bool:
    """A PNG that is no depth map (not 16-bit single-channel), as NYU's ``rgb_N.png`` beside its
    ``sync_depth_N.png``: without a partner it is nothing missing. False for an unreadable file,
    which is then named."""
    if path.suffix.lower() != ".png":
        return False
    try:
        with open_header(path) as image:  # the header only, whatever the image's size
            return image.mode not in UINT16_DEPTH_MODES
    except (OSError, SyntaxError, ValueError):
        return False


@dataclass
class Matched:
    """The (prediction, GT) pairs of two folders and each side's depth maps without a partner."""

    pairs: list[tuple[Path, Path]]
    preds_alone: list[Path]  # predictions without ground truth
    gts_alone: list[Path]  # ground-truth maps without a prediction

    def unpaired(self) -> str:
        """Each side's files without a partner, counted, the first one named; "" when all pair up."""
        sides = ((self.preds_alone, "prediction", "without ground truth"), (self.gts_alone, "ground-truth map", "without a prediction"))
        return ", ".join(
            f"{len(files)} {noun}{'s' * (len(files) > 1)} {without} ({'first: ' * (len(files) > 1)}{files[0]})"
            for files, noun, without in sides
            if files
        )


def match_files(
    pred_dir: Path, gt_dir: Path, gt_format: str | None = None, allow_missing: bool = False, pred_pattern: str | None = None
) -> Matched:
    """(prediction, GT) pairs with the same stem, or NYU's ``rgb_N`` predictions against the
    ``sync_depth_N`` maps of a GT folder (which may hold the ``rgb_N`` images too), sorted by stem.
    A prediction's stem is its file's, or the part ``pred_pattern`` gives (``prediction_files``).

    Files without a partner are counted per side; GT-side PNGs that are no depth map (8-bit images)
    are not counted, nor are prediction-side files that ``pred_pattern`` does not name. DataError
    when some file has no partner, unless ``allow_missing`` (then the pairs are what is scored),
    and when no file has one."""
    preds = prediction_files(pred_dir, pred_pattern)
    gts = depth_files(gt_dir, "gt", GT_FORMAT_SUFFIXES.get(gt_format or "", DEPTH_SUFFIXES))
    # NYU's folders hold rgb_N images (so the predictions are named rgb_N) beside sync_depth_N maps
    nyu_preds, nyu_gts = _by_nyu_number(preds, NYU_NAMES[0]), _by_nyu_number(gts, NYU_NAMES[1])
    if nyu_gts and nyu_preds and len(nyu_preds) == len(preds):
        preds, gts = nyu_preds, nyu_gts
    matched = Matched(
        [(preds[stem], gts[stem]) for stem in sorted(preds) if stem in gts],
        [preds[stem] for stem in sorted(preds) if stem not in gts],
        [gts[stem] for stem in sorted(gts) if stem not in preds and not _is_image(gts[stem])],
    )
    if not matched.pairs:
        raise DataError(f"no prediction in {pred_dir} has a ground-truth map of the same file stem in {gt_dir}: {matched.unpaired()}")
    if matched.unpaired() and not allow_missing:
        raise DataError(
            f"{pred_dir} and {gt_dir} do not pair up by file stem: {matched.unpaired()}; add the "
            f"missing files, or score the {len(matched.pairs)} matched pairs only",
            setting="allow_missing",
        )
    return matched


def match_by_stem(pred_dir: Path, gt_dir: Path, gt_format: str | None = None, pred_pattern: str | None = None) -> list[tuple[Path, Path]]:
    """``match_files``' pairs, refusing any depth map without a partner (``clipdepth analyze``)."""
    return match_files(pred_dir, gt_dir, gt_format, pred_pattern=pred_pattern).pairs


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


def _declares_scale(path: Path) -> bool:
    """Whether a depth PNG states its values per metre (clipdepth writes it before the pixels); the
    file has been read as a depth map already."""
    with open_header(path) as image:
        return SCALE_TEXT_KEY in image.info


def unit_mismatch(ratio: float, read_scale: float) -> float | None:
    """The values per metre a prediction read at ``read_scale`` seems to be in, from ``ratio``: its
    median over the valid pixels / the GT's there; None when it looks like the unit it was read in.
    Within 2x of the GT a model may simply be poor; beyond, the ratio must be near another unit's
    (within 1.5x), which is then returned (a key of ``UNIT_SCALES``), or beyond 10x, which no metric
    model in the right unit is: then ``ratio * read_scale`` itself, the values per metre that would
    bring the medians together, which names no unit (a 20x prediction is not centimetres)."""
    off = abs(math.log(ratio))
    if off < math.log(2):
        return None
    implied = ratio * read_scale
    unit = min(UNIT_SCALES, key=lambda scale: abs(math.log(implied / scale)))
    if abs(math.log(implied / unit)) < math.log(1.5):
        return unit if unit != read_scale else None
    return implied if off >= math.log(10) else None


def _median_ratio(pred: np.ndarray, gt: np.ndarray, protocol: Protocol) -> float | None:
    """median(pred) / median(gt) over the protocol's valid pixels (positive finite predictions);
    None without such pixels. A smaller prediction is sampled at the nearest pixel of the resize's
    grid (align_corners=True): enough for a median."""
    mask = valid_mask(gt, protocol)
    rows = np.rint(np.linspace(0, pred.shape[0] - 1, gt.shape[0])).astype(int)
    cols = np.rint(np.linspace(0, pred.shape[1] - 1, gt.shape[1])).astype(int)
    values = pred[np.ix_(rows, cols)][mask]
    values = values[np.isfinite(values) & (values > 0)]
    return float(np.median(values) / np.median(gt[mask])) if values.size else None


@dataclass
class SavedPairs:
    """Iterate (prediction on the GT frame, GT, GT path) over matched files.

    Predictions are read in metres: a PNG with the scale it declares (clipdepth writes it), else
    value / ``pred_scale``, which also divides array files (``.npy``, ``.npz``, TIFF, EXR: metres
    when None; ``key`` names the array of an .npz or the channel of an EXR); PNGs that declare none
    fall back to the protocol's GT scale. Ground truth likewise with ``gt_scale``. A scale given
    explicitly that contradicts a file's declared one is a DataError. ``gt_format`` reads GT as a
    dataset stores it (``GT_FORMATS``) instead.

    ``metric``: the predictions are metric depth scored as read. Then where a prediction's unit was
    assumed (no ``pred_scale``, none declared), its median is compared with the GT's over the valid
    pixels (``unit_mismatch``): values that look like another unit (millimetres read as metres,
    which the protocol would clamp to its cap) make the iteration end in a DataError naming the
    first such file and how many there are, with the ``pred_scale`` to give; an explicit
    ``pred_scale`` is the way through. False for predictions aligned per image or not depth
    (relative models), whose values have no unit and may be <= 0 (a disparity of 0 is far away):
    neither is checked nor counted. After iterating, ``beyond_cap_fraction`` is the share of
    positive GT values at or above the protocol's cap: most of them there means a wrong format.
    """

    pairs: list[tuple[Path, Path]]
    protocol: Protocol
    pred_scale: float | None = None
    gt_scale: float | None = None
    kb_crop: bool = False
    gt_format: str | None = None
    desc: str = "reading"
    metric: bool = True
    key: str | None = None
    n_positive: int = 0
    n_beyond_cap: int = 0
    n_bad_predictions: int = 0  # predictions holding NaN, inf or (metric ones) values <= 0, which the protocol clamps

    def _read_gt(self, path: Path) -> np.ndarray:
        if self.gt_format is not None:
            return gt_reader(self.gt_format)(path)
        scale = self.protocol.gt_scale if self.gt_scale is None else self.gt_scale
        return read_depth(path, scale, strict_scale=self.gt_scale is not None)

    def _read_prediction(self, path: Path) -> tuple[np.ndarray, float | None]:
        """The prediction in metres, and the values per metre it was read at where that was assumed
        (no ``pred_scale``, none declared), else None."""
        given = self.pred_scale is not None
        if path.suffix.lower() != ".png":  # array files: metres unless pred_scale says otherwise
            depth = read_depth(path, 1.0, prediction=True, key=self.key)
            return (depth / np.float32(self.pred_scale), None) if given else (depth, 1.0)
        scale = self.pred_scale if given else self.protocol.gt_scale
        depth = read_depth(path, scale, prediction=True, strict_scale=given)
        return depth, None if given or _declares_scale(path) else scale

    def __iter__(self) -> Iterator[tuple[np.ndarray, np.ndarray, Path]]:
        other_units: list[tuple[Path, float, float, float]] = []  # (prediction, unit, ratio, scale read at)
        for pred_path, gt_path in tqdm(self.pairs, desc=self.desc, unit="image", file=sys.stderr, disable=None, leave=False):
            gt = self._read_gt(gt_path)
            positive = gt[np.isfinite(gt) & (gt > 0)]
            self.n_positive += positive.size
            self.n_beyond_cap += int(np.count_nonzero(positive >= self.protocol.max_depth))
            pred, assumed_scale = self._read_prediction(pred_path)
            with np.errstate(invalid="ignore"):
                self.n_bad_predictions += bool(not np.all(np.isfinite(pred)) or (self.metric and np.any(pred <= 0)))
            pred = to_gt_frame(pred, pred_path, gt.shape, self.kb_crop)
            if self.metric and assumed_scale is not None:
                with errors_naming(gt_path):  # e.g. the NYU crop refusing a GT that is not 480x640
                    ratio = _median_ratio(pred, gt, self.protocol)
                unit = None if ratio is None else unit_mismatch(ratio, assumed_scale)
                if unit is not None:
                    other_units.append((pred_path, unit, ratio, assumed_scale))
            yield pred, gt, gt_path
        if other_units:
            raise DataError(self._unit_refusal(other_units), setting="pred_scale")

    def _unit_refusal(self, other_units: list[tuple[Path, float, float, float]]) -> str:
        """The refusal of the first prediction of ``other_units``: the unit it looks like where one
        is near (``unit_mismatch``), else how far off it is."""
        path, unit, ratio, read_scale = other_units[0]
        read_as = "read as metres" if read_scale == 1 else f"read at {read_scale:g} values per metre"
        times = f"{ratio:.0f}" if ratio >= 10 else f"{ratio:.2g}"
        count = f"{len(other_units)} of {len(self.pairs)} predictions look like another unit"
        as_read = f"or align lsq or median for a relative model's depth, or pred_scale {read_scale:g} to take the values as read"
        if unit not in UNIT_SCALES:
            return (
                f"{path}: its values, {read_as}, are {times} times the ground truth's (medians over the valid "
                f"pixels), near no unit's factor ({count}); give pred_scale, the values per metre they are in "
                f"(metres = value / pred_scale), {as_read}"
            )
        return (
            f"{path}: its values look like {UNIT_SCALES[unit]} {read_as}, its median over the valid pixels "
            f"being {times} times the ground truth's ({count}); score them with pred_scale {unit:g} (metres = "
            f"value / {unit:g}), {as_read}"
        )

    @property
    def beyond_cap_fraction(self) -> float:
        return self.n_beyond_cap / self.n_positive if self.n_positive else 0.0

    def prediction_warning(self) -> str | None:
        """A line for the user when predictions hold values the protocol has to clamp, else None."""
        if not self.n_bad_predictions:
            return None
        return (
            f"warning: {self.n_bad_predictions} of {len(self.pairs)} predictions hold NaN, inf{' or values <= 0' * self.metric}; the "
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
    # lines for the user by the setting they are about: allow_missing (files left out), gt_format
    # (GT mostly beyond the cap), predictions (values the protocol clamps)
    warnings: dict[str, str]
    n_predictions_without_gt: int  # left out with allow_missing
    n_gt_without_prediction: int
    align: str = "none"  # how each prediction was fitted to its GT (protocol.ALIGNMENTS)
    pred_kind: str = "depth"  # what the files hold (protocol.PRED_KINDS)
    # one per matched pair, in order: name (the GT's stem, as evaluate names frames), the nine
    # metrics (absent without a valid pixel), n_valid
    per_image: list[dict[str, Any]] = field(default_factory=list)
    settings: dict[str, Any] = field(default_factory=dict)  # what was scored and how (score_saved's arguments)

    def summary(self) -> dict[str, Any]:
        """What ``clipdepth score --json`` writes: the alignment and the kind of prediction first, so
        that aligned numbers are never read as a metric model's, then the metrics and the counts."""
        return {
            "align": self.align,
            "pred_kind": self.pred_kind,
            **self.metrics,
            "n_predictions_without_gt": self.n_predictions_without_gt,
            "n_gt_without_prediction": self.n_gt_without_prediction,
            **self.settings,
            "clipdepth_version": __version__,
        }


def score_saved(
    predictions: Path,
    gt: Path,
    protocol: Protocol,
    *,
    pred_scale: float | None = None,
    gt_scale: float | None = None,
    kb_crop: bool = False,
    gt_format: str | None = None,
    align: str = "none",
    pred_kind: str = "depth",
    pred_pattern: str | None = None,
    key: str | None = None,
    allow_missing: bool = False,
) -> SavedScore:
    """Score the depth maps of folder ``predictions`` against those of ``gt`` matched by stem
    (``match_files``; ``pred_pattern`` maps a GT stem to a prediction's file name): each prediction
    read (``SavedPairs``; ``key`` names an .npz array or EXR channel), resized to the GT, converted
    from ``pred_kind`` and aligned by ``align`` (``protocol.align_prediction``: "median", "lsq",
    "lsq-disparity" only for relative models), clamped and scored per image under ``protocol``,
    then averaged over images. Predictions that are aligned or not depth are not checked for their
    unit (they have none).

    ConfigError for an unknown ``align``/``pred_kind``, a disparity without alignment or a bad
    pattern, before anything is read. DataError for missing folders, files without a partner
    (unless ``allow_missing``: then the matched pairs are scored and the others counted, per side,
    in the result), metric predictions whose values look like another unit than the one assumed
    (``SavedPairs``; give ``pred_scale``), an alignment that fails on an image, or when no
    ground-truth map has a valid pixel."""
    from .metrics import METRIC_NAMES, MetricAccumulator
    from .protocol import check_alignment, score_pair

    check_alignment(align, pred_kind)
    matched = match_files(predictions, gt, gt_format, allow_missing, pred_pattern)
    metric = align == "none" and pred_kind == "depth"
    saved = SavedPairs(matched.pairs, protocol, pred_scale, gt_scale, kb_crop, gt_format, "scoring", metric=metric, key=key)
    accumulator = MetricAccumulator()
    per_image: list[dict[str, Any]] = []
    for pred, gt_map, gt_path in saved:
        with errors_naming(gt_path):  # e.g. the NYU crop refusing a GT that is not 480x640, an alignment that fails
            image = score_pair(pred, gt_map, protocol, align=align, accumulator=accumulator, pred_kind=pred_kind)
            n_valid = int(np.count_nonzero(valid_mask(gt_map, protocol)))
        per_image.append({"name": gt_path.stem, **{k: image[k] for k in METRIC_NAMES if image}, "n_valid": n_valid})
    unpaired = matched.unpaired()
    left_out = unpaired and f"warning: left out {unpaired}; scored the {len(matched.pairs)} matched pairs"
    warnings = {
        k: w
        for k, w in (("allow_missing", left_out), ("gt_format", saved.range_warning()), ("predictions", saved.prediction_warning()))
        if w
    }
    if accumulator.n_images == 0:
        beyond = warnings.get("gt_format", "").removeprefix("warning: ")
        raise DataError(
            f"{gt}: none of the {len(matched.pairs)} ground-truth maps has a valid pixel under protocol "
            f"{protocol.name}{'; ' + beyond if beyond else ''}",
            setting="gt_format" if beyond else None,
        )
    # The protocol's nine and the image count; abs_diff is no protocol metric.
    metrics = {k: v for k, v in accumulator.mean().items() if k in (*METRIC_NAMES, "n_images")}
    return SavedScore(
        metrics,
        accumulator.n_skipped,
        warnings,
        len(matched.preds_alone),
        len(matched.gts_alone),
        align=align,
        pred_kind=pred_kind,
        per_image=per_image,
        settings={
            "protocol": protocol.name,
            "predictions": str(predictions),
            "gt": str(gt),
            "pred_pattern": pred_pattern,
            "key": key,
            "pred_scale": pred_scale,
            "gt_scale": gt_scale,
            "gt_format": gt_format,
            "kb_crop": kb_crop,
        },
    )
