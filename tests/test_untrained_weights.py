"""Untrained frozen weights are told from the weights themselves (every normalisation layer still at
its initial values), not from where they were loaded: each frozen part (CLIP ViT, CLIP ResNet,
DINOv2, Depth Anything) built at random, saved and loaded back by path is still untrained, and
the record reaches the checkpoint and benchmark's label (issue 22, item 5)."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from clipdepth.config import config_to_dict, load_config, load_config_dict
from clipdepth.encoders.clip import CLIPEncoder, char_level_tokenizer
from clipdepth.encoders.clip_resnet import ResNetCLIPEncoder
from clipdepth.encoders.dinov2 import DINOv2Encoder
from clipdepth.encoders.frozen import untrained_parts
from clipdepth.encoders.loading import at_initialisation
from clipdepth.encoders.relative import DepthAnythingSource
from clipdepth.evaluation import benchmark
from clipdepth.models import build_model

from .conftest import TINY_DEPTH_ANYTHING, TINY_TR2M
from .test_depthclip import TINY_RN


def test_normalisation_layers_at_their_initial_values_on_hand_made_modules():
    fresh = nn.Sequential(nn.Linear(3, 4), nn.LayerNorm(4), nn.Conv2d(4, 2, 1), nn.BatchNorm2d(2))
    assert at_initialisation(fresh)  # LayerNorm 1/0, BatchNorm 1/0 with running mean 0 and variance 1
    with torch.no_grad():
        fresh[1].bias[0] = 1e-6  # one shift moved, as the least training does
    assert not at_initialisation(fresh)
    batch_norm = nn.Sequential(nn.BatchNorm2d(2))
    batch_norm[0].running_var[1] = 0.5  # statistics gathered in training, weight and bias untouched
    assert not at_initialisation(batch_norm)
    # Nothing to tell by: no normalisation layer, or one without weights or statistics.
    assert not at_initialisation(nn.Linear(3, 3))
    assert not at_initialisation(nn.Sequential(nn.Linear(3, 3), nn.LayerNorm(3, elementwise_affine=False)))


def _perturb(module: nn.Module) -> None:
    """One normalisation layer moved off its initial values: a stand-in for trained weights."""
    layer = next(m for m in module.modules() if isinstance(m, (nn.LayerNorm, nn.BatchNorm2d)))
    with torch.no_grad():
        layer.weight.mul_(1.01)


def _clip(tiny_cfg, folder, perturb):
    encoder = CLIPEncoder.from_config(tiny_cfg.clip)
    if perturb:
        _perturb(encoder.model)
    encoder.model.save_pretrained(folder)
    encoder.tokenizer.save_pretrained(folder)
    return encoder, CLIPEncoder.from_pretrained(str(folder))


def _dinov2(tiny_cfg, folder, perturb):
    cfg = load_config_dict(config_to_dict(tiny_cfg), TINY_TR2M).tr2m.image_encoder
    encoder = DINOv2Encoder.from_config(cfg)
    if perturb:
        _perturb(encoder.model)
    encoder.model.save_pretrained(folder)
    return encoder, DINOv2Encoder.from_pretrained(str(folder))


def _depth_anything(tiny_cfg, folder, perturb):
    cfg = load_config_dict(config_to_dict(tiny_cfg), [*TINY_TR2M, *TINY_DEPTH_ANYTHING]).tr2m.relative
    source = DepthAnythingSource.from_config(cfg)
    if perturb:
        _perturb(source.model)
    source.model.save_pretrained(folder)
    return source, DepthAnythingSource.from_pretrained(str(folder))


def _clip_resnet(tiny_cfg, folder, perturb):
    """The RN50 of DepthCLIP and the learned prompts: a weights file (depthclip.weights) and a
    tokenizer folder (depthclip.tokenizer)."""
    cfg = load_config("depthclip_nyu", TINY_RN).depthclip
    encoder = ResNetCLIPEncoder.from_config(cfg)
    if perturb:
        _perturb(encoder.model)
    folder.mkdir()
    torch.save(encoder.model.state_dict(), folder / "rn50.pt")
    char_level_tokenizer().save_pretrained(folder / "tokenizer")
    loaded = load_config(
        "depthclip_nyu",
        [*TINY_RN, "depthclip.random_init=false", f"depthclip.weights={folder / 'rn50.pt'}", f"depthclip.tokenizer={folder / 'tokenizer'}"],
    ).depthclip
    return encoder, ResNetCLIPEncoder.from_config(loaded)


@pytest.mark.parametrize(
    "build, part", [(_clip, "clip"), (_dinov2, "tr2m.image_encoder"), (_depth_anything, "tr2m.relative"), (_clip_resnet, "depthclip")]
)
def test_each_frozen_part_is_untrained_wherever_its_random_weights_are_loaded_from(build, part, tiny_cfg, tmp_path):
    built, loaded = build(tiny_cfg, tmp_path / "random", perturb=False)
    assert built.untrained and loaded.untrained and untrained_parts(loaded) == [part]
    built, loaded = build(tiny_cfg, tmp_path / "trained", perturb=True)
    assert not built.untrained and not loaded.untrained and untrained_parts(loaded) == []


def test_tr2m_names_each_untrained_part_and_not_the_oracle(tiny_cfg):
    oracle = build_model(load_config_dict(config_to_dict(tiny_cfg), TINY_TR2M))
    assert untrained_parts(oracle.encoder) == ["clip", "tr2m.image_encoder"]  # the oracle has no weights
    model = build_model(load_config_dict(config_to_dict(tiny_cfg), [*TINY_TR2M, *TINY_DEPTH_ANYTHING]))
    assert untrained_parts(model.encoder) == ["clip", "tr2m.image_encoder", "tr2m.relative"]


def test_a_depthclip_checkpoint_on_a_random_weights_file_is_labelled_random(tiny_cfg, tmp_path):
    """DepthCLIP has nothing trained (zero_shot) and names its RN50 by a file path: with random
    weights in that file, only the weights themselves can tell."""
    _clip_resnet(tiny_cfg, tmp_path / "rn", perturb=False)
    cfg = load_config(
        "depthclip_nyu",
        [
            *TINY_RN,
            "depthclip.random_init=false",
            f"depthclip.weights={tmp_path / 'rn' / 'rn50.pt'}",
            f"depthclip.tokenizer={tmp_path / 'rn' / 'tokenizer'}",
        ],
    )
    checkpoint = build_model(cfg).save_pretrained(tmp_path / "depthclip", extra={"zero_shot": True})
    real, line = benchmark.weights_summary(*benchmark._checkpoint_meta(str(checkpoint)))
    assert not real and line.startswith("RANDOM weights (random frozen parts: depthclip)")
