"""Figures a person looks at: RGB | GT | prediction | absolute error, in metres."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only; never needs a display
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from matplotlib.backend_bases import FigureCanvasBase  # noqa: E402

from ..errors import ConfigError  # noqa: E402
from .atomic import atomic_path  # noqa: E402

# The file types a figure can be written as: matplotlib's, by the name's suffix (any case), less
# pgf, which needs a LaTeX installation.
FIGURE_TYPES = tuple(sorted(set(FigureCanvasBase.get_supported_filetypes()) - {"pgf"}))


def check_figure_path(path: str | Path, setting: str | None = None) -> Path:
    """``path`` when its suffix is a file type a figure can be written as (``FIGURE_TYPES``), else
    a one-line ConfigError naming it and the choices (``setting``: the option that gave it). The
    writers check it before drawing: matplotlib takes the type from the suffix, and an atomic
    write's temporary name would otherwise lend it its own (``.tmp``)."""
    path = Path(path)
    suffix = path.suffix[1:].lower()
    if suffix not in FIGURE_TYPES:
        said = f"type .{suffix} is not an image type" if suffix else "has no file type"
        raise ConfigError(
            f"{path}: {said}; end the name in one of {', '.join(f'.{t}' for t in FIGURE_TYPES)} (.png for a plain image)", setting=setting
        )
    return path


def _panel_figure(image: np.ndarray, gt: np.ndarray, pred: np.ndarray, max_depth: float, title: str):
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
    return fig


def save_panel(path: str | Path, image: np.ndarray, gt: np.ndarray, pred: np.ndarray, max_depth: float, title: str = "") -> None:
    """One PNG (or another ``FIGURE_TYPES`` type, by ``path``'s suffix; ConfigError for others):
    RGB | GT | prediction | |error| (``image`` (H, W, 3) uint8, ``gt`` and ``pred`` (H, W) metres);
    GT and prediction share a depth colour bar, invalid GT pixels (0) are grey."""
    check_figure_path(path)
    fig = _panel_figure(image, gt, pred, max_depth, title)
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=90)
    plt.close(fig)


def panel_image(image: np.ndarray, gt: np.ndarray, pred: np.ndarray, max_depth: float, title: str = "") -> np.ndarray:
    """``save_panel``'s figure as an (h, w, 3) uint8 array, drawn in memory (what experiment
    trackers take)."""
    fig = _panel_figure(image, gt, pred, max_depth, title)
    fig.set_dpi(90)
    fig.canvas.draw()
    pixels = np.asarray(fig.canvas.buffer_rgba())[..., :3].copy()
    plt.close(fig)
    return pixels


def save_contact_sheet(
    path: str | Path,
    rows: list[tuple[str, np.ndarray, np.ndarray, np.ndarray]],
    max_depth: float,
    outlines: dict[str, tuple[int, int, int, int]] | None = None,
) -> None:
    """One PNG to check decoding and crops: per frame RGB, GT depth (colour bar in metres) and
    the valid mask, with rectangles (top, bottom, left, right) such as the evaluation crop drawn
    on the RGB. ``rows``: (name, image, depth, valid mask). Another ``FIGURE_TYPES`` type than PNG
    by ``path``'s suffix; ConfigError for others (``check_figure_path``)."""
    check_figure_path(path)
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
