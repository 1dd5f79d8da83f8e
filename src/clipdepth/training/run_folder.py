"""A training run's output folder: what a run writes there, the refusal to start a new run over an
earlier one, the folder checked once with a resumed run's state (``RunFolder``), and the removal of
a replaced run's outputs (only what clipdepth wrote)."""

from __future__ import annotations

import contextlib
from dataclasses import dataclass, field
from pathlib import Path

from ..config import Config
from ..errors import CheckpointError, ConfigError
from ..evaluation.metrics import ALL_METRIC_NAMES
from ..io.atomic import clean_stale, remove_written
from ..models.base import CONFIG_NAME, PREPROCESSOR_NAME, WEIGHTS_NAME
from .distributed import Distributed
from .resume import RESUME_FILES, read_resume_meta, read_resume_tensors, resume_dir


# What a run writes into its folder once an epoch is done; any of them there means the folder holds
# a run worth keeping (a run that failed before its first epoch left only logs, which a new run may replace).
RUN_OUTPUTS = ("checkpoints", "model", "train_epochs.csv", "best_metrics.json")
RUN_LOGS = ("train_steps.jsonl", "tensorboard")
# Where a run records a held-out train/validation split that has no list file of the user's to be
# written beside (a folder trained without data.train_list, a shipped list): run.opened_data.
RUN_SPLIT = "split"


def check_run_folder(out_dir: str | Path, resume: bool, overwrite: bool, dist: Distributed = Distributed()) -> None:
    """Refuse to start a new run over an earlier one (its checkpoints would be replaced by
    worse ones and its resume state lost) unless asked: ``resume`` continues it, ``overwrite``
    replaces it (``start_run_folder`` then removes its outputs). Raises CheckpointError, on
    every rank of a torchrun job alike (rank 0 looks, the others follow its answer)."""
    problem = None
    found = [name for name in RUN_OUTPUTS if (Path(out_dir) / name).exists()] if dist.is_main else []
    if found and not (resume or overwrite):
        problem = (
            f"{out_dir}: holds a training run ({', '.join(found)}); continue it with --resume, replace it with "
            "--overwrite, or choose another output folder"
        )
    problem = dist.broadcast(problem)
    if problem:
        raise CheckpointError(problem)


@dataclass(frozen=True)
class RunFolder:
    """A run's output folder checked once, before any work (``check_run_folder``), with the resume
    state of a resumed run read once (its meta checked against the config, the head weights and the
    optimiser/RNG tensors): a damaged state fails before anything is encoded or built."""

    path: Path
    resume: bool = False
    overwrite: bool = False
    state: tuple[Path, dict, dict, dict] | None = field(default=None, repr=False)  # folder, meta, weights, tensors

    @classmethod
    def open(
        cls, out_dir: str | Path, cfg: Config, resume: bool = False, overwrite: bool = False, dist: Distributed = Distributed()
    ) -> "RunFolder":
        """ConfigError for ``resume`` with ``overwrite``; CheckpointError for a folder holding a run
        neither continues nor replaces, or a missing or damaged resume state (``read_resume_meta``)."""
        if resume and overwrite:
            raise ConfigError("--resume continues the run in the output folder, --overwrite replaces it: give one")
        check_run_folder(out_dir, resume, overwrite, dist)
        state = None
        if resume:
            directory, meta = read_resume_meta(out_dir, cfg)
            state = (directory, meta, *read_resume_tensors(directory))
        return cls(Path(out_dir), resume, overwrite, state)

    def finished(self, cfg: Config) -> bool:
        """Whether a resumed run has nothing left to train under ``cfg``: its last finished epoch
        reached ``train.max_epochs``, or it stopped early (``train.patience``)."""
        meta = self.state[1] if self.state else None
        return meta is not None and (meta["epoch"] >= cfg.train.max_epochs or meta["since_improvement"] >= cfg.train.patience)


# What a run writes in its folders besides the files of RUN_OUTPUTS and RUN_LOGS: checkpoint folders
# (``io.atomic.atomic_dir``, each listing what it wrote; these names for those of a clipdepth that kept
# no list) and TensorBoard's event files.
CHECKPOINT_FILES = (WEIGHTS_NAME, CONFIG_NAME, PREPROCESSOR_NAME, "README.md")
TENSORBOARD_EVENTS = "events.out.tfevents."  # how the name of every file SummaryWriter writes begins


def start_run_folder(out_dir: Path) -> None:
    """A fresh run's folder: the outputs of a run it replaces are removed, so that no checkpoint of
    the old run is mistaken for one of the new. Only what clipdepth wrote leaves (the files each
    checkpoint folder lists, TensorBoard's event files, the run's logs and records): the user's own
    files in ``model/``, ``checkpoints/`` and ``tensorboard/`` stay, and so do the folders holding them."""
    out_dir.mkdir(parents=True, exist_ok=True)
    clean_stale(out_dir)
    remove_written(out_dir / "model", CHECKPOINT_FILES)
    checkpoints = out_dir / "checkpoints"
    for name in (*(f"best_{m}" for m in ALL_METRIC_NAMES), "last"):
        remove_written(checkpoints / name, CHECKPOINT_FILES)
    remove_written(resume_dir(out_dir), RESUME_FILES)
    board = out_dir / "tensorboard"
    for path in board.glob(f"{TENSORBOARD_EVENTS}*"):
        path.unlink()
    for folder in (checkpoints, board):
        with contextlib.suppress(OSError):  # not empty: the user's files stay
            folder.rmdir()
    for name in (*RUN_OUTPUTS, *RUN_LOGS):
        if (out_dir / name).is_file():
            (out_dir / name).unlink()
