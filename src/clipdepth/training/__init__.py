"""Training. ``train`` is one run from a config, what `clipdepth train` does; ``run.Experiment``
(the model and its datasets) and ``trainer.Trainer`` (the loop) are its parts."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from ..config import Config
    from .trainer import TrainResult


def train(cfg: Config, resume: bool = False, overwrite: bool = False) -> TrainResult:
    """Train the head ``cfg`` describes into ``cfg.output_dir``; ``resume`` continues the run there
    from its last finished epoch, ``overwrite`` replaces it. Everything that can be checked is checked
    once, before any weights are loaded or frames encoded: the config, the output folder, the run
    already in it, a resumed run's state and the datasets' train and val splits. A model with nothing
    to train (DepthCLIP) gets its checkpoint written (``TrainResult.model_dir``; no epochs); a resumed run
    that has nothing left to train (its ``train.max_epochs`` reached, or stopped early) is returned as
    it is, nothing loaded or rewritten (``TrainResult.trained`` False).

    Raises ConfigError (a bad value, ``resume`` with ``overwrite``, resuming a model with nothing to
    train), DataError (an output folder that cannot be written, a dataset that cannot be read),
    CheckpointError (a folder holding a run that is neither resumed nor overwritten, a damaged resume state).
    """
    from ..errors import ConfigError
    from ..io.paths import output_folder
    from ..models import model_class
    from ..models.base import read_checkpoint_meta
    from .distributed import from_environment
    from .run import Experiment
    from .checks import check_config
    from .run_folder import RunFolder
    from .trainer import TrainResult
    from .zero_shot import write_zero_shot_run

    model_cls = model_class(cfg.model)
    if model_cls.zero_shot:
        if resume:
            raise ConfigError(f"{model_cls.display_name} has nothing to train, so nothing to resume")
        output_folder(cfg.output_dir)
        return TrainResult(model_dir=write_zero_shot_run(cfg, overwrite))
    check_config(cfg)
    output_folder(cfg.output_dir)
    run = RunFolder.open(cfg.output_dir, cfg, resume, overwrite, from_environment())
    if run.finished(cfg):  # nothing is loaded, encoded or rewritten for a run that has nothing left to train
        meta = run.state[1]
        model_dir = run.path / "model"
        return TrainResult(
            meta["best"],
            meta["history"],
            model_dir,
            read_checkpoint_meta(model_dir).get("epoch"),
            meta["since_improvement"] >= cfg.train.patience,
            meta["epoch"] + 1,
        )
    return Experiment.create(cfg, check_data=True, checked=True).train(cfg.output_dir, run=run)[0]
