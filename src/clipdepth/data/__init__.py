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
from .splits import is_shipped, listed_path
from .synthetic import SyntheticScenes

DatasetFactory = Callable[[DataConfig, str], Dataset]
DATASETS: dict[str, DatasetFactory] = {}
# The evaluation protocol (clipdepth.evaluation.protocol) each dataset is scored with by default.
DATASET_PROTOCOLS: dict[str, str] = {}
# Datasets that hold out validation frames of their own files when no data.train_list is given.
SPLITS_WITHOUT_LIST: set[str] = set()


def register_dataset(name: str, protocol: str, splits_without_list: bool = False) -> Callable[[DatasetFactory], DatasetFactory]:
    """Register ``factory(cfg.data, split)`` as dataset ``name``, scored by default with ``protocol``;
    ``splits_without_list``: it holds out validation frames of its own files without a training list
    (into ``data.val_split_dir`` when set: ``records_split``)."""

    def decorate(factory: DatasetFactory) -> DatasetFactory:
        DATASETS[name] = factory
        DATASET_PROTOCOLS[name] = protocol
        if splits_without_list:
            SPLITS_WITHOUT_LIST.add(name)
        return factory

    return decorate


def records_split(cfg: DataConfig) -> bool:
    """Whether a training run should give these settings' held-out validation split a folder
    (``data.val_split_dir``, unset here) to be written to: there is no list file of the user's to
    write it beside, as the split's frames come from the dataset's own files (no data.train_list,
    ``SPLITS_WITHOUT_LIST``) or from a list shipped with clipdepth (``splits.shipped_list``)."""
    if cfg.val_source != "held_out" or cfg.val_split_dir:
        return False
    if not cfg.train_list:
        return cfg.dataset in SPLITS_WITHOUT_LIST
    listed = listed_path(cfg, "train_list")
    return listed is not None and is_shipped(listed)


def unit_warning(dataset: Dataset, max_depth: float) -> str | None:
    """A line warning that ``dataset``'s depth looks read in the wrong unit (most of a file's depth
    beyond ``max_depth`` metres), from datasets whose unit the user declares (a folder's
    ``data.depth_scale``: ``DepthFolder.unit_warning``), else None."""
    check = getattr(dataset, "unit_warning", None)
    return check(max_depth) if check is not None else None


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

__all__ = [
    "DATASETS",
    "DATASET_PROTOCOLS",
    "RGBDSample",
    "SyntheticScenes",
    "get_dataset",
    "records_split",
    "register_dataset",
    "unit_warning",
]
from . import nyu  # noqa: E402,F401  (registers "nyu")
from . import colonoscopy, folder, kitti, void, zeroshot  # noqa: E402,F401  (register datasets)
