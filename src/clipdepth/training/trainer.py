"""Training a model's head on encoded frames: the loop every model shares.

- What a step optimises (optimisers, learning-rate schedule, losses) is the model's objective
  (``training/objectives``): PureCLIP-Depth's alternating phases, TR2M's AdamW.
- Several training datasets (a ``mixture`` recipe, ``training/mixture.py``): each batch is one
  dataset's, drawn by weight or in turn; validation scores each with its own protocol and the
  history keeps each one's metrics (``val_<name>_<metric>``) beside their mean (``val_<metric>``),
  which is what "improved" compares.
- Validation on all nine metrics (and abs_diff) after every epoch; a head-only checkpoint is kept
  at the best of each metric of ``train.improve_metrics`` (and of ``train.select_metric``), and of
  the final epoch (``checkpoints/last``). ``model/``, the run's result, is the best
  ``train.select_metric`` epoch's, or with ``train.publish: last`` the final epoch's.
  "Improved" means ANY of ``train.improve_metrics`` improved (released: d1 d2 d3 abs_diff abs_rel
  log10 rmse); training stops after ``patience`` epochs without improvement.
- ``train.drop_last`` drops each epoch's last partial batch, as PureCLIP-Depth's released loaders
  do; without it an epoch is ceil(frames / batch) steps, and a per-step schedule spans that many.
- Speed: batches come from ``split.batches`` (device-resident arrays, or shards read a batch ahead,
  or frames decoded by workers). From a device-resident split a step does not wait for the device
  (``benchmarks/step_overhead.py`` counts 0 host syncs): its draws reach the device in one
  non-blocking copy, losses are masked reductions, and the losses stay on the device, read back
  every ``train.log_every`` steps, where non-finite ones are caught and named by their step.
  ``train.head_precision`` (auto: bf16 on CUDA) autocasts the head's step, ``train.compile_head`` compiles it.
- Exact resume: after every epoch's validation and best checkpoints, ``checkpoints/resume/`` is
  rewritten atomically with the head weights, the optimisers (and any other state of the
  objective, such as TR2M's EMA key network), the counters, the history and every RNG the run
  draws from; ``fit(resume=True)`` continues from it as if never interrupted.
"""

from __future__ import annotations

import csv
import itertools
import json
import math
import os
import shutil
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np
import torch
from torch.nn.parallel import DistributedDataParallel
from tqdm.auto import tqdm

from ..config import Config
from ..errors import CheckpointError, ConfigError, TrainingError
from ..evaluation.evaluate import ScoringTargets, predict_encoded, predicted_batches
from ..evaluation.metrics import ALL_METRIC_NAMES, LOWER_IS_BETTER, MetricAccumulator
from ..evaluation.protocol import Protocol, postprocess
from ..data.transforms import Preprocessor
from ..features import EncodedSplit
from ..io.depth_store import TrainingDepth
from ..io.atomic import atomic_dir, atomic_path, write_text_atomic, written
from ..io.panels import panel_image
from ..models import DepthModel
from ..models.base import head_autocast, load_head_state
from .objectives import objective_class
from .resume import RESUME_DAMAGED, RESUME_TENSORS, RESUME_WEIGHTS, config_json, write_resume_state
from .checks import check_config, check_cuda_graph
from .distributed import Distributed, rank_share, shard_bounds
from .mixture import SourceData, epoch_schedule, mixed_batches, steps_per_epoch
from .run_folder import RunFolder, start_run_folder
from .tracking import Trackers, epoch_scalars

LABELS = ("phase", "source")  # the words of a step record; the rest are numbers


def check_finite(records: list[dict], step: int) -> list[dict[str, float]]:
    """The records of the steps up to ``step`` read back as floats (one host sync for all);
    TrainingError naming the first step whose loss is not finite."""
    if not records:
        return []
    keys = [[k for k in r if k not in LABELS] for r in records]
    device = torch.as_tensor(records[0]["loss"]).device  # some terms are plain numbers (a loss that is off)
    values = torch.stack([torch.as_tensor(r[k]).float().to(device) for r, ks in zip(records, keys) for k in ks]).tolist()
    out, i = [], 0
    for offset, (record, ks) in enumerate(zip(records, keys)):
        floats = {**{k: record[k] for k in LABELS if k in record}, **dict(zip(ks, values[i : i + len(ks)]))}
        i += len(ks)
        if not math.isfinite(floats["loss"]):
            raise TrainingError(
                f"step {step - len(records) + offset + 1} ({record['phase']}): the loss is {floats['loss']}; training stops "
                "here (the checkpoints of the epochs before are kept). Likely causes: non-finite features or depth (a "
                "damaged feature cache: build it again), or a learning rate too high for this data"
            )
        out.append(floats)
    return out


def step_scalars(record: dict) -> dict[str, float]:
    """A step record's losses as tracker tags (``train/loss``, ``train/<term>``); its words left out."""
    return {f"train/{k}": float(v) for k, v in record.items() if k not in LABELS}


def available_bytes(device: torch.device | str) -> int:
    """Free memory of a CUDA device, or the RAM available to this process on the CPU."""
    device = torch.device(device)
    if device.type == "cuda":
        return torch.cuda.mem_get_info(device)[0]
    return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")


# Share of the free memory the training arrays may take when ``train.residency`` is "auto": the
# head, its optimiser state and the validation set need the rest.
RESIDENT_SHARE = 0.8


def resident_nbytes(split: EncodedSplit) -> int:
    """Bytes ``split.resident`` loads: ``nbytes`` and the mirrored frames' arrays (flip TTA, flip
    augmentation), which double a validation split's features."""
    flipped = split.flipped_arrays or {}
    return split.nbytes() + sum(int(np.prod(v.shape)) * v.dtype.itemsize for v in flipped.values())


def place_training_split(split, device: torch.device | str, residency: str):
    """A split (a rank's share under torchrun) where ``train.residency`` wants it: loaded once into
    ``device``'s memory ("device", or "auto" when it fits in ``RESIDENT_SHARE`` of what is free),
    else streamed: the encoder outputs read from the memory-mapped shards one batch ahead, a
    training split's 16-bit depth decoded once into host memory where it fits there (a quarter of
    NYU's token bytes; decoding it per batch takes a core from the step), else per batch too.
    Validation splits go the same way (their GT stays on the host: ``ScoringTargets``). Frames
    decoded on the fly stay so."""
    if not isinstance(split, EncodedSplit) or len(split) == 0 or split.resident_on == torch.device(device):
        return split  # (a rank's share of fewer frames than ranks may be empty)
    fits = resident_nbytes(split) <= RESIDENT_SHARE * available_bytes(device)
    if residency == "device" or (residency == "auto" and fits):
        return split.resident(device)
    depth = split.depth
    if isinstance(depth, TrainingDepth) and depth.units is None and depth.loaded_nbytes() <= RESIDENT_SHARE * available_bytes("cpu"):
        return replace(split, depth=depth.unpacked("cpu"))
    return split


def tracked_metrics(cfg: Config) -> list[str]:
    """The metrics a run keeps a best checkpoint of: ``improve_metrics`` and ``select_metric``."""
    return list(dict.fromkeys([*cfg.train.improve_metrics, cfg.train.select_metric]))


def is_better(metric: str, value: float, best: float | None) -> bool:
    if best is None or math.isnan(best):
        return not math.isnan(value)
    return value < best if LOWER_IS_BETTER[metric] else value > best


@dataclass
class TrainResult:
    best: dict[str, dict] = field(default_factory=dict)  # metric -> {"value", "epoch"}
    history: list[dict] = field(default_factory=list)
    model_dir: Path | None = None
    published_epoch: int | None = None  # the epoch model/ holds
    stopped_early: bool = False
    first_epoch: int = 1  # the first epoch this call trained: after the last finished one when resumed

    @property
    def trained(self) -> bool:
        """Whether this call trained an epoch (a resumed run that had finished trains none)."""
        return bool(self.history) and self.history[-1]["epoch"] >= self.first_epoch


class Trainer:
    def __init__(
        self, model: DepthModel, cfg: Config, sources: Sequence[SourceData], out_dir: str | Path, dist: Distributed = Distributed()
    ) -> None:
        """Train ``model``'s head on ``sources`` (one dataset, or a mixture's several); ``cfg`` has
        passed ``check_config`` (``Experiment.create``, ``single_dataset``)."""
        if not sources:
            raise ConfigError("nothing to train on: no dataset given")
        self.dist = dist
        # Under torchrun the head is wrapped so gradients are averaged across ranks; every rank
        # keeps identical weights, and rank 0 alone writes. Each rank holds only its block of every
        # split (``rank_share``): it trains on its training frames and scores its validation frames.
        check_cuda_graph(cfg, model.device)
        # "reduce-overhead" records the compiled forward and backward as CUDA graphs, replayed by one launch each
        head = (
            torch.compile(model.head, mode="reduce-overhead" if cfg.train.cuda_graph else None)
            if cfg.train.compile_head or cfg.train.cuda_graph
            else model.head
        )
        self.trained_head = DistributedDataParallel(head) if dist.enabled else head
        self.model, self.cfg = model, cfg
        self.train_sizes = [len(s.train) for s in sources]  # whole splits, as every rank's schedule counts
        self.val_sizes = [len(s.val) for s in sources]
        self.sources = [
            replace(
                s,
                **{
                    name: place_training_split(rank_share(getattr(s, name), dist.rank, dist.world_size), model.device, cfg.train.residency)
                    for name in ("train", "val")
                },
            )
            for s in sources
        ]
        self.out_dir = Path(out_dir)
        self.device = model.device
        self.objective = objective_class(cfg.model)(model, cfg, self.trained_head, self.sources[0].preprocessor)
        # Random tiles: each dataset draws from its own generator (the first's seed is a single
        # dataset's), so the draws do not depend on how the datasets' reads interleave.
        self.tile_generators = [torch.Generator().manual_seed(cfg.seed + 1 + 1000 * k) for k in range(len(sources))]
        # The objective's draws (TR2M's caption lines and contrast pixels), made on the device
        self.sample_generator = torch.Generator(self.device).manual_seed(cfg.seed + 2)
        self.epoch_generator = torch.Generator().manual_seed(cfg.seed)  # the epochs' shuffling and dataset draws
        self.step = 0
        self.val_targets: list[ScoringTargets | None] = [None] * len(sources)

    @classmethod
    def single_dataset(
        cls,
        model: DepthModel,
        cfg: Config,
        train: EncodedSplit,
        val: EncodedSplit,
        preprocessor: Preprocessor,
        protocol: Protocol,
        out_dir: str | Path,
        dist: Distributed = Distributed(),
    ) -> "Trainer":
        """A trainer on one dataset's training and validation splits."""
        check_config(cfg)
        return cls(model, cfg, [SourceData(cfg.data.dataset, train, val, preprocessor, protocol)], out_dir, dist)

    @property
    def mixed(self) -> bool:
        return len(self.sources) > 1

    def train_step(self, index: torch.Tensor, source: int = 0) -> dict[str, float]:
        """One optimisation step on the frames ``index`` of a dataset's training split; its record as floats."""
        batch = next(self.sources[source].train.batches([index], self.tile_generators[source], self.device))
        record = self._step(batch)
        return check_finite([record], self.step)[0]

    def steps(self, batches: list[torch.Tensor | tuple[int, torch.Tensor]]) -> Iterator[tuple[int, dict[str, float]]]:
        """One optimisation step per index batch, in order (a tensor: frames of the first dataset;
        (k, tensor): of dataset k); yields (global step number, record as floats) for each, the
        record naming its dataset (``source``) when there are several. The losses stay on the
        device and are read back together every ``train.log_every`` steps and after the last.
        TrainingError names the first step whose loss is not finite."""
        schedule = [b if isinstance(b, tuple) else (0, b) for b in batches]
        pending: list[dict] = []
        reads = mixed_batches([s.train for s in self.sources], schedule, self.tile_generators, self.device)
        for n, (k, batch) in enumerate(reads, 1):
            pending.append(self._step(batch))
            if self.mixed:
                pending[-1]["source"] = self.sources[k].name
            if self.step % self.cfg.train.log_every == 0 or n == len(schedule):
                first = self.step - len(pending)
                yield from enumerate(check_finite(pending, self.step), first + 1)
                pending = []

    def _head_autocast(self):
        """``train.head_precision`` for the head's forward passes (training and validation)."""
        return head_autocast(self.cfg.train.head_precision, self.device, self.cfg.precision)

    def _step(self, batch) -> dict:
        """One optimisation step; the record's losses stay on the device."""
        if self.cfg.train.cuda_graph:
            torch.compiler.cudagraph_mark_step_begin()  # the previous step's graph outputs may be overwritten
        with self._head_autocast():
            record = self.objective.step(batch, self.step, self.sample_generator)
        self.step += 1
        return record

    def validate(self) -> tuple[dict[str, float], dict[str, dict[str, float]]]:
        """Each dataset's validation metrics, and their mean over the datasets (the metrics
        themselves for one): (mean, {name: metrics}).

        Every rank scores its block of each validation split (features placed once, GT decoded once),
        ``eval.batch_size`` frames per head forward, on the device (``ScoringTargets.sums``). Its
        per-frame sums go into a table of all frames, zeros outside its block; the tables of every
        rank and dataset are summed (one all_reduce) and read back once, and each rank averages the
        per-frame metrics on the host as one process would. The sums of a frame do not depend on
        the rank that scored it, so the metrics equal a single-process validation's up to the head's
        float differences between batches of other compositions (tests/test_distributed.py: 1e-6)."""
        tables = []
        for k, source in enumerate(self.sources):
            if self.val_targets[k] is None:
                self.val_targets[k] = ScoringTargets(source.val.gt, source.protocol, self.device)
            with self._head_autocast():
                batches = predicted_batches(self.model, source.val, source.preprocessor, self.cfg.eval.tta, self.cfg.eval.batch_size)
                sums = self.val_targets[k].sums(batches)
            start, stop = shard_bounds(self.val_sizes[k], self.dist.rank, self.dist.world_size)
            table = torch.zeros((self.val_sizes[k], sums.shape[1]), dtype=sums.dtype, device=sums.device)
            table[start:stop] = sums
            tables.append(table)
        sums = self.dist.all_reduce_sum(torch.cat(tables)).cpu().numpy()
        bounds = [0, *itertools.accumulate(self.val_sizes)]
        per_source = {
            source.name: MetricAccumulator.from_sums(sums[bounds[k] : bounds[k + 1]]).mean() for k, source in enumerate(self.sources)
        }
        return {m: sum(v[m] for v in per_source.values()) / len(per_source) for m in ALL_METRIC_NAMES}, per_source

    def save(self, directory: Path, epoch: int, metrics: dict[str, float]) -> None:
        if self.dist.is_main:
            self.model.save_pretrained(
                directory,
                extra={
                    "epoch": epoch,
                    "step": self.step,
                    "val_metrics": metrics,
                    "precision": self.model.run_precisions(self.cfg.train.head_precision),
                },
            )

    def epoch_schedule(self) -> list[tuple[int, torch.Tensor]]:
        """This rank's steps of the next epoch: (dataset index, frames of its share) each
        (``mixture.epoch_schedule``)."""
        sizes = self.train_sizes
        weights = [s.weight if s.weight is not None else n for s, n in zip(self.sources, sizes)]
        return epoch_schedule(
            sizes,
            weights,
            self.cfg.train.batch_size,
            self.cfg.train.drop_last,
            self.cfg.train.mixture_order,
            self.epoch_generator,
            self.dist.rank,
            self.dist.world_size,
        )

    def _epoch_steps(self) -> int:
        """Steps per epoch and rank; ConfigError when a dataset cannot fill one batch, or gives a
        process no frame."""
        cfg, world = self.cfg.train, self.dist.world_size
        few = [(s, n) for s, n in zip(self.sources, self.train_sizes) if n < world]
        if few:
            raise ConfigError(
                f"the training split{f' of {few[0][0].name}' if self.mixed else ''} has {few[0][1]} frames, "
                f"fewer than the {world} processes: run fewer processes (--nproc_per_node) or train on more frames"
            )
        per_source = [steps_per_epoch(math.ceil(n / world), cfg.batch_size, cfg.drop_last) for n in self.train_sizes]
        short = [(s, n) for s, n, steps in zip(self.sources, self.train_sizes, per_source) if steps == 0]
        if short:
            n = math.ceil(short[0][1] / world)  # frames per rank and epoch
            raise ConfigError(
                f"train.batch_size={cfg.batch_size} with train.drop_last: the training split"
                f"{f' of {short[0][0].name}' if self.mixed else ''} has only {n} frames"
                f"{' per process' if world > 1 else ''}, not one full batch; lower the batch size "
                "or set train.drop_last=false"
            )
        if not self.mixed:
            return per_source[0]
        return len(self.sources) * max(per_source) if cfg.mixture_order == "round_robin" else sum(per_source)

    def fit(self, resume: bool = False, overwrite: bool = False, run: RunFolder | None = None) -> TrainResult:
        """Train; with ``resume`` continue from ``checkpoints/resume/`` of ``out_dir`` exactly.

        A new run refuses a folder that holds an earlier run unless ``overwrite`` (CheckpointError).
        ``run``: the folder already checked (``RunFolder.open``), whose resume and overwrite apply.
        """
        cfg = self.cfg.train
        run = run or RunFolder.open(self.out_dir, self.cfg, resume, overwrite, self.dist)
        resume = run.resume
        result = TrainResult()
        first_epoch, since_improvement, metrics = 1, 0, None
        if resume:
            state = self._load_resume_state(*run.state)
            first_epoch = result.first_epoch = state["epoch"] + 1
            since_improvement = state["since_improvement"]
            result.best, result.history = state["best"], state["history"]
            result.stopped_early = since_improvement >= cfg.patience
            metrics = state["metrics"]
            if self.dist.is_main:
                self._truncate_steps_log(self.step)
                self._write_history(result.history)
        elif self.dist.is_main:
            start_run_folder(self.out_dir)
        trackers = Trackers.open(self.cfg, self.out_dir) if self.dist.is_main else Trackers([])
        steps_path = self.out_dir / "train_steps.jsonl" if self.dist.is_main else Path(os.devnull)
        steps_log = steps_path.open("a" if resume else "w")
        steps = self._epoch_steps()
        self.objective.plan(steps, cfg.max_epochs)
        bar = tqdm(
            total=cfg.max_epochs * steps,
            initial=min(self.step, cfg.max_epochs * steps),
            desc="train",
            unit="step",
            dynamic_ncols=True,
            disable=not self.dist.is_main,
        )
        try:
            for epoch in range(first_epoch, cfg.max_epochs + 1):
                if result.stopped_early:
                    break
                self.objective.start_epoch(epoch, since_improvement)
                sums: dict[str, list[float]] = {}
                for step, record in self.steps(self.epoch_schedule()):
                    sums.setdefault(f"{record['phase']}_loss", []).append(record["loss"])
                    if step % cfg.log_every == 0 and self.dist.is_main:
                        steps_log.write(json.dumps({"step": step, "epoch": epoch, **record}) + "\n")
                        if trackers:
                            trackers.step({**step_scalars(record), **self.learning_rates()}, step)
                    bar.set_postfix(phase=record["phase"][:5], loss=f"{record['loss']:.3f}", refresh=False)
                    bar.update(1)
                metrics, per_source = self.validate()
                bettered = [m for m in tracked_metrics(self.cfg) if is_better(m, metrics[m], result.best.get(m, {}).get("value"))]
                for m in bettered:
                    result.best[m] = {"value": metrics[m], "epoch": epoch}
                    self.save(self.out_dir / "checkpoints" / f"best_{m}", epoch, metrics)
                improved = [m for m in bettered if m in cfg.improve_metrics]
                since_improvement = 0 if improved else since_improvement + 1
                row = {
                    "epoch": epoch,
                    "step": self.step,
                    "lr_factor": self.objective.lr_factor(epoch + 1, since_improvement),
                    **{k: sum(v) / len(v) for k, v in sums.items()},
                    **{f"val_{k}": metrics[k] for k in ALL_METRIC_NAMES},
                    **{f"val_{name}_{k}": m[k] for name, m in (per_source.items() if self.mixed else ()) for k in ALL_METRIC_NAMES},
                    "improved": " ".join(improved),
                }
                result.history.append(row)
                if self.dist.is_main:
                    self._write_history(result.history)
                if self.dist.is_main:
                    # The step records up to here must be on disk before the state that names them.
                    steps_log.flush()
                    os.fsync(steps_log.fileno())
                    self._save_resume_state(epoch, since_improvement, result, metrics)
                if trackers:
                    trackers.epoch(epoch_scalars(row), epoch, self.step)
                    trackers.panel(self.validation_panel(epoch), epoch, self.step)
                bar.set_description(f"train (val abs_rel {metrics['abs_rel']:.3f})")
                if since_improvement >= cfg.patience:
                    result.stopped_early = True
                    break
            if not result.history:
                raise ConfigError(f"train.max_epochs={cfg.max_epochs}: nothing to train")
            self.save(self.out_dir / "checkpoints" / "last", result.history[-1]["epoch"], metrics)
        finally:
            bar.close()
            steps_log.close()
            trackers.close()
        result.published_epoch = self._published_epoch(result)
        if self.dist.is_main:
            self._publish(result)
        self.dist.barrier()  # the other ranks return once model/ is in place
        result.model_dir = self.out_dir / "model"
        return result

    def learning_rates(self) -> dict[str, float]:
        """Each optimiser's learning rate now, ``lr/<optimiser>`` (``lr/<optimiser>/<group>`` for
        several parameter groups): host numbers, no device sync."""
        rates = {}
        for name, optimizer in self.objective.optimizers.items():
            groups = optimizer.param_groups
            for i, group in enumerate(groups):
                rates[f"lr/{name}" if len(groups) == 1 else f"lr/{name}/{i}"] = float(group["lr"])
        return rates

    def validation_panel(self, epoch: int) -> np.ndarray | None:
        """RGB | GT | prediction | error of the first dataset's first validation frame, at its GT's
        resolution (the prediction resized and clamped by its protocol), as an image for the
        trackers; None where the run has no frame to show (``SourceData.panel_frame``)."""
        source = self.sources[0]
        if source.panel_frame is None or len(source.val) == 0 or source.val.gt is None:
            return None
        sample = source.panel_frame()
        if sample.name != source.val.names[0]:  # not the frame the split holds first: nothing to compare
            return None
        with self._head_autocast(), torch.no_grad():
            pred = next(predict_encoded(self.model, source.val, source.preprocessor, self.cfg.eval.tta, 1))
        gt = np.asarray(source.val.gt[0], dtype=np.float32)
        depth = postprocess(pred.float().cpu(), gt.shape, source.protocol)
        return panel_image(sample.image, gt, depth, self.model.max_depth, f"{source.val.names[0]}, epoch {epoch}")

    # -- exact resume ----------------------------------------------------------------------
    def _rng_states(self) -> dict:
        states = {
            "epoch_generator": self.epoch_generator.get_state(),
            "tile_generator": self.tile_generators[0].get_state(),
            "mixture_tile_generators": [g.get_state() for g in self.tile_generators[1:]],
            "sample_generator": self.sample_generator.get_state(),
            "torch_cpu": torch.get_rng_state(),
        }
        if torch.cuda.is_available() and torch.cuda.is_initialized():
            states["torch_cuda"] = torch.cuda.get_rng_state_all()
        return states

    def _set_rng_states(self, states: dict) -> None:
        self.epoch_generator.set_state(states["epoch_generator"])
        self.tile_generators[0].set_state(states["tile_generator"])
        for generator, state in zip(self.tile_generators[1:], states.get("mixture_tile_generators", [])):
            generator.set_state(state)
        if "sample_generator" in states:  # absent from states written before TR2M
            self.sample_generator.set_state(states["sample_generator"])
        torch.set_rng_state(states["torch_cpu"])
        cuda = states.get("torch_cuda")
        if cuda is not None and torch.cuda.is_available() and len(cuda) == torch.cuda.device_count():
            torch.cuda.set_rng_state_all(cuda)

    def _save_resume_state(self, epoch: int, since_improvement: int, result: TrainResult, metrics: dict) -> None:
        meta = {
            "epoch": epoch,
            "step": self.step,
            "since_improvement": since_improvement,
            "best": result.best,
            "history": result.history,
            "metrics": metrics,
            "encoder_fingerprint": self.model.encoder.fingerprint(),
            "config": config_json(self.cfg),
        }
        tensors = {
            "optimizers": {k: opt.state_dict() for k, opt in self.objective.optimizers.items()},
            "objective": self.objective.extra_state(),
            "rng": self._rng_states(),
        }
        write_resume_state(self.out_dir, self.model.head.state_dict(), tensors, meta)

    def _load_resume_state(self, directory: Path, meta: dict, weights: dict, tensors: dict) -> dict:
        fingerprint = self.model.encoder.fingerprint()
        if meta.get("encoder_fingerprint") not in (None, fingerprint):
            raise CheckpointError(
                f"{directory}: the run was trained on encoder weights {meta['encoder_fingerprint']}, this encoder has {fingerprint}"
            )
        load_head_state(self.model.head, weights, str(directory / RESUME_WEIGHTS), RESUME_DAMAGED)
        try:
            for phase, opt in self.objective.optimizers.items():
                opt.load_state_dict(tensors["optimizers"][phase])
            self.objective.load_extra_state(tensors.get("objective", {}))
            self._set_rng_states(tensors["rng"])
        except Exception as exc:  # noqa: BLE001 - any failure here is a broken state file
            msg = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
            raise CheckpointError(f"{directory / RESUME_TENSORS}: cannot load optimiser/RNG state ({msg}); {RESUME_DAMAGED}") from None
        self.step = int(meta["step"])
        meta.setdefault("metrics", None)
        if meta["metrics"] is None and meta["history"]:
            last = meta["history"][-1]
            meta["metrics"] = {k: last[f"val_{k}"] for k in ALL_METRIC_NAMES if f"val_{k}" in last}
        return meta

    def _truncate_steps_log(self, step: int) -> None:
        """Keep the step records up to ``step``: those after it are redone by the resumed run."""
        path = self.out_dir / "train_steps.jsonl"
        if not path.is_file():
            return
        kept = []
        for line in path.read_text().splitlines():
            try:
                record = json.loads(line)
            except json.JSONDecodeError:
                continue  # a line cut by the kill
            if isinstance(record, dict) and record.get("step", step + 1) <= step:
                kept.append(line + "\n")
        write_text_atomic(path, "".join(kept))

    def _write_history(self, history: list[dict]) -> None:
        keys = list(dict.fromkeys(k for row in history for k in row))
        path = self.out_dir / "train_epochs.csv"
        with atomic_path(path) as tmp:
            with tmp.open("w", newline="") as f:
                writer = csv.DictWriter(f, fieldnames=keys)
                writer.writeheader()
                writer.writerows(history)

    def _published_checkpoint(self, result: TrainResult) -> str:
        """The checkpoint ``model/`` copies: ``best_<select_metric>`` with ``train.publish`` "best"
        ("last" when no epoch had a finite value), ``last`` with "last" (the learned-prompts release
        evaluates its ``last.ckpt``: ``misc_utils.get_latest_checkpoint``)."""
        metric = self.cfg.train.select_metric
        return f"best_{metric}" if self.cfg.train.publish == "best" and metric in result.best else "last"

    def _published_epoch(self, result: TrainResult) -> int:
        if self._published_checkpoint(result) == "last":
            return result.history[-1]["epoch"]
        return result.best[self.cfg.train.select_metric]["epoch"]

    def _publish(self, result: TrainResult) -> Path:
        """``model/``, the run's single result (``_published_checkpoint``), and ``best_metrics.json``
        saying which epoch it holds beside the best epoch of every tracked metric."""
        name = self._published_checkpoint(result)
        target = self.out_dir / "model"
        source = self.out_dir / "checkpoints" / name
        with atomic_dir(target) as tmp:
            for entry in written(source):  # the checkpoint's files, not the user's beside them
                shutil.copy2(source / entry, tmp / entry)
        summary = {
            "select_metric": self.cfg.train.select_metric,
            "best_per_metric": result.best,
            "published": {"checkpoint": name, "epoch": result.published_epoch},
        }
        write_text_atomic(self.out_dir / "best_metrics.json", json.dumps(summary, indent=2))
        return target
