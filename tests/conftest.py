"""Shared fixtures: tiny random-weight models (never trained ones) and the real RGB-D samples."""
from __future__ import annotations

from pathlib import Path

import pytest

from clipdepth.config import Config, EncoderConfig, load_config

SHARED = Path(__file__).resolve().parents[2] / "shared"
SAMPLES = SHARED / "data" / "rgbd-samples"


@pytest.fixture
def rgbd_samples() -> Path:
    if not (SAMPLES / "manifest.json").is_file():
        pytest.skip(f"real RGB-D samples not found at {SAMPLES} (../shared is absent in this checkout)")
    return SAMPLES


TINY_ENCODER = dict(
    random_init=True, image_size=56, patch_size=14, hidden_size=64, num_layers=2, num_heads=4,
    intermediate_size=128, projection_dim=32, text_hidden_size=32, text_num_layers=1, text_num_heads=2,
)


@pytest.fixture
def tiny_encoder_cfg() -> EncoderConfig:
    return EncoderConfig(**TINY_ENCODER)


@pytest.fixture
def tiny_cfg(tmp_path: Path) -> Config:
    """A whole recipe at toy size: 4x4 patch grid, a handful of synthetic scenes."""
    overrides = [f"encoder.{k}={v}" for k, v in TINY_ENCODER.items()] + [
        "data.train_size=6", "data.val_size=3", "data.test_size=3", "data.height=48", "data.width=64",
        "train.batch_size=4", "train.max_epochs=2", "eval.batch_size=4", f"output_dir={tmp_path / 'run'}",
    ]
    return load_config("demo", overrides)
