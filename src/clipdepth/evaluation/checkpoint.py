"""Scoring a trained checkpoint on a dataset with the exact protocol: what ``clipdepth evaluate`` runs.

Every image is scored (no dropped last batch), at the GT's own resolution unless ``score_at_input``
asks for the PureCLIP-Depth reference code's way. Writes the summary JSON, per-image metrics as CSV
and a markdown table.
"""
from __future__ import annotations

import csv
import dataclasses
import hashlib
import json
from pathlib import Path

from ..config import Config, DataConfig, load_config, trained_setting, with_overrides
from ..data import DATASET_PROTOCOLS, get_dataset
from ..data.captions import caption_lookup
from ..device import resolve_device
from ..errors import ConfigError
from ..io.atomic import atomic_path, refuse_existing, write_text_atomic
from ..models import load_model
from ..models.base import checkpoint_folder
from ..training.mixture import validation_protocol
from .evaluate import evaluate_dataset, model_predictor
from .metrics import ALL_METRIC_NAMES
from .protocol import get_protocol
from .report import markdown_table

OUTPUTS = ("metrics.json", "per_image.csv", "results.md")


def evaluation_settings(
    trained: Config, dataset: str | None = None, recipe: str | None = None, protocol: str | None = None,
    data_overrides: list[str] | tuple[str, ...] = (),
) -> tuple[DataConfig, str]:
    """The data settings and protocol name ``evaluate_checkpoint`` scores a checkpoint of config
    ``trained`` with (the rules in its docstring); ConfigError for an unknown dataset."""
    recipe_cfg = load_config(recipe) if recipe else None
    name = dataset or (recipe_cfg.data.dataset if recipe_cfg else trained.data.dataset)
    if recipe_cfg is not None:
        base = recipe_cfg.data
    else:
        setting = trained_setting(trained, name)  # one of its mixture's datasets: that entry's
        base = setting[0] if setting else DataConfig(seed=trained.data.seed)
    data = with_overrides(base, [f"dataset={name}", *data_overrides])
    if name not in DATASET_PROTOCOLS:
        raise ConfigError(f"unknown dataset {name!r}; available: {sorted(DATASET_PROTOCOLS)}", setting="dataset")
    return data, protocol or (recipe_cfg.eval.protocol if recipe_cfg else DATASET_PROTOCOLS[name])


def checkpoint_digest(checkpoint: str | Path) -> str:
    """A short hash of a checkpoint's files (config and weights): a run trained again into the same
    folder has another."""
    folder = checkpoint_folder(checkpoint)
    digest = hashlib.sha256()
    for path in sorted(p for p in folder.iterdir() if p.is_file()):
        digest.update(path.name.encode())
        with path.open("rb") as f:
            for block in iter(lambda: f.read(1 << 20), b""):
                digest.update(block)
    return digest.hexdigest()[:16]


def evaluate_checkpoint(
    checkpoint: str | Path, *, dataset: str | None = None, recipe: str | None = None, protocol: str | None = None,
    data_overrides: list[str] | tuple[str, ...] = (), tta: bool | None = None, score_at_input: bool = False,
    batch_size: int = 8, out: str | Path | None = None, overwrite: bool = False, workers: int | None = None,
) -> tuple[dict, str]:
    """Score ``checkpoint`` (folder or Hub id) on the test split of ``dataset`` and write
    ``OUTPUTS`` into ``out`` (default ``outputs/eval/<dataset>``); returns the summary and the
    markdown table.

    Dataset settings (input crop, tiles) are the ``recipe``'s (e.g. ``zeroshot/sun_rgbd``), else
    the checkpoint's on a dataset it trained on (a mixture's: that dataset's, input size included),
    else plain; ``data_overrides`` (``field=value`` of
    ``data``) win. ``dataset`` and ``protocol`` default to the recipe's, else the checkpoint's
    dataset and the protocol its training validated that dataset with (so that the score agrees
    with the run's own; e.g. ``prompts_kitti``'s ``kitti_kb_released``), else the dataset's
    protocol; ``tta`` to the checkpoint's ``eval.tta``. Raises
    ``workers`` processes decode and prepare the frames (None: from the CPU count). Raises
    ConfigError for an unknown dataset or no scorable image, DataError for results of an earlier
    run in ``out`` (unless ``overwrite``) and for the data's own problems.
    """
    model = load_model(checkpoint)
    if protocol is None and recipe is None:
        protocol = validation_protocol(model.cfg, dataset or model.cfg.data.dataset)
    data, protocol_name = evaluation_settings(model.cfg, dataset, recipe, protocol, data_overrides)
    name = data.dataset
    scoring = get_protocol(protocol_name)
    if score_at_input:  # crops are defined on the GT frame, which this mode leaves
        scoring = dataclasses.replace(scoring, crop=None)
    tta = model.cfg.eval.tta if tta is None else tta

    out = Path(out or f"outputs/eval/{name}")
    refuse_existing([out / file for file in OUTPUTS], overwrite)
    frames = get_dataset(data, "test")
    model.to(resolve_device(model.cfg.device))
    setting = trained_setting(model.cfg, data.dataset)
    preprocessor = model.preprocessor(data, setting[1] if setting else None)
    predict = model_predictor(model, preprocessor, tta, score_at_input, caption_lookup(data) if model.uses_captions else None)
    acc, names = evaluate_dataset(frames, predict, scoring, batch_size, preprocessor, workers)
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
        "scored_at": "encoder input (reference code)" if score_at_input else "ground-truth resolution",
        "checkpoint": str(checkpoint),
        "checkpoint_digest": checkpoint_digest(checkpoint),
        "data": json.loads(json.dumps(dataclasses.asdict(data))),  # the settings scored with
        "encoder": model.encoder.description,
        "pixel_pooled": acc.pixel_pooled(),
    }
    write_text_atomic(out / "metrics.json", json.dumps(summary, indent=2))
    with atomic_path(out / "per_image.csv") as tmp, tmp.open("w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["name", *ALL_METRIC_NAMES])
        writer.writerows([frame, *(f"{m[k]:.6g}" for k in ALL_METRIC_NAMES)] for frame, m in zip(names, acc.per_image))
    table = markdown_table({f"{Path(checkpoint).name} on {name}": summary})
    write_text_atomic(
        out / "results.md",
        f"# {name}: protocol `{scoring.name}`, flip TTA {'on' if tta else 'off'}, "
        f"scored at {summary['scored_at']}\n\n{table}",
    )
    return summary, table
