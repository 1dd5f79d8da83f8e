"""Scoring a trained checkpoint on a dataset with the exact protocol: what ``clipdepth evaluate`` runs.

Every image is scored (no dropped last batch), at the GT's own resolution unless ``score_at_input``
asks for the PureCLIP-Depth released code's way. Writes the summary JSON, per-image metrics as CSV
and a markdown table.
"""

from __future__ import annotations

import csv
import dataclasses
import hashlib
import json
from pathlib import Path

from torch.utils.data import Dataset

from .. import __version__
from ..config import Config, DataConfig
from ..data import get_dataset
from ..data.captions import caption_lookup
from ..device import run_device
from ..encoders.frozen import untrained_parts
from ..errors import ConfigError
from ..features.cache import captions_digest, files_digest, frame_names
from ..io.atomic import atomic_path, refuse_existing, write_text_atomic
from ..models import load_model, model_class, read_checkpoint
from ..models.base import CONFIG_NAME, WEIGHTS_NAME, checkpoint_folder
from ..models.settings import DatasetSettings, dataset_settings
from .evaluate import PredictionFolder, evaluate_dataset, model_predictor
from .metrics import ALL_METRIC_NAMES, MetricAccumulator
from .protocol import get_protocol
from .report import markdown_table

OUTPUTS = ("metrics.json", "per_image.csv", "results.md")


def evaluation_settings(
    trained: Config | None,
    dataset: str | None = None,
    recipe: str | None = None,
    protocol: str | None = None,
    data_overrides: list[str] | tuple[str, ...] = (),
) -> DatasetSettings:
    """What a checkpoint of config ``trained`` is scored with (``models.settings.dataset_settings``,
    its model's declared recipes): the one rule ``evaluate``, ``benchmark`` and
    ``infer(crop="trained")`` share; ``trained=None`` for a model clipdepth did not train (a
    transformers model, saved predictions: the recipe given, else the dataset's defaults).
    ConfigError for an unknown dataset, recipe or field."""
    declared = model_class(trained.model).dataset_recipes if trained is not None else {}
    return dataset_settings(trained, declared, dataset, recipe, protocol, data_overrides)


def settings_line(settings: DatasetSettings, model_input: str, tta: bool) -> str:
    """One line naming the protocol (caps, evaluation crop), the model input (in words:
    ``Preprocessor.describe``), flip TTA and where the settings came from: printed with every
    evaluation's table."""
    p = get_protocol(settings.protocol)
    return (
        f"{settings.data.dataset}: protocol {p.name} ({p.min_depth:g} < gt < {p.max_depth:g} m, evaluation crop "
        f"{p.crop or 'none'}); input {model_input}; flip TTA {'on' if tta else 'off'}; "
        f"settings: {settings.source}"
    )


def checkpoint_digest(checkpoint: str | Path) -> str:
    """A short hash of a checkpoint's config and weights: a run trained again into the same folder
    has another; other files a user keeps in the folder (notes, a README) change nothing."""
    folder = checkpoint_folder(checkpoint)
    digest = hashlib.sha256()
    for path in (folder / CONFIG_NAME, folder / WEIGHTS_NAME):
        digest.update(path.name.encode())
        with path.open("rb") as f:
            for block in iter(lambda: f.read(1 << 20), b""):
                digest.update(block)
    return digest.hexdigest()[:16]


def frames_digest(frames: Dataset, data: DataConfig, uses_captions: bool) -> str | None:
    """A short hash of what the scored frames are read from: every file of every frame, by path and
    content (``features.cache.files_digest``), so that a frame added to or removed from the list, or
    a file rewritten in place, changes it, also one rewritten with its size and modification time
    kept (``cp -p``, ``touch -r``: the training feature cache, which keys on those, cannot tell);
    for a model that reads captions also the caption files' content. None for frames without files
    (synthetic scenes, a function of the data settings) when no caption file is read. Cost: the
    files are read once more, about 0.2 s for NYU's 654 test frames (~0.3 GB) from the page cache."""
    files = files_digest(frames, content=True)
    captions = captions_digest(data, frame_names(frames)) if uses_captions and data.caption_dir else None
    if files is None and captions is None:
        return None
    return hashlib.sha256(f"{files}|{captions}".encode()).hexdigest()[:16]


def evaluate_checkpoint(
    checkpoint: str | Path,
    *,
    dataset: str | None = None,
    recipe: str | None = None,
    protocol: str | None = None,
    data_overrides: list[str] | tuple[str, ...] = (),
    tta: bool | None = None,
    score_at_input: bool = False,
    batch_size: int = 8,
    out: str | Path | None = None,
    overwrite: bool = False,
    workers: int | None = None,
    device: str | None = None,
    precision: str | None = None,
    save_predictions: str | Path | None = None,
) -> tuple[dict, str]:
    """Score ``checkpoint`` (folder or Hub id) on the test split of ``dataset`` and write
    ``OUTPUTS`` into ``out`` (default ``outputs/eval/<dataset>``); returns the summary and the
    markdown table.

    The dataset, its data settings (input crop, KB crop, tiles) and the protocol follow
    ``evaluation_settings`` (``recipe``, e.g. ``zeroshot/sun_rgbd``; ``data_overrides``,
    ``field=value`` of ``data``; ``protocol``); the summary's ``settings`` line names them.
    ``tta`` defaults to the checkpoint's ``eval.tta``. ``workers`` processes decode and prepare the
    frames (None: from the CPU count). ``device`` and ``precision`` (None: the checkpoint's) are
    where and at which precision it runs (``device.run_device``). ``save_predictions``: a folder
    that gets each scored frame's map (``evaluate.PredictionFolder``). Raises ConfigError for an unknown dataset or no scorable
    image, DataError for results of an earlier run in ``out`` (unless ``overwrite``) and for the
    data's own problems.
    """
    # The checkpoint resolved once (a Hub id downloaded once) and its config read without its frozen parts:
    # the outputs and the data are checked before any of them is loaded.
    folder, _, cfg = read_checkpoint(checkpoint)
    settings = evaluation_settings(cfg, dataset, recipe, protocol, data_overrides)
    data, name = settings.data, settings.data.dataset
    scoring = get_protocol(settings.protocol)
    if score_at_input:  # crops are defined on the GT frame, which this mode leaves
        scoring = dataclasses.replace(scoring, crop=None)
    tta = cfg.eval.tta if tta is None else tta
    out = Path(out or f"outputs/eval/{name}")
    refuse_existing([out / file for file in OUTPUTS], overwrite)
    saved = PredictionFolder(save_predictions, overwrite) if save_predictions is not None else None
    frames = get_dataset(data, "test")
    runs = [f"{key}={value}" for key, value in (("device", device), ("precision", precision)) if value is not None]
    model = load_model(folder, runs)
    inputs = frames_digest(frames, data, model.uses_captions)  # before reading: a file rewritten meanwhile shows
    model.to(run_device(model.cfg))
    preprocessor = model.preprocessor(data, settings.input_size)
    predict = model_predictor(model, preprocessor, tta, score_at_input, caption_lookup(data) if model.uses_captions else None)
    predict = saved.saving(predict) if saved is not None else predict
    acc, names = evaluate_dataset(frames, predict, scoring, batch_size, preprocessor, workers, model.device)
    if not names:
        raise ConfigError(f"no image of {name} has a valid ground-truth pixel under protocol {scoring.name}")

    summary = {
        **acc.mean(),
        "dataset": name,
        "n_listed": getattr(frames, "n_listed", len(frames)),
        "n_without_gt": getattr(frames, "n_without_gt", 0),
        "n_no_valid_pixel": acc.n_skipped,
        "protocol": scoring.name,
        "flip_tta": tta,
        "scored_at": "encoder input (released code)" if score_at_input else "ground-truth resolution",
        "checkpoint": str(checkpoint),
        "checkpoint_digest": checkpoint_digest(folder),
        "data": json.loads(json.dumps(dataclasses.asdict(data))),  # the settings scored with
        "input": preprocessor.describe(),
        "settings": settings_line(settings, preprocessor.describe(), tta),
        "encoder": model.encoder.description,
        "untrained_frozen_parts": untrained_parts(model.encoder),  # from the weights (benchmark's label)
        "frames_digest": inputs,
        "pixel_pooled": acc.pixel_pooled(),
        "clipdepth_version": __version__,
    }
    heading = f"{name}: protocol `{scoring.name}`, flip TTA {'on' if tta else 'off'}, scored at {summary['scored_at']}"
    return summary, write_outputs(out, summary, acc, names, f"{Path(checkpoint).name} on {name}", heading)


def write_outputs(out: Path, summary: dict, acc: MetricAccumulator, names: list[str], label: str, heading: str) -> str:
    """One evaluation's ``OUTPUTS`` in ``out``, each written atomically: ``summary`` as metrics.json,
    the per-image metrics of ``acc`` (of the frames ``names``, in order) as per_image.csv, and
    results.md (``heading``, the summary's settings line, the table); returns the markdown table,
    whose row is ``label``."""
    write_text_atomic(out / "metrics.json", json.dumps(summary, indent=2))
    with atomic_path(out / "per_image.csv") as tmp, tmp.open("w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["name", *ALL_METRIC_NAMES])
        writer.writerows([frame, *(f"{m[k]:.6g}" for k in ALL_METRIC_NAMES)] for frame, m in zip(names, acc.per_image))
    table = markdown_table({label: summary})
    write_text_atomic(out / "results.md", f"# {heading}\n\n{summary['settings']}\n\n{table}")
    return table
