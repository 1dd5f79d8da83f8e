"""Figures a person looks at: RGB | GT | prediction | absolute error, in metres."""
from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only; never needs a display
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from .atomic import atomic_path  # noqa: E402


def save_panel(
    path: str | Path,
    image: np.ndarray,
    gt: np.ndarray,
    pred: np.ndarray,
    max_depth: float,
    title: str = "",
) -> None:
    """One PNG; GT and prediction share a depth colour bar, invalid GT pixels are grey."""
    valid = gt > 0
    gt_shown = np.ma.masked_where(~valid, gt)
    error = np.ma.masked_where(~valid, np.abs(pred - gt))
    vmax = float(min(max_depth, max(gt[valid].max() if valid.any() else max_depth, pred.max())))
    depth_cmap = matplotlib.colormaps["turbo"].with_extremes(bad="0.6")
    error_cmap = matplotlib.colormaps["magma"].with_extremes(bad="0.6")
    aspect = image.shape[1] / image.shape[0]
    fig, axes = plt.subplots(1, 4, figsize=(4 * 2.6 * aspect + 1.5, 2.9), layout="constrained")
    axes[0].imshow(image)
    axes[0].set_title("RGB")
    axes[1].imshow(gt_shown, cmap=depth_cmap, vmin=0, vmax=vmax)
    axes[1].set_title("ground truth")
    shown = axes[2].imshow(pred, cmap=depth_cmap, vmin=0, vmax=vmax)
    axes[2].set_title("prediction")
    err = axes[3].imshow(error, cmap=error_cmap, vmin=0)
    axes[3].set_title("|error|")
    for ax in axes:
        ax.set_axis_off()
    fig.colorbar(shown, ax=axes[1:3], label="depth [m]", shrink=0.9)
    fig.colorbar(err, ax=axes[3], label="|error| [m]", shrink=0.9)
    if title:
        fig.suptitle(title, fontsize=9)
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=90)
    plt.close(fig)
