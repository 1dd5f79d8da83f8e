"""The contract every registered model keeps (``clipdepth.registry``), checked on a tiny config of
each: its spec is whole, a checkpoint round-trips to identical outputs and keeps only its model's
sections, loading refuses other frozen weights, ``infer`` takes any size and flip TTA, a trained
model takes a step and resumes exactly, and ``evaluate`` and ``predict`` run it through the CLI.
A new model registers its spec and adds its tiny settings to ``TINY`` below."""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors.torch import load_file

from clipdepth.cli.main import main
from clipdepth.config import CONFIG_SECTIONS, Config, config_to_dict, load_config, load_config_dict
from clipdepth.errors import CheckpointError, ConfigError
from clipdepth.models import MODELS, build_model, load_model
from clipdepth.models.base import CONFIG_NAME
from clipdepth.registry import ModelSpec, converter, model_sections, specs
from clipdepth.training.objectives import ZeroShotObjective, objective_class
from clipdepth.training.run import Experiment
from clipdepth.training.trainer import Trainer

from .conftest import TINY_DEPTH_ANYTHING, TINY_RSA, TINY_TR2M

# Each registered model's settings over ``tiny_cfg`` (the demo recipe at toy size: a tiny random
# CLIP ViT, 6/3/3 synthetic scenes of 48 x 64). TR2M with a random Depth Anything: it predicts on images.
TINY: dict[str, list[str]] = {
    "pureclip_depth": [],
    "tr2m": [*TINY_TR2M, *TINY_DEPTH_ANYTHING],
    "depthclip": ["model=depthclip", "depthclip.backbone=vit"],
    "learned_prompts": ["model=learned_prompts", "prompts.input_height=42", "prompts.input_width=56", "train.batch_size=3"],
    # RSA on the same random Depth Anything as TR2M's: it predicts on images
    "rsa": [*TINY_RSA, *(o.replace("tr2m.relative", "rsa.relative") for o in TINY_DEPTH_ANYTHING)],
}
MODEL_NAMES = sorted(specs())


def tiny(tiny_cfg: Config, name: str) -> Config:
    return load_config_dict(config_to_dict(tiny_cfg), ["device=cpu", *TINY[name]])


def captions(spec: ModelSpec, n: int) -> list[str] | None:
    return ["a small room with a table"] * n if spec.model.uses_captions else None


def test_every_registered_model_has_a_whole_spec_and_tiny_settings():
    assert set(TINY) == set(specs()) == set(MODELS) and Config().model in specs()
    for name, spec in specs().items():
        assert spec.model.architecture == name and MODELS[name] is spec.model
        assert type(getattr(Config(), spec.section)) is spec.section_type
        assert set(spec.sections) <= set(CONFIG_SECTIONS)
        assert spec.model.zero_shot == (spec.objective is None)
        assert objective_class(name) is (spec.objective_class() or ZeroShotObjective)
        assert all(key.split(".")[0] in spec.sections for key in spec.inference_overrides)
        for kind, _ in spec.converters:
            assert callable(converter(kind))
        assert spec.demo is None or callable(spec.demo)


@pytest.mark.parametrize("name", MODEL_NAMES)
def test_a_checkpoint_round_trips_and_keeps_only_its_models_sections(name, tiny_cfg, tmp_path):
    spec, cfg = specs()[name], tiny(tiny_cfg, name)
    torch.manual_seed(0)
    model = build_model(cfg).eval()
    folder = model.save_pretrained(tmp_path / "ckpt")
    saved = json.loads((folder / CONFIG_NAME).read_text())["config"]
    assert set(saved) & model_sections() == set(spec.sections)  # the shared sections and its model's only
    assert {"train", "data", "eval", "model", "seed"} <= set(saved)
    images = np.random.default_rng(0).integers(0, 255, (2, 40, 50, 3), dtype=np.uint8)
    expected = model.infer(images, tta=True, captions=captions(spec, 2))
    for loaded in (load_model(folder), type(model).from_pretrained(folder)):
        got = loaded.infer(images, tta=True, captions=captions(spec, 2))
        assert got.keys() == expected.keys()
        for key in expected:
            torch.testing.assert_close(got[key], expected[key], rtol=0, atol=0)
    # a checkpoint of before (every section in its config.json) loads the same
    meta = json.loads((folder / CONFIG_NAME).read_text())
    (folder / CONFIG_NAME).write_text(json.dumps({**meta, "config": config_to_dict(cfg)}))
    torch.testing.assert_close(
        load_model(folder).infer(images, captions=captions(spec, 2))["depth"],
        model.infer(images, captions=captions(spec, 2))["depth"],
        rtol=0,
        atol=0,
    )


@pytest.mark.parametrize("name", MODEL_NAMES)
def test_loading_refuses_other_frozen_weights(name, tiny_cfg, tmp_path):
    cfg = tiny(tiny_cfg, name)
    model = build_model(cfg)
    model.save_pretrained(tmp_path / "ckpt")
    # another seed of every random CLIP: the ViT (clip) and the RN50 (depthclip)
    seeds = {section: dataclasses.replace(getattr(cfg, section), seed=1) for section in ("clip", "depthclip")}
    other = type(model).build_encoder(dataclasses.replace(cfg, **seeds))
    with pytest.raises(CheckpointError, match="trained on frozen weights"):
        type(model).from_pretrained(tmp_path / "ckpt", encoder=other)


@pytest.mark.parametrize("name", MODEL_NAMES)
def test_infer_takes_other_sizes_and_flip_tta(name, tiny_cfg):
    spec = specs()[name]
    torch.manual_seed(0)
    model = build_model(tiny(tiny_cfg, name)).eval()
    for height, width in ((30, 40), (61, 47)):
        images = torch.rand(2, 3, height, width)
        plain = model.infer(images, captions=captions(spec, 2))["depth"]
        flipped = model.infer(images, tta=True, captions=captions(spec, 2))["depth"]
        for depth in (plain, flipped):
            assert depth.shape == (2, height, width) and torch.isfinite(depth).all() and (depth > 0).all()


class Killed(RuntimeError):
    pass


def kill_on_validate(monkeypatch, call: int) -> None:
    original, calls = Trainer.validate, [0]

    def validate(self):
        calls[0] += 1
        if calls[0] == call:
            raise Killed("simulated kill")
        return original(self)

    monkeypatch.setattr(Trainer, "validate", validate)


@pytest.mark.parametrize("name", MODEL_NAMES)
def test_a_trained_model_steps_and_resumes_exactly(name, tiny_cfg, tmp_path, monkeypatch):
    spec = specs()[name]
    cfg = dataclasses.replace(tiny(tiny_cfg, name), train=dataclasses.replace(tiny_cfg.train, log_every=1))
    if spec.objective is None:  # zero-shot: the trainer refuses it with what to run instead
        with pytest.raises(ConfigError, match="no trained weights"):
            Experiment.create(cfg)
        return
    torch.manual_seed(0)
    whole, _ = Experiment.create(cfg).train(tmp_path / "a")
    torch.manual_seed(0)
    with monkeypatch.context() as m:  # killed in epoch 2's validation: epoch 1's resume state is the last
        kill_on_validate(m, 2)
        with pytest.raises(Killed):
            Experiment.create(cfg).train(tmp_path / "b")
    torch.manual_seed(1234)  # a fresh process: resume restores the generators
    resumed, _ = Experiment.create(cfg).train(tmp_path / "b", resume=True)
    steps = [(tmp_path / run / "train_steps.jsonl").read_text().splitlines() for run in ("a", "b")]
    assert len(steps[0]) >= 2 and steps[1] == steps[0]  # none lost, none repeated, the same losses
    assert resumed.history == whole.history
    wa, wb = (load_file(str(tmp_path / run / "model" / "model.safetensors")) for run in ("a", "b"))
    assert wa.keys() == wb.keys() and all(torch.equal(wa[k], wb[k]) for k in wa)


@pytest.mark.parametrize("name", MODEL_NAMES)
def test_evaluate_and_predict_run_it_through_the_cli(name, tiny_cfg, tmp_path):
    spec = specs()[name]
    torch.manual_seed(0)
    folder = build_model(tiny(tiny_cfg, name)).save_pretrained(tmp_path / "ckpt")
    assert main(["evaluate", "--checkpoint", str(folder), "--batch-size", "2", "--out", str(tmp_path / "eval")]) == 0
    summary = json.loads((tmp_path / "eval" / "metrics.json").read_text())
    assert summary["n_images"] == 3 and summary["abs_rel"] > 0
    images = tmp_path / "in"
    images.mkdir()
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (30, 40, 3), dtype=np.uint8)).save(images / "x.png")
    caption = ["--caption", captions(spec, 1)[0]] if spec.model.uses_captions else []
    assert main(["predict", str(images), "--checkpoint", str(folder), "--out", str(tmp_path / "out"), "--npy", *caption]) == 0
    depth = np.load(tmp_path / "out" / "x.npy")
    assert depth.shape == (30, 40) and np.all(depth > 0)


def test_a_tr2m_checkpoint_has_no_pureclip_section_and_a_tr2m_run_refuses_pureclip_overrides(tiny_tr2m_cfg, tmp_path, capsys):
    folder = build_model(tiny_tr2m_cfg).save_pretrained(tmp_path / "ckpt")
    saved = json.loads((folder / CONFIG_NAME).read_text())["config"]
    assert "pureclip" not in saved and "prompts" not in saved and {"tr2m", "clip"} <= saved.keys()
    with pytest.raises(ConfigError, match=r"^pureclip\.max_depth: the tr2m model does not read the pureclip section;"):
        load_config("demo_tr2m", ["pureclip.max_depth=20"])
    with pytest.raises(ConfigError, match="the tr2m model does not read the pureclip section"):  # a first-layout name
        with pytest.warns(FutureWarning, match="'head.use_cls=false' is a deprecated clipdepth name"):
            load_config("demo", ["model=tr2m", "head.use_cls=false"])
    load_config("demo_tr2m", ["tr2m.max_depth=20", "clip.precision=fp32", "data.height=48"])  # its own and shared: taken
    out = tmp_path / "run"
    assert main(["train", "--config", "demo_tr2m", "--out", str(out), "pureclip.max_depth=20"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "pureclip.max_depth: the tr2m model does not read the pureclip section" in err
    assert not out.exists()
