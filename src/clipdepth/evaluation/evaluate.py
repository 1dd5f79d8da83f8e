"""Scoring a model on a split with the protocol: predictions restored to the GT frame first.

Every frame is scored (no dropped last batch), at the GT's own resolution.
"""
from __future__ import annotations

from typing import Callable, Iterator

import numpy as np
import torch
from torch.utils.data import Dataset
from tqdm.auto import tqdm

from ..data.sample import RGBDSample
from ..data.transforms import Preprocessor
from ..features import EncodedSplit
from ..data.captions import CaptionLookup
from ..features.memory import frame_batch
from .metrics import MetricAccumulator
from .protocol import Protocol, postprocess, valid_mask


@torch.inference_mode()
def predict_encoded(
    model: torch.nn.Module, split: EncodedSplit, preprocessor: Preprocessor, tta: bool, batch_size: int = 8
) -> Iterator[np.ndarray]:
    """Metric depth per frame of an encoded split, on the frame its GT lives on (unclamped)."""
    model.eval()
    device = model.device
    for start in range(0, len(split), batch_size):
        index = slice(start, min(start + batch_size, len(split)))
        tiles = split.tile_index(index)
        flipped = split.flipped_features(tiles, device) if tta else None
        if tta and flipped is None:
            raise ValueError("flip TTA needs features of the mirrored frames: encode the split with flip=True")
        depth, _ = model.predict_from_features(split.features(tiles, device), flipped, split.tiles)
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


FramePredictor = Callable[[list[RGBDSample]], list[tuple[np.ndarray, np.ndarray]]]
"""Frames -> (prediction, ground truth) pairs on one grid, ready for the protocol."""


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
    def predict(samples: list[RGBDSample]) -> list[tuple[np.ndarray, np.ndarray]]:
        model.eval()
        batch, depth_input = frame_batch(samples, preprocessor, captions, model.device)
        depth = model.predict_frames(batch, tta)
        pairs = []
        for sample, pred, gt_input in zip(samples, depth.float().cpu(), depth_input):
            if score_at_input:
                pairs.append((pred.numpy(), gt_input.numpy()))
            else:
                pairs.append((preprocessor.restore(pred[None], sample.depth.shape)[0].numpy(), sample.depth))
        return pairs

    return predict


def evaluate_dataset(
    dataset: Dataset, predict: FramePredictor, protocol: Protocol, batch_size: int = 8
) -> tuple[MetricAccumulator, list[str]]:
    """Score every frame of ``dataset``, a last partial batch included; returns the metrics and
    the names of the frames scored, in order."""
    acc, names = MetricAccumulator(), []
    with tqdm(total=len(dataset), desc="evaluate", unit="image", dynamic_ncols=True) as bar:
        for start in range(0, len(dataset), batch_size):
            samples = [dataset[i] for i in range(start, min(start + batch_size, len(dataset)))]
            for sample, (pred, gt) in zip(samples, predict(samples)):
                if acc.add(postprocess(pred, gt.shape, protocol), gt, valid_mask(gt, protocol)) is not None:
                    names.append(sample.name)
                bar.update(1)
    return acc, names
