"""Learned depth prompts (Auty & Mikolajczyk): bins, prompt layout, the frozen text path, training
that moves only the prompt tokens, a short synthetic run, checkpoints and the commands."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from clipdepth.cli.main import main
from clipdepth.config import load_config
from clipdepth.data import get_dataset
from clipdepth.errors import ConfigError
from clipdepth.evaluation.evaluate import evaluate_constant
from clipdepth.evaluation.protocol import valid_mask
from clipdepth.features.memory import TrainBatch
from clipdepth.models import FrameBatch, LearnedPrompts, build_model, load_model
from clipdepth.models.base import as_float
from clipdepth.models.learned_prompts import bin_centres, encode_token_embeddings, prompt_layout
from clipdepth.training.objectives import LearnedPromptsObjective
from clipdepth.training.run import Experiment

from .conftest import TINY_ENCODER

TINY_PROMPTS = [f"clip.{k}={v}" for k, v in TINY_ENCODER.items()] + [
    "model=learned_prompts",
    "prompts.input_height=42",
    "prompts.input_width=56",
    "data.height=48",
    "data.width=64",
    "data.train_size=6",
    "data.val_size=3",
    "data.test_size=3",
    "train.batch_size=3",
    "train.max_epochs=2",
    "eval.batch_size=4",
    "eval.tta=false",
]


@pytest.fixture
def cfg(tmp_path):
    return load_config("demo", [*TINY_PROMPTS, f"output_dir={tmp_path / 'run'}"])


def test_even_and_log_bin_centres_on_hand_computed_examples():
    # even: 7 bins over [1, 8] m are 1 m wide, centred at 1.5 .. 7.5
    torch.testing.assert_close(bin_centres(1.0, 8.0, 7, "even"), torch.arange(7, dtype=torch.float64) + 1.5)
    # log: 3 bins over [1, 1000] m are one decade each, centred at 10^0.5, 10^1.5, 10^2.5
    torch.testing.assert_close(bin_centres(1.0, 1000.0, 3, "log"), torch.tensor([10**0.5, 10**1.5, 10**2.5], dtype=torch.float64))
    # the release's dset-even-7 on NYU (0.001 - 10 m): width 9.999 / 7
    nyu = bin_centres(1e-3, 10.0, 7, "even")
    assert nyu[0].item() == pytest.approx(1e-3 + 9.999 / 14) and nyu[-1].item() == pytest.approx(10.0 - 9.999 / 14)
    # const80-log-256: the first centre half a log-bin above 0.001
    assert bin_centres(1e-3, 80.0, 256, "log")[0].item() == pytest.approx(math.exp(math.log(1e-3) + math.log(8e4) / 512))


def test_the_model_uses_the_configured_bins(cfg):
    model = build_model(
        load_config("demo", [*TINY_PROMPTS, "prompts.num_bins=4", "prompts.bin_scheme=log", "prompts.min_depth=0.5", "prompts.max_depth=8"])
    )
    torch.testing.assert_close(model.head.bin_centres, torch.tensor([0.5 * 2**0.5, 0.5 * 2**1.5, 0.5 * 2**2.5, 0.5 * 2**3.5]))
    assert model.head.depth_tokens.shape == (4, 1, TINY_ENCODER["text_hidden_size"])


def test_prompt_layout_puts_learned_slots_between_the_template_words(cfg):
    tokenizer = build_model(cfg).encoder.tokenizer
    layout = prompt_layout("{ctx} object {ctx} {depth}", tokenizer, 2, 77)
    words = tokenizer("object", add_special_tokens=False)["input_ids"]
    ids = layout.ids.tolist()
    assert ids[0] == tokenizer.bos_token_id and ids[-1] == tokenizer.eos_token_id
    assert layout.context_positions == [1, 2 + len(words)] and layout.depth_positions == [3 + len(words), 4 + len(words)]
    assert ids[2 : 2 + len(words)] == words and len(ids) == 5 + len(words) + 1
    with pytest.raises(ConfigError, match="prompts.template"):
        load_config("demo", [*TINY_PROMPTS, "prompts.template=no slot here"])


def test_the_learned_path_is_clips_own_text_tower_on_token_embeddings(cfg):
    """Word embeddings fed through ``encode_token_embeddings`` give CLIP's text features of the ids."""
    encoder = build_model(cfg).encoder
    ids = encoder.tokenizer(["this object appears to be close"], return_tensors="pt")["input_ids"]
    expected = encoder.model.text_projection(encoder.model.text_model(input_ids=ids).pooler_output)
    got = encode_token_embeddings(encoder, encoder.model.text_model.embeddings.token_embedding(ids))
    torch.testing.assert_close(got, expected)


def _batch(model, n=3, seed=0):
    g = torch.Generator().manual_seed(seed)
    images = torch.rand(n, 3, *model.input_size, generator=g)
    depth = 0.5 + 5 * torch.rand(n, *model.input_size, generator=g)
    depth[:, :2] = 0  # invalid pixels
    features = as_float(model.encode_frames(FrameBatch(images, [f"f{i}" for i in range(n)])))
    return TrainBatch(features, depth, [model.input_size] * n, torch.zeros(n, dtype=torch.long), 1)


@pytest.mark.parametrize("backbone", ["vit", "resnet"])
def test_only_the_prompt_tokens_get_gradient_and_clip_is_unchanged_by_training(backbone):
    tiny = TINY_PROMPTS if backbone == "vit" else TINY_RN_PROMPTS
    cfg = load_config("demo", [*tiny, "prompts.template='{ctx} object {depth}'"])
    model = build_model(cfg)
    before = {k: v.clone() for k, v in model.encoder.state_dict().items()}
    if backbone == "resnet":  # both RN50 towers are checked, the image one and the text one
        assert any(k.startswith("model.visual.") for k in before) and any(k.startswith("model.transformer.") for k in before)
    tokens_before = model.head.depth_tokens.detach().clone()
    objective = LearnedPromptsObjective(model, cfg, model.head, model.preprocessor())
    objective.plan(steps_per_epoch=3, max_epochs=1)
    trained = {id(p) for group in objective.optimizers["train"].param_groups for p in group["params"]}
    assert trained == {id(model.head.depth_tokens), id(model.head.context_tokens)}
    assert dict(model.head.named_parameters()).keys() == {"depth_tokens", "context_tokens"}
    assert not any(p.requires_grad for p in model.encoder.parameters())
    for step in range(3):
        record = objective.step(_batch(model, seed=step), step, torch.Generator())
        assert torch.isfinite(record["loss"])
        # the gradient went through the frozen text transformer to the tokens, and nowhere else
        assert model.head.depth_tokens.grad is not None and model.head.depth_tokens.grad.abs().sum() > 0
        assert model.head.context_tokens.grad.abs().sum() > 0
        assert all(p.grad is None for p in model.encoder.parameters())
    after = model.encoder.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)
    assert not torch.equal(tokens_before, model.head.depth_tokens.detach())


def test_the_schedule_is_torchs_one_cycle_by_step_number_held_past_its_end():
    # torch's OneCycleLR stepped along a real optimiser; the objective's schedule is looked up by step
    # number (a resumed run needs no scheduler state) and holds its last values past the end
    cfg = load_config("demo_baselines", ["prompts.lr=3.57e-4", "prompts.div_factor=25", "prompts.final_div_factor=100"])
    objective = LearnedPromptsObjective.__new__(LearnedPromptsObjective)
    objective.cfg = cfg
    objective.plan(8, 5)  # 40 steps
    param = torch.nn.Parameter(torch.zeros(1))
    opt = torch.optim.AdamW([param], lr=3.57e-4)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=3.57e-4, total_steps=40, div_factor=25, final_div_factor=100)
    for step in (*range(40), 39):
        lr, beta1 = objective.schedule(step)
        group = opt.param_groups[0]
        assert (lr, beta1) == (group["lr"], group["betas"][0])
        if step < 39:
            opt.step()
            sched.step()
    assert objective.schedule(45) == objective.schedule(39) and objective.schedule(39)[0] == pytest.approx(3.57e-4 / 25 / 100)
    # the closed form of the schedule (cosine from max_lr / 25 up to max_lr over 30 % of the steps), at step 6
    assert objective.schedule(6)[0] == pytest.approx(3.57e-4 / 25 + (3.57e-4 - 3.57e-4 / 25) * (1 - math.cos(math.pi * 6 / 11)) / 2)


def test_a_short_synthetic_run_beats_the_mean_depth_predictor(tmp_path):
    """Random-weight CLIP, 96 synthetic scenes, 10 epochs: validation AbsRel well below the
    training-set mean depth predicted everywhere."""
    cfg = load_config(
        "demo",
        [
            *[f"clip.{k}={v}" for k, v in TINY_ENCODER.items()],
            "clip.projection_dim=64",
            "clip.text_hidden_size=64",
            "clip.text_num_layers=2",
            "model=learned_prompts",
            "prompts.input_height=84",
            "prompts.input_width=112",
            "prompts.num_bins=20",
            "prompts.lr=3e-3",
            "data.height=96",
            "data.width=128",
            "data.train_size=96",
            "data.val_size=16",
            "train.batch_size=8",
            "train.max_epochs=10",
            "eval.batch_size=16",
            "eval.tta=false",
            "train.num_workers=0",
            f"output_dir={tmp_path / 'run'}",
        ],
    )
    exp = Experiment.create(cfg)
    result, _ = exp.train(cfg.output_dir)
    val = exp.encode("val", flip=False)
    train = get_dataset(cfg.data, "train")
    pixels = np.concatenate([s.depth[valid_mask(s.depth, exp.protocol)] for s in (train[i] for i in range(len(train)))])
    baseline = evaluate_constant(float(pixels.mean()), val.gt, exp.protocol).mean()["abs_rel"]
    best = result.best["abs_rel"]["value"]
    assert best < 0.8 * baseline, (best, baseline)


def test_a_checkpoint_holds_the_tokens_only_and_loads_predicts_and_evaluates_the_same(cfg, tmp_path):
    exp = Experiment.create(cfg)
    result, _ = exp.train(cfg.output_dir)
    saved = load_file(str(result.model_dir / "model.safetensors"))
    assert saved.keys() == {"depth_tokens"}  # no CLIP weight in a head-only checkpoint
    assert isinstance(load_model(result.model_dir), LearnedPrompts)
    loaded = load_model(cfg.output_dir + "/checkpoints/last")  # the weights training ended with
    torch.testing.assert_close(loaded.head.depth_tokens, exp.model.head.depth_tokens.detach())
    images = torch.rand(2, 3, *loaded.input_size)
    batch = FrameBatch(images, ["a", "b"])
    torch.testing.assert_close(loaded.predict_frames(batch, tta=True), exp.model.eval().predict_frames(batch, tta=True))
    depth = loaded.infer(np.zeros((30, 40, 3), np.uint8))["depth"]
    assert depth.shape == (1, 30, 40) and torch.all(depth > 0)

    from PIL import Image

    (tmp_path / "in").mkdir()
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (30, 40, 3), dtype=np.uint8)).save(tmp_path / "in" / "x.png")
    assert main(["predict", str(tmp_path / "in"), "--checkpoint", str(result.model_dir), "--out", str(tmp_path / "out"), "--npy"]) == 0
    assert np.load(tmp_path / "out" / "x.npy").shape == (30, 40)
    assert main(["evaluate", "--checkpoint", str(result.model_dir), "--out", str(tmp_path / "eval"), "--no-tta"]) == 0
    metrics = json.loads((tmp_path / "eval" / "metrics.json").read_text())
    assert np.isfinite(metrics["abs_rel"])


def test_train_runs_from_the_command_line_through_the_feature_cache(tmp_path):
    run = tmp_path / "run"
    args = [
        "train",
        "--config",
        "demo",
        *TINY_PROMPTS,
        "train.max_epochs=1",
        f"train.feature_cache={tmp_path / 'cache'}",
        f"output_dir={run}",
    ]
    assert main(args) == 0
    assert (run / "model" / "model.safetensors").is_file() and any((tmp_path / "cache").iterdir())


def test_bad_input_sizes_are_one_line(tmp_path):
    cfg = load_config("demo", [*TINY_PROMPTS, "prompts.input_height=40", f"output_dir={tmp_path}"])
    with pytest.raises(ConfigError, match="multiples of clip.patch_size=14"):
        Experiment.create(cfg)


def test_the_baselines_demo_tabulates_all_three_beside_the_mean_depth_predictor(tmp_path, capsys):
    """`clipdepth demo --config demo_baselines` at toy size (the full recipe: about 2-4 minutes on 2 cores)."""
    out = tmp_path / "demo"
    overrides = [f"clip.{k}={v}" for k, v in TINY_ENCODER.items()] + [
        "prompts.input_height=42",
        "prompts.input_width=56",
        "data.train_size=6",
        "data.val_size=2",
        "data.test_size=3",
        "data.height=48",
        "data.width=64",
        "train.max_epochs=1",
        "train.batch_size=3",
    ]
    assert main(["demo", "--config", "demo_baselines", "--out", str(out), *overrides]) == 0
    assert "RANDOM weights" in capsys.readouterr().out
    metrics = json.loads((out / "metrics.json").read_text())
    for key in ("learned_prompts", "pureclip", "depthclip", "mean_baseline"):
        assert metrics[key]["n_images"] == 3 and np.isfinite(metrics[key]["abs_rel"])
    table = (out / "results.md").read_text()
    for row in ("Learned depth prompts (20 bins)", "PureCLIP-Depth head", "DepthCLIP (zero-shot)", "mean depth", "random-weight"):
        assert row in table
    assert [type(load_model(out / k / "model")).architecture for k in ("learned_prompts", "pureclip", "depthclip")] == [
        "learned_prompts",
        "pureclip_depth",
        "depthclip",
    ]
    assert len(list((out / "panels").glob("*.png"))) == 3


@pytest.mark.slow
def test_the_baselines_demo_recipe_trains_prompts_below_the_mean_depth_predictor(tmp_path, monkeypatch):
    """The real demo_baselines recipe (about a minute on 2 cores): its learned prompts alone, the
    demo's other rows (PureCLIP-Depth, DepthCLIP) left out (test_demo.py runs PureCLIP-Depth's demo)."""
    import dataclasses

    import clipdepth.training.demo as demo
    from clipdepth.registry import model_spec

    def first_variant_only(name):
        spec = model_spec(name)
        return dataclasses.replace(spec, demo=lambda cfg: dataclasses.replace(plan := spec.demo(cfg), variants=plan.variants[:1]))

    monkeypatch.setattr(demo, "model_spec", first_variant_only)
    assert main(["demo", "--config", "demo_baselines", "--out", str(tmp_path / "demo")]) == 0
    metrics = json.loads((tmp_path / "demo" / "metrics.json").read_text())
    for m in ("abs_rel", "rmse"):
        assert metrics["learned_prompts"][m] <= 0.8 * metrics["mean_baseline"][m], (m, metrics["learned_prompts"][m])


# -- the RN50 backbone (prompts.backbone=resnet): DepthCLIP's CLIP ResNet at toy size, random weights --
TINY_RN_PROMPTS = [
    "model=learned_prompts",
    "prompts.backbone=resnet",
    "depthclip.random_init=true",
    "depthclip.layers=[1,1,1,1]",
    "depthclip.width=8",
    "depthclip.embed_dim=128",
    "depthclip.text_width=64",
    "depthclip.text_layers=1",
    "depthclip.text_heads=1",
    "prompts.input_height=64",
    "prompts.input_width=96",
    "data.height=48",
    "data.width=64",
    "data.train_size=6",
    "data.val_size=3",
    "data.test_size=3",
    "train.batch_size=3",
    "train.max_epochs=2",
    "eval.batch_size=4",
    "eval.tta=false",
    "device=cpu",
]


@pytest.fixture
def rn_cfg(tmp_path):
    return load_config("demo", [*TINY_RN_PROMPTS, f"output_dir={tmp_path / 'run'}"])


def test_the_recipes_run_on_rn50_as_released_and_the_demo_on_the_shared_vit():
    assert load_config("prompts_nyu").prompts.backbone == "resnet"
    assert load_config("prompts_kitti").prompts.backbone == "resnet"
    assert load_config("demo_baselines").prompts.backbone == "vit"
    with pytest.raises(ConfigError, match="prompts.backbone"):
        load_config("prompts_nyu", ["prompts.backbone=rn50"])


def test_the_rn50_learned_path_is_the_text_towers_own_output(rn_cfg):
    """Word embeddings fed through the RN50 text tower's ``inputs_embeds`` entry give its own text
    features of the ids; the head's prompts with word embeddings in the learned slots give the
    tower's features of the written sentence; the ids path is OpenAI's encode_text bit for bit."""
    from clipdepth.encoders.clip_resnet import ResNetCLIPEncoder

    model = build_model(rn_cfg)
    encoder = model.encoder
    assert isinstance(encoder, ResNetCLIPEncoder)
    clip = encoder.model
    ids = encoder.tokenize(["this object appears to be close"])
    end = int(ids[0].argmax())
    expected = clip.encode_text(ids)
    got = encode_token_embeddings(encoder, clip.token_embedding(ids[:, : end + 1]))
    torch.testing.assert_close(got, expected)
    # the ids path unchanged (DepthCLIP's text embeddings): OpenAI's encode_text written out
    x = clip.token_embedding(ids) + clip.positional_embedding
    x = clip.ln_final(clip.transformer(x.permute(1, 0, 2), clip.attn_mask).permute(1, 0, 2))
    assert torch.equal(expected, x[torch.arange(1), ids.argmax(dim=-1)] @ clip.text_projection)

    # the head: "far" written into every bin's learned slot
    word = encoder.tokenize(["far"])[0]
    word = word[1 : int(word.argmax())]
    cfg = load_config("demo", [*TINY_RN_PROMPTS, "prompts.num_bins=2", f"prompts.tokens_per_bin={len(word)}"])
    model = build_model(cfg)
    with torch.no_grad():
        model.head.depth_tokens.copy_(model.encoder.model.token_embedding(word).expand(2, -1, -1))
    sentence = model.encoder.model.encode_text(model.encoder.tokenize(["This object appears to be far"] * 2))
    torch.testing.assert_close(encode_token_embeddings(model.encoder, model.head.prompt_embeddings()), sentence)


def test_rn50_features_are_the_raw_layer4_map_reduced_and_upsampled_as_released(rn_cfg):
    model = build_model(rn_cfg).eval()
    images = torch.rand(2, 3, 64, 96, generator=torch.Generator().manual_seed(0))
    tokens = model.encode(images)
    torch.testing.assert_close(tokens, model.encoder(model.encoder.normalize(images)))
    assert tokens.shape == (2, 2, 3, 256)  # stride 32, 32 * width channels
    out = model.head(tokens)
    # normalised over all 256 channels, then every other channel (nearest, 256 -> 128), as DepthCLIP
    image = torch.nn.functional.normalize(tokens, dim=-1)[..., ::2]
    logits = 100.0 * image @ out.text.T / 0.1
    torch.testing.assert_close(out.logits, logits)
    depth, _ = model.predict_from_features({"tokens": tokens})
    # the 2 x 3 map straight to the input size, bilinear with align_corners (the release's only upsampling)
    expected = torch.nn.functional.interpolate(out.depth[:, None], size=(64, 96), mode="bilinear", align_corners=True)[:, 0]
    torch.testing.assert_close(depth, expected)
    cfg = load_config("demo", [*TINY_RN_PROMPTS, "prompts.input_height=56"])
    with pytest.raises(ConfigError, match="multiples of the RN50 stride=32"):
        Experiment.create(cfg)


def test_an_rn50_checkpoint_holds_the_tokens_only_and_loads_and_predicts_the_same(rn_cfg):
    exp = Experiment.create(rn_cfg)
    result, _ = exp.train(rn_cfg.output_dir)
    saved = load_file(str(result.model_dir / "model.safetensors"))
    assert saved.keys() == {"depth_tokens"}  # no RN50 weight
    loaded = load_model(rn_cfg.output_dir + "/checkpoints/last")
    assert loaded.cfg.prompts.backbone == "resnet" and type(loaded.encoder).__name__ == "ResNetCLIPEncoder"
    torch.testing.assert_close(loaded.head.depth_tokens, exp.model.head.depth_tokens.detach())
    batch = FrameBatch(torch.rand(2, 3, *loaded.input_size), ["a", "b"])
    torch.testing.assert_close(loaded.predict_frames(batch, tta=True), exp.model.eval().predict_frames(batch, tta=True))
    depth = loaded.infer(np.zeros((30, 40, 3), np.uint8))["depth"]
    assert depth.shape == (1, 30, 40) and torch.all(depth > 0)


def test_rn50_prompts_train_from_the_command_line_through_the_feature_cache(tmp_path):
    run, cache = tmp_path / "run", tmp_path / "cache"
    args = ["train", "--config", "demo", *TINY_RN_PROMPTS, "train.max_epochs=1", f"train.feature_cache={cache}", f"output_dir={run}"]
    assert main(args) == 0
    assert (run / "model" / "model.safetensors").is_file() and any(cache.iterdir())
    keys = [json.loads(p.read_text())["key"] for p in cache.rglob("cache.json")]
    assert keys and all("CLIP ResNet" in k["encoder"] and k["model"] == "learned_prompts" for k in keys)
    # the raw layer-4 map is what is cached: 32 * depthclip.width channels, reduced in the head
    assert all(np.load(p).shape[-1] == 256 for p in cache.rglob("tokens.npy"))


def test_the_benchmark_labels_a_resnet_prompts_checkpoint_by_its_rn50_weights():
    from clipdepth.config import load_config
    from clipdepth.evaluation.benchmark import weights_summary

    trained = {"epoch": 4}
    real, line = weights_summary(trained, load_config("prompts_nyu", ["depthclip.random_init=true"]))
    assert not real and "random frozen parts: depthclip" in line  # its CLIP is the RN50 of the depthclip section
    real, _ = weights_summary(trained, load_config("prompts_nyu", ["clip.random_init=true"]))  # the unused ViT
    assert real
    real, line = weights_summary(trained, load_config("prompts_nyu", ["prompts.backbone=vit", "clip.random_init=true"]))
    assert not real and "clip" in line


# -- the recipes' run as released (PromptLearningCLIP-MDE) --------------------------------------------
def test_the_recipes_train_validate_publish_and_score_as_released():
    from clipdepth.evaluation.protocol import crop_box, get_protocol

    for recipe in ("prompts_nyu", "prompts_kitti"):
        cfg = load_config(recipe)
        # dataloader.py: drop_last=False, the whole filenames_file_train, filenames_file_eval validates;
        # misc_utils.get_latest_checkpoint: last.ckpt is what is evaluated
        assert (cfg.train.drop_last, cfg.data.val_source, cfg.train.publish) == (False, "test_list", "last")
        assert (cfg.train.batch_size, cfg.train.max_epochs) == (16, 25)
    assert load_config("prompts_nyu").eval.protocol == "nyu"
    kitti = get_protocol(load_config("prompts_kitti").eval.protocol)
    # MetricsPreprocess.py's Garg fractions of the 352 x 1216 KB-cropped GT: rows int(0.40810811 * 352) = 143 ..
    # int(0.99189189 * 352) = 349, columns int(0.03594771 * 1216) = 43 .. int(0.96405229 * 1216) = 1172; the crop
    # of a 375 x 1242 frame starts at row 375 - 352 = 23, column (1242 - 1216) / 2 = 13; caps 0.001 .. 80 m
    assert crop_box((375, 1242), kitti.crop) == (23 + 143, 23 + 349, 13 + 43, 13 + 1172)
    assert (kitti.min_depth, kitti.max_depth) == (1e-3, 80.0)


def released_run_cfg(root, out):
    """prompts_nyu's run at toy size (RN50 random weights) on a folder dataset: 10 training frames,
    3 test frames, batch 4, 2 epochs."""
    tiny = [o for o in TINY_RN_PROMPTS if not o.startswith(("data.", "train."))]
    return load_config(
        "prompts_nyu",
        [
            *tiny,
            "data.dataset=folder",
            f"data.root={root}",
            "data.train_list=train.txt",
            "data.test_list=test.txt",
            "eval.protocol=synthetic_indoor",
            "train.batch_size=4",
            "train.max_epochs=2",
            "train.log_every=1",
            "train.num_workers=0",
            f"output_dir={out}",
        ],
    )


def test_a_released_prompts_run_trains_on_every_frame_validates_on_the_test_list_and_publishes_the_last_epoch(tmp_path, monkeypatch):
    from .test_resume import kill_on_validate, Killed
    from .test_splits import TEST, TRAIN, rgbd_root, write_list

    root = rgbd_root(tmp_path / "data", TRAIN + TEST)
    write_list(root / "train.txt", TRAIN), write_list(root / "test.txt", TEST)
    cfg = released_run_cfg(root, tmp_path / "run")
    exp = Experiment.create(cfg)
    result, train = exp.train(cfg.output_dir)
    assert train.names == TRAIN and exp.encode("val", flip=False).names == TEST
    log = (tmp_path / "run" / "train_log.txt").read_text()
    assert "folder: 3 validation frames of the test split (data.val_source=test_list), 10 training frames" in log
    # 10 frames in batches of 4, the last partial one kept: 3 steps an epoch, 6 in all, and the
    # one-cycle schedule spans those 6 (torch's OneCycleLR with total_steps=6)
    log = [json.loads(line) for line in (tmp_path / "run" / "train_steps.jsonl").read_text().splitlines()]
    assert [r["step"] for r in log] == [1, 2, 3, 4, 5, 6] and [r["epoch"] for r in log] == [1, 1, 1, 2, 2, 2]
    opt = torch.optim.AdamW([torch.nn.Parameter(torch.zeros(1))], lr=3.57e-4)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=3.57e-4, total_steps=6, div_factor=25, final_div_factor=100)
    expected = []
    for _ in range(6):
        expected.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    assert [r["lr"] for r in log] == pytest.approx(expected, rel=1e-6)
    # model/ is the final epoch's, whichever epoch validated best
    assert result.published_epoch == 2 and json.loads((result.model_dir / "config.json").read_text())["epoch"] == 2
    last = load_file(str(tmp_path / "run" / "checkpoints" / "last" / "model.safetensors"))
    assert torch.equal(load_file(str(result.model_dir / "model.safetensors"))["depth_tokens"], last["depth_tokens"])

    # exact resume: killed in epoch 2's validation, resumed, the same steps and the same model/
    with monkeypatch.context() as m:
        kill_on_validate(m, 2)
        with pytest.raises(Killed):
            Experiment.create(released_run_cfg(root, tmp_path / "again")).train(tmp_path / "again")
    Experiment.create(released_run_cfg(root, tmp_path / "again")).train(tmp_path / "again", resume=True)
    assert (tmp_path / "again" / "train_steps.jsonl").read_text() == (tmp_path / "run" / "train_steps.jsonl").read_text()
    resumed = load_file(str(tmp_path / "again" / "model" / "model.safetensors"))["depth_tokens"]
    assert torch.equal(resumed, last["depth_tokens"])
