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


def save_contact_sheet(
    path: str | Path,
    rows: list[tuple[str, np.ndarray, np.ndarray, np.ndarray]],
    max_depth: float,
    outlines: dict[str, tuple[int, int, int, int]] | None = None,
) -> None:
    """One PNG to check decoding and crops: per frame RGB, GT depth (colour bar in metres) and
    the valid mask, with rectangles (top, bottom, left, right) such as the evaluation crop drawn
    on the RGB. ``rows``: (name, image, depth, valid mask)."""
    outlines = outlines or {}
    aspect = rows[0][1].shape[1] / rows[0][1].shape[0]
    fig, axes = plt.subplots(len(rows), 3, figsize=(3 * 2.6 * aspect + 1.2, 2.6 * len(rows)), squeeze=False, layout="constrained")
    depth_cmap = matplotlib.colormaps["turbo"].with_extremes(bad="0.6")
    for (name, image, depth, valid), (ax_rgb, ax_depth, ax_mask) in zip(rows, axes):
        ax_rgb.imshow(image)
        for (label, (top, bottom, left, right)), colour in zip(outlines.items(), ("lime", "magenta", "cyan")):
            ax_rgb.add_patch(plt.Rectangle((left - 0.5, top - 0.5), right - left, bottom - top, fill=False, lw=1.2, ec=colour, label=label))
        if outlines:
            ax_rgb.legend(loc="lower left", fontsize=6, framealpha=0.6)
        ax_rgb.set_title(name, fontsize=8)
        shown = ax_depth.imshow(np.ma.masked_where(depth <= 0, depth), cmap=depth_cmap, vmin=0, vmax=max_depth)
        ax_depth.set_title(f"GT depth ({(depth > 0).mean():.0%} measured, max {depth.max():.2f} m)", fontsize=8)
        fig.colorbar(shown, ax=ax_depth, label="depth [m]", shrink=0.85)
        ax_mask.imshow(valid, cmap="gray", vmin=0, vmax=1)
        ax_mask.set_title(f"valid under the protocol ({valid.mean():.0%})", fontsize=8)
        for ax in (ax_rgb, ax_depth, ax_mask):
            ax.set_axis_off()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=80)
    plt.close(fig)
