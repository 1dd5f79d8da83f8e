"""Results tables: one row per predictor, the nine metrics in the protocol's order."""

from __future__ import annotations

import csv
import io
from typing import Any

from .metrics import LOWER_IS_BETTER, METRIC_NAMES
from .protocol import Protocol

HEADERS = {
    "abs_rel": "AbsRel",
    "sq_rel": "SqRel",
    "rmse": "RMSE",
    "rmse_log": "RMSE log",
    "log10": "log10",
    "silog": "SILog",
    "d1": "d1",
    "d2": "d2",
    "d3": "d3",
}


def markdown_table(rows: dict[str, dict[str, float]]) -> str:
    """A markdown table; the header marks each metric's better direction."""
    names = [f"{HEADERS[m]} {'↓' if LOWER_IS_BETTER[m] else '↑'}" for m in METRIC_NAMES]
    lines = ["| model | " + " | ".join(names) + " | images |", "|---" * (len(names) + 2) + "|"]
    for label, metrics in rows.items():
        cells = [f"{metrics[m]:.4f}" for m in METRIC_NAMES]
        lines.append(f"| {label} | " + " | ".join(cells) + f" | {int(metrics.get('n_images', 0))} |")
    return "\n".join(lines) + "\n"


# The table's words for each alignment (protocol.ALIGNMENTS): a reader must see that the numbers are aligned.
ALIGNMENT_WORDS = {
    "none": "none (metric depth as predicted)",
    "median": "median (per-image median scaling, relative depth)",
    "lsq": "lsq (per-image least-squares scale and shift in depth, relative depth)",
    "lsq-disparity": "lsq-disparity (per-image least-squares scale and shift in inverse depth, relative depth)",
}


def text_table(result: dict[str, float], protocol: Protocol, align: str, n_skipped: int, pred_kind: str = "depth") -> str:
    """Mean metrics of saved predictions as a text table, headed by the protocol's caps and crop,
    the alignment (``ALIGNMENT_WORDS``) and, where not depth, what the predictions held."""
    crop = protocol.crop or "none"
    kind = "" if pred_kind == "depth" else f", predictions read as {pred_kind}"
    lines = [
        f"protocol {protocol.name}: {protocol.min_depth:g} < gt < {protocol.max_depth:g} m, crop {crop}, "
        f"alignment {ALIGNMENT_WORDS[align]}{kind}; mean over images"
    ]
    columns = [*METRIC_NAMES, "n_images"]
    widths = [max(len(name), 8) for name in columns]
    lines.append("  ".join(name.rjust(width) for name, width in zip(columns, widths)))
    cells = [f"{result[name]:.4f}" for name in METRIC_NAMES] + [str(result["n_images"])]
    lines.append("  ".join(cell.rjust(width) for cell, width in zip(cells, widths)))
    lines.append(
        "lower is better: "
        + " ".join(name for name in METRIC_NAMES if LOWER_IS_BETTER[name])
        + "; higher is better: "
        + " ".join(name for name in METRIC_NAMES if not LOWER_IS_BETTER[name])
    )
    if n_skipped:
        lines.append(f"skipped {n_skipped} images with no valid ground-truth pixel")
    return "\n".join(lines)


def per_image_csv(rows: list[dict[str, Any]]) -> str:
    """``SavedScore.per_image`` as CSV text: name (as evaluate's per_image.csv), the nine metrics at full precision (``repr``:
    read back, the same floats), n_valid; an image without a valid pixel has empty metric cells."""
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(["name", *METRIC_NAMES, "n_valid"])
    writer.writerows([row["name"], *(repr(float(row[m])) if m in row else "" for m in METRIC_NAMES), row["n_valid"]] for row in rows)
    return out.getvalue()
