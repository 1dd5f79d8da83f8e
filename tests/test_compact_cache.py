"""TR2M's compact split storage (io.stored): the image as JPEG, the relative depth as lossless
PNGs, int8 tokens; what reads back equals an independent decode, the cache key follows the
storage, and a cache of an earlier format is built anew rather than misread."""

import dataclasses
import io
import json

import numpy as np
import pytest
import torch
from PIL import Image

from clipdepth.config import config_to_dict, load_config_dict
from clipdepth.errors import ConfigError
from clipdepth.features.cache import FORMAT_VERSION, cache_key, frame_names
from clipdepth.io.stored import EncodedRows, QuantizedRows
from clipdepth.data import get_dataset
from clipdepth.training.run import Experiment


def experiment(cfg, *overrides, cache=None):
    cfg = load_config_dict(config_to_dict(cfg), list(overrides))
    if cache is not None:
        cfg = dataclasses.replace(cfg, train=dataclasses.replace(cfg.train, feature_cache=str(cache)))
    return Experiment.create(cfg)


def pillow_jpeg(image: torch.Tensor, quality: int) -> torch.Tensor:
    """(3, H, W) uint8 through a JPEG written and read by Pillow alone."""
    buffer = io.BytesIO()
    Image.fromarray(image.permute(1, 2, 0).numpy()).save(buffer, format="JPEG", quality=quality)
    return torch.from_numpy(np.asarray(Image.open(buffer).convert("RGB"))).permute(2, 0, 1)


def test_a_cached_jpeg_image_reads_back_as_pillows_decode_and_raw_png_relative_stay_exact(tiny_tr2m_cfg, tmp_path):
    raw = experiment(tiny_tr2m_cfg, "tr2m.cache_image=raw", "tr2m.cache_relative=fp16").encode("train", flip=False)
    jpeg = experiment(tiny_tr2m_cfg, "tr2m.cache_image_quality=80", cache=tmp_path / "jpeg").encode("train", flip=False)
    png = experiment(tiny_tr2m_cfg, "tr2m.cache_image=png", cache=tmp_path / "png").encode("train", flip=False)
    every = torch.arange(len(raw))
    images = raw.arrays["image"]
    assert isinstance(images, torch.Tensor) and images.dtype == torch.uint8 and isinstance(jpeg.arrays["image"], EncodedRows)
    expected = torch.stack([pillow_jpeg(image, 80) for image in images])
    assert not torch.equal(expected, images)  # JPEG is lossy: the test would notice a raw copy
    batch = jpeg.random_tiles(every, torch.Generator().manual_seed(0))  # the training road
    assert torch.equal(batch.features["image"], expected)
    assert torch.equal(jpeg.resident("cpu").arrays["image"], expected)  # decoded once where it fits
    assert torch.equal(png.features(every)["image"], images)  # lossless
    for split in (jpeg, png):  # the relative depth's fp16 values, bit for bit
        assert isinstance(split.arrays["relative"], EncodedRows)
        assert torch.equal(split.features(every)["relative"], raw.features(every)["relative"])
    assert torch.equal(jpeg.features(every)["image_tokens"], raw.features(every)["image_tokens"])  # fp16 by default


def test_int8_rows_dequantise_within_half_a_step_of_the_token_absmax():
    hand = QuantizedRows.quantize(torch.tensor([[[127.0, -63.5, 0.5, 0.0], [0.0, 0.0, 0.0, 0.0]]]))
    assert torch.equal(hand.values, torch.tensor([[[127, -64, 0, 0], [0, 0, 0, 0]]], dtype=torch.int8))
    assert torch.equal(hand[torch.tensor([0])], torch.tensor([[[127.0, -64.0, 0.0, 0.0], [0.0] * 4]]))
    x = torch.randn(5, 3, 4, 64, generator=torch.Generator().manual_seed(0)).half() * 7
    back = QuantizedRows.quantize(x)[torch.arange(5)]
    bound = x.float().abs().amax(-1, keepdim=True) / 254
    assert back.dtype == torch.float32 and ((back - x.float()).abs() <= bound * (1 + 1e-6)).all()


def test_int8_tokens_through_the_cache(tiny_tr2m_cfg, tmp_path):
    fp16 = experiment(tiny_tr2m_cfg).encode("train", flip=True)
    int8 = experiment(tiny_tr2m_cfg, "tr2m.cache_tokens=int8").encode("train", flip=True)
    cached = experiment(tiny_tr2m_cfg, "tr2m.cache_tokens=int8", cache=tmp_path / "c").encode("train", flip=True)
    every = torch.arange(len(fp16))
    tokens = fp16.features(every)["image_tokens"]
    assert isinstance(cached.arrays["image_tokens"], QuantizedRows) and cached.nbytes() < fp16.nbytes()
    for split in (int8, cached):
        for got, want in ((split.features(every), tokens), (split.flipped_features(every), fp16.flipped_features(every)["image_tokens"])):
            bound = want.abs().amax(-1, keepdim=True) / 254
            assert ((got["image_tokens"] - want).abs() <= bound * (1 + 1e-6)).all()
    assert torch.equal(cached.features(every)["image_tokens"], int8.features(every)["image_tokens"])
    resident = cached.resident("cpu").arrays["image_tokens"]
    assert resident.values.dtype == torch.int8 and torch.equal(resident[every], int8.features(every)["image_tokens"])


def test_the_cache_key_follows_the_storage(tiny_tr2m_cfg):
    def key(*overrides, split="train"):
        exp = experiment(tiny_tr2m_cfg, *overrides)
        names = frame_names(get_dataset(exp.cfg.data, split))
        return cache_key(exp.model, exp.preprocessor, exp.cfg.data, split, False, names, purpose="train" if split == "train" else "score")

    default = key()
    assert default["format"] == FORMAT_VERSION
    assert default["storage"] == {"image": "jpeg", "image_quality": 90, "relative": "png", "tokens": "fp16"}
    for overrides in (["tr2m.cache_image=raw"], ["tr2m.cache_image_quality=70"], ["tr2m.cache_tokens=int8"], ["tr2m.cache_relative=fp16"]):
        assert key(*overrides) != default, overrides
    # a scored split keeps no image and fp16 tokens: only the relative depth's form is its key's
    assert key(split="val") == key("tr2m.cache_image=raw", "tr2m.cache_tokens=int8", split="val")
    assert key(split="val") != key("tr2m.cache_relative=fp16", split="val")
    with pytest.raises(ConfigError, match=r"^tr2m.cache_image='webp': must be one of \['jpeg', 'png', 'raw'\]") as err:
        key("tr2m.cache_image=webp")
    assert "\n" not in str(err.value)


def test_a_cache_of_an_earlier_format_is_built_anew_not_misread(tiny_tr2m_cfg, tmp_path, capsys):
    exp = experiment(tiny_tr2m_cfg, cache=tmp_path / "cache")
    exp.encode("train", flip=False)
    folder = tmp_path / "cache" / "train"
    index = json.loads((folder / "cache.json").read_text())
    index["key"]["format"] = 3
    (folder / "cache.json").write_text(json.dumps(index))
    (folder / "shard_00000" / "image.npy").write_bytes(b"format 3 kept the raw image here")
    (folder / "notes.txt").write_text("the user's")
    capsys.readouterr()
    split = exp.encode("train", flip=False)
    assert "format 3 of an earlier clipdepth; building it anew" in capsys.readouterr().err
    assert json.loads((folder / "cache.json").read_text())["key"]["format"] == FORMAT_VERSION
    assert not (folder / "shard_00000" / "image.npy").exists() and (folder / "notes.txt").read_text() == "the user's"
    fresh = experiment(tiny_tr2m_cfg).encode("train", flip=False)
    every = torch.arange(len(fresh))
    assert all(torch.equal(split.features(every)[k], v) for k, v in fresh.features(every).items())
