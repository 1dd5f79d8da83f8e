"""Scoring a model on a split with the protocol: predictions restored to the GT frame first.

Every frame is scored (no dropped last batch), at the GT's own resolution.
"""
from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Sequence
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
from .metrics import MetricAccumulator
from .protocol import Protocol, postprocess, postprocess_tensor, valid_mask, valid_mask_tensor


@torch.inference_mode()
def predict_encoded(
    model: torch.nn.Module, split: EncodedSplit, preprocessor: Preprocessor, tta: bool, batch_size: int = 8
) -> Iterator[torch.Tensor]:
    """Metric depth per frame of an encoded split, on the frame its GT lives on (unclamped), on
    the model's device; the frames of a batch that share a size are restored together."""
    model.eval()
    device = model.device
    for start in range(0, len(split), batch_size):
        index = slice(start, min(start + batch_size, len(split)))
        tiles = split.tile_index(index)
        flipped = split.flipped_features(tiles, device) if tta else None
        if tta and flipped is None:
            raise ValueError("flip TTA needs features of the mirrored frames: encode the split with flip=True")
        depth, _ = model.predict_from_features(split.features(tiles, device), flipped, split.tiles)
        yield from restore_batch(preprocessor, depth.float(), [tuple(int(v) for v in s) for s in split.shapes[index]])


def restore_batch(preprocessor: Preprocessor, depth: torch.Tensor, frames: list[tuple[int, int]]) -> list[torch.Tensor]:
    """(B, S, tiles * S) predictions -> each on its own full frame, one ``restore`` per frame size."""
    restored: list[torch.Tensor | None] = [None] * len(frames)
    for shape in dict.fromkeys(frames):
        rows = [i for i, f in enumerate(frames) if f == shape]
        for i, pred in zip(rows, preprocessor.restore(depth[rows], shape)):
            restored[i] = pred
    return restored  # type: ignore[return-value]


class ScoringTargets:
    """A split's GT and valid masks, decoded once and kept on ``device`` for scoring every epoch."""

    def __init__(self, gts: Sequence[np.ndarray], protocol: Protocol, device: torch.device | str) -> None:
        self.protocol = protocol
        self.gt = [torch.from_numpy(np.asarray(g, dtype=np.float32)).to(device) for g in gts]
        self.mask = [valid_mask_tensor(g, protocol) for g in self.gt]

    def score(self, preds: Iterable[torch.Tensor]) -> MetricAccumulator:
        acc = MetricAccumulator()
        for pred, gt, mask in zip(preds, self.gt, self.mask, strict=True):
            acc.add(postprocess_tensor(pred.to(gt.device), tuple(gt.shape), self.protocol), gt.double(), mask)
        return acc


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
    """Score an encoded split; with ``targets`` (its GT already on the device) scored there."""
    preds = predict_encoded(model, split, preprocessor, tta, batch_size)
    return targets.score(preds) if targets is not None else score_predictions(preds, split.gt, protocol)


def evaluate_constant(depth: float, gts: Sequence[np.ndarray], protocol: Protocol) -> MetricAccumulator:
    """The predictor that outputs one depth everywhere (e.g. the training-set mean)."""
    return score_predictions((np.full(gt.shape, depth, np.float32) for gt in gts), gts, protocol)


FramePredictor = Callable[[list[PreparedFrame]], list[tuple[np.ndarray, np.ndarray]]]
"""Prepared frames -> (prediction, ground truth) pairs on one grid, ready for the protocol."""


def model_predictor(
    model: torch.nn.Module, preprocessor: Preprocessor, tta: bool, score_at_input: bool = False,
    captions: CaptionLookup | None = None,
) -> FramePredictor:
    """A model's predictions, restored to each GT's own frame and resolution (the protocol).

    ``score_at_input`` instead pairs the prediction at the encoder input with the mask-aware
    resized GT, as the PureCLIP-Depth reference code scores (use a protocol without a crop: crops
    are defined on the GT frame) — only to compare with numbers produced that way.
    """

    @torch.inference_mode()
    def predict(frames: list[PreparedFrame]) -> list[tuple[np.ndarray, np.ndarray]]:
        model.eval()
        batch = frame_batch(frames, captions, model.device)
        depth = model.predict_frames(batch, tta).float()
        if score_at_input:
            return [(pred.cpu().numpy(), f.depth.numpy()) for pred, f in zip(depth, frames)]
        restored = restore_batch(preprocessor, depth, [tuple(f.sample.depth.shape) for f in frames])
        return [(pred.cpu().numpy(), f.sample.depth) for pred, f in zip(restored, frames)]

    return predict


def evaluate_dataset(
    dataset: Dataset, predict: FramePredictor, protocol: Protocol, batch_size: int = 8,
    preprocessor: Preprocessor | None = None, workers: int | None = None,
) -> tuple[MetricAccumulator, list[str]]:
    """Score every frame of ``dataset``, a last partial batch included, the frames decoded and
    prepared by ``workers`` processes with ``preprocessor``; returns the metrics and the names of
    the frames scored, in order. Raises DataError naming a frame that cannot be read."""
    acc, names = MetricAccumulator(), []
    with tqdm(total=len(dataset), desc="evaluate", unit="image", dynamic_ncols=True) as bar:
        for frames in prepared_batches(dataset, preprocessor, batch_size, workers):
            for frame, (pred, gt) in zip(frames, predict(frames)):
                if acc.add(postprocess(pred, gt.shape, protocol), gt, valid_mask(gt, protocol)) is not None:
                    names.append(frame.sample.name)
                bar.update(1)
    return acc, names
