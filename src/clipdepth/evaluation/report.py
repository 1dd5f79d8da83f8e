"""Results tables: one row per predictor, the nine metrics in the protocol's order."""
from __future__ import annotations

from .metrics import LOWER_IS_BETTER, METRIC_NAMES

HEADERS = {
    "abs_rel": "AbsRel", "sq_rel": "SqRel", "rmse": "RMSE", "rmse_log": "RMSE log", "log10": "log10",
    "silog": "SILog", "d1": "d1", "d2": "d2", "d3": "d3",
}


def markdown_table(rows: dict[str, dict[str, float]]) -> str:
    """A markdown table; the header marks each metric's better direction."""
    names = [f"{HEADERS[m]} {'↓' if LOWER_IS_BETTER[m] else '↑'}" for m in METRIC_NAMES]
    lines = ["| model | " + " | ".join(names) + " | images |", "|---" * (len(names) + 2) + "|"]
    for label, metrics in rows.items():
        cells = [f"{metrics[m]:.4f}" for m in METRIC_NAMES]
        lines.append(f"| {label} | " + " | ".join(cells) + f" | {int(metrics.get('n_images', 0))} |")
    return "\n".join(lines) + "\n"
