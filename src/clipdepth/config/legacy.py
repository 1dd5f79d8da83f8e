"""Names of earlier clipdepth versions, still read: the first layout's sections and fields (recipes,
overrides, checkpoints, resume states) and values renamed since.

A name the user writes (a recipe, an override, a command, a Python name) still works and warns once
with a ``FutureWarning`` naming today's name and the version that removes it (``renamed``); a saved
config (checkpoints, resume states) is read without a warning: the user did not write it, and
saving it again writes today's names.
"""

from __future__ import annotations

import warnings
from typing import Any

# The version whose release drops the names below (two minor versions after 0.2.0 deprecated them).
REMOVED_IN = "0.4.0"


def renamed(old: str, new: str, where: str = "", stacklevel: int = 3) -> None:
    """Warn (``FutureWarning``) that ``old`` is an earlier clipdepth's name of ``new`` and stops
    working in ``REMOVED_IN``; ``where`` names the file or option it came from."""
    said = f"{where}: " if where else ""
    warnings.warn(
        f"{said}{old!r} is a deprecated clipdepth name, read as {new!r}; write {new!r}: {old!r} stops working in clipdepth {REMOVED_IN}",
        FutureWarning,
        stacklevel=stacklevel,
    )


# -- the first layout (clipdepth 0.1), still read: recipes, overrides, checkpoints, resume states --
# Old section or dotted field -> its place now. PureCLIP-Depth's settings were spread over
# `head`, `loss` and `train`; CLIP was the `encoder` section.
LEGACY_SECTIONS = {"encoder": "clip", "head": "pureclip", "loss": "pureclip"}
LEGACY_TRAIN_FIELDS = (
    "phase_steps",
    "embed_lr",
    "embed_weight_decay",
    "depth_lr",
    "depth_weight_decay",
    "freeze_table_in_depth_phase",
    "freeze_mlps",
    "decay_start",
    "final_lr_factor",
)


# Old values -> today's, by dotted field: the released code was once called "reference".
LEGACY_VALUES = {"pureclip.patch_rule": {"reference": "released"}, "pureclip.phrase_style": {"reference": "released"}}


def legacy_name(dotted: str) -> str:
    """A dotted field name of the first layout in today's layout (others unchanged)."""
    section, _, rest = dotted.partition(".")
    if section in LEGACY_SECTIONS:
        return f"{LEGACY_SECTIONS[section]}.{rest}" if rest else LEGACY_SECTIONS[section]
    if section == "train" and rest.split(".")[0] in LEGACY_TRAIN_FIELDS:
        return f"pureclip.{rest}"
    return dotted


def upgrade_layout(data: dict[str, Any], where: str | None = None) -> dict[str, Any]:
    """A config mapping (a recipe layer, a saved config) with first-layout sections and fields
    moved to today's places; today's layout passes unchanged. When both appear, today's wins.
    ``where``: the recipe the user wrote, whose every earlier name warns once (``renamed``);
    None for a saved config, read silently."""
    data = dict(data)

    def moved(old: str, new: str) -> None:
        if where is not None:
            renamed(old, new, where, stacklevel=5)

    for old, new in LEGACY_SECTIONS.items():
        if isinstance(data.get(old), dict):
            moved(old, new)
            part = data.pop(old)
            data[new] = {**part, **data.get(new, {})} if isinstance(data.get(new), dict) else part
    train = data.get("train")
    if isinstance(train, dict) and any(k in train for k in LEGACY_TRAIN_FIELDS):
        train = dict(train)
        fields = {k: train.pop(k) for k in LEGACY_TRAIN_FIELDS if k in train}
        for name in fields:
            moved(f"train.{name}", f"pureclip.{name}")
        pureclip = data.get("pureclip") if isinstance(data.get("pureclip"), dict) else {}
        data["train"], data["pureclip"] = train, {**fields, **pureclip}
    for dotted, values in LEGACY_VALUES.items():
        section, _, name = dotted.partition(".")
        fields = data.get(section)
        if isinstance(fields, dict) and isinstance(fields.get(name), str) and fields[name] in values:
            moved(f"{dotted}: {fields[name]}", f"{dotted}: {values[fields[name]]}")
            data[section] = {**fields, name: values[fields[name]]}
    return data


def _upgrade_override(override: str) -> str:
    """An override with an earlier name or value in today's, warning once for each (``renamed``)."""
    key, sep, value = override.partition("=")
    new_key = legacy_name(key.strip())
    new_value = LEGACY_VALUES.get(new_key, {}).get(value.strip(), value)
    if new_key != key.strip() or new_value != value:
        renamed(override.strip(), f"{new_key}{sep}{new_value}", "override", stacklevel=5)
    return f"{new_key}{sep}{new_value}"
