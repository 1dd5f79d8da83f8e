"""Shared fixtures: tiny random-weight models (never trained ones) and the real RGB-D samples."""

from __future__ import annotations

from pathlib import Path

import pytest

from clipdepth.config import Config, CLIPEncoderConfig, load_config

SHARED = Path(__file__).resolve().parents[2] / "shared"
SAMPLES = SHARED / "data" / "rgbd-samples"


@pytest.fixture
def rgbd_samples() -> Path:
    if not (SAMPLES / "manifest.json").is_file():
        pytest.skip(f"real RGB-D samples not found at {SAMPLES} (../shared is absent in this checkout)")
    return SAMPLES


TINY_ENCODER = dict(
    random_init=True,
    image_size=56,
    patch_size=14,
    hidden_size=64,
    num_layers=2,
    num_heads=4,
    intermediate_size=128,
    projection_dim=32,
    text_hidden_size=32,
    text_num_layers=1,
    text_num_heads=2,
)


@pytest.fixture
def tiny_encoder_cfg() -> CLIPEncoderConfig:
    return CLIPEncoderConfig(**TINY_ENCODER)


@pytest.fixture
def tiny_cfg(tmp_path: Path) -> Config:
    """A whole recipe at toy size: 4x4 patch grid, a handful of synthetic scenes."""
    overrides = [f"clip.{k}={v}" for k, v in TINY_ENCODER.items()] + [
        "data.train_size=6",
        "data.val_size=3",
        "data.test_size=3",
        "data.height=48",
        "data.width=64",
        "train.batch_size=4",
        "train.max_epochs=2",
        "eval.batch_size=4",
        f"output_dir={tmp_path / 'run'}",
    ]
    return load_config("demo", overrides)


TINY_TR2M = [
    "model=tr2m",
    "tr2m.image_encoder.random_init=true",
    "tr2m.image_encoder.hidden_size=32",
    "tr2m.image_encoder.num_layers=1",
    "tr2m.image_encoder.num_heads=2",
    "tr2m.relative.source=oracle",
    "tr2m.input_height=28",
    "tr2m.input_width=42",
    "tr2m.num_heads=2",
    "tr2m.neck_channels=16",
    "tr2m.decoder_channels=8",
    "tr2m.head_channels=8",
    "tr2m.head_hidden=4",
    "tr2m.contrast_pixels=16",
    "tr2m.lr=1e-3",
    "tr2m.warmup_steps=2",
    "eval.tta=false",
]
# A random-weight Depth Anything small enough for tests (its neck needs four backbone layers).
TINY_DEPTH_ANYTHING = [
    "tr2m.relative.source=depth_anything",
    "tr2m.relative.random_init=true",
    "tr2m.relative.hidden_size=32",
    "tr2m.relative.num_layers=4",
    "tr2m.relative.num_heads=2",
    "tr2m.relative.fusion_hidden_size=16",
    "tr2m.relative.neck_hidden_sizes=[8,16,32,32]",
]


# RSA at toy size: a tiny random CLIP RN50 text tower (the depthclip section), a small MLP, the GT oracle.
TINY_RSA = [
    "model=rsa",
    "depthclip.random_init=true",
    "depthclip.layers=[1,1,1,1]",
    "depthclip.width=8",
    "depthclip.embed_dim=32",
    "depthclip.text_width=32",
    "depthclip.text_layers=1",
    "depthclip.text_heads=2",
    "rsa.relative.source=oracle",
    "rsa.input_height=28",
    "rsa.input_width=42",
    "rsa.scene_widths=[16,8]",
    "rsa.head_widths=[8]",
    "rsa.lr=1e-3",
    "eval.tta=false",
]


@pytest.fixture
def tiny_tr2m_cfg(tiny_cfg: Config) -> Config:
    """A TR2M recipe at toy size on the tiny synthetic scenes, with the GT-oracle relative depth."""
    from clipdepth.config import config_to_dict, load_config_dict

    return load_config_dict(config_to_dict(tiny_cfg), TINY_TR2M)
