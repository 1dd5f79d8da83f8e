"""TR2M's frozen DINOv2 encoder and relative-depth sources, at toy size with random weights."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from pathlib import Path

import huggingface_hub.constants
import numpy as np
import pytest
import torch
from transformers import Dinov2Config, Dinov2Model

from clipdepth.config import DINOv2Config, RelativeDepthConfig
from clipdepth.encoders.dinov2 import DINOv2Encoder
from clipdepth.encoders.relative import DepthAnythingSource, OracleRelativeSource, build_relative_source, fill_invalid
from clipdepth.errors import ConfigError, DataError, EncoderLoadError

TINY_DINOV2 = DINOv2Config(random_init=True, hidden_size=32, num_layers=2, num_heads=2, patch_size=14)
# The DPT neck takes four backbone layers, so the tiny Depth Anything has four.
TINY_DEPTH_ANYTHING = RelativeDepthConfig(
    source="depth_anything",
    random_init=True,
    hidden_size=32,
    num_layers=4,
    num_heads=2,
    fusion_hidden_size=16,
    neck_hidden_sizes=[8, 16, 32, 32],
)
IMAGENET_MEAN = torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1)
IMAGENET_STD = torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1)


@pytest.fixture(scope="module")
def images() -> torch.Tensor:
    return torch.rand(2, 3, 56, 84, generator=torch.Generator().manual_seed(0))


@pytest.fixture(scope="module")
def dinov2() -> DINOv2Encoder:
    return DINOv2Encoder.from_config(TINY_DINOV2)


@pytest.fixture(scope="module")
def depth_anything() -> DepthAnythingSource:
    return DepthAnythingSource.from_config(TINY_DEPTH_ANYTHING)


def gt_depth(batch: int = 2, height: int = 48, width: int = 64, seed: int = 0) -> torch.Tensor:
    """Smooth positive depth in metres with scattered holes and an invalid "sky" band at the top."""
    generator = torch.Generator().manual_seed(seed)
    ys = torch.linspace(0, 1, height).view(height, 1)
    xs = torch.linspace(0, 1, width).view(1, width)
    depth = torch.stack([1.0 + 6.0 * ys + (2.0 + b) * xs * (1 - ys) for b in range(batch)])
    depth = depth * (1 + 0.2 * torch.rand(batch, height, width, generator=generator))
    holes = torch.rand(batch, height, width, generator=generator) < 0.1
    depth[holes] = 0.0
    depth[:, :8] = 0.0
    return depth


def affine_fit(rel: np.ndarray, depth: np.ndarray) -> tuple[float, float, np.ndarray]:
    """Least-squares rel = a / depth + b on the valid pixels: (a, b, residuals)."""
    valid = depth > 0
    design = np.stack([1.0 / depth[valid], np.ones(valid.sum())], axis=1)
    (a, b), *_ = np.linalg.lstsq(design, rel[valid].astype(np.float64), rcond=None)
    return float(a), float(b), rel[valid] - design @ np.array([a, b])


# DINOv2


def test_dinov2_patch_tokens_are_the_normed_last_layer_without_cls(dinov2: DINOv2Encoder, images: torch.Tensor) -> None:
    assert (dinov2.embed_dim, dinov2.patch_size) == (32, 14)
    tokens = dinov2(images)
    assert tokens.shape == (2, 4, 6, 32) and tokens.dtype == torch.float32
    outputs = dinov2.model(pixel_values=(images - IMAGENET_MEAN) / IMAGENET_STD, output_hidden_states=True)
    expected = outputs.last_hidden_state[:, 1:].reshape(2, 4, 6, 32)
    torch.testing.assert_close(tokens, expected, rtol=0, atol=0)
    # transformers' last_hidden_state is already through the final layernorm.
    torch.testing.assert_close(outputs.last_hidden_state, dinov2.model.layernorm(outputs.hidden_states[-1]))
    with pytest.raises(ValueError, match="multiples of 14"):
        dinov2(torch.rand(1, 3, 50, 84))


def test_dinov2_random_build_is_deterministic_and_leaves_global_rng_alone(dinov2: DINOv2Encoder, images: torch.Tensor) -> None:
    rng_state = torch.random.get_rng_state()
    same = DINOv2Encoder.from_config(TINY_DINOV2)
    other = DINOv2Encoder.from_config(dataclasses.replace(TINY_DINOV2, seed=1))
    assert torch.equal(torch.random.get_rng_state(), rng_state)
    assert same.fingerprint() == dinov2.fingerprint() and len(dinov2.fingerprint()) == 16
    assert torch.equal(same(images), dinov2(images))
    assert other.fingerprint() != dinov2.fingerprint()
    assert not torch.allclose(other(images), dinov2(images))
    assert "random-weight" in dinov2.description


def test_dinov2_random_matches_a_plain_transformers_model(dinov2: DINOv2Encoder, images: torch.Tensor) -> None:
    torch.manual_seed(TINY_DINOV2.seed)
    plain = Dinov2Model(Dinov2Config(hidden_size=32, num_hidden_layers=2, num_attention_heads=2, patch_size=14))
    expected = plain.eval()(pixel_values=(images - IMAGENET_MEAN) / IMAGENET_STD).last_hidden_state[:, 1:]
    torch.testing.assert_close(dinov2(images), expected.reshape(2, 4, 6, 32))


@pytest.mark.parametrize(
    "build", [lambda: DINOv2Encoder.from_config(TINY_DINOV2), lambda: DepthAnythingSource.from_config(TINY_DEPTH_ANYTHING)]
)
def test_frozen_and_stays_in_eval_mode(build: Callable[[], torch.nn.Module], images: torch.Tensor) -> None:
    module = build()
    parent = torch.nn.Sequential(module)
    parent.train()
    assert not any(m.training for m in module.modules())
    assert not any(p.requires_grad for p in module.parameters())
    out = module(images) if isinstance(module, DINOv2Encoder) else module(images, None, ["a", "b"])
    assert not out.requires_grad


def test_dinov2_saved_folder_loads_the_same_encoder(dinov2: DINOv2Encoder, images: torch.Tensor, tmp_path: Path) -> None:
    dinov2.model.save_pretrained(tmp_path)
    loaded = DINOv2Encoder.from_config(DINOv2Config(name=str(tmp_path)))
    assert loaded.description == str(tmp_path) and loaded.fingerprint() == dinov2.fingerprint()
    assert torch.equal(loaded(images), dinov2(images))


# Depth Anything


def test_depth_anything_gives_a_finite_map_at_the_input_size(depth_anything: DepthAnythingSource, images: torch.Tensor) -> None:
    assert not depth_anything.is_oracle and "random-weight" in depth_anything.description
    out = depth_anything(images, None, ["a", "b"])
    assert out.shape == (2, 56, 84) and out.dtype == torch.float32
    assert torch.isfinite(out).all() and out.abs().max() > 0
    # Sizes off the patch grid are resized in and out.
    odd = depth_anything(images[:, :, :50, :80], None, ["a", "b"])
    assert odd.shape == (2, 50, 80) and torch.isfinite(odd).all()


def test_depth_anything_saved_folder_round_trips(depth_anything: DepthAnythingSource, images: torch.Tensor, tmp_path: Path) -> None:
    depth_anything.model.save_pretrained(tmp_path)
    loaded = build_relative_source(RelativeDepthConfig(source="depth_anything", name=str(tmp_path)))
    assert isinstance(loaded, DepthAnythingSource) and loaded.description == str(tmp_path)
    assert loaded.fingerprint() == depth_anything.fingerprint()
    assert torch.equal(loaded(images, None, ["a", "b"]), depth_anything(images, None, ["a", "b"]))


def test_depth_anything_random_needs_four_layers() -> None:
    with pytest.raises(ConfigError, match="num_layers"):
        DepthAnythingSource.from_config(dataclasses.replace(TINY_DEPTH_ANYTHING, num_layers=2))


# Missing weights


LOADERS = {"dinov2": DINOv2Encoder.from_pretrained, "depth_anything": DepthAnythingSource.from_pretrained}


@pytest.mark.parametrize("loader", LOADERS.values(), ids=LOADERS.keys())
@pytest.mark.parametrize("kind", ["missing", "empty"])
def test_missing_weights_name_the_folder(loader: Callable[[str], object], kind: str, tmp_path: Path) -> None:
    folder = str(tmp_path / "no-such-weights") if kind == "missing" else str(tmp_path)
    with pytest.raises(EncoderLoadError) as info:
        loader(folder)
    message = str(info.value)
    assert folder in message and "\n" not in message and "save_pretrained" in message


@pytest.mark.parametrize("loader", LOADERS.values(), ids=LOADERS.keys())
def test_offline_hub_id_names_the_id(loader: Callable[[str], object], monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    hub_id = "clipdepth-tests/no-such-model"  # never in any cache
    with pytest.raises(EncoderLoadError) as info:
        loader(hub_id)
    message = str(info.value)
    assert hub_id in message and "\n" not in message and "network" in message


def test_dinov2_folder_is_not_depth_anything(dinov2: DINOv2Encoder, tmp_path: Path) -> None:
    # transformers would fill the whole DPT neck and head with random values without an error.
    dinov2.model.save_pretrained(tmp_path)
    with pytest.raises(EncoderLoadError, match="lacks") as info:
        DepthAnythingSource.from_pretrained(str(tmp_path))
    assert str(tmp_path) in str(info.value) and "\n" not in str(info.value)


# Oracle


def oracle(**overrides: object) -> OracleRelativeSource:
    cfg = dataclasses.replace(RelativeDepthConfig(source="oracle"), **overrides)
    source = build_relative_source(cfg)
    assert isinstance(source, OracleRelativeSource)
    return source


def test_oracle_without_distortion_is_an_affine_map_of_inverse_depth() -> None:
    source = oracle(oracle_gamma=[1.0, 1.0], oracle_distortion=0.0)
    depth = gt_depth()
    rel = source(torch.zeros(2, 3, 48, 64), depth, ["frame-a", "frame-b"])
    assert rel.shape == (2, 48, 64) and rel.dtype == torch.float32
    for d, r in zip(depth.numpy(), rel.numpy(), strict=True):
        a, b, residual = affine_fit(r, d)
        assert np.abs(residual).max() < 1e-5 * np.abs(r).max()
        scale = a * (1.0 / d[d > 0]).max()  # u = inv / max(inv), so rel = scale * u + shift
        assert 0.5 <= scale <= 2.0 and 0.0 <= b <= 0.1 * scale


def test_oracle_fills_holes_and_sky_densely() -> None:
    depth = gt_depth()
    rel = oracle(oracle_distortion=0.0)(torch.zeros(2, 3, 48, 64), depth, ["frame-a", "frame-b"])
    assert torch.isfinite(rel).all() and (rel > 0).all()
    for d, r in zip(depth, rel, strict=True):
        valid = d > 0
        # Filled values are averages of valid ones: within their range.
        assert r[valid].min() - 1e-6 <= r[~valid].min() and r[~valid].max() <= r[valid].max() + 1e-6


def test_fill_invalid_keeps_valid_values_and_spreads_them() -> None:
    values = torch.tensor([[1.0, 0.0, 3.0], [0.0, 0.0, 0.0]], dtype=torch.float64)
    valid = values > 0
    filled = fill_invalid(values, valid)
    assert filled[0, 0] == 1.0 and filled[0, 2] == 3.0
    assert ((filled >= 1.0) & (filled <= 3.0)).all()
    # One valid pixel fills the whole frame.
    only = torch.zeros_like(valid)
    only[0, 0] = True
    torch.testing.assert_close(fill_invalid(values, only), torch.ones(2, 3, dtype=torch.float64))


def test_oracle_depends_on_the_frame_name_only() -> None:
    source = oracle()
    depth = gt_depth()
    pair = source(torch.zeros(2, 3, 48, 64), depth, ["frame-a", "frame-b"])
    alone = source(torch.zeros(1, 3, 48, 64), depth[1:], ["frame-b"])
    assert torch.equal(pair[1], alone[0])  # same frame, other batch
    renamed = source(torch.zeros(1, 3, 48, 64), depth[1:], ["frame-c"])
    assert not torch.allclose(renamed[0], alone[0])
    reseeded = oracle(oracle_seed=1)(torch.zeros(1, 3, 48, 64), depth[1:], ["frame-b"])
    assert not torch.allclose(reseeded[0], alone[0])


def test_oracle_distortion_breaks_the_affine_relation() -> None:
    depth = gt_depth()
    rel = oracle(oracle_distortion=0.3)(torch.zeros(2, 3, 48, 64), depth, ["frame-a", "frame-b"])
    for d, r in zip(depth.numpy(), rel.numpy(), strict=True):
        _, _, residual = affine_fit(r, d)
        assert np.sqrt(np.mean(residual**2)) > 1e-2 * r[d > 0].std()


def test_oracle_is_labelled_and_fingerprinted_by_its_parameters() -> None:
    source = oracle()
    assert source.is_oracle
    assert source.description.startswith("ORACLE relative depth from ground truth (tests/demo/ablations only)")
    assert "0.1" in source.description and "[0.5, 2.0]" in source.description
    assert source.fingerprint() == oracle().fingerprint() and len(source.fingerprint()) == 16
    assert source.fingerprint() != oracle(oracle_distortion=0.2).fingerprint()


def test_oracle_without_depth_is_a_data_error() -> None:
    with pytest.raises(DataError) as info:
        oracle()(torch.zeros(2, 3, 48, 64), None, ["kitchen_0001", "kitchen_0002"])
    message = str(info.value)
    assert "\n" not in message and "kitchen_0001" in message
    assert message.startswith("this TR2M model takes its relative depth from the ground truth (the oracle source")
    assert "tr2m.relative.source=depth_anything" in message
    with pytest.raises(DataError, match="no valid pixel"):
        oracle()(torch.zeros(1, 3, 4, 4), torch.zeros(1, 4, 4), ["empty"])


def test_oracle_rejects_bad_ranges() -> None:
    with pytest.raises(ConfigError, match="oracle_scale"):
        oracle(oracle_scale=[2.0, 0.5])


def test_unknown_relative_source_lists_the_choices() -> None:
    with pytest.raises(ConfigError) as info:
        build_relative_source(RelativeDepthConfig(source="midas"))
    message = str(info.value)
    assert "'midas'" in message and "'depth_anything'" in message and "'oracle'" in message
