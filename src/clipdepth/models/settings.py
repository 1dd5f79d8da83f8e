"""The one rule that picks a checkpoint's settings on a dataset: the data settings its frames are fed
with (input crop, KB crop, tiles), the model input size and the protocol they are scored with.

``evaluate`` and ``benchmark`` score with it (``evaluation.checkpoint.evaluation_settings``), and
``infer(crop="trained", dataset=...)`` feeds images with it, so that the same frames get the same
depth and the same numbers on every road (docs/protocol.md, "Which settings a checkpoint is scored
with").
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from ..config import Config, DataConfig, load_config, trained_setting, with_overrides
from ..data import DATASET_PROTOCOLS
from ..errors import ConfigError


@dataclass(frozen=True)
class DatasetSettings:
    """What a checkpoint is fed and scored with on one dataset (``dataset_settings``)."""

    data: DataConfig  # the dataset and its input geometry (crop, KB crop, tiles)
    input_size: tuple[int, int] | None  # the model input (None: the model's own; a mixture's dataset may have its own)
    protocol: str  # caps and evaluation crop (evaluation/protocol.py)
    source: str  # where the settings came from, in words (printed with the results)


def dataset_settings(
    trained: Config | None,
    declared: Mapping[str, str],
    dataset: str | None = None,
    recipe: str | None = None,
    protocol: str | None = None,
    data_overrides: list[str] | tuple[str, ...] = (),
) -> DatasetSettings:
    """The settings of a checkpoint of config ``trained`` on a dataset; ``declared``: the recipe its
    model declares per dataset (``DepthModel.dataset_recipes``). ``trained=None``: a model clipdepth
    did not train (a transformers model, a folder of saved predictions), which has no dataset,
    training or recipes of its own.

    The dataset is ``dataset``, else the ``recipe``'s, else the checkpoint's own. Its data settings
    and protocol come from the first that applies: the ``recipe`` given; the checkpoint's training of
    that dataset (a mixture's entry, input size included; the protocol it validated with); the
    model's declared recipe for that dataset (e.g. ``pureclip_nyu`` for PureCLIP-Depth on NYU); else
    the dataset's defaults (no crop, its registered protocol). ``data_overrides`` (``field=value`` of
    ``data``) and ``protocol`` win. ConfigError for an unknown dataset, recipe or field, and for no
    dataset at all (``trained=None`` with neither ``dataset`` nor ``recipe``).
    """
    recipe_cfg = load_config(recipe) if recipe else None
    name = dataset or (recipe_cfg.data.dataset if recipe_cfg else trained.data.dataset if trained else None)
    if name is None:
        raise ConfigError("no dataset: a model that clipdepth did not train has none of its own; name one", setting="dataset")
    if name not in DATASET_PROTOCOLS:
        raise ConfigError(f"unknown dataset {name!r}; available: {sorted(DATASET_PROTOCOLS)}", setting="dataset")
    setting = trained_setting(trained, name) if trained else None
    if recipe_cfg is not None:
        base, default_protocol, source = recipe_cfg.data, recipe_cfg.eval.protocol, f"recipe {recipe}"
    elif setting is not None:
        base, default_protocol = setting.data, setting.protocol or DATASET_PROTOCOLS[name]
        source = f"the checkpoint's training on {name}"
    elif name in declared:
        declared_cfg = load_config(declared[name])
        base, default_protocol = declared_cfg.data, declared_cfg.eval.protocol
        source = f"recipe {declared[name]} (the model's for {name}; the checkpoint did not train on it)"
    else:
        base = DataConfig(seed=trained.data.seed) if trained else DataConfig()
        default_protocol = DATASET_PROTOCOLS[name]
        source = f"the defaults of {name}" + (" (the checkpoint did not train on it)" if trained else "")
    data = with_overrides(base, [f"dataset={name}", *data_overrides])
    if data_overrides:
        source += f", with {', '.join(data_overrides)}"
    if protocol and protocol != default_protocol:
        source += f", protocol {protocol} as asked"
    return DatasetSettings(data, setting.input_size if setting else None, protocol or default_protocol, source)
