"""Error-vs-depth figures (the PureCLIP-Depth paper's Fig. 2) from saved predictions: what
``clipdepth analyze`` writes.

Predictions and ground truth are matched by stem and read exactly as scoring does
(``evaluation.saved``); each prediction is post-processed (resize, clamp) and only the protocol's
valid pixels are used. ``analyze_saved`` writes joint_histogram.png, error_spread.png,
gt_histogram.png and analysis.json.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from ..errors import DataError
from ..io.atomic import atomic_path, refuse_existing, write_text_atomic
from .analysis import DepthErrorAccumulator, stats_to_json
from .protocol import Protocol, postprocess, valid_mask
from .saved import SavedPairs, errors_naming, match_by_stem

DEFAULT_BINS = 20
OUTPUTS = ("joint_histogram.png", "error_spread.png", "gt_histogram.png", "analysis.json")
HIST_BINS = 200  # per axis of the 2-D histogram; the GT histogram is its marginal


def accumulate(
    pairs: list[tuple[Path, Path]],
    protocol: Protocol,
    pred_scale: float | None,
    gt_scale: float | None,
    bins: int,
    kb_crop: bool = False,
    gt_format: str | None = None,
    key: str | None = None,
) -> DepthErrorAccumulator:
    """Read, post-process and mask each pair as `clipdepth score` does, adding the valid pixels
    (``key``: the array of .npz predictions or the channel of EXR ones)."""
    accumulator = DepthErrorAccumulator(np.linspace(0.0, protocol.max_depth, bins + 1), np.linspace(0.0, protocol.max_depth, HIST_BINS + 1))
    for pred, gt, gt_path in SavedPairs(pairs, protocol, pred_scale, gt_scale, kb_crop, gt_format, "analyzing", key=key):
        with errors_naming(gt_path):  # e.g. the NYU crop refusing a GT that is not 480x640
            mask = valid_mask(gt, protocol)
        pred = postprocess(pred, gt.shape, protocol)
        accumulator.add(pred[mask], gt[mask])
    return accumulator


def _save(fig, path: Path) -> None:
    import matplotlib.pyplot as plt

    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=100)
    plt.close(fig)


def plot_joint_histogram(path: Path, acc: DepthErrorAccumulator, protocol: Protocol) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.colors import LogNorm

    max_depth = protocol.max_depth
    counts = np.ma.masked_equal(acc.joint.T, 0)  # rows = prediction (y), columns = GT (x)
    fig, ax = plt.subplots(figsize=(5.6, 4.8), layout="constrained")
    vmax = max(int(acc.joint.max()), 2)
    mesh = ax.pcolormesh(acc.hist_edges, acc.hist_edges, counts, cmap="viridis", norm=LogNorm(vmin=1, vmax=vmax))
    ax.plot([0, max_depth], [0, max_depth], color="red", lw=1, ls="--", label="pred = GT")
    ax.set_xlim(0, max_depth)
    ax.set_ylim(0, max_depth)
    ax.set_aspect("equal")
    ax.set_xlabel("ground-truth depth [m]")
    ax.set_ylabel("predicted depth [m]")
    ax.set_title(f"prediction vs GT ({acc.n_pixels:,} px, {acc.n_images} images, {protocol.name})", fontsize=9)
    ax.legend(loc="upper left", fontsize=8)
    fig.colorbar(mesh, ax=ax, label="pixels (log scale)")
    _save(fig, path)


def plot_error_spread(path: Path, stats: dict[str, np.ndarray], protocol: Protocol) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    centers, edges = stats["centers"], stats["edges"]
    fig, ax = plt.subplots(figsize=(6.4, 4.2), layout="constrained")
    ax_count = ax.twinx()
    ax_count.bar(centers, stats["count"], width=np.diff(edges) * 0.9, color="0.85", label="pixels per bin")
    ax_count.set_ylabel("pixels per bin")
    ax_count.set_ylim(bottom=0)  # linear from 0, so bar heights compare honestly
    ax.set_zorder(ax_count.get_zorder() + 1)  # lines in front of the count bars
    ax.patch.set_visible(False)
    ax.plot(centers, stats["std_error"], "o-", color="tab:blue", label="std of (pred - GT), population")
    ax.plot(centers, stats["mean_error"], "s--", color="tab:orange", label="mean of (pred - GT)")
    ax.axhline(0, color="0.4", lw=0.8)
    ax.set_xlim(edges[0], edges[-1])
    ax.set_xlabel("ground-truth depth [m] (bin centre)")
    ax.set_ylabel("error [m]")
    ax.set_title(f"error spread per GT-depth bin ({len(centers)} bins, {protocol.name})", fontsize=9)
    handles = ax.get_legend_handles_labels()
    count_handles = ax_count.get_legend_handles_labels()
    ax.legend(handles[0] + count_handles[0], handles[1] + count_handles[1], loc="upper left", fontsize=8)
    _save(fig, path)


def plot_gt_histogram(path: Path, acc: DepthErrorAccumulator, protocol: Protocol) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.0, 3.8), layout="constrained")
    edges = acc.hist_edges
    ax.stairs(acc.gt_histogram(), edges, fill=True, color="tab:green", alpha=0.8)
    ax.set_xlim(0, protocol.max_depth)
    ax.set_xlabel("ground-truth depth [m]")
    ax.set_ylabel("pixels")
    ax.set_title(f"GT depth of valid pixels ({acc.n_pixels:,} px, {protocol.name})", fontsize=9)
    _save(fig, path)


def bin_table(stats: dict[str, np.ndarray]) -> str:
    """The per-bin numbers as a text table: bin, pixels, mean and std of the error."""
    lines = [f"{'bin [m]':>15}  {'pixels':>10}  {'mean err':>9}  {'std err':>9}"]
    for lo, hi, n, mean, std in zip(stats["edges"][:-1], stats["edges"][1:], stats["count"], stats["mean_error"], stats["std_error"]):
        lines.append(f"{f'{lo:.2f}-{hi:.2f}':>15}  {n:>10d}  {mean:>9.4f}  {std:>9.4f}")
    return "\n".join(lines)


def analyze_saved(
    predictions: Path,
    gt: Path,
    out: Path,
    protocol: Protocol,
    *,
    pred_scale: float | None = None,
    gt_scale: float | None = None,
    kb_crop: bool = False,
    gt_format: str | None = None,
    bins: int = DEFAULT_BINS,
    overwrite: bool = False,
    pred_pattern: str | None = None,
    key: str | None = None,
) -> tuple[dict, dict[str, np.ndarray]]:
    """Match the depth maps of folder ``predictions`` with those of ``gt`` by stem (``pred_pattern``:
    a GT stem's prediction file name, ``evaluation.saved.prediction_files``), and write the
    three figures and ``analysis.json`` (``bins`` equal GT-depth bins over 0..max depth) into
    ``out``; returns what analysis.json holds and the per-bin statistics (``bin_table`` prints them).
    DataError for missing or unmatched folders, results of an earlier run there (unless
    ``overwrite``) or no valid ground-truth pixel at all."""
    refuse_existing([out / name for name in OUTPUTS], overwrite)
    pairs = match_by_stem(predictions, gt, gt_format, pred_pattern)
    acc = accumulate(pairs, protocol, pred_scale, gt_scale, bins, kb_crop, gt_format, key)
    if acc.n_images == 0:
        raise DataError(f"{gt}: none of the {len(pairs)} ground-truth maps has a valid pixel under protocol {protocol.name}")
    stats = acc.stats()
    plot_joint_histogram(out / "joint_histogram.png", acc, protocol)
    plot_error_spread(out / "error_spread.png", stats, protocol)
    plot_gt_histogram(out / "gt_histogram.png", acc, protocol)
    result = {
        "protocol": protocol.name,
        "min_depth": protocol.min_depth,
        "max_depth": protocol.max_depth,
        "error": "pred - gt, metres",
        "std": "population standard deviation (ddof=0)",
        "binning": "by GT depth, bins [lo, hi), last bin closed",
        "n_images": acc.n_images,
        "n_skipped": acc.n_skipped,
        "n_pixels": acc.n_pixels,
        "bins": stats_to_json(stats),
    }
    write_text_atomic(out / "analysis.json", json.dumps(result, indent=2) + "\n")
    return result, stats
