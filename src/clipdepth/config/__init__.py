"""Typed configuration: dataclasses are the schema, YAML recipes name only what differs.

A recipe may start with ``base: other.yaml`` (resolved beside it, or a built-in recipe name);
any field can then be overridden from the command line as ``section.field=value``. OmegaConf
checks every key and type against the dataclasses, so a typo is an error, not a silent default.

Where the PureCLIP-Depth paper and its released code disagree, the field defaults to the
released code (it produced the published numbers) and the docstring names the paper's value;
``configs/variants/paper.yaml`` switches all of them at once.

The package: ``schema`` (the shared sections and ``Config``), one module per model family with its
fields' rules beside them (``pureclip``, ``tr2m``, ``baselines``, ``rsa``), ``rules`` (the engine),
``recipes`` (recipes, overrides, saved configs), ``legacy`` (earlier names still read) and
``compare`` (field-by-field differences).
"""

from .baselines import (
    BIN_SCHEMES,
    DEPTHCLIP_BACKBONES,
    DEPTHCLIP_NORMALIZATIONS,
    DEPTHCLIP_REDUCTIONS,
    TEXT_NORMS,
    DepthCLIPConfig,
    PromptsConfig,
)
from .compare import ABSENT, first_difference
from .legacy import LEGACY_SECTIONS, LEGACY_TRAIN_FIELDS, LEGACY_VALUES, legacy_name, upgrade_layout
from .pureclip import FUSIONS, PATCH_RULES, PHRASE_STYLES, PureCLIPConfig
from .recipes import (
    TrainedSetting,
    builtin_recipe,
    check_override_sections,
    config_from_dict,
    config_to_dict,
    config_to_yaml,
    load_config,
    load_config_dict,
    merged_section,
    trained_setting,
    with_overrides,
)
from .rsa import RSA_LOSSES, RSAConfig
from .rules import PRECISION_NAMES
from .schema import (
    COLOUR_AUGMENTATIONS,
    CONFIG_SECTIONS,
    DEPTH_RESIZE_MODES,
    HEAD_PRECISIONS,
    MIXTURE_ORDERS,
    PUBLISHED_EPOCHS,
    RESIDENCIES,
    RESIZE_MODES,
    VAL_SOURCES,
    CLIPEncoderConfig,
    Config,
    DataConfig,
    EvalConfig,
    MixtureSource,
    TrainConfig,
    section_name,
)
from .tr2m import IMAGE_STORAGE, RELATIVE_STORAGE, TOKEN_STORAGE, TR2M_HEAD_INITS, DINOv2Config, RelativeDepthConfig, TR2MConfig

__all__ = [
    "ABSENT",
    "BIN_SCHEMES",
    "COLOUR_AUGMENTATIONS",
    "CONFIG_SECTIONS",
    "DEPTHCLIP_BACKBONES",
    "DEPTHCLIP_NORMALIZATIONS",
    "DEPTHCLIP_REDUCTIONS",
    "DEPTH_RESIZE_MODES",
    "FUSIONS",
    "HEAD_PRECISIONS",
    "IMAGE_STORAGE",
    "LEGACY_SECTIONS",
    "LEGACY_TRAIN_FIELDS",
    "LEGACY_VALUES",
    "MIXTURE_ORDERS",
    "PATCH_RULES",
    "PHRASE_STYLES",
    "PRECISION_NAMES",
    "PUBLISHED_EPOCHS",
    "RELATIVE_STORAGE",
    "RESIDENCIES",
    "RESIZE_MODES",
    "TEXT_NORMS",
    "TOKEN_STORAGE",
    "TR2M_HEAD_INITS",
    "VAL_SOURCES",
    "CLIPEncoderConfig",
    "Config",
    "DINOv2Config",
    "DataConfig",
    "DepthCLIPConfig",
    "EvalConfig",
    "MixtureSource",
    "PromptsConfig",
    "RSAConfig",
    "RSA_LOSSES",
    "PureCLIPConfig",
    "RelativeDepthConfig",
    "TR2MConfig",
    "TrainConfig",
    "TrainedSetting",
    "builtin_recipe",
    "check_override_sections",
    "config_from_dict",
    "config_to_dict",
    "config_to_yaml",
    "first_difference",
    "legacy_name",
    "load_config",
    "load_config_dict",
    "merged_section",
    "section_name",
    "trained_setting",
    "upgrade_layout",
    "with_overrides",
]
