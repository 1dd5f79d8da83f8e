"""From a config to a trained head: build the model, encode the splits once, train."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch

from ..config import Config, config_to_yaml
from ..data import get_dataset
from ..data.transforms import Preprocessor
from ..device import resolve_device
from ..errors import ConfigError
from ..evaluation.protocol import Protocol, get_protocol
from ..features import EncodedSplit, OnTheFlySplit, encode_split
from ..features.cache import build_cache, cache_key, files_digest, frame_names, load_cache, start_cache
from ..io.atomic import write_text_atomic
from ..data.captions import CaptionLookup, caption_lookup
from ..models import DepthModel, build_model
from .distributed import Distributed, from_environment
from .trainer import Trainer, TrainResult, check_config, check_run_folder


@dataclass
class Experiment:
    cfg: Config
    model: DepthModel
    preprocessor: Preprocessor
    protocol: Protocol
    dist: Distributed

    @classmethod
    def create(cls, cfg: Config) -> "Experiment":
        check_config(cfg)
        protocol = get_protocol(cfg.eval.protocol)
        dist = from_environment()
        torch.manual_seed(cfg.seed)  # the head's random init: the same on every rank
        model = build_model(cfg).to(resolve_device(cfg.device, dist.local_rank))
        return cls(cfg, model, model.preprocessor(), protocol, dist)

    @property
    def captions(self) -> CaptionLookup | None:
        """Caption lines per frame, for models that read them (data.caption / caption_dir)."""
        return caption_lookup(self.cfg.data) if self.model.uses_captions else None

    def encode(self, split: str, flip: bool) -> EncodedSplit:
        """Frozen-part outputs of a split: from the feature cache when one is configured (built on
        first use), else computed into memory. The training split keeps its input-size depth, the
        others their full-resolution GT (``encode_split``'s purpose)."""
        dataset = get_dataset(self.cfg.data, split)
        purpose = "train" if split == "train" else "score"
        workers = self.cfg.train.num_workers
        if not self.cfg.train.feature_cache:
            return encode_split(self.model, dataset, self.preprocessor, self.cfg.eval.batch_size, flip,
                                desc=f"encode {split}", captions=self.captions, purpose=purpose, workers=workers)
        key = cache_key(self.model, self.preprocessor, self.cfg.data, split, flip, frame_names(dataset),
                        files_digest(dataset), purpose)
        folder = Path(self.cfg.train.feature_cache) / f"{split}{'_flip' if flip else ''}"
        if self.dist.is_main:
            start_cache(folder, key, self.cfg.train.cache_shard_size)
        self.dist.barrier()  # every rank builds its share of the shards, then reads them all
        build_cache(folder, self.model, dataset, self.preprocessor, key, self.cfg.train.cache_shard_size,
                    self.cfg.eval.batch_size, self.dist.rank, self.dist.world_size, self.captions, workers)
        self.dist.barrier()
        return load_cache(folder, key)

    def train(
        self, out_dir: str | Path, resume: bool = False, overwrite: bool = False
    ) -> tuple[TrainResult, EncodedSplit | OnTheFlySplit]:
        """Train the head; returns the result and the encoded training split (for baselines).
        A folder holding an earlier run is refused unless ``resume`` or ``overwrite``."""
        out_dir = Path(out_dir)
        check_run_folder(out_dir, resume, overwrite, self.dist)
        if not resume and self.dist.is_main:  # a resumed run keeps the saved config, which fit() compares against
            write_text_atomic(out_dir / "config.yaml", config_to_yaml(self.cfg))
        for split in ("train", "val"):
            if len(get_dataset(self.cfg.data, split)) == 0:
                raise ConfigError(
                    f"the {split} split of {self.cfg.data.dataset} is empty "
                    "(a longer data.train_list, or another data.val_fraction / data.*_size)"
                )
        train = (
            OnTheFlySplit(self.model, get_dataset(self.cfg.data, "train"), self.preprocessor, self.captions,
                          self.cfg.train.num_workers)
            if self.cfg.train.encode_on_the_fly else self.encode("train", flip=False)
        )
        val = self.encode("val", flip=self.cfg.eval.tta)
        trainer = Trainer(self.model, self.cfg, train, val, self.preprocessor, self.protocol, out_dir, self.dist)
        return trainer.fit(resume=resume, overwrite=overwrite), train
