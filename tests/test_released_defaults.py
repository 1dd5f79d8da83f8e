"""Defaults that follow the released code, and checkpoints written before them still loading."""

import dataclasses
import json

import numpy as np
import pytest
import torch

from clipdepth.config import Config
from clipdepth.errors import ConfigError
from clipdepth.models import TR2M, PureCLIPDepth, load_model
from clipdepth.models.base import CONFIG_NAME


def test_encoder_precision_released_is_what_each_release_ran():
    # PureCLIP-Depth: OpenAI's clip.load on CUDA gives fp16 weights; TR2M's evaluation runs fp32
    assert PureCLIPDepth.precision_name("released") == "fp16" and TR2M.precision_name("released") == "fp32"
    assert PureCLIPDepth.precision_name("bf16") == "bf16"
    with pytest.raises(ConfigError, match="fp8"):
        PureCLIPDepth.precision_name("fp8")
    cfg = Config()
    assert (cfg.clip.precision, cfg.tr2m.image_encoder.precision, cfg.tr2m.relative.precision) == ("auto",) * 3
    # autocast only ever applies on CUDA
    assert not PureCLIPDepth.autocast(torch.device("cpu"), "auto")._enabled  # noqa: SLF001


def test_resize_auto_is_what_each_release_did(tiny_cfg, tiny_tr2m_cfg):
    assert PureCLIPDepth.build(tiny_cfg).preprocessor().resize == "linear"  # cv2 INTER_LINEAR
    assert TR2M.build(tiny_tr2m_cfg).preprocessor().resize == "align_corners"
    tiny_cfg.data.resize = "antialias"
    assert PureCLIPDepth.build(tiny_cfg).preprocessor().resize == "antialias"


def _as_old_checkpoint(folder, drop: dict[str, list[str]]) -> None:
    """Remove config fields, as a checkpoint written by clipdepth 0.1 lacks them."""
    meta = json.loads((folder / CONFIG_NAME).read_text())
    for section, fields in drop.items():
        for name in fields:
            del meta["config"][section][name]
    (folder / CONFIG_NAME).write_text(json.dumps(meta))


def test_a_clipdepth_01_pureclip_checkpoint_loads_with_its_biased_psi_and_antialiased_resize(tiny_cfg, tmp_path):
    old_cfg = dataclasses.replace(tiny_cfg, pureclip=dataclasses.replace(tiny_cfg.pureclip, psi_bias=True))
    torch.manual_seed(0)
    old = PureCLIPDepth.build(old_cfg).eval()
    old.save_pretrained(tmp_path / "old")
    _as_old_checkpoint(tmp_path / "old", {"pureclip": ["psi_bias", "fusion"], "data": ["resize", "depth_resize"]})
    loaded = load_model(tmp_path / "old")
    assert loaded.cfg.pureclip.psi_bias and loaded.head.psi[1].bias is not None
    assert loaded.resize_mode == "antialias" and loaded.cfg.pureclip.fusion == "concat"
    images = np.random.default_rng(0).integers(0, 255, (1, 40, 50, 3), dtype=np.uint8)
    old.cfg = dataclasses.replace(old.cfg, data=dataclasses.replace(old.cfg.data, resize="antialias"))  # as 0.1 did
    torch.testing.assert_close(loaded.infer(images)["depth"], old.infer(images)["depth"])
    # a checkpoint written now loads as it was written
    PureCLIPDepth.build(tiny_cfg).save_pretrained(tmp_path / "new")
    new = load_model(tmp_path / "new")
    assert not new.cfg.pureclip.psi_bias and new.head.psi[1].bias is None and new.resize_mode == "linear"


def test_a_clipdepth_01_tr2m_checkpoint_loads_with_its_biased_decoder_conv(tiny_tr2m_cfg, tmp_path):
    old_cfg = dataclasses.replace(tiny_tr2m_cfg, tr2m=dataclasses.replace(tiny_tr2m_cfg.tr2m, decoder_conv_bias=True))
    TR2M.build(old_cfg).save_pretrained(tmp_path / "old")
    _as_old_checkpoint(tmp_path / "old", {"tr2m": ["decoder_conv_bias"], "data": ["resize"]})
    loaded = load_model(tmp_path / "old")
    assert loaded.head.decoder.neck[2].bias is not None and loaded.resize_mode == "antialias"
