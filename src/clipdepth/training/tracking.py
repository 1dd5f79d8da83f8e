"""Experiment trackers a run logs to besides its CSV records (``train.log_to``): TensorBoard, Weights &
Biases and MLflow, each an optional extra, imported only when chosen.

Each gets the same things: the step losses and learning rates every ``train.log_every`` steps (at
the global step), each epoch's means and validation metrics (at the epoch), and one validation panel
per epoch (RGB | GT | prediction | error, ``io.panels.panel_image``). Tags: ``train/<loss>``,
``lr/<optimiser>``, ``epoch/<field>`` and ``val/<metric>`` (``val/<dataset>_<metric>`` per dataset
of a mixture), ``val/panel``. A resumed run logs to a new tracker run (TensorBoard: the same folder).
"""

from __future__ import annotations

import importlib.util
import os
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

from ..config import Config, config_to_dict
from ..errors import ConfigError

# The module each tracker needs, and the extra that installs it.
MODULES = {"tensorboard": "tensorboard", "wandb": "wandb", "mlflow": "mlflow"}
PANEL_TAG = "val/panel"


def check_trackers(cfg: Config) -> None:
    """ConfigError, one line with the pip command, for a tracker of ``train.log_to`` that is not
    installed (checked before any work, without importing it)."""
    for name in cfg.train.log_to:
        module = MODULES.get(name)
        if module is not None and importlib.util.find_spec(module) is None:
            raise ConfigError(
                f"train.log_to: {name} is not installed; pip install 'clipdepth[{name}]' (or drop {name} from train.log_to)",
                setting="train.log_to",
            )


def epoch_scalars(row: dict[str, Any]) -> dict[str, float]:
    """An epoch's record (train_epochs.csv's row) as tracker tags: ``val_x`` -> ``val/x``, the
    others ``epoch/<field>``; the epoch and step numbers are the axes, words are left out."""
    out = {}
    for key, value in row.items():
        if key in ("epoch", "step") or isinstance(value, (str, bool)) or not isinstance(value, (int, float)):
            continue
        out[key.replace("val_", "val/", 1) if key.startswith("val_") else f"epoch/{key}"] = float(value)
    return out


class Tracker:
    """One tracker: scalars at the global step (``step``), an epoch's scalars and panel at the epoch."""

    def step(self, values: dict[str, float], step: int) -> None:
        raise NotImplementedError

    def epoch(self, values: dict[str, float], epoch: int, step: int) -> None:
        raise NotImplementedError

    def panel(self, image: np.ndarray, epoch: int, step: int) -> None:
        raise NotImplementedError

    def close(self) -> None:
        raise NotImplementedError


class TensorBoard(Tracker):
    def __init__(self, cfg: Config, out_dir: Path) -> None:
        from torch.utils.tensorboard import SummaryWriter

        self.writer = SummaryWriter(str(out_dir / "tensorboard"))

    def step(self, values: dict[str, float], step: int) -> None:
        for tag, value in values.items():
            self.writer.add_scalar(tag, value, step)

    def epoch(self, values: dict[str, float], epoch: int, step: int) -> None:
        self.step(values, epoch)

    def panel(self, image: np.ndarray, epoch: int, step: int) -> None:
        self.writer.add_image(PANEL_TAG, image, epoch, dataformats="HWC")

    def close(self) -> None:
        self.writer.close()


class WandB(Tracker):
    """A W&B run in ``train.wandb_mode`` (offline: under <output_dir>/wandb); epoch values are
    plotted against the ``epoch`` metric (W&B's own step must only grow: the global step)."""

    def __init__(self, cfg: Config, out_dir: Path) -> None:
        import wandb

        self.wandb = wandb
        self.run = wandb.init(
            project=cfg.train.wandb_project,
            name=cfg.train.run_name or out_dir.resolve().name,
            dir=str(out_dir),
            mode=str(cfg.train.wandb_mode),
            config=config_to_dict(cfg),
            settings=wandb.Settings(console="off"),  # clipdepth's own output stays as it is
        )
        self.run.define_metric("epoch")
        for prefix in ("epoch/*", "val/*"):
            self.run.define_metric(prefix, step_metric="epoch")

    def step(self, values: dict[str, float], step: int) -> None:
        self.run.log(values, step=step)

    def epoch(self, values: dict[str, float], epoch: int, step: int) -> None:
        self.run.log({**values, "epoch": epoch}, step=step)

    def panel(self, image: np.ndarray, epoch: int, step: int) -> None:
        self.run.log({PANEL_TAG: self.wandb.Image(image, caption=f"epoch {epoch}"), "epoch": epoch}, step=step)

    def close(self) -> None:
        self.run.finish()


class MLflow(Tracker):
    """An MLflow run of ``train.mlflow_experiment`` at ``train.mlflow_uri`` (unset: a file store in
    <output_dir>/mlruns); the config as the run's ``config.json`` artifact, panels as artifacts
    ``panels/epoch_NNN.png``."""

    def __init__(self, cfg: Config, out_dir: Path) -> None:
        from mlflow import MlflowClient
        from mlflow.entities import Metric

        self.metric = Metric
        uri = cfg.train.mlflow_uri or (out_dir / "mlruns").resolve().as_uri()
        if uri.startswith("file:"):
            # MLflow 3 keeps the file store working but refuses it unless this is set; a file store
            # is what a run without a tracking server has (its runs can be migrated to a database later).
            os.environ.setdefault("MLFLOW_ALLOW_FILE_STORE", "true")
        self.client = MlflowClient(tracking_uri=uri)
        found = self.client.get_experiment_by_name(cfg.train.mlflow_experiment)
        experiment = found.experiment_id if found is not None else self.client.create_experiment(cfg.train.mlflow_experiment)
        self.run_id = self.client.create_run(experiment, run_name=cfg.train.run_name or out_dir.resolve().name).info.run_id
        self.client.log_dict(self.run_id, config_to_dict(cfg), "config.json")

    def _log(self, values: dict[str, float], step: int) -> None:
        now = int(time.time() * 1000)
        self.client.log_batch(self.run_id, metrics=[self.metric(tag, value, now, step) for tag, value in values.items()])

    def step(self, values: dict[str, float], step: int) -> None:
        self._log(values, step)

    def epoch(self, values: dict[str, float], epoch: int, step: int) -> None:
        self._log(values, epoch)

    def panel(self, image: np.ndarray, epoch: int, step: int) -> None:
        from PIL import Image

        with tempfile.TemporaryDirectory() as folder:
            path = Path(folder) / f"epoch_{epoch:03d}.png"
            Image.fromarray(image).save(path)
            self.client.log_artifact(self.run_id, str(path), "panels")

    def close(self) -> None:
        self.client.set_terminated(self.run_id)


TRACKER_CLASSES: dict[str, type[Tracker]] = {"tensorboard": TensorBoard, "wandb": WandB, "mlflow": MLflow}


class Trackers:
    """The trackers of ``train.log_to`` (none besides the CSV records: nothing to do)."""

    def __init__(self, trackers: list[Tracker]) -> None:
        self.trackers = trackers

    @classmethod
    def open(cls, cfg: Config, out_dir: Path) -> "Trackers":
        check_trackers(cfg)
        opened: list[Tracker] = []
        try:
            for name in dict.fromkeys(cfg.train.log_to):
                if name in TRACKER_CLASSES:
                    opened.append(TRACKER_CLASSES[name](cfg, out_dir))
        except BaseException:
            cls(opened).close()
            raise
        return cls(opened)

    def __bool__(self) -> bool:
        return bool(self.trackers)

    def step(self, values: dict[str, float], step: int) -> None:
        for tracker in self.trackers:
            tracker.step(values, step)

    def epoch(self, values: dict[str, float], epoch: int, step: int) -> None:
        for tracker in self.trackers:
            tracker.epoch(values, epoch, step)

    def panel(self, image: np.ndarray | None, epoch: int, step: int) -> None:
        if image is not None:
            for tracker in self.trackers:
                tracker.panel(image, epoch, step)

    def close(self) -> None:
        for tracker in self.trackers:
            tracker.close()
