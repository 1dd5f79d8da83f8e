"""Recipes and overrides: built-in and YAML recipes (``base:`` chains), ``section.field=value``
overrides checked by OmegaConf against the schema and by the rules, saved configs read back."""

from __future__ import annotations

import dataclasses
from importlib import resources
from pathlib import Path
from typing import Any, NamedTuple

import yaml
from omegaconf import OmegaConf
from omegaconf.errors import OmegaConfBaseException

from ..errors import ConfigError
from .legacy import _upgrade_override, legacy_name, upgrade_layout
from .rules import Choice
from .schema import CONFIG_SECTIONS, Config, DataConfig


def builtin_recipe(name: str) -> Path:
    """Path of a recipe shipped with the package, e.g. ``demo`` or ``variants/paper``."""
    root = Path(str(resources.files("clipdepth") / "configs"))
    path = root / (name if name.endswith(".yaml") else f"{name}.yaml")
    if not path.is_file():
        available = sorted(str(p.relative_to(root).with_suffix("")) for p in root.rglob("*.yaml"))
        raise ConfigError(f"no recipe {name!r}: give a YAML path or one of {available}")
    return path


def _resolve_recipe(ref: str, relative_to: Path | None = None) -> Path:
    candidate = Path(ref)
    if relative_to is not None and not candidate.is_absolute():
        candidate = relative_to / candidate
    if candidate.is_file():
        return candidate
    if Path(ref).is_file():
        return Path(ref)
    return builtin_recipe(ref)


def _recipe_layers(path: Path, seen: tuple[Path, ...] = ()) -> list[dict[str, Any]]:
    """The recipe and its chain of ``base:`` recipes, base first."""
    if path.resolve() in seen:
        raise ConfigError(f"{path}: recipe includes itself through 'base'")
    try:
        data = yaml.safe_load(path.read_text()) or {}
    except (OSError, yaml.YAMLError) as exc:
        raise ConfigError(f"{path}: cannot read recipe ({exc.__class__.__name__}: {exc})") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: a recipe must be a mapping of sections, got {type(data).__name__}")
    base = data.pop("base", None)
    layers = _recipe_layers(_resolve_recipe(base, path.parent), seen + (path.resolve(),)) if base else []
    return layers + [upgrade_layout(data, str(path))]


def _merged(schema: Any, layers: list[Any], overrides: list[str] | tuple[str, ...], upgrade: bool = True) -> Any:
    """``schema`` (a dataclass or its type) merged with ``layers`` (mappings) and ``field=value``
    ``overrides``, as the checked dataclass. The one place OmegaConf's errors (several lines) become
    one ConfigError line naming the key."""
    bad = [o for o in overrides if "=" not in o]
    if bad:
        raise ConfigError(f"override {bad[0]!r} is not of the form section.field=value")
    overrides = [_upgrade_override(o) for o in overrides] if upgrade else list(overrides)
    try:
        merged = OmegaConf.structured(schema)
        for layer in layers:
            merged = OmegaConf.merge(merged, layer)
        # An item of a list (`mixture.0.data.root=...`) is set in place: merging a dotlist would
        # make the list a mapping {0: ...}.
        in_lists = [o for o in overrides if any(part.isdigit() for part in o.partition("=")[0].split("."))]
        plain = [o for o in overrides if o not in in_lists]
        if plain:
            merged = OmegaConf.merge(merged, OmegaConf.from_dotlist(plain))
        for override in in_lists:
            key, _, value = override.partition("=")
            _check_index(merged, key.strip())
            OmegaConf.update(merged, key.strip(), OmegaConf.from_dotlist([f"value={value}"])["value"], merge=True)
        return OmegaConf.to_object(merged)  # each section checks its values as it is made (rules.Section)
    except OmegaConfBaseException as exc:
        key = getattr(exc, "full_key", None)
        kind = getattr(getattr(exc, "child_node", None), "enum_type", None)
        if isinstance(kind, type) and issubclass(kind, Choice):  # the same line as a choice made in Python
            raise ConfigError(f"{key}={exc.value!r}: must be one of {kind.names()}") from None
        raise ConfigError(f"config {key + ': ' if key else ''}{str(exc).splitlines()[0]}") from None


def _check_index(merged: Any, key: str) -> None:
    """ConfigError naming a list item an override addresses beyond the list (``mixture.5.data.root``
    where the recipe has two datasets)."""
    node, parts = merged, key.split(".")
    for i, part in enumerate(parts):
        if OmegaConf.is_list(node):
            if not part.isdigit() or int(part) >= len(node):
                listed = ".".join(parts[:i])
                raise ConfigError(f"override {key}: {listed} has {len(node)} entries ({listed}.0 .. {listed}.{len(node) - 1})")
            node = node[int(part)]
        elif OmegaConf.is_dict(node) and part in node:
            node = node[part]
        else:
            return  # a key that does not exist: the merge names it


def load_config(recipes: str | Path | list[str | Path] | None = None, overrides: list[str] | tuple[str, ...] = ()) -> Config:
    """Defaults, then each recipe's chain in order (e.g. ``["demo", "variants/paper"]``), then
    ``section.field=value`` overrides. First-layout names (``head.use_cls``) are read too."""
    if recipes is None:
        recipes = []
    elif isinstance(recipes, (str, Path)):
        recipes = [recipes]
    layers = [layer for recipe in recipes for layer in _recipe_layers(_resolve_recipe(str(recipe)))]
    return check_override_sections(_merged(Config, layers, overrides), overrides)


def check_override_sections(cfg: Config, overrides: list[str] | tuple[str, ...]) -> Config:
    """ConfigError, in one line, for an override of a model section that ``cfg.model`` does not
    read (``pureclip.max_depth=20`` on a TR2M run): it would change nothing. Returns cfg."""
    sections = {legacy_name(o.partition("=")[0].strip()).partition(".")[0] for o in overrides}
    if not sections & set(CONFIG_SECTIONS):
        return cfg
    from ..registry import find_spec, model_sections  # imports the models: only where a section is overridden

    spec = find_spec(cfg.model)
    if spec is None:  # an unknown model is its own error, where it is built
        return cfg
    for override in overrides:
        key = legacy_name(override.partition("=")[0].strip())
        section = key.partition(".")[0]
        if section in model_sections() and section not in spec.sections:
            raise ConfigError(
                f"{key}: the {cfg.model} model does not read the {section} section; it reads "
                f"{', '.join(spec.sections)} besides the shared ones (drop the override, or set model= to a model that reads it)"
            )
    return cfg


def with_overrides(section: Any, overrides: list[str]) -> Any:
    """A copy of a config section (dataclass) with ``field=value`` overrides, type-checked like recipes."""
    return _merged(section, [], overrides, upgrade=False)


def merged_section(section: Any, fields: dict[str, Any]) -> Any:
    """A copy of a config section (dataclass) with ``fields`` (a mapping, nested as in YAML) merged
    over it, type-checked like recipes."""
    return _merged(section, [fields], [], upgrade=False)


class TrainedSetting(NamedTuple):
    """How a run trained one dataset: its data settings, input size (None: the model's) and
    validation protocol (None: the dataset's own)."""

    data: DataConfig
    input_size: tuple[int, int] | None
    protocol: str | None


def trained_setting(cfg: Config, dataset: str) -> TrainedSetting | None:
    """How a run trained ``dataset`` (a mixture entry's fields over the `data` section, or that
    section with ``eval.protocol``); None when it did not train on it. Scoring the dataset again
    uses the same geometry and protocol (training/mixture.py ``training_sources`` reads runs alike)."""
    for entry in cfg.mixture:
        data = merged_section(cfg.data, entry.data)
        if data.dataset == dataset:
            return TrainedSetting(data, tuple(entry.input_size) if entry.input_size else None, entry.protocol)
    if cfg.data.dataset == dataset and not cfg.mixture:
        return TrainedSetting(cfg.data, None, cfg.eval.protocol)
    return None


def config_to_dict(cfg: Config) -> dict[str, Any]:
    """The config as plain data (choices as their names): what config.json and resume states hold."""
    return dataclasses.asdict(cfg, dict_factory=lambda pairs: {k: str.__str__(v) if isinstance(v, Choice) else v for k, v in pairs})


def load_config_dict(data: dict[str, Any], overrides: list[str] | tuple[str, ...] = ()) -> Config:
    """A saved config (checkpoints, resume states; either layout) with ``section.field=value``
    overrides, checked like recipes (``check_override_sections`` too)."""
    cfg = _merged(Config, [upgrade_layout(data)], overrides)
    return check_override_sections(cfg, overrides) if overrides else cfg


config_from_dict = load_config_dict  # a saved config without overrides


def config_to_yaml(cfg: Config) -> str:
    return OmegaConf.to_yaml(OmegaConf.structured(cfg))
