"""Any transformers depth model scored on clipdepth's datasets with clipdepth's protocol: what
``clipdepth evaluate --hf`` and the benchmark's transformers rows run (docs/compare-rows.md).

The model (``AutoModelForDepthEstimation``) and its image processor (``AutoImageProcessor``) come
from one Hub id or local folder. Each test frame, as ``evaluate`` reads it for a checkpoint (the same
dataset, split, data settings and ground truth, chosen by the one settings rule
``evaluation_settings``), is given to the processor as it is (its resize and normalisation are the
model's own); the output is put on the frame with the processor's own
``post_process_depth_estimation(outputs, target_sizes=[(H, W)])`` and scored per image with
``protocol.score_pair``: converted from ``pred_kind`` and aligned (``align``) on the protocol's
valid pixels, clamped, and averaged over images, as every other score of clipdepth.

Metric models are scored as they are (``pred_kind="depth"``, ``align="none"``). Relative ones need
an alignment the user names: Depth Anything's and DPT's relative heads output a disparity-like
map (larger is nearer), so ``pred_kind="disparity"``, ``align="lsq-disparity"`` (the per-image
least-squares scale and shift in inverse depth of MiDaS' evaluation).
"""

from __future__ import annotations

import dataclasses
import inspect
import json
from pathlib import Path
from typing import Any

import torch

from ..data import get_dataset
from ..data.loader import PreparedFrame, prepared_batches
from ..data.transforms import fill_frame, fitting_crop_box
from ..device import resolve_device
from ..encoders.loading import at_initialisation, quiet_transformers
from ..errors import CheckpointError, ConfigError, DataError
from ..io.atomic import refuse_existing
from .checkpoint import OUTPUTS, evaluation_settings, frames_digest, settings_line, write_outputs
from .evaluate import PredictionFolder
from .metrics import MetricAccumulator
from .protocol import check_alignment, get_protocol, score_pair

__all__ = ["alignment_text", "evaluate_hf", "load_hf_model"]


def load_hf_model(model_id: str | Path, device: torch.device | str = "cpu") -> tuple[Any, Any]:
    """(model in eval mode on ``device``, its image processor) of a transformers depth model: a Hub
    id or a folder written by ``save_pretrained`` (with its ``preprocessor_config.json``).

    CheckpointError (setting ``hf``), one line naming ``model_id``: for an id that is no local folder
    and could not be fetched (offline: it needs network, or a local folder), or a folder without a
    model or processor; ConfigError for a model that is no depth-estimation model."""
    from transformers import AutoImageProcessor, AutoModelForDepthEstimation

    where = str(model_id)
    local = Path(where).is_dir()
    if local and not (Path(where) / "config.json").is_file():
        raise CheckpointError(f"{where}: no config.json: not a folder written by save_pretrained", setting="hf")
    try:
        with quiet_transformers():  # no progress bars, no retry lines: a failure is one line
            model = AutoModelForDepthEstimation.from_pretrained(where)
            processor = AutoImageProcessor.from_pretrained(where)
    except ValueError as exc:  # transformers: a config of another kind of model
        raise ConfigError(f"{where}: not a transformers depth-estimation model ({_one_line(exc)})", setting="hf") from None
    except OSError as exc:  # missing files, no network, an unknown id
        need = "a complete save_pretrained folder (config, weights, preprocessor_config.json)"
        if not local:
            need = "network access to the Hugging Face Hub, or a local folder written by save_pretrained"
        message = f"{where}: cannot load this transformers depth model: it needs {need} ({_one_line(exc)})"
        raise CheckpointError(message, setting="hf") from None
    return model.to(device).eval(), processor


def _one_line(exc: BaseException) -> str:
    """The first sentence of transformers' message, on one line (the rest is links and advice)."""
    return " ".join(str(exc).split()).split(". ")[0].rstrip(".")[:200]


def alignment_text(align: str, pred_kind: str) -> str:
    """How predictions were scored, in words: the kind they were read as and the alignment."""
    return f"prediction read as {pred_kind}, alignment {align}"


@torch.inference_mode()
def _predict(model: Any, processor: Any, frames: list[PreparedFrame], crop: list[int] | None, kb_crop: bool) -> list[torch.Tensor]:
    """Each frame's (H, W) prediction on its own frame: the part of it the data settings feed
    (``fitting_crop_box``: the whole frame unless ``data.input_crop`` / ``data.kb_crop``) through
    the processor and the model, frames of one size together, post-processed by the processor
    to that part's size; outside a crop, the frame is filled by edge replication as clipdepth's
    own models' (``Preprocessor.restore``)."""
    post = processor.post_process_depth_estimation
    takes_sources = "source_sizes" in inspect.signature(post).parameters  # processors that pad their input, and crop it off
    parts = []
    for frame in frames:
        shape = tuple(frame.sample.depth.shape)
        try:
            box = fitting_crop_box(shape, crop, kb_crop)
        except ValueError as exc:
            raise DataError(f"frame {frame.sample.name}: {exc} (see data.input_crop / data.kb_crop)") from None
        image = frame.sample.image if box is None else frame.sample.image[box[0] : box[1], box[2] : box[3]]
        parts.append((image, box, shape))
    preds: list[torch.Tensor | None] = [None] * len(frames)
    for size in dict.fromkeys(p[0].shape[:2] for p in parts):
        rows = [i for i, p in enumerate(parts) if p[0].shape[:2] == size]
        inputs = processor(images=[parts[i][0] for i in rows], return_tensors="pt").to(device=model.device, dtype=model.dtype)
        outputs = model(**inputs)
        outputs["predicted_depth"] = outputs.predicted_depth.float()
        sizes = [tuple(int(v) for v in size)] * len(rows)
        results = post(outputs, target_sizes=sizes, **({"source_sizes": sizes} if takes_sources else {}))
        for i, result in zip(rows, results):
            depth, box, shape = result["predicted_depth"].reshape(size), parts[i][1], parts[i][2]
            preds[i] = depth if box is None else fill_frame(depth[None], box, shape)[0]
    return preds  # type: ignore[return-value]


def evaluate_hf(
    model_id: str | Path,
    *,
    dataset: str | None = None,
    recipe: str | None = None,
    protocol: str | None = None,
    data_overrides: list[str] | tuple[str, ...] = (),
    align: str = "none",
    pred_kind: str = "depth",
    device: str = "auto",
    batch_size: int = 8,
    out: str | Path | None = None,
    overwrite: bool = False,
    workers: int | None = None,
    save_predictions: str | Path | None = None,
) -> tuple[dict, str]:
    """Score the transformers depth model ``model_id`` (Hub id or ``save_pretrained`` folder) on
    the test split of ``dataset`` and write ``OUTPUTS`` (metrics.json, per_image.csv, results.md)
    into ``out`` (default ``outputs/eval/<dataset>``); returns the summary and the markdown table,
    as ``evaluate_checkpoint`` does.

    The dataset (``dataset``, else the ``recipe``'s: there is no checkpoint config to take it
    from), its data settings and the protocol follow ``evaluation_settings`` with no trained
    config (``recipe``, e.g. ``zeroshot/sun_rgbd``; ``data_overrides``, ``field=value`` of
    ``data``; ``protocol``). ``pred_kind`` (``protocol.PRED_KINDS``: "depth" metres, "inverse"
    1/metres, "disparity" inverse depth up to scale and shift) and ``align``
    (``protocol.ALIGNMENTS``) say how the model's output becomes metres; both are recorded in the
    summary (``align``, ``pred_kind``) and its ``settings`` line. No flip TTA. ``device``: "auto"
    (the GPU where there is one), "cpu", "cuda:1", ...; ``workers`` processes decode the frames.
    ``save_predictions``: a folder that gets each scored frame's post-processed output, before
    alignment (``evaluate.PredictionFolder``; ``score --align/--pred-kind`` as here scores it alike).

    Raises ConfigError for an unknown dataset, alignment or kind, a disparity without alignment,
    ``data.tiles`` other than 1 (tiles are clipdepth's own models' input), or no scorable image;
    CheckpointError when the model cannot be loaded (``load_hf_model``); DataError for results of an
    earlier run in ``out`` (unless ``overwrite``), the data's own problems and an alignment that
    fails on a frame (named).
    """
    check_alignment(align, pred_kind)
    settings = evaluation_settings(None, dataset, recipe, protocol, data_overrides)
    data, name = settings.data, settings.data.dataset
    if data.tiles != 1:
        raise ConfigError(
            f"data.tiles={data.tiles}: a transformers model is fed each frame whole by its own processor; tiles are for clipdepth's models",
            setting="data.tiles",
        )
    scoring = get_protocol(settings.protocol)
    out = Path(out or f"outputs/eval/{name}")
    refuse_existing([out / file for file in OUTPUTS], overwrite)
    saved = PredictionFolder(save_predictions, overwrite) if save_predictions is not None else None
    frames = get_dataset(data, "test")
    inputs = frames_digest(frames, data, False)  # before reading: a file rewritten meanwhile shows
    model, processor = load_hf_model(model_id, resolve_device(device))
    acc, names = MetricAccumulator(), []
    for batch in prepared_batches(frames, None, batch_size, workers, keep_image=True):
        for frame, pred in zip(batch, _predict(model, processor, batch, data.input_crop, data.kb_crop)):
            try:
                scored = score_pair(pred, frame.sample.depth, scoring, align, acc, pred_kind)
            except DataError as exc:  # an alignment that fails, the NYU crop on another size: named
                raise DataError(f"frame {frame.sample.name}: {exc}", setting=exc.setting) from None
            if scored is not None:
                names.append(frame.sample.name)
            if saved is not None:
                saved.save(frame.sample.name, pred)
    if not names:
        raise ConfigError(f"no image of {name} has a valid ground-truth pixel under protocol {scoring.name}")

    part = "whole frame" if not (data.input_crop or data.kb_crop) else "KB crop" if data.kb_crop else f"crop {list(data.input_crop)}"
    model_input = f"{part}, resized and normalised by its processor {type(processor).__name__}"
    summary = {
        **acc.mean(),
        "dataset": name,
        "n_listed": getattr(frames, "n_listed", len(frames)),
        "n_without_gt": getattr(frames, "n_without_gt", 0),
        "n_no_valid_pixel": acc.n_skipped,
        "protocol": scoring.name,
        "flip_tta": False,
        "scored_at": "ground-truth resolution",
        "model": str(model_id),
        "model_class": type(model).__name__,
        "untrained_weights": at_initialisation(model),  # random weights: the benchmark's row says so
        "align": align,
        "pred_kind": pred_kind,
        "data": json.loads(json.dumps(dataclasses.asdict(data))),  # the settings scored with
        "input": model_input,
        "settings": f"{settings_line(settings, model_input, False)}; {alignment_text(align, pred_kind)}",
        "frames_digest": inputs,
        "pixel_pooled": acc.pixel_pooled(),
    }
    heading = f"{name}: protocol `{scoring.name}`, transformers model `{model_id}`, {alignment_text(align, pred_kind)}"
    return summary, write_outputs(out, summary, acc, names, f"{Path(str(model_id)).name} on {name}", heading)
