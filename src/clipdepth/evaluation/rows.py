"""Benchmark rows that are no clipdepth checkpoint (docs/compare-rows.md): a transformers depth
model (``evaluate_hf``) or a folder of saved predictions (``score_saved``), scored on a suite's
datasets with the same settings rule, ground truth and protocol as the checkpoint rows.

A prediction folder is scored against the suite's own ground truth: each dataset label's test
frames, decoded as ``evaluate`` decodes them, are written once as depth files named by frame
(``ground_truth_folder``), and the predictions are matched to them by file stem.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..config import DataConfig
from ..data.loader import prepared_batches
from ..errors import ConfigError
from ..io.atomic import write_text_atomic
from ..io.depth_io import write_depth_png, write_npy
from ..io.depth_store import FILE_SCALES
from .checkpoint import frames_digest
from .hf_models import alignment_text
from .protocol import ALIGNMENTS, PRED_KINDS, Protocol, check_alignment
from .saved import score_saved

__all__ = ["ROW_KINDS", "ExternalRow", "ground_truth_folder", "score_prediction_folder"]

ROW_KINDS = ("transformers", "predictions")
GT_DONE = "complete.json"  # written last into a ground-truth folder: the folder is whole


@dataclass(frozen=True)
class ExternalRow:
    """One row of a benchmark table that is no clipdepth checkpoint: ``kind`` "transformers" (a Hub
    id or ``save_pretrained`` folder, run by ``evaluate_hf``) or "predictions" (a folder of depth
    maps named by frame); ``align`` and ``pred_kind`` as ``protocol.align_prediction`` takes them."""

    name: str
    kind: str
    source: str
    align: str = "none"
    pred_kind: str = "depth"

    def __post_init__(self) -> None:
        flag = "--hf" if self.kind == "transformers" else "--pred"
        if self.kind not in ROW_KINDS:
            raise ConfigError(f"row {self.name!r}: unknown kind {self.kind!r}; one of {', '.join(ROW_KINDS)}", setting="rows")
        if not self.name or not self.source:
            raise ConfigError(f"{flag} {self.name}={self.source}: expected LABEL=SOURCE[:ALIGN[:KIND]], both non-empty", setting="rows")
        check_alignment(self.align, self.pred_kind)

    @classmethod
    def parse(cls, text: str, kind: str) -> ExternalRow:
        """``LABEL=SOURCE[:ALIGN[:KIND]]`` (``--hf`` / ``--pred``): the row's name, its model id or
        folder, and optionally an alignment of ``protocol.ALIGNMENTS`` and a prediction kind of
        ``protocol.PRED_KINDS``, e.g. ``da2=depth-anything/Depth-Anything-V2-Small-hf:lsq-disparity:disparity``.
        A ``:`` inside SOURCE stays there unless what follows it is an alignment (and kind)."""
        name, sep, rest = text.partition("=")
        if not sep:
            flag = "--hf" if kind == "transformers" else "--pred"
            raise ConfigError(f"{flag} {text}: expected LABEL=SOURCE[:ALIGN[:KIND]], e.g. mine=/models/dpt:lsq-disparity:disparity")
        parts, align, pred_kind = rest.split(":"), "none", "depth"
        if len(parts) > 2 and parts[-2] in ALIGNMENTS and parts[-1] in PRED_KINDS:
            parts, align, pred_kind = parts[:-2], parts[-2], parts[-1]
        elif len(parts) > 1 and parts[-1] in ALIGNMENTS:
            parts, align = parts[:-1], parts[-1]
        return cls(name.strip(), kind, ":".join(parts), align, pred_kind)

    def predictions_for(self, label: str, n_labels: int) -> Path | None:
        """A predictions row's folder for dataset ``label``: ``<folder>/<label>/``, or for a suite
        of one label the folder itself; None where there is none."""
        folder = Path(self.source)
        if (folder / label).is_dir():
            return folder / label
        return folder if n_labels == 1 and folder.is_dir() else None

    @property
    def method(self) -> str:
        """The row's cell in the Method column: its name, its kind and alignment."""
        what = "transformers" if self.kind == "transformers" else "saved predictions"
        aligned = "" if self.align == "none" else f", {self.align} alignment"
        return f"**{self.name}** ({what}{aligned})"

    def describe(self) -> str:
        """What the row is, in a line for the table's notes and the CSV."""
        scored = alignment_text(self.align, self.pred_kind)
        if self.kind == "predictions":
            return f"predictions in `{self.source}`, matched by frame name to the suite's ground truth; {scored}"
        return (
            f"transformers model `{self.source}`, each frame fed to its own image processor and its output post-processed "
            f"by it to the ground truth's size; {scored}; no flip TTA"
        )


def _gt_as_file(depth: np.ndarray) -> tuple[np.ndarray, float | None]:
    """GT as it will be written: non-finite and negative values as 0 (no depth; never valid under a
    protocol), and the ``FILE_SCALES`` entry at which a 16-bit PNG holds it exactly as
    ``read_depth`` decodes it (uint16 / scale in float32), else None (a float32 ``.npy``)."""
    depth = np.asarray(depth, dtype=np.float32)
    depth = np.where(np.isfinite(depth) & (depth > 0), depth, np.float32(0))
    for scale in FILE_SCALES:
        units = np.rint(depth.astype(np.float64) * scale)
        if units.max(initial=0) <= np.iinfo(np.uint16).max and np.array_equal(units.astype(np.float32) / np.float32(scale), depth):
            return depth, scale
    return depth, None


def ground_truth_folder(frames, data: DataConfig, root: Path, batch_size: int = 8, workers: int | None = None) -> Path:
    """The GT of the test ``frames`` (read with the data settings ``data``) as files a prediction
    folder is scored against: ``<root>/<dataset>+<key>/<frame name>.png`` (16-bit, its scale
    declared, where that holds the decoded GT exactly) or ``.npy`` (float32 metres), where ``key``
    hashes the data settings and the frames' files (``frames_digest``). Written once; a folder
    that is complete (``GT_DONE``) is reused. DataError for a frame that cannot be read."""
    digest = frames_digest(frames, data, False)
    key = hashlib.sha256(json.dumps([dataclasses.asdict(data), digest], sort_keys=True).encode()).hexdigest()[:12]
    folder = root / f"{data.dataset}+{key}"
    if (folder / GT_DONE).is_file():
        return folder
    n = 0
    for batch in prepared_batches(frames, None, batch_size, workers):
        for frame in batch:
            depth, scale = _gt_as_file(frame.sample.depth)
            if scale is None:
                write_npy(folder / f"{frame.sample.name}.npy", depth)
            else:
                write_depth_png(folder / f"{frame.sample.name}.png", depth, scale)
            n += 1
    write_text_atomic(folder / GT_DONE, json.dumps({"dataset": data.dataset, "frames": n, "frames_digest": digest}, indent=2))
    return folder


def score_prediction_folder(row: ExternalRow, predictions: Path, gt: Path, protocol: Protocol, kb_crop: bool) -> tuple[dict, list[str]]:
    """(metrics, warnings) of the folder ``predictions`` against the GT folder ``gt`` under
    ``protocol``, read and scored as ``clipdepth score`` does (``score_saved``; a 352 x 1216
    prediction pasted into its frame with ``kb_crop``); every GT frame needs its prediction."""
    score = score_saved(predictions, gt, protocol, kb_crop=kb_crop, align=row.align, pred_kind=row.pred_kind)
    return {**score.metrics, "n_no_valid_pixel": score.n_skipped}, list(score.warnings.values())
