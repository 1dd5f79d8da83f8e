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


def score_pair(
    pred: Any, gt: Any, protocol: Protocol, median_scaling: bool = False, accumulator: MetricAccumulator | None = None
) -> dict[str, float] | None:
    """Post-process ``pred``, score it against ``gt`` (metres) and add it to ``accumulator`` if given.

    Returns the image's metrics, or None when it has no valid pixel (counted as skipped).
    With ``median_scaling`` the scale is fitted after the resize and before the clamp, as in
    monodepth2's evaluate_depth.py.
    """
    gt = to_numpy(gt)
    if gt.ndim != 2:
        raise ValueError(f"expected one (H, W) ground-truth map, got shape {gt.shape}")
    mask = valid_mask(gt, protocol)
    resized = _resize(_as_2d_tensor(pred), gt.shape, protocol)
    if median_scaling:
        resized = torch.from_numpy(median_scale(resized, gt, mask))
    accumulator = accumulator if accumulator is not None else MetricAccumulator()
    return accumulator.add(_clamp(resized, protocol), gt, mask)
