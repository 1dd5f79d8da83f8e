"""Error-vs-depth analysis (the PureCLIP-Depth paper's Fig. 2), pure numpy.

The error is ``pred - gt`` in metres (positive = prediction too far). Pixels are binned by their
GT depth into bins ``[e_i, e_{i+1})``, the last bin closed on the right (``np.histogram``'s rule);
pixels outside ``[e_0, e_N]`` are ignored. The per-bin spread is the POPULATION standard deviation
(ddof=0): sqrt(mean(err^2) - mean(err)^2). Empty bins have mean and std NaN.

``DepthErrorAccumulator`` keeps only per-bin counts, sums and sums of squares (float64) plus a
fixed-size 2-D histogram, so memory does not grow with the number of images.
"""

from __future__ import annotations

from typing import Any

import numpy as np


def _bin_index(gt: np.ndarray, edges: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(bin index, inside mask) of each GT value; last bin includes its right edge."""
    idx = np.searchsorted(edges, gt, side="right") - 1
    n_bins = len(edges) - 1
    idx[gt == edges[-1]] = n_bins - 1
    inside = (idx >= 0) & (idx < n_bins)
    return idx, inside


def _check_edges(edges: Any) -> np.ndarray:
    edges = np.asarray(edges, dtype=np.float64)
    if edges.ndim != 1 or len(edges) < 2 or not np.all(np.diff(edges) > 0):
        raise ValueError(f"bin edges must be a 1-D strictly increasing array of at least 2 values, got {edges!r}")
    return edges


def _bin_sums(pred: Any, gt: Any, edges: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    pred = np.asarray(pred, dtype=np.float64).ravel()
    gt = np.asarray(gt, dtype=np.float64).ravel()
    if pred.shape != gt.shape:
        raise ValueError(f"pred and gt must have the same number of pixels, got {pred.size} and {gt.size}")
    idx, inside = _bin_index(gt, edges)
    idx, err = idx[inside], (pred - gt)[inside]
    n_bins = len(edges) - 1
    count = np.bincount(idx, minlength=n_bins).astype(np.int64)
    total = np.bincount(idx, weights=err, minlength=n_bins)
    total_sq = np.bincount(idx, weights=err * err, minlength=n_bins)
    return count, total, total_sq


def _stats_from_sums(edges: np.ndarray, count: np.ndarray, total: np.ndarray, total_sq: np.ndarray) -> dict[str, np.ndarray]:
    with np.errstate(invalid="ignore", divide="ignore"):
        mean = total / count
        var = np.maximum(total_sq / count - mean * mean, 0.0)  # rounding can make it slightly negative
    mean[count == 0] = np.nan
    std = np.sqrt(var)
    std[count == 0] = np.nan
    return {"edges": edges.copy(), "centers": 0.5 * (edges[:-1] + edges[1:]), "count": count.copy(), "mean_error": mean, "std_error": std}


def depth_bin_stats(pred: Any, gt: Any, edges: Any) -> dict[str, np.ndarray]:
    """Per GT-depth bin: pixel count, mean and population std of ``pred - gt``.

    ``pred`` and ``gt`` hold the pixels to use (already post-processed and masked; any shape,
    flattened). Returns ``edges`` (N+1), ``centers``, ``count`` (int64), ``mean_error`` and
    ``std_error`` (N each, NaN where a bin is empty).
    """
    edges = _check_edges(edges)
    return _stats_from_sums(edges, *_bin_sums(pred, gt, edges))


class DepthErrorAccumulator:
    """Bin statistics and a prediction-vs-GT 2-D histogram accumulated image by image.

    ``edges``: GT-depth bin edges for the error statistics. ``hist_edges``: edges of both axes of
    the 2-D histogram (GT on axis 0, prediction on axis 1; the last bin closed on the right,
    values outside ignored).
    """

    def __init__(self, edges: Any, hist_edges: Any) -> None:
        self.edges = _check_edges(edges)
        self.hist_edges = _check_edges(hist_edges)
        n_bins, n_hist = len(self.edges) - 1, len(self.hist_edges) - 1
        self.count = np.zeros(n_bins, dtype=np.int64)
        self.total = np.zeros(n_bins, dtype=np.float64)
        self.total_sq = np.zeros(n_bins, dtype=np.float64)
        self.joint = np.zeros((n_hist, n_hist), dtype=np.int64)
        self.n_images = 0
        self.n_skipped = 0
        self.n_pixels = 0  # every pixel added, in a bin or not

    def add(self, pred: Any, gt: Any) -> None:
        """Add one image's valid pixels (``pred``, ``gt`` in metres, same size). No pixel = skipped."""
        pred = np.asarray(pred, dtype=np.float64).ravel()
        gt = np.asarray(gt, dtype=np.float64).ravel()
        if gt.size == 0:
            self.n_skipped += 1
            return
        count, total, total_sq = _bin_sums(pred, gt, self.edges)
        self.count += count
        self.total += total
        self.total_sq += total_sq
        joint, _, _ = np.histogram2d(gt, pred, bins=[self.hist_edges, self.hist_edges])
        self.joint += joint.astype(np.int64)
        self.n_images += 1
        self.n_pixels += int(gt.size)

    def gt_histogram(self) -> np.ndarray:
        """Pixel counts per ``hist_edges`` bin of GT depth (the 2-D histogram's marginal)."""
        return self.joint.sum(axis=1)

    def stats(self) -> dict[str, np.ndarray]:
        """Same keys as ``depth_bin_stats`` over every pixel added so far."""
        return _stats_from_sums(self.edges, self.count, self.total, self.total_sq)


def stats_to_json(stats: dict[str, np.ndarray]) -> dict[str, list]:
    """Lists for JSON, with empty-bin NaN written as null."""
    out: dict[str, list] = {}
    for key, values in stats.items():
        if key == "count":
            out[key] = [int(v) for v in values]
        else:
            out[key] = [None if not np.isfinite(v) else float(v) for v in values]
    return out
