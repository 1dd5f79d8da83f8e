"""Scoring a model on a split with the protocol: predictions restored to the GT frame first.

Every frame is scored (no dropped last batch), at the GT's own resolution. Validation and
``evaluate`` score on the model's device, a batch of frames at a time (``FrameScorer``): per-frame
sums over the valid pixels stay there until the split is done, then are read back once.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset
from tqdm.auto import tqdm

from ..data.loader import PreparedFrame, prepared_batches
from ..data.transforms import Preprocessor
from ..features import EncodedSplit
from ..data.captions import CaptionLookup
from ..features.memory import frame_batch
from ..io.depth_store import FLOAT32, ScoringGT, decode_png16, file_scale
from ..errors import DataError
from ..io.depth_io import write_npy
from .metrics import MetricAccumulator, pixel_sums, to_numpy
from .protocol import Protocol, crop_mask, postprocess, postprocess_tensor, valid_mask, valid_mask_tensor


@torch.inference_mode()
def predicted_batches(
    model: torch.nn.Module, split: EncodedSplit, preprocessor: Preprocessor, tta: bool, batch_size: int = 8
) -> Iterator[list[torch.Tensor]]:
    """Metric depth of an encoded split, ``batch_size`` frames per head forward: per batch, each
    frame's (H, W) map on the frame its GT lives on (unclamped), on the model's device; the frames of
    a batch that share a size are restored together."""
    model.eval()
    device = model.device
    for start in range(0, len(split), batch_size):
        index = slice(start, min(start + batch_size, len(split)))
        tiles = split.tile_index(index)
        flipped = split.flipped_features(tiles, device) if tta else None
        if tta and flipped is None:
            raise ValueError("flip TTA needs features of the mirrored frames: encode the split with flip=True")
        depth, _ = model.predict_from_features(split.features(tiles, device), flipped, split.tiles)
        yield restore_batch(preprocessor, depth.float(), [tuple(int(v) for v in s) for s in split.shapes[index]])


def predict_encoded(
    model: torch.nn.Module, split: EncodedSplit, preprocessor: Preprocessor, tta: bool, batch_size: int = 8
) -> Iterator[torch.Tensor]:
    """``predicted_batches`` one frame at a time."""
    for batch in predicted_batches(model, split, preprocessor, tta, batch_size):
        yield from batch


def restore_batch(preprocessor: Preprocessor, depth: torch.Tensor, frames: list[tuple[int, int]]) -> list[torch.Tensor]:
    """(B, S, tiles * S) predictions -> each on its own full frame, one ``restore`` per frame size."""
    restored: list[torch.Tensor | None] = [None] * len(frames)
    for shape in dict.fromkeys(frames):
        rows = [i for i, f in enumerate(frames) if f == shape]
        # one size (the usual case): no index tensor to copy to the device
        for i, pred in zip(rows, preprocessor.restore(depth if len(rows) == len(frames) else depth[rows], shape)):
            restored[i] = pred
    return restored  # type: ignore[return-value]


def _on(array: torch.Tensor | np.ndarray, device: torch.device) -> torch.Tensor:
    """One (H, W) map (or (1, H, W)) as a tensor on ``device``."""
    tensor = torch.as_tensor(array)
    return tensor.reshape(tensor.shape[-2:]).to(device, non_blocking=True)


class FrameScorer:
    """Predictions scored against their GT on one device (docs/protocol.md), batched: the frames of
    a batch that share a size are post-processed (``postprocess_tensor``), masked and summed together
    (``metrics.pixel_sums``). Nothing is read back until ``sums`` is (once per split)."""

    def __init__(self, protocol: Protocol, device: torch.device | str, crops: dict | None = None) -> None:
        """``crops``: the crop mask per GT size on ``device``, filled here; pass the same dict to the
        scorers of every epoch so that each mask moves to the device once."""
        self.protocol, self.device = protocol, torch.device(device)
        self._crops: dict[tuple[int, int], torch.Tensor] = {} if crops is None else crops
        self._rows: list[torch.Tensor] = []
        self._frames: list[int] = []  # the frame of each summed row, in the order they were summed

    def add(self, preds: Sequence[torch.Tensor | np.ndarray], gts: Sequence[torch.Tensor | np.ndarray]) -> None:
        """One batch: each frame's prediction (resized to its GT's size here) and GT, (H, W) metres, 0 = invalid."""
        preds, gts = [_on(p, self.device) for p in preds], [_on(g, self.device) for g in gts]
        first = len(self._frames)
        shapes = [(tuple(g.shape), tuple(p.shape)) for p, g in zip(preds, gts, strict=True)]
        for gt_shape, pred_shape in dict.fromkeys(shapes):
            rows = [i for i, s in enumerate(shapes) if s == (gt_shape, pred_shape)]
            gt = torch.stack([gts[i] for i in rows])
            if gt_shape not in self._crops:
                self._crops[gt_shape] = torch.from_numpy(crop_mask(gt_shape, self.protocol.crop)).to(self.device)
            pred = postprocess_tensor(torch.stack([preds[i] for i in rows]), gt_shape, self.protocol)
            self._rows.append(pixel_sums(pred, gt, valid_mask_tensor(gt, self.protocol, self._crops[gt_shape])))
            self._frames.extend(first + i for i in rows)

    def sums(self) -> torch.Tensor:
        """(frames added, 12) ``pixel_sums`` in the order the frames were added, on the device."""
        if not self._rows:
            return torch.zeros((0, 12), dtype=torch.float64, device=self.device)
        rows = torch.cat(self._rows)
        if self._frames == sorted(self._frames):
            return rows
        return rows[torch.from_numpy(np.argsort(self._frames)).to(self.device, non_blocking=True)]


class ScoringTargets:
    """A split's GT for scoring on ``device`` every epoch, decoded once into compact host memory
    (the 16-bit values it was stored as where that is lossless, half the bytes of float32, else
    float32; pinned for a GPU) and moved there a batch at a time (non_blocking). Not kept on the
    device: a mixture's validation GT (~17.6 GB) would take the memory the training split and the
    head need, while a batch's GT (NYU: 8 x 0.6 MB) moves in well under a millisecond."""

    def __init__(self, gts: Sequence[np.ndarray], protocol: Protocol, device: torch.device | str) -> None:
        self.protocol, self.device = protocol, torch.device(device)
        self.maps = [_compact(gts, i) for i in range(len(gts))]
        if self.device.type == "cuda":
            self.maps = [(units.pin_memory(), scale) for units, scale in self.maps]
        self.crops: dict[tuple[int, int], torch.Tensor] = {}  # kept across epochs (``FrameScorer``)

    def __len__(self) -> int:
        return len(self.maps)

    def gt(self, frames: range) -> list[torch.Tensor]:
        """(H, W) float32 metres of ``frames`` on the device (the values ``decode_gt`` gives)."""
        moved = [(units.to(self.device, non_blocking=True), scale) for units, scale in (self.maps[i] for i in frames)]
        return [units if scale == FLOAT32 else (units.double() / scale).float() for units, scale in moved]

    def sums(self, batches: Iterable[Sequence[torch.Tensor]]) -> torch.Tensor:
        """(N, 12) ``pixel_sums`` of the split's frames, the predictions coming a batch at a time
        (``predicted_batches``), on the device; no host sync."""
        scorer, done = FrameScorer(self.protocol, self.device, self.crops), 0
        for preds in batches:
            scorer.add(preds, self.gt(range(done, done + len(preds))))
            done += len(preds)
        if done != len(self):
            raise ValueError(f"{done} predictions for {len(self)} ground-truth maps")
        return scorer.sums()

    def score(self, batches: Iterable[Sequence[torch.Tensor]]) -> MetricAccumulator:
        """The metrics of ``sums`` (read back once)."""
        return MetricAccumulator.from_sums(self.sums(batches))


def _compact(gts: Sequence[np.ndarray], i: int) -> tuple[torch.Tensor, float]:
    """Frame ``i``'s GT as (uint16 values, scale) where that is lossless, else (float32 metres, ``FLOAT32``)."""
    if isinstance(gts, ScoringGT):  # from the cache: its 16-bit PNG as stored, no float round trip
        scale = float(gts.scales[i])
        if scale != FLOAT32:
            units = decode_png16(gts.blobs[i])
            if units.shape != tuple(gts.shapes[i]):
                raise ValueError(f"stored depth is {units.shape}, not {tuple(gts.shapes[i])}")
            return torch.from_numpy(units), scale
    gt = np.asarray(gts[i], dtype=np.float32)
    scale = file_scale(gt)
    if scale is None:
        return torch.from_numpy(gt), FLOAT32
    return torch.from_numpy(np.round(gt.astype(np.float64) * scale).astype(np.uint16)), scale


def score_predictions(preds: Iterable[Any], gts: Sequence[np.ndarray], protocol: Protocol) -> MetricAccumulator:
    acc = MetricAccumulator()
    for pred, gt in zip(preds, gts, strict=True):
        if isinstance(pred, torch.Tensor):
            pred = pred.cpu()
        acc.add(postprocess(pred, gt.shape, protocol), gt, valid_mask(gt, protocol))
    return acc


def evaluate_encoded(
    model: torch.nn.Module,
    split: EncodedSplit,
    preprocessor: Preprocessor,
    protocol: Protocol,
    tta: bool,
    batch_size: int = 8,
    targets: ScoringTargets | None = None,
) -> MetricAccumulator:
    """Score an encoded split, ``batch_size`` frames per head forward; with ``targets`` (its GT,
    ``ScoringTargets``) scored on their device, else with numpy on the host."""
    if targets is not None:
        return targets.score(predicted_batches(model, split, preprocessor, tta, batch_size))
    return score_predictions(predict_encoded(model, split, preprocessor, tta, batch_size), split.gt, protocol)


def evaluate_constant(depth: float, gts: Sequence[np.ndarray], protocol: Protocol) -> MetricAccumulator:
    """The predictor that outputs one depth everywhere (e.g. the training-set mean)."""
    return score_predictions((np.full(gt.shape, depth, np.float32) for gt in gts), gts, protocol)


FramePredictor = Callable[[list[PreparedFrame]], list[tuple[Any, Any]]]
"""Prepared frames -> (prediction, ground truth) pairs on one grid (numpy arrays, or tensors on any
device), ready for the protocol."""


def model_predictor(
    model: torch.nn.Module, preprocessor: Preprocessor, tta: bool, score_at_input: bool = False, captions: CaptionLookup | None = None
) -> FramePredictor:
    """A model's predictions, restored to each GT's own frame and resolution (the protocol), left on
    the model's device for scoring there.

    ``score_at_input`` instead pairs the prediction at the encoder input with the mask-aware
    resized GT, as the PureCLIP-Depth released code scores (use a protocol without a crop: crops
    are defined on the GT frame) — only to compare with numbers produced that way.
    """

    @torch.inference_mode()
    def predict(frames: list[PreparedFrame]) -> list[tuple[np.ndarray, np.ndarray]]:
        model.eval()
        batch = frame_batch(frames, captions, model.device)
        depth = model.predict_frames(batch, tta).float()
        if score_at_input:
            return [(pred, f.depth) for pred, f in zip(depth, frames)]
        restored = restore_batch(preprocessor, depth, [tuple(f.sample.depth.shape) for f in frames])
        return [(pred, f.sample.depth) for pred, f in zip(restored, frames)]

    return predict


class PredictionFolder:
    """``evaluate --save-predictions DIR``: each scored frame's map as ``DIR/<frame name>.npy``,
    float32 metres, exactly what was scored (on the GT grid, before the protocol's clamp), so that
    ``clipdepth score --pred DIR`` against the same ground truth gives the same metrics."""

    def __init__(self, folder: str | Path, overwrite: bool = False) -> None:
        self.folder = Path(folder)
        if not overwrite and self.folder.is_dir() and any(self.folder.iterdir()):
            raise DataError(f"{self.folder}: holds files already; save the predictions elsewhere, or overwrite", setting="save_predictions")

    def save(self, name: str, pred: Any) -> None:
        write_npy(self.folder / f"{name}.npy", to_numpy(pred, np.float32))

    def saving(self, predict: FramePredictor) -> FramePredictor:
        """``predict`` that also saves each frame's map (one copy to the host per batch)."""

        def run(frames: list[PreparedFrame]) -> list[tuple[Any, Any]]:
            pairs = predict(frames)
            for frame, (pred, _) in zip(frames, pairs):
                self.save(frame.sample.name, pred)
            return pairs

        return run


def evaluate_dataset(
    dataset: Dataset,
    predict: FramePredictor,
    protocol: Protocol,
    batch_size: int = 8,
    preprocessor: Preprocessor | None = None,
    workers: int | None = None,
    device: torch.device | str = "cpu",
) -> tuple[MetricAccumulator, list[str]]:
    """Score every frame of ``dataset``, a last partial batch included, the frames decoded and
    prepared by ``workers`` processes with ``preprocessor`` and scored on ``device`` (the model's:
    ``FrameScorer``, batched, read back once at the end); returns the metrics and the names of the
    frames scored, in order. Raises DataError naming a frame that cannot be read."""
    scorer, names = FrameScorer(protocol, device), []
    with tqdm(total=len(dataset), desc="evaluate", unit="image", dynamic_ncols=True) as bar:
        for frames in prepared_batches(dataset, preprocessor, batch_size, workers):
            preds, gts = zip(*predict(frames))
            scorer.add(preds, gts)
            names.extend(frame.sample.name for frame in frames)
            bar.update(len(frames))
    sums = scorer.sums().cpu().numpy()
    return MetricAccumulator.from_sums(sums), [name for name, row in zip(names, sums) if row[1] > 0]
