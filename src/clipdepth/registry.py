"""The model registry: each model declares one ``ModelSpec`` in its own module and registers it
with one line, ``register(ModelSpec(...))``; shared code (the trainer's objectives, the demo,
the benchmark's weights summary, ``clipdepth.models.MODELS``, the transformers registration,
``clipdepth convert``, the config's overrides and checkpoints' config.json) reads the specs and
never a model's name.

This module imports nothing of clipdepth's at import time (the config reads ``DEFAULT_MODEL``
from it); a lookup imports ``clipdepth.models``, whose model modules register themselves.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Callable, NamedTuple

if TYPE_CHECKING:  # pragma: no cover
    from .config import Config
    from .models.base import DepthModel

DEFAULT_MODEL = "pureclip_depth"  # the config's ``model`` unless a recipe names another
# Settings every loaded checkpoint may take from overrides, besides its spec's own.
SHARED_INFERENCE_OVERRIDES = ("device", "precision")
BASELINE = "mean_baseline"  # a demo's predictor of the training set's mean depth (its metrics' key)


class FrozenParts(NamedTuple):
    """What a config's frozen parts are, as far as the config tells (the benchmark's real/random label)."""

    random: list[str]  # config sections of frozen parts set to random weights (``random_init``)
    oracle: bool = False  # relative depth made from the ground truth


@dataclass
class DemoVariant:
    key: str  # its metrics' key in metrics.json
    label: str  # its row in the results table
    cfg: "Config"
    folder: str = ""  # its run folder under the demo's ("": the demo's own)


@dataclass
class DemoPlan:
    variants: list[DemoVariant]
    note: Callable[[Any], str]  # printed first: what the random-weight frozen parts are (given the first model)
    reference: str  # the first variant's gains are measured against this key (a variant or BASELINE)
    gain_phrase: str  # "{metric}: ... {gain} ... {direction} ..." per metric ({direction}: "better" or "worse", {gain} its size in %)


def clip_frozen_parts(cfg: "Config") -> FrozenParts:
    """The frozen parts of a model whose only frozen part is the CLIP of the ``clip`` section."""
    return FrozenParts(["clip"] if cfg.clip.random_init else [])


@dataclass(frozen=True)
class ModelSpec:
    """Everything shared code needs to know of one model, declared once in the model's module."""

    name: str  # ``cfg.model``, a checkpoint's ``architecture``
    model: type["DepthModel"]  # the class that builds and loads it
    section: str  # its own config section (a field of Config) ...
    section_type: type  # ... and that section's dataclass
    # Other model sections it reads (the encoders' `clip`, ...); every model reads the shared ones
    # (train, data, eval, mixture and the top-level fields), which no spec lists.
    reads: tuple[str, ...] = ()
    # Its training objective as "module:Class" (models do not import the trainer); None: a zero-shot
    # model, which `clipdepth train` writes without training.
    objective: str | None = None
    # Settings a loaded checkpoint may take from overrides besides SHARED_INFERENCE_OVERRIDES: where
    # its frozen parts load from and at which precision.
    inference_overrides: tuple[str, ...] = ()
    # Released checkpoints it converts: (``clipdepth convert`` KIND, "module:function").
    converters: tuple[tuple[str, str], ...] = ()
    demo: Callable[["Config"], DemoPlan] | None = None  # its demo's variants for a recipe of it
    frozen_parts: Callable[["Config"], FrozenParts] = clip_frozen_parts

    @property
    def sections(self) -> tuple[str, ...]:
        """The model sections its config.json keeps: its own and those it reads."""
        return (self.section, *self.reads)

    @property
    def overridable(self) -> tuple[str, ...]:
        """What a loaded checkpoint of it may take from overrides."""
        return (*self.inference_overrides, *SHARED_INFERENCE_OVERRIDES)

    def objective_class(self) -> type | None:
        return None if self.objective is None else load_object(self.objective)


_SPECS: dict[str, ModelSpec] = {}


def register(spec: ModelSpec) -> ModelSpec:
    """Add a model to the registry (its module's one line); the spec's class takes its name as
    ``architecture``, and is ``zero_shot`` where it has no objective. A second model of one name
    is refused (a model is declared once); its module imported again replaces its own spec."""
    known = _SPECS.get(spec.name)
    if known is not None and (known.model.__module__, known.model.__qualname__) != (spec.model.__module__, spec.model.__qualname__):
        raise ValueError(f"model {spec.name!r} is registered twice ({known.model.__qualname__}, {spec.model.__qualname__})")
    spec.model.architecture = spec.name
    spec.model.zero_shot = spec.objective is None
    _SPECS[spec.name] = spec
    return spec


def load_object(ref: str) -> Any:
    """``module:attribute`` -> the attribute."""
    module, _, name = ref.partition(":")
    return getattr(importlib.import_module(module), name)


def _populate() -> None:
    importlib.import_module(f"{__package__}.models")


def specs() -> dict[str, ModelSpec]:
    """Every registered model's spec by name, in the order they registered."""
    _populate()
    return dict(_SPECS)


def find_spec(name: str) -> ModelSpec | None:
    _populate()
    return _SPECS.get(name)


def model_spec(name: str) -> ModelSpec:
    """The spec of ``name``; ConfigError naming the registered models for another."""
    spec = find_spec(name)
    if spec is None:
        from .errors import ConfigError

        raise ConfigError(f"unknown model {name!r}; available: {sorted(_SPECS)}")
    return spec


def model_sections() -> set[str]:
    """Every config section some model reads (the others are shared)."""
    return {section for spec in specs().values() for section in spec.sections}


def inference_overrides(name: str | None = None) -> tuple[str, ...]:
    """What a loaded checkpoint of model ``name`` may take from overrides; None: of any model."""
    if name is not None:
        return model_spec(name).overridable
    keys = [key for spec in specs().values() for key in spec.inference_overrides]
    return (*dict.fromkeys(keys), *SHARED_INFERENCE_OVERRIDES)


def converter(kind: str) -> Callable[..., Any]:
    """The function that converts a released checkpoint of ``kind`` (``clipdepth convert KIND``)."""
    found = {k: ref for spec in specs().values() for k, ref in spec.converters}
    if kind not in found:
        from .errors import ConfigError

        raise ConfigError(f"no converter of {kind!r}; available: {sorted(found)}")
    return load_object(found[kind])
