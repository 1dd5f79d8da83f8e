"""From a config to a trained head: build the model, encode the splits once, train."""

from __future__ import annotations

import shutil
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from pathlib import Path

import torch
from torch.utils.data import Dataset

from ..config import Config, DataConfig, config_to_yaml
from ..data import get_dataset, records_split, unit_warning
from ..data.transforms import Preprocessor
from ..device import run_device
from ..errors import CheckpointError, ClipdepthError, ConfigError
from ..evaluation.protocol import Protocol, get_protocol
from ..features import EncodedSplit, OnTheFlySplit, encode_split
from ..features.memory import SplitSize, frame_bytes, plan_memory
from ..features.cache import INDEX_NAME, build_cache, cache_key, files_digest, frame_names, load_cache, read_index, start_cache
from ..io.atomic import write_text_atomic
from ..data.augment import Augmentation
from ..data.captions import CaptionLookup, caption_lookup
from ..models import DepthModel, build_model, model_class
from .distributed import Distributed, from_environment
from .mixture import SourceData, SourceSettings, training_sources
from .checks import check_config
from .run_folder import RUN_SPLIT, RunFolder
from .trainer import Trainer, TrainResult, available_bytes


TRAIN_LOG = "train_log.txt"  # a run's line per training dataset: how its frames are served
# Where a run without train.feature_cache streams a split too large for memory: under its output folder,
# keyed by content as any cache, so a rerun (--resume, --overwrite) reuses it and completes an interrupted one.
STREAMED_CACHE = "feature_cache"
# What fills an empty split, by (split, data.val_source).
EMPTY_SPLIT_HINTS = {
    ("train", "held_out"): "a longer data.train_list or a smaller data.val_fraction; built-in scenes: data.train_size",
    ("train", "test_list"): "a longer data.train_list; built-in scenes: data.train_size",
    ("val", "held_out"): "a larger data.val_fraction, or data.val_source=test_list to validate on data.test_list; "
    "built-in scenes: data.val_size",
    ("val", "test_list"): "a data.test_list with ground truth, or data.val_source=held_out to validate on a "
    "data.val_fraction of data.train_list; built-in scenes: data.test_size",
}


@contextmanager
def naming(source: SourceSettings, mixed: bool) -> Iterator[None]:
    """A ClipdepthError raised inside names the mixture dataset it concerns (one dataset: as is)."""
    try:
        yield
    except ClipdepthError as exc:
        if not mixed:
            raise
        raise type(exc)(f"mixture dataset {source.name}: {exc}", setting=exc.setting) from None


def _amount(nbytes: float) -> str:
    """Bytes in words: "4.24 MB", "103 GB"."""
    for unit, size in (("GB", 1e9), ("MB", 1e6), ("kB", 1e3)):
        if nbytes >= size:
            return f"{nbytes / size:.3g} {unit}" if nbytes < 100 * size else f"{nbytes / size:,.0f} {unit}"
    return f"{nbytes:.0f} B"


def _streamed_cache_state(folder: Path, key: dict) -> str:
    """How a run's own streamed cache ``folder`` is taken up, in words: reused where it holds these
    frames and settings, made anew (the earlier one removed: this run folder's, made by clipdepth)
    where an earlier run of the folder streamed other settings there, made where there is none."""
    if not (folder / INDEX_NAME).is_file():
        return "streaming them to"
    try:
        if read_index(folder)["key"] == key:
            return "reusing (and completing) the shards in"
    except CheckpointError:  # a damaged index: as other settings
        pass
    shutil.rmtree(folder)
    return "an earlier run streamed other settings there: streaming them anew to"


def _opened_key(source: SourceSettings, split: str, data: DataConfig) -> tuple[str, str, str]:
    return source.name, split, repr(data)


def opened_data(source: SourceSettings, split_dir: Path | None, mixed: bool) -> DataConfig:
    """The data settings a run opens ``source``'s splits with: its own, but where its held-out
    validation split has no list file of the user's to be written beside (``data.records_split``: a
    folder without data.train_list, a shipped list), data.val_split_dir is ``split_dir`` (a
    mixture: ``split_dir/<dataset name>``), so that the run's folder records the split and a
    resumed run reads it back. ``split_dir`` None: as the settings say."""
    if split_dir is None or not records_split(source.data):
        return source.data
    return replace(source.data, val_split_dir=str(split_dir / source.name if mixed else split_dir))


@dataclass
class Experiment:
    cfg: Config
    model: DepthModel
    preprocessor: Preprocessor  # of the `data` section (a mixture's datasets each have their own)
    protocol: Protocol
    dist: Distributed
    sources: list[SourceSettings]  # the training datasets: the mixture's, or `data` alone
    # The random number state right after the head was built: training starts from it, so that a run's
    # numbers do not depend on what else the process did in between (the demo builds every variant first).
    rng: torch.Tensor | None = field(default=None, repr=False)
    # Splits planned without train.feature_cache: (dataset name, split, flip) -> (its size, kept in memory).
    placement: dict[tuple[str, str, bool], tuple[SplitSize, bool]] = field(default_factory=dict, repr=False)
    stream_dir: Path | None = None  # where those that do not fit are streamed; unset: <output_dir>/feature_cache
    budget: float = 0.0  # bytes the last plan let the splits take in RAM (``memory_budget`` then)
    opened: dict[tuple[str, str, str], Dataset] = field(default_factory=dict, repr=False)  # ``dataset``'s, once each
    # Where held-out splits without a list file of the user's are written (``opened_data``); None: not written.
    split_dir: Path | None = None

    @classmethod
    def create(cls, cfg: Config, check_data: bool = False, checked: bool = False) -> "Experiment":
        """The model built from ``cfg`` (its frozen parts loaded) and the run's datasets. With
        ``check_data`` (a training run) the training datasets' train and val splits are opened first,
        so that a wrong root or list fails before any weights are loaded or downloaded, held-out
        splits without a list file of the user's are recorded in ``<output_dir>/split``
        (``opened_data``), and a dataset whose depth looks read in the wrong unit says so in one line
        on stderr (``data.unit_warning``, against its protocol's cap); ``checked``: ``cfg`` has passed
        ``check_config`` already."""
        if not checked:
            check_config(cfg)
        sources = training_sources(cfg)
        protocol = get_protocol(cfg.eval.protocol)
        dist = from_environment()
        split_dir = Path(cfg.output_dir).resolve() / RUN_SPLIT if check_data else None
        opened = {}
        for source in sources:
            with naming(source, len(sources) > 1):
                cap = get_protocol(source.protocol).max_depth  # an unknown protocol fails before any work
                if not check_data:
                    continue
                data = opened_data(source, split_dir, len(sources) > 1)
                for split in ("train", "val"):
                    opened[_opened_key(source, split, data)] = get_dataset(data, split)
                train = opened[_opened_key(source, "train", data)]
                if model_class(cfg.model).uses_captions and len(train):
                    caption_lookup(data)(train[0])  # a frame without a caption fails here, before any weights load
                warning = unit_warning(train, cap)
                if warning and dist.is_main:
                    print(warning if len(sources) == 1 else f"{source.name}: {warning}", file=sys.stderr)
        torch.manual_seed(cfg.seed)  # the head's random init: the same on every rank
        model = build_model(cfg).to(run_device(cfg, dist.local_rank))
        return cls(cfg, model, model.preprocessor(), protocol, dist, sources, torch.get_rng_state(), opened=opened, split_dir=split_dir)

    def dataset(self, source: SourceSettings, split: str) -> Dataset:
        """A split of a training dataset, opened once per run (its lists read, its archive opened)."""
        data = opened_data(source, self.split_dir, len(self.sources) > 1)
        key = _opened_key(source, split, data)
        if key not in self.opened:
            self.opened[key] = get_dataset(data, split)
        return self.opened[key]

    @property
    def captions(self) -> CaptionLookup | None:
        """Caption lines per frame, for models that read them (data.caption / caption_dir)."""
        return self.captions_of(self.cfg.data)

    def captions_of(self, data: DataConfig) -> CaptionLookup | None:
        return caption_lookup(data) if self.model.uses_captions else None

    def encode(self, split: str, flip: bool, source: SourceSettings | None = None) -> EncodedSplit:
        """Frozen-part outputs of a split of ``source`` (default: the first training dataset): from
        the feature cache when one is configured (built on first use), else computed into memory
        where the split fits in ``train.memory_share`` of the RAM (``plan``), else streamed to the
        cache folder ``<output_dir>/feature_cache`` and read memory-mapped from there, as a
        configured cache is. The training split keeps its input-size depth, the others their
        full-resolution GT (``encode_split``'s purpose). A mixture caches each dataset in its own
        folder (``<cache>/<name>/<split>``), so adding a dataset reuses the others' caches."""
        source = source or self.sources[0]
        dataset = self.dataset(source, split)
        preprocessor, captions = self.model.preprocessor(source.data, source.input_size), self.captions_of(source.data)
        purpose = "train" if split == "train" else "score"
        workers, shard_size = self.cfg.train.num_workers, self.cfg.train.cache_shard_size
        root, streamed = self.cfg.train.feature_cache, None
        if not root:
            if (source.name, split, flip) not in self.placement:
                self.plan([(source, split, flip)])
            size, in_memory = self.placement[source.name, split, flip]
            if in_memory:
                label = f"{source.name} {split}" if self.cfg.mixture else split
                return encode_split(
                    self.model,
                    dataset,
                    preprocessor,
                    self.cfg.eval.batch_size,
                    flip,
                    desc=f"encode {label}",
                    captions=captions,
                    purpose=purpose,
                    workers=workers,
                )
            root = self.stream_dir or Path(self.cfg.output_dir) / STREAMED_CACHE
            # a shard is encoded in memory, then copied as it is written: an eighth of the budget leaves
            # room for both and the encoder's working memory
            shard_size, streamed = max(1, min(shard_size, int(self.budget // (8 * max(size.frame_bytes, 1))))), size
        key = cache_key(self.model, preprocessor, source.data, split, flip, frame_names(dataset), files_digest(dataset), purpose)
        folder = Path(root) / (source.name if self.cfg.mixture else "") / f"{split}{'_flip' if flip else ''}"
        if streamed is not None and self.dist.is_main:
            print(self._streaming_line(streamed, folder, _streamed_cache_state(folder, key)), file=sys.stderr)
        if self.dist.is_main:
            start_cache(folder, key, shard_size)
        self.dist.barrier()  # every rank builds its share of the shards, then reads them all
        build_cache(
            folder,
            self.model,
            dataset,
            preprocessor,
            key,
            shard_size,
            self.cfg.eval.batch_size,
            self.dist.rank,
            self.dist.world_size,
            captions,
            workers,
        )
        self.dist.barrier()
        return load_cache(folder, key)

    def memory_budget(self) -> float:
        """Bytes this process's splits may take in RAM: ``train.memory_share`` of what is available
        (``trainer.available_bytes``), shared by the processes of a torchrun job (each holds its copy)."""
        return self.cfg.train.memory_share * available_bytes("cpu") / self.dist.world_size

    def plan(self, splits: list[tuple[SourceSettings, str, bool]]) -> None:
        """Decide, before encoding any, which of ``splits`` ((dataset, split, flip), in the order they
        are encoded) go into memory and which are streamed to the cache folder (``plan_memory`` on
        each split's frames x bytes per frame, one frame of each encoded to measure it). Rank 0
        decides for every rank of a torchrun job."""
        sizes = []
        for source, split, flip in splits:
            dataset = self.dataset(source, split)
            nbytes = frame_bytes(
                self.model,
                dataset,
                self.model.preprocessor(source.data, source.input_size),
                flip,
                self.captions_of(source.data),
                "train" if split == "train" else "score",
            )
            sizes.append(SplitSize(f"{source.name} {split}{' (and mirrored)' if flip else ''}", len(dataset), nbytes))
        self.budget = self.dist.broadcast(self.memory_budget())
        fits = plan_memory(sizes, self.budget)
        for (source, split, flip), size, in_memory in zip(splits, sizes, fits, strict=True):
            self.placement[source.name, split, flip] = (size, in_memory)

    def _streaming_line(self, size: SplitSize, folder: Path, state: str) -> str:
        held = sum(s.nbytes for s, in_memory in self.placement.values() if in_memory)
        return (
            f"{size.name}: {size.frames:,} frames x {_amount(size.frame_bytes)} = {_amount(size.nbytes)} do not fit in "
            f"the {_amount(self.budget)} that train.memory_share={self.cfg.train.memory_share:g} allows of the RAM "
            f"available ({_amount(held)} of it for the splits kept in memory): {state} {folder}, reused by reruns "
            "(train.feature_cache: another folder; train.memory_share: a larger share)"
        )

    def source_data(self, source: SourceSettings) -> tuple[SourceData, str]:
        """A training dataset's splits (training: cached, or decoded and encoded at every step with
        ``train.encode_on_the_fly`` or a colour augmentation; validation: cached), preprocessing
        and protocol; and a line saying where its validation frames come from and how its training
        frames are served."""
        preprocessor = self.model.preprocessor(source.data, source.input_size)
        augmentation = Augmentation.from_data(source.data)
        if self.cfg.train.feature_cache:
            stored = "the feature cache"
        else:
            flip = augmentation is not None
            stored = (
                "memory"
                if self.placement.get((source.name, "train", flip), (None, True))[1]
                else (f"{self.stream_dir or Path(self.cfg.output_dir) / STREAMED_CACHE} (too large for train.memory_share of the RAM)")
            )
        if self.encoded_on_the_fly(augmentation):
            train = OnTheFlySplit(
                self.model,
                self.dataset(source, "train"),
                preprocessor,
                self.captions_of(source.data),
                self.cfg.train.num_workers,
                augmentation,
            )
            why = (
                "train.encode_on_the_fly"
                if self.cfg.train.encode_on_the_fly
                else (f"data.augment_colour={augmentation.colour}: augmented frames cannot come from a cache")
            )
            how = f"decoded and encoded at every step ({why})"
        else:
            train = self.encode("train", flip=augmentation is not None, source=source)
            how = f"encoded once, read from {stored}"
            if augmentation is not None:  # a flip alone: the mirrored copies are encoded beside them
                train = replace(train, flip_prob=augmentation.flip)
                how += f"; flip augmentation (p={augmentation.flip:g}) takes their mirrored copies, encoded too"
        if augmentation is None and source.data.augment:
            how += "; data.augment is on but sets nothing here (augment_flip 0, no augment_colour): no augmentation"
        if augmentation is not None and augmentation.needs_encoder:
            how += f"; flip p={augmentation.flip:g}, {augmentation.colour} colour change p={augmentation.colour_prob:g}"
        val = self.encode("val", flip=self.cfg.eval.tta, source=source)
        frames = self.dataset(source, "val")
        data = SourceData(source.name, train, val, preprocessor, get_protocol(source.protocol), source.weight, lambda: frames[0])
        whence = "of the test split" if source.data.val_source == "test_list" else "held out"
        validated = f"{len(val)} validation frames {whence} (data.val_source={source.data.val_source})"
        recorded = opened_data(source, self.split_dir, len(self.sources) > 1).val_split_dir
        if recorded != source.data.val_split_dir:
            validated += f", the split recorded in {recorded}"
        return data, f"{source.name}: {validated}, {len(train)} training frames {how}"

    def encoded_on_the_fly(self, augmentation: Augmentation | None) -> bool:
        """Whether a dataset's training frames are encoded at every step rather than once."""
        return self.cfg.train.encode_on_the_fly or (augmentation is not None and augmentation.needs_encoder)

    def encoded_splits(self, source: SourceSettings) -> list[tuple[SourceSettings, str, bool]]:
        """(dataset, split, flip) of what a run encodes once for ``source``, in ``source_data``'s order."""
        augmentation = Augmentation.from_data(source.data)
        train = [] if self.encoded_on_the_fly(augmentation) else [(source, "train", augmentation is not None)]
        return [*train, (source, "val", self.cfg.eval.tta)]

    def train(
        self, out_dir: str | Path, resume: bool = False, overwrite: bool = False, run: RunFolder | None = None
    ) -> tuple[TrainResult, EncodedSplit | OnTheFlySplit]:
        """Train the head; returns the result and the (first dataset's) training split (for baselines).
        A folder holding an earlier run is refused unless ``resume`` or ``overwrite``; ``run``: the
        folder already checked (``RunFolder.open``), whose resume and overwrite apply."""
        out_dir = Path(out_dir)
        run = run or RunFolder.open(out_dir, self.cfg, resume, overwrite, self.dist)
        self.split_dir = self.split_dir or out_dir.resolve() / RUN_SPLIT  # splits opened from here on are recorded
        resume = run.resume
        if self.rng is not None:  # a resumed run restores the state it saved instead
            torch.set_rng_state(self.rng)
        if self.dist.is_main:  # the run's config; a resumed run's may have a larger train.max_epochs
            write_text_atomic(out_dir / "config.yaml", config_to_yaml(self.cfg))
        mixed = len(self.sources) > 1
        for source in self.sources:  # every dataset checked before any is encoded
            for split in ("train", "val"):
                with naming(source, mixed):
                    if len(self.dataset(source, split)) == 0:
                        raise ConfigError(
                            f"the {split} split of {source.name} is empty: no frame with ground truth "
                            f"({EMPTY_SPLIT_HINTS[split, source.data.val_source]})"
                        )
        if not self.cfg.train.feature_cache:  # all splits planned at once: together they share the memory budget
            self.stream_dir = out_dir / STREAMED_CACHE
            self.plan([split for source in self.sources for split in self.encoded_splits(source)])
        sources, lines = [], []
        for source in self.sources:
            with naming(source, mixed):
                data, line = self.source_data(source)
            sources.append(data)
            lines.append(line)
        if self.dist.is_main:  # the frozen parts (random weights said), how the training frames are served
            lines = [f"frozen parts: {self.model.encoder.description}", *lines]
            write_text_atomic(out_dir / TRAIN_LOG, "".join(f"{line}\n" for line in lines))
            print(*lines, sep="\n", file=sys.stderr)
        trainer = Trainer(self.model, self.cfg, sources, out_dir, self.dist)
        return trainer.fit(run=run), sources[0].train
