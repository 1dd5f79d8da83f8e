"""Dataset registry: ``get_dataset(cfg.data, split)`` as Marigold's ``get_dataset``.

Every dataset yields ``RGBDSample`` (uint8 RGB, float32 metres with 0 = invalid, intrinsics,
a unique name).
"""

from __future__ import annotations

from typing import Callable

from torch.utils.data import Dataset

from ..config import DataConfig
from ..errors import ConfigError
from .sample import RGBDSample
from .synthetic import SyntheticScenes

DatasetFactory = Callable[[DataConfig, str], Dataset]
DATASETS: dict[str, DatasetFactory] = {}
# The evaluation protocol (clipdepth.evaluation.protocol) each dataset is scored with by default.
DATASET_PROTOCOLS: dict[str, str] = {}


def register_dataset(name: str, protocol: str) -> Callable[[DatasetFactory], DatasetFactory]:
    def decorate(factory: DatasetFactory) -> DatasetFactory:
        DATASETS[name] = factory
        DATASET_PROTOCOLS[name] = protocol
        return factory

    return decorate


def get_dataset(cfg: DataConfig, split: str) -> Dataset:
    if cfg.dataset not in DATASETS:
        raise ConfigError(f"unknown dataset {cfg.dataset!r}; available: {sorted(DATASETS)}")
    return DATASETS[cfg.dataset](cfg, split)


def _synthetic(kind: str) -> DatasetFactory:
    def factory(cfg: DataConfig, split: str) -> Dataset:
        if split == "val" and cfg.val_source == "test_list":  # as split lists validate on test_list
            split = "test"
        size = {"train": cfg.train_size, "val": cfg.val_size, "test": cfg.test_size}.get(split, 0)
        return SyntheticScenes(kind, split, size, cfg.height, cfg.width, cfg.seed)

    return factory


register_dataset("synthetic_indoor", protocol="synthetic_indoor")(_synthetic("indoor"))
register_dataset("synthetic_outdoor", protocol="synthetic_outdoor")(_synthetic("outdoor"))

__all__ = ["DATASETS", "DATASET_PROTOCOLS", "RGBDSample", "SyntheticScenes", "get_dataset", "register_dataset"]
from . import nyu  # noqa: E402,F401  (registers "nyu")
from . import colonoscopy, folder, kitti, void, zeroshot  # noqa: E402,F401  (register datasets)
