"""Choices are Enums OmegaConf validates: every way a config is made refuses a bad choice in the same
line, and a choice reads, prints and saves as its plain name."""

import dataclasses
import json
import pickle

import pytest
from omegaconf import OmegaConf
from omegaconf.nodes import EnumNode

from clipdepth.config import Config, TrainConfig, config_to_dict, load_config
from clipdepth.config.rules import Choice
from clipdepth.config.schema import Residency
from clipdepth.errors import ConfigError


def _choices(instance, node, prefix=""):
    """(dotted name, OmegaConf node) of every choice field of a config, nested sections included."""
    for field in dataclasses.fields(instance):
        value = getattr(instance, field.name)
        if isinstance(field.default, Choice):
            yield prefix + field.name, node._get_node(field.name)
        elif dataclasses.is_dataclass(value):
            yield from _choices(value, node[field.name], f"{prefix}{field.name}.")


def test_every_section_declares_its_choices_as_enum_nodes():
    found = dict(_choices(Config(), OmegaConf.structured(Config)))
    for name, node in found.items():
        assert isinstance(node, EnumNode), name
    expected = {"train.residency", "train.head_precision", "clip.precision", "data.resize", "tr2m.cache_image"}
    assert expected | {"tr2m.image_encoder.precision", "depthclip.channel_reduction", "pureclip.fusion"} <= set(found)


@pytest.mark.parametrize(
    "make",
    [
        lambda: load_config("demo", ["train.residency=disk"]),
        lambda: TrainConfig(residency="disk"),
        lambda: dataclasses.replace(TrainConfig(), residency="disk"),
    ],
    ids=["override", "constructor", "replace"],
)
def test_a_bad_choice_is_the_same_line_however_the_config_is_made(make):
    with pytest.raises(ConfigError, match=r"^train.residency='disk': must be one of \['auto', 'device', 'stream'\]$"):
        make()


def test_a_choice_is_its_plain_name_in_code_text_and_files():
    cfg = load_config("demo", ["train.residency=stream"])
    assert cfg.train.residency is Residency.stream
    assert TrainConfig(residency="stream").residency is Residency.stream  # Python gets the member too
    assert cfg.train.residency == "stream" and cfg.train.residency in {"stream"}
    assert f"{cfg.train.residency}" == str(cfg.train.residency) == "stream"
    assert repr(cfg.train.residency) == "'stream'"
    saved = config_to_dict(cfg)
    assert type(saved["train"]["residency"]) is str and json.loads(json.dumps(saved))["train"]["residency"] == "stream"
    assert "residency: stream" in OmegaConf.to_yaml(OmegaConf.structured(cfg))
    assert pickle.loads(pickle.dumps(cfg)).train.residency is Residency.stream  # data-loading workers
