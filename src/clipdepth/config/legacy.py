"""Names of earlier clipdepth versions, still read: the first layout's sections and fields (recipes,
overrides, checkpoints, resume states) and values renamed since."""

from __future__ import annotations

from typing import Any


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


def upgrade_layout(data: dict[str, Any]) -> dict[str, Any]:
    """A config mapping (a recipe layer, a saved config) with first-layout sections and fields
    moved to today's places; today's layout passes unchanged. When both appear, today's wins."""
    data = dict(data)
    for old, new in LEGACY_SECTIONS.items():
        if isinstance(data.get(old), dict):
            moved = data.pop(old)
            data[new] = {**moved, **data.get(new, {})} if isinstance(data.get(new), dict) else moved
    train = data.get("train")
    if isinstance(train, dict) and any(k in train for k in LEGACY_TRAIN_FIELDS):
        train = dict(train)
        moved = {k: train.pop(k) for k in LEGACY_TRAIN_FIELDS if k in train}
        pureclip = data.get("pureclip") if isinstance(data.get("pureclip"), dict) else {}
        data["train"], data["pureclip"] = train, {**moved, **pureclip}
    for dotted, renamed in LEGACY_VALUES.items():
        section, _, name = dotted.partition(".")
        fields = data.get(section)
        if isinstance(fields, dict) and isinstance(fields.get(name), str) and fields[name] in renamed:
            data[section] = {**fields, name: renamed[fields[name]]}
    return data


def _upgrade_override(override: str) -> str:
    key, sep, value = override.partition("=")
    key = legacy_name(key.strip())
    return f"{key}{sep}{LEGACY_VALUES.get(key, {}).get(value.strip(), value)}"
