"""Training augmentation as TR2M's release applies it, and how a run serves augmented frames."""

from __future__ import annotations

import colorsys
import dataclasses

import numpy as np
import pytest
import torch

from clipdepth.config import DataConfig, load_config_dict, config_to_dict
from clipdepth.data.augment import Augmentation, _shift_hue
from clipdepth.errors import ConfigError
from clipdepth.features import OnTheFlySplit
from clipdepth.training.run import TRAIN_LOG, Experiment


def test_gamma_brightness_equals_the_release_formula_with_the_same_draws():
    image = torch.tensor([0.2, 0.5, 0.9]).view(3, 1, 1).expand(3, 2, 2).clone()
    augmentation = Augmentation(colour="gamma_brightness", colour_prob=1.0, brightness=(0.75, 1.25))
    out = augmentation.colours(image[None], torch.Generator().manual_seed(3))[0]

    draws = torch.Generator().manual_seed(3)  # the same generator, read in the documented order
    torch.rand((), generator=draws)  # apply?
    u = [float(torch.rand((), generator=draws, dtype=torch.float64)) for _ in range(5)]
    gamma, brightness = 0.9 + 0.2 * u[0], 0.75 + 0.5 * u[1]
    channel = [0.9 + 0.2 * v for v in u[2:]]
    expected = [min(1.0, x**gamma * brightness * c) for x, c in zip((0.2, 0.5, 0.9), channel)]
    assert out[:, 0, 0].tolist() == pytest.approx(expected, rel=1e-6)


def test_the_hue_shift_matches_the_standard_hsv_conversion():
    rng = np.random.default_rng(0)
    image = torch.from_numpy(rng.random((3, 4, 5))).float()
    for shift in (0.0, 0.07, -0.1, 1 / 3):
        out = _shift_hue(image, shift)
        for y in range(4):
            for x in range(5):
                h, s, v = colorsys.rgb_to_hsv(*image[:, y, x].tolist())
                assert out[:, y, x].tolist() == pytest.approx(colorsys.hsv_to_rgb((h + shift) % 1.0, s, v), abs=1e-5)
    red = torch.tensor([1.0, 0.0, 0.0]).view(3, 1, 1)
    assert _shift_hue(red, 1 / 3)[:, 0, 0].tolist() == pytest.approx([0.0, 1.0, 0.0], abs=1e-6)


def test_jitter_leaves_grey_hue_alone_and_keeps_values_in_range():
    images = torch.rand(4, 3, 6, 6, generator=torch.Generator().manual_seed(0))
    out = Augmentation(colour="jitter", colour_prob=1.0).colours(images, torch.Generator().manual_seed(1))
    assert out.shape == images.shape and 0 <= float(out.min()) and float(out.max()) <= 1
    assert not torch.equal(out, images)
    grey = torch.full((1, 3, 2, 2), 0.4)
    grey_out = Augmentation(colour="jitter", colour_prob=1.0).colours(grey, torch.Generator().manual_seed(1))
    assert torch.allclose(grey_out[0, 0], grey_out[0, 1]) and torch.allclose(grey_out[0, 1], grey_out[0, 2])


def test_no_augmentation_draws_nothing():
    generator = torch.Generator().manual_seed(0)
    state = generator.get_state()
    assert Augmentation().flips(8, generator).tolist() == [False] * 8
    images = torch.rand(2, 3, 4, 4)
    assert Augmentation(flip=0.5).colours(images, generator) is images
    assert torch.equal(generator.get_state(), state)


def test_a_cached_flip_takes_the_mirrored_copy_and_mirrors_the_depth(tiny_tr2m_cfg):
    cfg = dataclasses.replace(tiny_tr2m_cfg, data=dataclasses.replace(tiny_tr2m_cfg.data, train_size=4))
    exp = Experiment.create(cfg)
    split = exp.encode("train", flip=True)
    plain = split.random_tiles(torch.arange(4), torch.Generator().manual_seed(0))
    flipped = dataclasses.replace(split, flip_prob=1.0).random_tiles(torch.arange(4), torch.Generator().manual_seed(0))
    mirrored = split.flipped_features(torch.arange(4))
    for key, value in mirrored.items():
        assert torch.equal(flipped.features[key], value)
    assert torch.equal(flipped.depth, plain.depth.flip(-1))
    assert not torch.equal(flipped.features["image_tokens"], plain.features["image_tokens"])


def run_with(tiny_tr2m_cfg, tmp_path, **data):
    settings = config_to_dict(tiny_tr2m_cfg)
    settings["data"] = {**settings["data"], "augment": True, **data}
    settings["train"] = {**settings["train"], "max_epochs": 1}
    cfg = load_config_dict(settings)
    exp = Experiment.create(cfg)
    _, train = exp.train(tmp_path)
    return train, (tmp_path / TRAIN_LOG).read_text()


def test_the_run_log_says_how_augmented_frames_are_served(tiny_tr2m_cfg, tmp_path):
    train, log = run_with(tiny_tr2m_cfg, tmp_path / "flip", augment_flip=0.5)
    assert train.flip_prob == 0.5 and train.flipped_arrays is not None
    assert "flip augmentation (p=0.5) takes their mirrored copies" in log

    train, log = run_with(tiny_tr2m_cfg, tmp_path / "jitter", augment_flip=0.5, augment_colour="jitter")
    assert isinstance(train, OnTheFlySplit) and train.augmentation.colour == "jitter"
    assert "decoded and encoded at every step (data.augment_colour=jitter" in log

    _, log = run_with(tiny_tr2m_cfg, tmp_path / "nothing")  # switched on, but nothing to apply: said so
    assert log.strip().endswith(
        "encoded once, read from memory; data.augment is on but sets nothing here (augment_flip 0, no augment_colour): no augmentation"
    )


def test_augmentation_settings_are_checked():
    from clipdepth.config import with_overrides

    with pytest.raises(ConfigError, match=r"data.augment_colour='hue': must be null or one of"):
        load_config_dict({"data": {"augment_colour": "hue"}})
    with pytest.raises(ConfigError, match=r"data.augment_flip=1.5: must be between 0 and 1"):
        load_config_dict({"data": {"augment_flip": 1.5}})
    assert Augmentation.from_data(with_overrides(DataConfig(), ["augment=true", "augment_flip=0"])) is None
    # the recipes name the release's augmentation; it applies only when switched on
    assert Augmentation.from_data(with_overrides(DataConfig(), ["augment_flip=0.5"])) is None


def test_switching_augmentation_on_reuses_the_feature_cache(tiny_tr2m_cfg, tmp_path):
    cache = tmp_path / "cache"
    settings = config_to_dict(tiny_tr2m_cfg)
    settings["train"] = {**settings["train"], "max_epochs": 1, "feature_cache": str(cache)}
    Experiment.create(load_config_dict(settings)).train(tmp_path / "a")
    written = {p: p.stat().st_mtime_ns for p in (cache / "train").rglob("*")}
    settings["data"] = {**settings["data"], "augment": True, "augment_flip": 0.5}
    Experiment.create(load_config_dict(settings)).train(tmp_path / "b")  # refused before: "data.augment: cached False"
    assert {p: p.stat().st_mtime_ns for p in written} == written  # the plain frames read, not rebuilt
    assert (cache / "train_flip").is_dir()  # the mirrored copies added beside them
