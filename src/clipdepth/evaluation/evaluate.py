"""Scoring a model on a split with the protocol: predictions restored to the GT frame first.

Every frame is scored (no dropped last batch), at the GT's own resolution.
"""
from __future__ import annotations

from typing import Iterator

import numpy as np
import torch

from ..data.transforms import Preprocessor
from ..features import EncodedSplit
from .metrics import MetricAccumulator
from .protocol import Protocol, postprocess, valid_mask


@torch.inference_mode()
def predict_encoded(
    model: torch.nn.Module, split: EncodedSplit, preprocessor: Preprocessor, tta: bool, batch_size: int = 8
) -> Iterator[np.ndarray]:
    """Metric depth per frame of an encoded split, on the frame its GT lives on (unclamped)."""
    model.eval()
    device = next(model.head.parameters()).device
    for start in range(0, len(split), batch_size):
        index = slice(start, min(start + batch_size, len(split)))
        flipped = split.flipped_features(index, device) if tta else None
        if tta and flipped is None:
            raise ValueError("flip TTA needs features of the mirrored frames: encode the split with flip=True")
        depth, _ = model.predict_from_features(split.features(index, device), flipped)
        for pred, gt in zip(depth, split.gt[index]):
            yield preprocessor.restore(pred[None].float().cpu(), gt.shape)[0].numpy()


def score_predictions(preds: Iterator[np.ndarray], gts: list[np.ndarray], protocol: Protocol) -> MetricAccumulator:
    acc = MetricAccumulator()
    for pred, gt in zip(preds, gts, strict=True):
        acc.add(postprocess(pred, gt.shape, protocol), gt, valid_mask(gt, protocol))
    return acc


def evaluate_encoded(
    model: torch.nn.Module,
    split: EncodedSplit,
    preprocessor: Preprocessor,
    protocol: Protocol,
    tta: bool,
    batch_size: int = 8,
) -> MetricAccumulator:
    return score_predictions(predict_encoded(model, split, preprocessor, tta, batch_size), split.gt, protocol)


def evaluate_constant(depth: float, gts: list[np.ndarray], protocol: Protocol) -> MetricAccumulator:
    """The predictor that outputs one depth everywhere (e.g. the training-set mean)."""
    return score_predictions((np.full(gt.shape, depth, np.float32) for gt in gts), gts, protocol)
