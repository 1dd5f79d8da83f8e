"""From a config to a trained head: build the model, encode the splits once, train."""
from __future__ import annotations

import sys
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from pathlib import Path

import torch

from ..config import Config, DataConfig, config_to_yaml
from ..data import get_dataset
from ..data.transforms import Preprocessor
from ..device import resolve_device
from ..errors import ClipdepthError, ConfigError
from ..evaluation.protocol import Protocol, get_protocol
from ..features import EncodedSplit, OnTheFlySplit, encode_split
from ..features.cache import build_cache, cache_key, files_digest, frame_names, load_cache, start_cache
from ..io.atomic import write_text_atomic
from ..data.augment import Augmentation
from ..data.captions import CaptionLookup, caption_lookup
from ..models import DepthModel, build_model
from .distributed import Distributed, from_environment
from .mixture import SourceData, SourceSettings, training_sources
from .trainer import Trainer, TrainResult, check_config, check_run_folder


TRAIN_LOG = "train_log.txt"  # a run's line per training dataset: how its frames are served
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

    @classmethod
    def create(cls, cfg: Config, check_data: bool = False) -> "Experiment":
        """The model built from ``cfg`` (its frozen parts loaded) and the run's datasets. With
        ``check_data`` the training datasets' train and val splits are opened first, so that a
        wrong root or list fails before any weights are loaded or downloaded."""
        check_config(cfg)
        sources = training_sources(cfg)
        protocol = get_protocol(cfg.eval.protocol)
        for source in sources:
            with naming(source, len(sources) > 1):
                get_protocol(source.protocol)  # an unknown one fails before any work
                for split in ("train", "val") if check_data else ():
                    get_dataset(source.data, split)
        dist = from_environment()
        torch.manual_seed(cfg.seed)  # the head's random init: the same on every rank
        model = build_model(cfg).to(resolve_device(cfg.device, dist.local_rank))
        return cls(cfg, model, model.preprocessor(), protocol, dist, sources, torch.get_rng_state())

    @property
    def captions(self) -> CaptionLookup | None:
        """Caption lines per frame, for models that read them (data.caption / caption_dir)."""
        return self.captions_of(self.cfg.data)

    def captions_of(self, data: DataConfig) -> CaptionLookup | None:
        return caption_lookup(data) if self.model.uses_captions else None

    def encode(self, split: str, flip: bool, source: SourceSettings | None = None) -> EncodedSplit:
        """Frozen-part outputs of a split of ``source`` (default: the first training dataset): from
        the feature cache when one is configured (built on first use), else computed into memory.
        The training split keeps its input-size depth, the others their full-resolution GT
        (``encode_split``'s purpose). A mixture caches each dataset in its own folder
        (``<feature_cache>/<name>/<split>``), so adding a dataset reuses the others' caches."""
        source = source or self.sources[0]
        dataset = get_dataset(source.data, split)
        preprocessor, captions = self.model.preprocessor(source.data, source.input_size), self.captions_of(source.data)
        purpose = "train" if split == "train" else "score"
        workers = self.cfg.train.num_workers
        if not self.cfg.train.feature_cache:
            label = f"{source.name} {split}" if self.cfg.mixture else split
            return encode_split(self.model, dataset, preprocessor, self.cfg.eval.batch_size, flip,
                                desc=f"encode {label}", captions=captions, purpose=purpose, workers=workers)
        key = cache_key(self.model, preprocessor, source.data, split, flip, frame_names(dataset),
                        files_digest(dataset), purpose)
        folder = Path(self.cfg.train.feature_cache) / (source.name if self.cfg.mixture else "") / f"{split}{'_flip' if flip else ''}"
        if self.dist.is_main:
            start_cache(folder, key, self.cfg.train.cache_shard_size)
        self.dist.barrier()  # every rank builds its share of the shards, then reads them all
        build_cache(folder, self.model, dataset, preprocessor, key, self.cfg.train.cache_shard_size,
                    self.cfg.eval.batch_size, self.dist.rank, self.dist.world_size, captions, workers)
        self.dist.barrier()
        return load_cache(folder, key)

    def source_data(self, source: SourceSettings) -> tuple[SourceData, str]:
        """A training dataset's splits (training: cached, or decoded and encoded at every step with
        ``train.encode_on_the_fly`` or a colour augmentation; validation: cached), preprocessing
        and protocol; and a line saying where its validation frames come from and how its training
        frames are served."""
        preprocessor = self.model.preprocessor(source.data, source.input_size)
        augmentation = Augmentation.from_data(source.data)
        stored = "the feature cache" if self.cfg.train.feature_cache else "memory"
        if self.cfg.train.encode_on_the_fly or (augmentation is not None and augmentation.needs_encoder):
            train = OnTheFlySplit(self.model, get_dataset(source.data, "train"), preprocessor,
                                  self.captions_of(source.data), self.cfg.train.num_workers, augmentation)
            why = "train.encode_on_the_fly" if self.cfg.train.encode_on_the_fly else (
                f"data.augment_colour={augmentation.colour}: augmented frames cannot come from a cache")
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
        data = SourceData(source.name, train, val, preprocessor, get_protocol(source.protocol), source.weight)
        whence = "of the test split" if source.data.val_source == "test_list" else "held out"
        validated = f"{len(val)} validation frames {whence} (data.val_source={source.data.val_source})"
        return data, f"{source.name}: {validated}, {len(train)} training frames {how}"

    def train(
        self, out_dir: str | Path, resume: bool = False, overwrite: bool = False
    ) -> tuple[TrainResult, EncodedSplit | OnTheFlySplit]:
        """Train the head; returns the result and the (first dataset's) training split (for baselines).
        A folder holding an earlier run is refused unless ``resume`` or ``overwrite``."""
        out_dir = Path(out_dir)
        check_run_folder(out_dir, resume, overwrite, self.dist)
        if self.rng is not None:  # a resumed run restores the state it saved instead
            torch.set_rng_state(self.rng)
        if not resume and self.dist.is_main:  # a resumed run keeps the saved config, which fit() compares against
            write_text_atomic(out_dir / "config.yaml", config_to_yaml(self.cfg))
        mixed = len(self.sources) > 1
        for source in self.sources:  # every dataset checked before any is encoded
            for split in ("train", "val"):
                with naming(source, mixed):
                    if len(get_dataset(source.data, split)) == 0:
                        raise ConfigError(
                            f"the {split} split of {source.name} is empty: no frame with ground truth "
                            f"({EMPTY_SPLIT_HINTS[split, source.data.val_source]})"
                        )
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
        return trainer.fit(resume=resume, overwrite=overwrite), sources[0].train
