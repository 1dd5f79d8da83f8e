"""TR2M as a clipdepth model: trained, saved, loaded and run by the same code as PureCLIP-Depth."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors.torch import load_file

from clipdepth.cli.main import main
from clipdepth.config import config_to_dict, load_config_dict
from clipdepth.errors import DataError, EncoderLoadError
from clipdepth.evaluation.evaluate import evaluate_encoded
from clipdepth.io.stored import EncodedRows
from clipdepth.models import TR2M, FrameBatch, PureCLIPDepth, build_model, load_model
from clipdepth.models.base import as_float
from clipdepth.training.run import Experiment

from .conftest import TINY_DEPTH_ANYTHING


@pytest.fixture
def trained(tiny_tr2m_cfg):
    """A TR2M trained for two epochs on the tiny synthetic scenes (oracle relative depth)."""
    exp = Experiment.create(tiny_tr2m_cfg)
    result, _ = exp.train(tiny_tr2m_cfg.output_dir)
    return exp, result


def test_training_writes_a_tr2m_checkpoint_that_loads_and_predicts_the_same(trained):
    exp, result = trained
    history = result.history
    assert [row["epoch"] for row in history] == [1, 2] and all(np.isfinite(row["train_loss"]) for row in history)
    loaded = load_model(result.model_dir)
    assert isinstance(loaded, TR2M) and loaded.encoder.relative.is_oracle
    saved = load_file(str(result.model_dir / "model.safetensors"))
    assert saved.keys() == exp.model.head.state_dict().keys()  # the head only: no frozen weights
    # model/ is the checkpoint at the best validation abs_rel: scoring it again gives that value.
    val = exp.encode("val", flip=False)
    again = evaluate_encoded(loaded, val, exp.preprocessor, exp.protocol, tta=False).mean()
    assert again["abs_rel"] == pytest.approx(result.best["abs_rel"]["value"], rel=1e-6)


def test_a_step_uses_every_loss_and_moves_the_ema_key_network(tiny_tr2m_cfg):
    from clipdepth.training.trainer import Trainer

    exp = Experiment.create(tiny_tr2m_cfg)
    split = exp.encode("train", flip=False)
    trainer = Trainer.single_dataset(exp.model, tiny_tr2m_cfg, split, split, exp.preprocessor, exp.protocol, tiny_tr2m_cfg.output_dir)
    key, head = trainer.objective.key_head, exp.model.head
    before_key = {k: v.clone() for k, v in key.state_dict().items()}
    before_head = {k: v.clone() for k, v in head.state_dict().items()}
    record = trainer.train_step(torch.arange(4))
    assert {"si", "pseudo", "contrast", "smooth", "loss"} <= record.keys()
    m = tiny_tr2m_cfg.tr2m.ema_momentum
    for name, value in key.state_dict().items():
        if value.is_floating_point():  # key = m * key + (1 - m) * head, after the head's step
            torch.testing.assert_close(value, m * before_key[name] + (1 - m) * head.state_dict()[name])
    assert any(not torch.equal(before_head[k], v) for k, v in head.state_dict().items())


def test_global_factor_variant_gives_one_scale_and_shift_per_image(tiny_tr2m_cfg):
    cfg = dataclasses.replace(tiny_tr2m_cfg, tr2m=dataclasses.replace(tiny_tr2m_cfg.tr2m, global_factor=True))
    exp = Experiment.create(cfg)
    split = exp.encode("val", flip=False)
    _, out = exp.model.predict_from_features(split.features(slice(0, 2)))
    for scale, shift in zip(out.scale, out.shift):
        assert torch.all(scale == scale[0, 0]) and torch.all(shift == shift[0, 0])


def test_the_oracle_source_refuses_images_without_ground_truth(tiny_tr2m_cfg):
    model = build_model(tiny_tr2m_cfg)
    with pytest.raises(DataError, match="oracle source .* cannot predict from images alone"):
        model.infer(np.zeros((28, 42, 3), np.uint8), captions=["a room"])


def save_checkpoint(cfg, folder):
    torch.manual_seed(0)
    model = build_model(cfg)
    model.save_pretrained(folder)
    return model


@pytest.fixture(params=["pureclip_depth", "tr2m"])
def checkpoint(request, tiny_cfg, tiny_tr2m_cfg, tmp_path):
    """An (untrained) checkpoint of each model type; TR2M with a random Depth Anything, so that
    it runs on images without ground truth."""
    cfg = tiny_cfg if request.param == "pureclip_depth" else load_config_dict(config_to_dict(tiny_tr2m_cfg), TINY_DEPTH_ANYTHING)
    return request.param, tmp_path / "ckpt", save_checkpoint(cfg, tmp_path / "ckpt")


@pytest.fixture
def tr2m_checkpoint(tiny_tr2m_cfg, tmp_path):
    cfg = load_config_dict(config_to_dict(tiny_tr2m_cfg), TINY_DEPTH_ANYTHING)
    return tmp_path / "ckpt", save_checkpoint(cfg, tmp_path / "ckpt")


def test_each_model_type_loads_through_the_same_from_pretrained(checkpoint):
    kind, path, model = checkpoint
    loaded = load_model(path)
    assert type(loaded) is {"pureclip_depth": PureCLIPDepth, "tr2m": TR2M}[kind]
    assert type(loaded).from_pretrained.__func__ is PureCLIPDepth.from_pretrained.__func__  # one loader
    images = torch.rand(2, 3, *((loaded.input_size,) * 2 if kind == "pureclip_depth" else loaded.input_size))
    batch = FrameBatch(images, ["a", "b"], captions=[["a room"], ["a street"]])
    torch.testing.assert_close(loaded.eval().predict_frames(batch), model.eval().predict_frames(batch))


def test_each_model_type_runs_through_evaluate(checkpoint, tmp_path):
    kind, path, _ = checkpoint
    out = tmp_path / "eval"
    # Synthetic scenes carry their own captions, which TR2M reads.
    assert main(["evaluate", "--checkpoint", str(path), "--out", str(out), "--no-tta", "data.test_size=2"]) == 0
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["dataset"] == "synthetic_indoor" and np.isfinite(metrics["abs_rel"])
    assert len((out / "per_image.csv").read_text().splitlines()) == 3


def write_images(folder, names=("x", "y")):
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    for name in names:
        Image.fromarray(rng.integers(0, 255, (30, 40, 3), dtype=np.uint8)).save(folder / f"{name}.png")
    return folder


def test_each_model_type_runs_through_predict(checkpoint, tmp_path):
    kind, path, _ = checkpoint
    images = write_images(tmp_path / "in")
    caption = ["--caption", "a small room with a table"] if kind == "tr2m" else []
    assert main(["predict", str(images), "--checkpoint", str(path), "--out", str(tmp_path / "out"), "--npy", *caption]) == 0
    for name in ("x", "y"):
        depth = np.load(tmp_path / "out" / f"{name}.npy")
        assert depth.shape == (30, 40) and np.all(depth > 0)


def test_predict_reads_captions_per_image_and_names_a_missing_caption_file(tr2m_checkpoint, tmp_path, capsys):
    path, model = tr2m_checkpoint
    images = write_images(tmp_path / "in")
    captions = tmp_path / "captions"
    captions.mkdir()
    (captions / "x.txt").write_text("a dark corridor\nanother line\n")
    assert (
        main(["predict", str(images), "--checkpoint", str(path), "--out", str(tmp_path / "out"), "--npy", "--captions", str(captions)]) == 2
    )
    err = capsys.readouterr().err
    assert f"{captions / 'y.txt'}: no caption file for this frame" in err  # y has none: reported, x kept
    written = np.load(tmp_path / "out" / "x.npy")
    expected = model.infer(np.asarray(Image.open(images / "x.png")), captions=["a dark corridor"])["depth"][0]
    np.testing.assert_allclose(written, expected.numpy(), rtol=1e-5)
    # One caption file for every image: its first line.
    assert (
        main(
            [
                "predict",
                str(images / "y.png"),
                "--checkpoint",
                str(path),
                "--out",
                str(tmp_path / "one"),
                "--npy",
                "--captions",
                str(captions / "x.txt"),
            ]
        )
        == 0
    )
    expected = model.infer(np.asarray(Image.open(images / "y.png")), captions=["a dark corridor"])["depth"][0]
    np.testing.assert_allclose(np.load(tmp_path / "one" / "y.npy"), expected.numpy(), rtol=1e-5)


def test_predict_without_a_caption_is_one_line(tr2m_checkpoint, tmp_path, capsys):
    path, _ = tr2m_checkpoint
    assert main(["predict", str(write_images(tmp_path / "in")), "--checkpoint", str(path), "--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "give a caption" in err


@pytest.mark.parametrize("part", ["tr2m.relative", "tr2m.image_encoder"])
def test_missing_frozen_weights_are_one_clear_line(tiny_tr2m_cfg, tmp_path, part):
    overrides = [f"{part}.random_init=false", f"{part}.name={tmp_path / 'missing'}"]
    if part == "tr2m.relative":
        overrides.append("tr2m.relative.source=depth_anything")
    cfg = load_config_dict(config_to_dict(tiny_tr2m_cfg), overrides)
    with pytest.raises(EncoderLoadError) as error:
        build_model(cfg)
    message = str(error.value)
    assert "\n" not in message and str(tmp_path / "missing") in message


@pytest.mark.parametrize("split", ["train", "val"])
def test_tr2m_features_cache_like_the_in_memory_ones(tiny_tr2m_cfg, tmp_path, split):
    cached_cfg = dataclasses.replace(tiny_tr2m_cfg, train=dataclasses.replace(tiny_tr2m_cfg.train, feature_cache=str(tmp_path / "c")))
    cached = Experiment.create(cached_cfg).encode(split, flip=False)
    fresh = Experiment.create(tiny_tr2m_cfg).encode(split, flip=False)
    # only training reads the image (the smoothness loss)
    assert sorted(cached.arrays) == ["image"] * (split == "train") + ["image_tokens", "relative", "text", "text_lines"]
    assert all(isinstance(s.arrays["relative"], EncodedRows) for s in (cached, fresh))  # lossless PNGs of its fp16
    every = torch.arange(len(fresh))
    for name, value in fresh.arrays.items():
        assert torch.equal(cached.arrays[name][every], value[every]), name
    assert as_float(fresh.features(every))["text"].dtype == torch.float32


def test_an_interrupted_tr2m_run_resumes_exactly(tiny_tr2m_cfg, tmp_path, monkeypatch):
    """The EMA key network, the caption-line and pixel draws and the optimiser all resume."""
    from clipdepth.training.trainer import Trainer

    def run(out, resume=False):
        cfg = dataclasses.replace(tiny_tr2m_cfg, output_dir=str(out))
        return Experiment.create(cfg).train(out, resume=resume)

    run(tmp_path / "a")
    original, calls = Trainer.validate, [0]

    def killed_on_second_validation(self):
        calls[0] += 1
        if calls[0] == 2:
            raise KeyboardInterrupt
        return original(self)

    with monkeypatch.context() as m:
        m.setattr(Trainer, "validate", killed_on_second_validation)
        with pytest.raises(KeyboardInterrupt):
            run(tmp_path / "b")
    torch.manual_seed(99)  # a fresh process: resume must restore every RNG it draws from
    run(tmp_path / "b", resume=True)
    for name in ("last", "best_abs_rel"):
        a = load_file(str(tmp_path / "a" / "checkpoints" / name / "model.safetensors"))
        b = load_file(str(tmp_path / "b" / "checkpoints" / name / "model.safetensors"))
        assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a), name
    key_a = torch.load(tmp_path / "a" / "checkpoints" / "resume" / "training_state.pt", weights_only=True)["objective"]
    key_b = torch.load(tmp_path / "b" / "checkpoints" / "resume" / "training_state.pt", weights_only=True)["objective"]
    assert all(torch.equal(key_a["key_head"][k], key_b["key_head"][k]) for k in key_a["key_head"])


def test_head_init_is_saved_and_older_checkpoints_load_as_the_zero_init_they_trained_from(tiny_tr2m_cfg, tmp_path):
    model = save_checkpoint(tiny_tr2m_cfg, tmp_path / "new")
    assert model.cfg.tr2m.head_init == "released" and model.head.scale_head.conv_out.weight.any()
    assert load_model(tmp_path / "new").cfg.tr2m.head_init == "released"
    # Written before tr2m.head_init existed, when the last layers started at zero.
    assert load_model(Path(__file__).parent / "fixtures" / "layout_v1" / "tr2m").cfg.tr2m.head_init == "zero"
    zero = build_model(load_config_dict(config_to_dict(tiny_tr2m_cfg), ["tr2m.head_init=zero"]))
    assert not zero.head.scale_head.conv_out.weight.any() and not zero.head.shift_head.conv_out.bias.any()
