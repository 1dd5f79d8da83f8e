"""Evaluation protocol: depth caps, crops, prediction post-processing (docs/protocol.md).

Order for one image (docs/protocol.md, "Prediction post-processing before scoring"): resize the
prediction to the GT resolution (bilinear, align_corners=True), clamp it to [min, max] with
+inf -> max and NaN -> min, then score on min < g < max (strict) inside the crop mask.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from ..errors import ConfigError, DataError
from .metrics import MetricAccumulator, to_numpy

NYU_EIGEN_SHAPE = (480, 640)
KB_CROP_SHAPE = (352, 1216)
CROPS = ("eigen_nyu", "garg", "eigen_kitti", "garg_kb", "eigen_nyu_fixed")
GARG_ON_KB_CROP = (143, 349, 43, 1172)  # Garg fractions of the 352 x 1216 KB crop, numpy-slice ends


@dataclass(frozen=True)
class Protocol:
    """Depth caps in metres, crop name (None = no crop) and the GT PNG scale (metres = value / scale)."""

    name: str
    min_depth: float
    max_depth: float
    crop: str | None
    gt_scale: float


PROTOCOLS: dict[str, Protocol] = {
    p.name: p
    for p in (
        Protocol("nyu", 1e-3, 10.0, "eigen_nyu", 1000.0),
        # A protocol names one crop, so "both Garg and Eigen requested" cannot arise; plain
        # `kitti` is Garg, as docs/protocol.md has Garg win.
        Protocol("kitti", 1e-3, 80.0, "garg", 256.0),
        Protocol("kitti_eigen", 1e-3, 80.0, "eigen_kitti", 256.0),
        Protocol("synthetic_indoor", 1e-3, 10.0, None, 1000.0),
        # TR2M's other sets, as its release scores them (docs/tr2m.md, "Data and captions"):
        # VOID 0.2..5 m inside the NYU Eigen crop; C3VD and SimCol 0.1..100 mm, in metres here.
        Protocol("void", 0.2, 5.0, "eigen_nyu", 256.0),
        Protocol("c3vd", 1e-4, 0.1, None, 65535.0 / 0.1),
        Protocol("simcol", 1e-4, 0.1, None, 255.0 * 256.0 / 0.2),
        # Where TR2M's released evaluation departs from the standard: named variants, so that either
        # can be reproduced and a result says which (docs/protocol.md, "Released variants").
        Protocol("kitti_kb_released", 1e-3, 80.0, "garg_kb", 256.0),  # scored on the KB crop itself
        Protocol("sun_rgbd_released", 1e-3, 8.0, "eigen_nyu_fixed", 1000.0),  # NYU's indices, any size
        Protocol("ibims_released", 1e-3, 10.0, "eigen_nyu", 65535.0 / 50.0),
        Protocol("hypersim_released", 1e-3, 80.0, None, 1000.0),
        Protocol("diode_released", 1e-3, 80.0, "garg", 256.0),  # KITTI's Garg fractions on 768 x 1024
        Protocol("synthetic_outdoor", 1e-3, 80.0, None, 256.0),
    )
}


def get_protocol(name: str) -> Protocol:
    try:
        return PROTOCOLS[name]
    except KeyError:
        raise ConfigError(f"unknown evaluation protocol {name!r}; choose one of: {', '.join(PROTOCOLS)}") from None


def crop_box(shape: tuple[int, int], crop: str) -> tuple[int, int, int, int]:
    """(top, bottom, left, right) of an evaluation crop on a GT frame, as numpy-slice ends."""
    height, width = shape
    if crop == "eigen_nyu":
        # Defined in pixels on the official 480x640 frames; it means nothing at another size.
        if (height, width) != NYU_EIGEN_SHAPE:
            raise DataError(f"the NYU Eigen crop needs 480x640 ground truth, got {height}x{width}")
        return 45, 471, 41, 601
    if crop == "garg":
        return int(0.40810811 * height), int(0.99189189 * height), int(0.03594771 * width), int(0.96405229 * width)
    if crop == "eigen_kitti":
        return int(0.3324324 * height), int(0.91351351 * height), int(0.0359477 * width), int(0.96405229 * width)
    if crop == "garg_kb":
        # The Garg fractions of the KB crop (bottom 352 rows, central 1216 columns), where the
        # released BTS-style online evaluation applies them, placed on the full frame.
        if height < KB_CROP_SHAPE[0] or width < KB_CROP_SHAPE[1]:
            raise DataError(f"the KB crop needs ground truth of at least 352x1216, got {height}x{width}")
        top, left = height - KB_CROP_SHAPE[0], (width - KB_CROP_SHAPE[1]) // 2
        return top + GARG_ON_KB_CROP[0], top + GARG_ON_KB_CROP[1], left + GARG_ON_KB_CROP[2], left + GARG_ON_KB_CROP[3]
    if crop == "eigen_nyu_fixed":
        # The NYU Eigen indices whatever the frame's size, cut to the frame (released SUN RGB-D).
        return min(45, height), min(471, height), min(41, width), min(601, width)
    raise ConfigError(f"unknown evaluation crop {crop!r}; choose one of: {', '.join(CROPS)} or None")


def crop_mask(shape: tuple[int, int], crop: str | None) -> np.ndarray:
    """Boolean (H, W) mask of the evaluation crop on the GT frame (all True for ``crop=None``)."""
    if crop is None:
        return np.ones(shape, dtype=bool)
    top, bottom, left, right = crop_box(shape, crop)
    mask = np.zeros(shape, dtype=bool)
    mask[top:bottom, left:right] = True
    return mask


def _as_2d_tensor(pred: Any) -> torch.Tensor:
    """(H, W) float64 tensor from an (H, W), (1, H, W) or (1, 1, H, W) array or tensor."""
    tensor = torch.as_tensor(to_numpy(pred))
    if tensor.ndim < 2 or any(size != 1 for size in tensor.shape[:-2]):
        raise ValueError(f"expected one (H, W) depth map, got shape {tuple(tensor.shape)}")
    return tensor.reshape(tensor.shape[-2:])


def _resize(pred: torch.Tensor, gt_shape: tuple[int, int], protocol: Protocol) -> torch.Tensor:
    """An (..., H, W) prediction (one map, or a batch) as float64 on its own device, non-finite
    values replaced, each map resized to ``gt_shape`` (bilinear, align_corners=True)."""
    # Non-finite values go first: bilinear weights of 0 times inf give NaN, which would turn an
    # +inf pixel (-> max) into its neighbours' NaN (-> min). For finite input this changes nothing.
    pred = torch.nan_to_num(pred.double(), nan=protocol.min_depth, posinf=protocol.max_depth, neginf=protocol.min_depth)
    if tuple(pred.shape[-2:]) == tuple(gt_shape):
        return pred
    maps = pred.reshape(-1, 1, *pred.shape[-2:])
    resized = F.interpolate(maps, size=tuple(gt_shape), mode="bilinear", align_corners=True)
    return resized.reshape(*pred.shape[:-2], *gt_shape)


def _clamp(pred: torch.Tensor, protocol: Protocol) -> np.ndarray:
    return pred.clamp(protocol.min_depth, protocol.max_depth).numpy()


def postprocess_tensor(pred: torch.Tensor, gt_shape: tuple[int, int], protocol: Protocol) -> torch.Tensor:
    """``postprocess`` of an (H, W) tensor, or a (B, H, W) batch, on its own device (the GPU during
    validation and ``evaluate``)."""
    return _resize(pred, gt_shape, protocol).clamp(protocol.min_depth, protocol.max_depth)


def postprocess(pred: Any, gt_shape: tuple[int, int], protocol: Protocol) -> np.ndarray:
    """Prediction resized to ``gt_shape`` (bilinear, align_corners=True) and clamped; float64 (H, W)."""
    return postprocess_tensor(_as_2d_tensor(pred), gt_shape, protocol).numpy()


def valid_mask_tensor(gt: torch.Tensor, protocol: Protocol, crop: torch.Tensor | None = None) -> torch.Tensor:
    """``valid_mask`` of an (H, W) tensor, or a (B, H, W) batch, on its own device; ``crop``: the
    (H, W) crop mask already there (made here when not given)."""
    if crop is None:
        crop = torch.from_numpy(crop_mask(tuple(gt.shape[-2:]), protocol.crop)).to(gt.device)
    gt = gt.double()  # the caps compared in float64 whatever the GT's dtype, as on the host
    return (gt > protocol.min_depth) & (gt < protocol.max_depth) & crop


def valid_mask(gt: Any, protocol: Protocol) -> np.ndarray:
    """min < g < max (strict; NaN fails) inside the protocol's crop."""
    return valid_mask_tensor(torch.from_numpy(to_numpy(gt)), protocol).numpy()


def kb_crop_paste(pred: Any, gt_shape: tuple[int, int]) -> np.ndarray:
    """Paste a 352x1216 KB-crop prediction into a zero canvas of the GT size (top = H - 352, left = (W - 1216) // 2)."""
    pred = to_numpy(pred)
    height, width = gt_shape
    if pred.shape != KB_CROP_SHAPE or height < KB_CROP_SHAPE[0] or width < KB_CROP_SHAPE[1]:
        raise DataError(
            f"KB crop needs a 352x1216 prediction and ground truth at least that large; "
            f"got prediction {'x'.join(map(str, pred.shape))} and ground truth {height}x{width}"
        )
    top, left = height - KB_CROP_SHAPE[0], (width - KB_CROP_SHAPE[1]) // 2
    canvas = np.zeros((height, width), dtype=np.float64)
    canvas[top : top + KB_CROP_SHAPE[0], left : left + KB_CROP_SHAPE[1]] = pred
    return canvas


def median_scale(pred: Any, gt: Any, mask: Any) -> np.ndarray:
    """Median scaling, ONLY for relative (self-supervised) models: pred * median(g) / median(p) on ``mask``.

    A prediction whose median there is not positive is a DataError: scaling it would flip or
    erase it (an all-negative prediction would come out as the mirror of the GT and score perfectly).
    """
    pred, gt, mask = to_numpy(pred), to_numpy(gt), to_numpy(mask, bool)
    if not mask.any():  # nothing to take a median of; the image will be skipped anyway
        return pred
    median = float(np.median(pred[mask]))
    if not median > 0:
        raise DataError(
            f"median scaling needs a positive prediction, but its median over the valid pixels is {median:g} "
            "(a disparity, or a prediction with its sign flipped?)"
        )
    return pred * (np.median(gt[mask]) / median)


# What a prediction file holds: metres; 1/metres; or inverse depth up to an unknown scale and
# shift (what relative models such as MiDaS and Depth Anything write).
PRED_KINDS = ("depth", "inverse", "disparity")
# Per-image alignment to the GT before the clamp: "lsq" fits scale and shift in depth, "lsq-disparity"
# in inverse depth (MiDaS' and Marigold's evaluations); "median" is monodepth2's median scaling.
ALIGNMENTS = ("none", "median", "lsq", "lsq-disparity")


def _inverse(values: np.ndarray) -> np.ndarray:
    """1 / values, with non-positive values (no depth) as +inf, which the clamp makes the far cap."""
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(values > 0, 1.0 / values, np.inf)


def fit_scale_shift(pred: np.ndarray, target: np.ndarray) -> tuple[float, float]:
    """Least-squares (scale, shift) minimising sum((scale * pred + shift - target)^2) over 1-D arrays."""
    pred, target = pred.astype(np.float64), target.astype(np.float64)
    pred_mean, target_mean = pred.mean(), target.mean()
    variance = float(np.mean((pred - pred_mean) ** 2))
    if not variance > 0:
        raise DataError("least-squares alignment needs a prediction that varies over the valid pixels; it is constant")
    scale = float(np.mean((pred - pred_mean) * (target - target_mean)) / variance)
    return scale, float(target_mean - scale * pred_mean)


def check_alignment(align: str, pred_kind: str) -> None:
    """ConfigError for an unknown ``align`` (ALIGNMENTS) or ``pred_kind`` (PRED_KINDS), and for a
    disparity without alignment (it has no metres): ``align_prediction``'s checks, which a caller
    may make before any frame is read."""
    if align not in ALIGNMENTS:
        raise ConfigError(f"unknown alignment {align!r}; choose one of {', '.join(ALIGNMENTS)}", setting="align")
    if pred_kind not in PRED_KINDS:
        raise ConfigError(f"unknown prediction kind {pred_kind!r}; choose one of {', '.join(PRED_KINDS)}", setting="pred_kind")
    if pred_kind == "disparity" and align == "none":
        raise ConfigError(
            "a disparity prediction (inverse depth up to scale and shift) has no metres without alignment: use --align lsq-disparity",
            setting="align",
        )


def align_prediction(pred: Any, gt: Any, mask: Any, align: str = "none", pred_kind: str = "depth") -> np.ndarray:
    """A prediction on the GT grid as depth in metres, ``pred_kind`` converted and ``align`` fitted.

    pred, gt: (H, W), gt in metres; mask: (H, W) bool, the protocol's valid pixels (the fit uses
    only those). ``pred_kind`` (PRED_KINDS): "depth" metres, "inverse" 1/metres, "disparity"
    inverse depth up to scale and shift. ``align`` (ALIGNMENTS): "none"; "median" (monodepth2's
    median scaling); "lsq" (scale and shift in depth: s * d + t ~ g); "lsq-disparity" (scale and
    shift in inverse depth: s * (1/d) + t ~ 1/g, then inverted; an aligned inverse depth that is
    not positive becomes the far cap). Non-positive values of an inverse or disparity input have
    no depth (+inf, clamped to the far cap). Raises ConfigError as ``check_alignment``, DataError
    for a fit whose scale is not positive (it would mirror the prediction) or a constant one.
    """
    check_alignment(align, pred_kind)
    pred, gt, mask = to_numpy(pred).astype(np.float64), to_numpy(gt), to_numpy(mask, bool)
    if align == "lsq-disparity":
        inverse = pred if pred_kind != "depth" else _inverse(pred)
        if not mask.any():
            return _inverse(inverse)
        scale, shift = fit_scale_shift(inverse[mask], 1.0 / gt[mask].astype(np.float64))
        if not scale > 0:
            raise DataError(f"least-squares alignment in inverse depth gave scale {scale:g} <= 0: the prediction is not an inverse depth")
        return _inverse(scale * inverse + shift)
    depth = pred if pred_kind == "depth" else _inverse(pred)
    if align == "median":
        return median_scale(depth, gt, mask)
    if align == "lsq" and mask.any():
        finite = mask & np.isfinite(depth)
        scale, shift = fit_scale_shift(depth[finite], gt[finite])
        if not scale > 0:
            raise DataError(f"least-squares alignment in depth gave scale {scale:g} <= 0: the prediction is not a depth")
        return scale * depth + shift
    return depth


def score_pair(
    pred: Any, gt: Any, protocol: Protocol, align: str = "none", accumulator: MetricAccumulator | None = None, pred_kind: str = "depth"
) -> dict[str, float] | None:
    """Post-process ``pred``, score it against ``gt`` (metres) and add it to ``accumulator`` if given.

    Returns the image's metrics, or None when it has no valid pixel (counted as skipped).
    The prediction is resized to the GT grid as it was written (``pred_kind``), converted to
    depth and aligned (``align_prediction``) on the valid pixels, then clamped: the fit comes
    after the resize and before the clamp, as in monodepth2's evaluate_depth.py.
    """
    gt = to_numpy(gt)
    if gt.ndim != 2:
        raise ValueError(f"expected one (H, W) ground-truth map, got shape {gt.shape}")
    mask = valid_mask(gt, protocol)
    resized = _resize(_as_2d_tensor(pred), gt.shape, protocol)
    if align != "none" or pred_kind != "depth":
        resized = torch.from_numpy(align_prediction(resized, gt, mask, align, pred_kind))
    accumulator = accumulator if accumulator is not None else MetricAccumulator()
    return accumulator.add(_clamp(resized, protocol), gt, mask)
