"""DepthCLIP (zero-shot): the depth equals a hand computation from the same features and text
embeddings, the release's NYU crop and paste-back, the ViT variant, the checkpoint without trained
weights through train / evaluate / predict / the feature cache, and one-line weight errors."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from clipdepth.cli.main import main
from clipdepth.config import load_config
from clipdepth.data import get_dataset
from clipdepth.encoders.clip_resnet import CLIPResNet, ResNetCLIPEncoder
from clipdepth.errors import ConfigError, EncoderLoadError
from clipdepth.evaluation.checkpoint import evaluate_checkpoint
from clipdepth.evaluation.evaluate import evaluate_encoded
from clipdepth.evaluation.protocol import get_protocol
from clipdepth.features.cache import build_cache, cache_key, frame_names, load_cache, start_cache
from clipdepth.models import DepthCLIP, build_model, load_model
from clipdepth.models.base import WEIGHTS_NAME, FrameBatch
from clipdepth.models.depthclip import depth_prompts
from clipdepth.training.run import Experiment

from .conftest import TINY_ENCODER

# A random-weight ModifiedResNet CLIP at toy size: layer-4 map of 256 channels, embeddings of 128
# (text heads = width // 64, the rule a weights file is read with).
TINY_RN = [
    "model=depthclip",
    "depthclip.random_init=true",
    "depthclip.layers=[1,1,1,1]",
    "depthclip.width=8",
    "depthclip.embed_dim=128",
    "depthclip.text_width=64",
    "depthclip.text_layers=1",
    "depthclip.text_heads=1",
    "depthclip.input_height=64",
    "depthclip.input_width=96",
]


def tiny_cfg(tmp_path: Path, *extra: str):
    return load_config(
        "depthclip_nyu",
        [
            *TINY_RN,
            "data.dataset=synthetic_indoor",
            "data.input_crop=null",
            "eval.protocol=synthetic_indoor",
            "data.test_size=3",
            "data.val_size=2",
            "data.train_size=2",
            "data.height=48",
            "data.width=64",
            "device=cpu",
            f"output_dir={tmp_path / 'run'}",
            *extra,
        ],
    )


@pytest.fixture(scope="module")
def model() -> DepthCLIP:
    return build_model(load_config("depthclip_nyu", [*TINY_RN, "device=cpu"])).eval()


def test_released_defaults():
    cfg = load_config("depthclip_nyu").depthclip
    assert depth_prompts(cfg)[0] == ["This object is giant"] and depth_prompts(cfg)[-1] == ["This object is unseen"]
    assert cfg.depth_words == ["giant", "extremely close", "close", "not in distance", "a little remote", "far", "unseen"]
    assert cfg.bins == [1.00, 1.50, 2.00, 2.25, 2.50, 2.75, 3.00]
    assert cfg.logit_scale / cfg.temperature == pytest.approx(1000.0)
    assert (cfg.input_height, cfg.input_width, cfg.layers, cfg.width, cfg.embed_dim) == (416, 544, [3, 4, 6, 3], 64, 1024)
    with pytest.raises(ConfigError, match="depthclip.channel_reduction"):
        load_config("depthclip_nyu", ["depthclip.channel_reduction=mean"])
    with pytest.raises(ConfigError, match="one per word"):
        build_model(load_config("depthclip_nyu", [*TINY_RN, "depthclip.bins=[1.0,2.0]"]))


def _numpy_depth(features: np.ndarray, text: np.ndarray, bins: np.ndarray, reduction: str) -> np.ndarray:
    """By hand: normalise each location over all channels, keep every other channel (the release's
    nearest interpolation 2048 -> 1024) or average pairs, cosine x 100 / 0.1, softmax, times the bins."""
    f = features / np.linalg.norm(features, axis=-1, keepdims=True)
    f = f[..., ::2] if reduction == "nearest" else 0.5 * (f[..., ::2] + f[..., 1::2])
    logits = 100.0 * (f @ text.T) / 0.1
    logits -= logits.max(axis=-1, keepdims=True)
    p = np.exp(logits) / np.exp(logits).sum(axis=-1, keepdims=True)
    return p @ bins


@pytest.mark.parametrize("reduction", ["nearest", "linear"])
def test_depth_is_the_hand_computation_from_features_and_text(reduction):
    cfg = load_config("depthclip_nyu", [*TINY_RN, f"depthclip.channel_reduction={reduction}"])
    m = build_model(cfg).eval()
    images = torch.rand(2, 3, 64, 96, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        features = m.encode(images)  # (2, 2, 3, 256): the raw layer-4 map
        layer4 = m.encoder.model.visual(m.encoder.normalize(images))
        # the text embeddings, each prompt's embedding normalised (one template and object here)
        text = torch.nn.functional.normalize(m.encoder.encode_text([f"This object is {w}" for w in cfg.depthclip.depth_words]), dim=-1)
        out = m.head(features)
    assert features.shape == (2, 2, 3, 256) and m.head.text.shape == (7, 128)
    np.testing.assert_allclose(features.numpy(), layer4.permute(0, 2, 3, 1).numpy())  # attention pool skipped
    np.testing.assert_allclose(m.head.text.numpy(), text.numpy(), atol=1e-6)
    expected = _numpy_depth(features.double().numpy(), text.double().numpy(), np.array(cfg.depthclip.bins), reduction)
    np.testing.assert_allclose(out.depth.numpy(), expected, rtol=1e-4, atol=1e-4)
    # the map at the input size: bilinear with align_corners from the 2 x 3 grid; flip TTA averages the grid
    depth, _ = m.predict_from_features({"features": features})
    assert depth.shape == (2, 64, 96)
    np.testing.assert_allclose(depth[:, ::63, ::95].numpy(), out.depth.numpy()[:, ::1, ::2], rtol=1e-5)
    flipped = m.encode(images.flip(-1))
    tta, _ = m.predict_from_features({"features": features}, {"features": flipped})
    grid = 0.5 * (out.depth + m.head(flipped).depth.flip(-1))
    np.testing.assert_allclose(tta[:, ::63, ::95].numpy(), grid.numpy()[:, :, ::2], rtol=1e-5)


def test_templates_and_objects_are_averaged_then_normalised(model):
    cfg = load_config(
        "depthclip_nyu", [*TINY_RN, "depthclip.templates=['This {} is {}','A {} that is {}']", "depthclip.objects=[object,thing]"]
    )
    m = build_model(cfg)
    word = cfg.depthclip.depth_words[2]
    prompts = [t.format(o, word) for o in ("object", "thing") for t in ("This {} is {}", "A {} that is {}")]
    assert depth_prompts(cfg.depthclip)[2] == prompts
    with torch.no_grad():
        each = torch.nn.functional.normalize(m.encoder.encode_text(prompts), dim=-1).mean(0)
    torch.testing.assert_close(m.head.text[2], torch.nn.functional.normalize(each, dim=-1))


def test_nyu_input_crop_and_paste_back_indices():
    """The release crops PIL box (60, 56, 604, 472) = rows 56..472, cols 60..604 (416 x 544), feeds
    it unresized and pastes the 416 x 544 prediction back at those indices of the 480 x 640 frame."""
    cfg = load_config("depthclip_nyu", [*TINY_RN, "depthclip.input_height=416", "depthclip.input_width=544"])
    assert cfg.data.input_crop == [56, 472, 60, 604]
    m = build_model(cfg)
    pre = m.preprocessor()
    assert pre.input_shape == (416, 544) and pre.crop == (56, 472, 60, 604)
    frame = np.random.default_rng(0).integers(0, 256, (1, 480, 640, 3), dtype=np.uint8)
    x = pre.images(frame)
    np.testing.assert_allclose(x[0].permute(1, 2, 0).numpy(), frame[0, 56:472, 60:604] / 255.0, atol=1e-6)  # no resize
    pred = torch.rand(1, 416, 544)
    full = pre.restore(pred, (480, 640))
    assert full.shape == (1, 480, 640)
    np.testing.assert_allclose(full[0, 56:472, 60:604].numpy(), pred[0].numpy(), atol=1e-6)
    # outside the pasted box: edge replication (the release leaves zeros there and drops them; docs/baselines.md)
    np.testing.assert_allclose(full[0, :56, 60:604].numpy(), np.broadcast_to(pred[0, 0].numpy(), (56, 544)), atol=1e-6)
    np.testing.assert_allclose(full[0, 56:472, 604:].numpy(), np.broadcast_to(pred[0, :, -1:].numpy(), (416, 36)), atol=1e-6)
    # the RN's 416 x 544 input gives the release's 13 x 17 map, upsampled back to 416 x 544
    with torch.no_grad():
        depth, out = m.predict_from_features(m.encode_frames(FrameBatch(x, ["f"])))
    assert out.depth.shape == (1, 13, 17) and depth.shape == (1, 416, 544)


def test_vit_variant_runs_the_same_head_on_clip_patch_tokens():
    cfg = load_config("depthclip_nyu", [*TINY_RN, "depthclip.backbone=vit", *(f"clip.{k}={v}" for k, v in TINY_ENCODER.items())])
    m = build_model(cfg).eval()
    assert m.input_size == 56 and m.frozen_precisions == {"clip": "fp16"}
    images = torch.rand(1, 3, 56, 56)
    with torch.no_grad():
        tokens = m.encoder(m.encoder.normalize(images)).patch_tokens
        text = torch.stack(
            [torch.nn.functional.normalize(m.encoder.encode_text([f"This object is {w}"])[0], dim=-1) for w in cfg.depthclip.depth_words]
        )
        out = m.head(m.encode(images))
    assert tokens.shape == (1, 4, 4, 32)  # already at the text width: no channel reduction
    f = torch.nn.functional.normalize(tokens, dim=-1)
    expected = (1000.0 * f @ text.T).softmax(-1) @ torch.tensor(cfg.depthclip.bins)
    torch.testing.assert_close(out.depth, expected, rtol=1e-4, atol=1e-4)
    assert m.infer(np.zeros((40, 70, 3), np.uint8))["depth"].shape == (1, 40, 70)


def test_state_dict_has_openai_names_and_loads_from_a_file(model, tmp_path):
    state = model.encoder.model.state_dict()
    for name in (
        "visual.conv1.weight",
        "visual.layer1.0.downsample.0.weight",
        "visual.attnpool.c_proj.weight",
        "transformer.resblocks.0.attn.in_proj_weight",
        "transformer.resblocks.0.mlp.c_fc.weight",
        "token_embedding.weight",
        "positional_embedding",
        "ln_final.weight",
        "text_projection",
        "logit_scale",
    ):
        assert name in state
    path = tmp_path / "RN_tiny.pt"
    torch.save({**{k: v.half() for k, v in state.items()}, "input_resolution": torch.tensor(224)}, path)  # fp16, as OpenAI's
    loaded = CLIPResNet.from_state_dict(torch.load(path, weights_only=True))
    assert loaded.visual.feature_dim == 256 and loaded.embed_dim == 128
    cfg = load_config("depthclip_nyu", [*TINY_RN, "depthclip.random_init=false", f"depthclip.weights={path}"]).depthclip
    with pytest.raises(EncoderLoadError, match="cannot load the CLIP tokenizer"):  # no tokenizer offline for this id
        ResNetCLIPEncoder.from_config(type(cfg)(**{**cfg.__dict__, "tokenizer": str(tmp_path / "no_tokenizer")}))


def test_missing_weights_or_open_clip_is_one_line(tmp_path):
    cfg = load_config("depthclip_nyu", [f"depthclip.weights={tmp_path / 'RN50.pt'}"]).depthclip
    with pytest.raises(EncoderLoadError) as err:
        ResNetCLIPEncoder.from_config(cfg)
    assert "\n" not in str(err.value) and "RN50.pt" in str(err.value) and "depthclip.weights" in str(err.value)
    bad = tmp_path / "junk.pt"
    bad.write_bytes(b"not a checkpoint")
    with pytest.raises(EncoderLoadError) as err:
        ResNetCLIPEncoder.from_config(load_config("depthclip_nyu", [f"depthclip.weights={bad}"]).depthclip)
    assert "\n" not in str(err.value)
    try:
        import open_clip  # noqa: F401
    except ImportError:
        with pytest.raises(EncoderLoadError, match=r'pip install -e "\.\[openclip\]" in the clipdepth repository') as err:
            ResNetCLIPEncoder.from_config(load_config("depthclip_nyu", ["depthclip.weights=open_clip"]).depthclip)
        assert "\n" not in str(err.value)


def test_train_writes_a_checkpoint_without_weights_and_evaluate_and_predict_use_it(tmp_path, capsys):
    cfg = tiny_cfg(tmp_path)
    with pytest.raises(ConfigError, match="nothing to train|no trained weights"):
        Experiment.create(cfg)
    overrides = [
        *TINY_RN,
        "data.dataset=synthetic_indoor",
        "data.input_crop=null",
        "eval.protocol=synthetic_indoor",
        "data.test_size=3",
        "data.height=48",
        "data.width=64",
        "device=cpu",
    ]
    assert main(["train", "--config", "depthclip_nyu", "--out", str(tmp_path / "run"), *overrides]) == 0
    model_dir = tmp_path / "run" / "model"
    assert "nothing to train" in capsys.readouterr().out
    assert (tmp_path / "run" / "config.yaml").is_file() and (model_dir / WEIGHTS_NAME).stat().st_size < 64
    meta = json.loads((model_dir / "config.json").read_text())
    assert meta["architecture"] == "depthclip" and meta["zero_shot"] is True
    assert main(["train", "--config", "depthclip_nyu", "--out", str(tmp_path / "run"), *overrides]) == 2  # refuses a run
    loaded = load_model(model_dir)
    fresh = build_model(cfg)
    x = torch.rand(1, 3, 48, 64)
    torch.testing.assert_close(loaded.infer(x, tta=True)["depth"], fresh.infer(x, tta=True)["depth"])

    summary, _ = evaluate_checkpoint(model_dir, out=tmp_path / "eval", batch_size=2)
    assert summary["n_images"] == 3 and summary["flip_tta"] is True and 0 < summary["abs_rel"]

    # the same numbers from the feature cache (frozen image side encoded once, mirrored frames too)
    data = loaded.cfg.data
    dataset, pre = get_dataset(data, "test"), loaded.preprocessor()
    key = cache_key(loaded, pre, data, "test", True, frame_names(dataset))
    folder = tmp_path / "cache"
    start_cache(folder, key, 2)
    build_cache(folder, loaded, dataset, pre, key, 2, 2)
    split = load_cache(folder, key)
    assert tuple(split.features(slice(0, 1), "cpu")["features"].shape) == (1, 2, 3, 256)
    acc = evaluate_encoded(loaded, split, pre, get_protocol("synthetic_indoor"), tta=True)
    assert acc.mean()["abs_rel"] == pytest.approx(summary["abs_rel"], rel=1e-5)

    image = tmp_path / "in.png"
    Image.fromarray(np.full((30, 50, 3), 128, np.uint8)).save(image)
    assert main(["predict", str(image), "--checkpoint", str(model_dir), "--out", str(tmp_path / "pred")]) == 0
    assert any((tmp_path / "pred").iterdir())


def test_benchmark_labels_a_zero_shot_checkpoint_by_its_clip():
    from clipdepth.evaluation.benchmark import weights_summary

    real, line = weights_summary({"architecture": "depthclip", "zero_shot": True}, load_config("depthclip_nyu"))
    assert real and "zero-shot" in line
    real, line = weights_summary({"zero_shot": True}, load_config("depthclip_nyu", TINY_RN))
    assert not real and "depthclip" in line and "head" not in line
    real, _ = weights_summary({"zero_shot": True}, load_config("depthclip_nyu", ["depthclip.backbone=vit", "clip.random_init=true"]))
    assert not real
