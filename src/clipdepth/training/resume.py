"""The resume state of a training run: its file format, reading it back and checking it.

``<out>/checkpoints/resume/`` holds ``head.safetensors`` (head weights), ``training_state.pt``
(optimisers, any other state of the objective and every RNG the run draws from; ``torch.save``)
and ``state.json`` (counters, best-per-metric, history and the config). The folder is rewritten
atomically after every epoch; ``state.json`` is written last, so a folder holding it is complete.
Every problem is one CheckpointError (or ConfigError) line naming the file.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch

from ..config import Config, config_to_dict, first_difference, load_config_dict, upgrade_layout
from ..errors import CheckpointError, ConfigError
from ..io.atomic import atomic_dir, recover

RESUME_DIR = "resume"  # under <out>/checkpoints/
RESUME_WEIGHTS = "head.safetensors"  # head weights
RESUME_TENSORS = "training_state.pt"  # optimisers and RNG states (torch.save)
RESUME_META = "state.json"  # counters, best-per-metric, history, config
RESUME_FILES = (RESUME_WEIGHTS, RESUME_TENSORS, RESUME_META)
RESUME_FIELD_TYPES = (  # state.json's fields, their types and how a message names them
    ("config", dict, "an object"),
    ("epoch", int, "an integer >= 0"),
    ("step", int, "an integer >= 0"),
    ("since_improvement", int, "an integer >= 0"),
    ("best", dict, "an object"),
    ("history", list, "a list"),
)
# Fields a resumed run may change without changing what it computes up to where it stopped (dotted
# names): a longer run continues a shorter one.
# Settings a resumed run may change: where things go, how long it trains and where it is logged.
RESUME_IGNORED_FIELDS = (
    "output_dir",
    "train.feature_cache",
    "train.max_epochs",
    "train.log_to",
    "train.run_name",
    "train.wandb_project",
    "train.wandb_mode",
    "train.mlflow_uri",
    "train.mlflow_experiment",
)


RESUME_DAMAGED = "the resume state is damaged: start a new run with --overwrite"


def config_json(cfg: Config) -> dict:
    """The config as it reads back from JSON (tuples become lists), for comparisons."""
    return json.loads(json.dumps(config_to_dict(cfg)))


def resume_dir(out_dir: str | Path) -> Path:
    return Path(out_dir) / "checkpoints" / RESUME_DIR


def _complete(directory: Path) -> bool:
    return directory.is_dir() and all((directory / name).is_file() for name in RESUME_FILES)


def find_resume_state(out_dir: str | Path) -> Path:
    """The resume folder of a run, or a one-line CheckpointError saying what is missing.

    A rewrite of it that a kill cut short is finished first (``io.atomic.recover``).
    """
    directory = resume_dir(out_dir)
    recover(directory)
    if _complete(directory):
        return directory
    if not directory.is_dir():
        raise CheckpointError(
            f"{directory}: no resume state to continue from (a run writes it at the end of each epoch; start without --resume)"
        )
    missing = [name for name in RESUME_FILES if not (directory / name).is_file()]
    raise CheckpointError(f"{directory}: incomplete resume state (missing {', '.join(missing)})")


def read_resume_meta(out_dir: str | Path, cfg: Config) -> tuple[Path, dict]:
    """Find and read a run's resume state and check it was made with ``cfg``.

    Cheap (no tensors loaded): the CLI calls it before encoding anything.
    """
    directory = find_resume_state(out_dir)
    path = directory / RESUME_META
    damaged = RESUME_DAMAGED
    try:
        meta = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise CheckpointError(f"{path}: invalid JSON ({exc}); {damaged}") from None
    if not isinstance(meta, dict):
        raise CheckpointError(f"{path}: not a resume state (a JSON {type(meta).__name__}); {damaged}")
    missing = [k for k in ("config", "epoch", "step", "since_improvement", "best", "history") if k not in meta]
    if missing:
        raise CheckpointError(f"{path}: incomplete resume state (missing {', '.join(missing)})")
    for key, kind, what in RESUME_FIELD_TYPES:
        value = meta[key]
        if not isinstance(value, kind) or isinstance(value, bool) or (kind is int and value < 0):
            raise CheckpointError(f"{path}: {key} should be {what}, is {value!r}; {damaged}")
    if not all(isinstance(row, dict) for row in meta["history"]):
        raise CheckpointError(f"{path}: history should be a list of objects; {damaged}")
    for metric, best in meta["best"].items():
        if not (isinstance(best, dict) and isinstance(best.get("value"), (int, float)) and isinstance(best.get("epoch"), int)):
            raise CheckpointError(f'{path}: best[{metric!r}] should be {{"value": number, "epoch": integer}}, is {best!r}; {damaged}')
    saved_max = meta["config"].get("train", {}).get("max_epochs") if isinstance(meta["config"].get("train"), dict) else None
    if len(meta["history"]) != meta["epoch"] or (isinstance(saved_max, int) and meta["epoch"] > saved_max):
        raise CheckpointError(
            f"{path}: epoch {meta['epoch']} does not match its history of {len(meta['history'])} epochs or its "
            f"train.max_epochs={saved_max}; {damaged}"
        )
    try:  # fields added since the run started compare as their defaults
        saved_config = config_json(load_config_dict(meta["config"]))
    except ConfigError:
        saved_config = upgrade_layout(meta["config"])
    diff = first_difference(saved_config, config_json(cfg), RESUME_IGNORED_FIELDS)
    if diff is not None:
        diff, saved, current = diff
        raise ConfigError(
            f"--resume: config field {diff} differs from the saved run's ({current!r} now, {saved!r} in "
            f"{directory / RESUME_META}); resume with the same config or start a new run"
        )
    return directory, meta


def read_resume_tensors(directory: Path) -> tuple[dict[str, torch.Tensor], dict]:
    """The head weights and the optimiser/RNG state of a resume folder, or one CheckpointError line
    naming the damaged file. Also called before any encoding, to fail early."""
    from safetensors.torch import load_file

    try:
        weights = load_file(str(directory / RESUME_WEIGHTS))
    except Exception as exc:  # noqa: BLE001 - safetensors reports a truncated file in several ways
        reason = (str(exc).splitlines() or [type(exc).__name__])[0]
        raise CheckpointError(f"{directory / RESUME_WEIGHTS}: cannot load head weights ({reason}); {RESUME_DAMAGED}") from None
    try:
        tensors = torch.load(directory / RESUME_TENSORS, map_location="cpu", weights_only=True)
        if not isinstance(tensors, dict) or "optimizers" not in tensors or "rng" not in tensors:
            raise ValueError("not a training state")
    except Exception as exc:  # noqa: BLE001 - a truncated pickle fails in many ways
        msg = (str(exc).splitlines() or [type(exc).__name__])[0]
        raise CheckpointError(f"{directory / RESUME_TENSORS}: cannot load optimiser/RNG state ({msg}); {RESUME_DAMAGED}") from None
    return weights, tensors


def write_resume_state(out_dir: str | Path, head_state: dict[str, torch.Tensor], tensors: dict, meta: dict) -> None:
    """Replace the run's resume folder as a whole: head weights, ``tensors`` (optimisers, objective
    state, RNG states) and ``meta`` (counters, history, config)."""
    from safetensors.torch import save_file

    with atomic_dir(resume_dir(out_dir)) as tmp:
        save_file({k: v.detach().cpu().contiguous() for k, v in head_state.items()}, str(tmp / RESUME_WEIGHTS))
        torch.save(tensors, tmp / RESUME_TENSORS)
        # Written last: a folder with state.json has everything (atomic_dir guards the rest).
        (tmp / RESUME_META).write_text(json.dumps(meta, indent=2))
