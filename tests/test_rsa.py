"""RSA (Zeng et al., NeurIPS 2024): the head against a re-implementation of the released
``LanScaleModel``, its size at the release's widths, the loss and one training step worked out
here, the config's release defaults, the converter of the released weights, the benchmark table and
its row in TR2M's demo. The shared contract (checkpoints, infer, resume, evaluate, predict) is
``tests/test_model_contract.py``."""

from __future__ import annotations

import copy
import csv
import json
from collections import OrderedDict

import pytest
import torch
from torch import nn

from clipdepth.cli.main import main
from clipdepth.config import Config, RSAConfig, config_to_dict, load_config, load_config_dict
from clipdepth.errors import CheckpointError, ConfigError
from clipdepth.evaluation import benchmark
from clipdepth.features.memory import TrainBatch
from clipdepth.models import FrameBatch, build_model, load_model
from clipdepth.models.base import as_float
from clipdepth.models.released import convert_rsa_released
from clipdepth.models.rsa import RSAHead
from clipdepth.training.objectives import RSAObjective
from clipdepth.training.objectives.rsa import poly_lr

from .conftest import TINY_RSA


# -- the released code's structure, written out (github Adonis-galaxy/RSA) ------------------------
class ReleasedLanScale(nn.Module):
    """``lanscale.py`` at the release's HEAD (commit 1667581): its layers as written there."""

    def __init__(self, text_feat_dim: int = 1024) -> None:
        super().__init__()
        self.scene_feat_net = nn.Sequential(
            nn.Linear(text_feat_dim, 512),
            nn.LeakyReLU(),
            nn.Linear(512, 512),
            nn.LeakyReLU(),
            nn.Linear(512, 512),
            nn.LeakyReLU(),
            nn.Linear(512, 256),
            nn.LeakyReLU(),
            nn.Linear(256, 256),
        )
        self.shift_net = nn.Sequential(
            nn.Linear(256, 256),
            nn.LeakyReLU(),
            nn.Linear(256, 128),
            nn.LeakyReLU(),
            nn.Linear(128, 128),
            nn.LeakyReLU(),
            nn.Linear(128, 64),
            nn.LeakyReLU(),
            nn.Linear(64, 1),
        )
        self.scale_net = copy.deepcopy(self.shift_net)

    def forward(self, text_feat: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        scene_feat = self.scene_feat_net(text_feat)
        scale_pred = torch.exp(self.scale_net(scene_feat)).reshape(-1, 1, 1)
        shift_pred = torch.exp(self.shift_net(scene_feat)).reshape(-1, 1, 1)
        return scale_pred, shift_pred


class PublishedLanScale(nn.Module):
    """``lanscale.py`` as the published weights (``eval_void/*_lanscale``) were trained: commit c75f90f,
    where the middle layers of each net are commented out."""

    def __init__(self, text_feat_dim: int = 1024) -> None:
        super().__init__()
        self.scene_feat_net = nn.Sequential(
            nn.Linear(text_feat_dim, 512), nn.LeakyReLU(), nn.Linear(512, 256), nn.LeakyReLU(), nn.Linear(256, 256)
        )
        self.shift_net = nn.Sequential(nn.Linear(256, 128), nn.LeakyReLU(), nn.Linear(128, 64), nn.LeakyReLU(), nn.Linear(64, 1))
        self.scale_net = nn.Sequential(nn.Linear(256, 128), nn.LeakyReLU(), nn.Linear(128, 64), nn.LeakyReLU(), nn.Linear(64, 1))

    forward = ReleasedLanScale.forward


def released_depth(scale, shift, relative, min_depth, max_depth):
    """train_3d.py's eval(): pred_depth = 1 / (scale * relative + shift), clipped to [min, max]."""
    return (1 / (scale * relative + shift)).clamp(min_depth, max_depth)


def linear(inputs: int, outputs: int) -> int:
    return inputs * outputs + outputs  # weight and bias


@pytest.fixture
def cfg(tiny_cfg: Config) -> Config:
    return load_config_dict(config_to_dict(tiny_cfg), ["device=cpu", *TINY_RSA])


def encoded(model, n: int = 4) -> tuple[dict, torch.Tensor]:
    """Stored features (read back as float) of ``n`` random frames at the input size with depth in
    0.5 .. 5.5 m (two invalid rows) and 1 to 3 caption lines each, and that depth."""
    g = torch.Generator().manual_seed(0)
    images = torch.rand(n, 3, *model.input_size, generator=g)
    depth = 0.5 + 5 * torch.rand(n, *model.input_size, generator=g)
    depth[:, :2] = 0
    captions = [[f"a room with {j} chairs and {i} tables" for j in range(1 + i % 3)] for i in range(n)]
    features = model.encode_frames(FrameBatch(images, [f"f{i}" for i in range(n)], depth=depth, captions=captions))
    return as_float(features), depth


# -- the head -----------------------------------------------------------------------------------
def test_the_head_equals_the_released_lanscale_model_on_the_same_weights(cfg):
    torch.manual_seed(0)
    full = RSAConfig()  # the release's widths
    head = RSAHead(32, full.scene_widths, full.head_widths).eval()
    released = ReleasedLanScale(text_feat_dim=32).eval()
    released.load_state_dict(head.state_dict(), strict=True)  # the same names and shapes
    text = torch.randn(5, 32) * 3
    scale, shift = released(text)
    out = head(text)
    torch.testing.assert_close(out.scale, scale[:, 0, 0], rtol=1e-5, atol=0)
    torch.testing.assert_close(out.shift, shift[:, 0, 0], rtol=1e-5, atol=0)

    # The whole model: its prediction from stored features is the release's eval formula.
    full_cfg = load_config_dict(config_to_dict(cfg), ["rsa.scene_widths=[512,512,512,256,256]", "rsa.head_widths=[256,128,128,64]"])
    model = build_model(full_cfg).eval()
    released.load_state_dict(model.head.state_dict(), strict=True)
    features, _ = encoded(model)
    with torch.no_grad():
        depth, _ = model.predict_from_features(features)
        scale, shift = released(features["text"][:, 0])
    expected = released_depth(scale, shift, features["relative"], full_cfg.rsa.min_depth, full_cfg.rsa.max_depth)
    torch.testing.assert_close(depth, expected, rtol=1e-5, atol=0)


def test_parameter_counts_at_the_released_sizes_worked_out_from_the_layers():
    scene = linear(1024, 512) + 2 * linear(512, 512) + linear(512, 256) + linear(256, 256)
    factor = linear(256, 256) + linear(256, 128) + linear(128, 128) + linear(128, 64) + linear(64, 1)
    assert scene + 2 * factor == 1_494_274
    published_scene = linear(1024, 512) + linear(512, 256) + linear(256, 256)
    published_factor = linear(256, 128) + linear(128, 64) + linear(64, 1)
    assert published_scene + 2 * published_factor == 804_354
    with torch.device("meta"):  # CLIP RN50's text embedding is 1024-d
        heads = {
            "release": RSAHead(1024, RSAConfig().scene_widths, RSAConfig().head_widths),
            "published": RSAHead(1024, [512, 256, 256], [128, 64]),
        }
        references = {"release": ReleasedLanScale(), "published": PublishedLanScale()}
    for name, head in heads.items():
        count = sum(p.numel() for p in head.parameters())
        assert count == sum(p.numel() for p in references[name].parameters())
        assert count == (1_494_274 if name == "release" else 804_354)


# -- loss, schedule, one step -------------------------------------------------------------------
def test_the_loss_on_a_hand_made_case():
    pred = torch.tensor([[[1.0, 3.0], [2.0, 0.5]], [[float("inf"), 1.0], [1.0, 1.0]]], requires_grad=True)
    gt = torch.tensor([[[1.5, 1.0], [0.0, 2.0]], [[0.0, 0.0], [0.0, 0.0]]])
    mask = (gt > 1e-3) & (gt < 10.0)
    from clipdepth.losses.rsa import rsa_depth_loss

    # differences -0.5, 2, -1.5 on the first image's valid pixels, none on the second; 4 pixels each
    huber = (0.5 * 0.25 + (2 - 0.5) + (1.5 - 0.5)) / 4  # delta 1: quadratic below 1, linear above
    assert rsa_depth_loss(pred, gt, mask, "huber", 1.0).item() == pytest.approx(huber)
    assert rsa_depth_loss(pred, gt, mask, "l1").item() == pytest.approx((0.5 + 2 + 1.5) / 4)
    assert rsa_depth_loss(pred, gt, mask, "l2").item() == pytest.approx((0.25 + 4 + 2.25) / 4)
    assert rsa_depth_loss(pred, gt, mask, "huber", 2.0).item() == pytest.approx((0.125 + 2 * (2 - 1) + 0.5 * 2.25) / 4)
    rsa_depth_loss(pred, gt, mask).backward()
    grad = pred.grad
    assert torch.isfinite(grad).all() and grad[1].eq(0).all() and grad[0, 1, 0] == 0  # off the mask: none
    torch.testing.assert_close(grad[0], torch.tensor([[-0.5, 1.0], [0.0, -1.0]]) / 4)


def test_the_polynomial_schedule_by_hand():
    assert poly_lr(0, 10, 3e-5, 1e-5, 0.9) == pytest.approx(3e-5)
    assert poly_lr(5, 10, 3e-5, 1e-5, 0.9) == pytest.approx(2e-5 * 0.5**0.9 + 1e-5)
    assert poly_lr(10, 10, 3e-5, 1e-5, 0.9) == pytest.approx(1e-5) == poly_lr(12, 10, 3e-5, 1e-5, 0.9)


def test_one_training_step_as_the_release_takes_it(cfg):
    torch.manual_seed(0)
    model = build_model(cfg)
    features, depth = encoded(model)
    assert features["text_lines"].tolist() == [1, 2, 3, 1]  # zero rows past a frame's lines: never drawn
    batch = TrainBatch(features, depth, [(48, 64)] * 4, torch.zeros(4, dtype=torch.long), 1)
    before, initial = copy.deepcopy(model.head), copy.deepcopy(model.head)
    objective = RSAObjective(model, cfg, model.head, model.preprocessor())
    objective.plan(steps_per_epoch=5, max_epochs=2)
    generator = torch.Generator().manual_seed(7)
    draws = torch.rand(4, generator=torch.Generator().manual_seed(7))
    record = objective.step(batch, 3, generator)

    # The same step written out: a line per frame, 1 / (s r + b), the Huber loss over H * W summed
    # over the batch, divided by its value, clipped at norm 1, Adam at the schedule's step-3 lr.
    r = cfg.rsa
    lines = (draws * features["text_lines"]).long()
    text = features["text"][torch.arange(4), lines]
    out = before(text)
    pred = 1 / (out.scale[:, None, None] * features["relative"] + out.shift[:, None, None])
    valid = (depth > r.min_depth) & (depth < r.max_depth)
    huber = nn.HuberLoss(reduction="none", delta=1.0)(pred, depth)
    loss = (huber * valid).sum() / (depth.shape[-2] * depth.shape[-1])
    (loss / (loss.detach().abs() + 1e-8)).backward()
    torch.nn.utils.clip_grad_norm_(before.parameters(), 1.0)
    lr = (r.lr - r.end_lr) * (1 - 3 / 10) ** 0.9 + r.end_lr
    torch.optim.Adam(before.parameters(), lr=lr).step()

    assert record["loss"].item() == pytest.approx(loss.item(), rel=1e-5) and record["lr"] == pytest.approx(lr)
    for (name, got), want in zip(model.head.named_parameters(), before.parameters()):
        torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-7, msg=name)
    assert all(not torch.equal(got, old) for got, old in zip(model.head.parameters(), initial.parameters()))


# -- config -------------------------------------------------------------------------------------
def test_the_defaults_and_recipes_are_the_releases():
    r = RSAConfig()
    assert (r.scene_widths, r.head_widths) == ([512, 512, 512, 256, 256], [256, 128, 128, 64])  # lanscale.py
    assert (r.loss, r.huber_delta, r.normalize_loss) == ("huber", 1.0, True)  # --loss_type Huber, --norm_loss
    assert (r.lr, r.end_lr, r.lr_power, r.grad_clip) == (3e-5, 1e-5, 0.9, 1.0)  # train_3d.py, arguments_train_3d_da.txt
    assert (r.input_height, r.input_width, r.max_caption_lines, r.min_depth) == (434, 560, 15, 1e-3)
    assert (r.relative.source, r.relative.name) == ("depth_anything", "LiheYoung/depth-anything-small-hf")  # depth_anything_vits14
    nyu, kitti, mixture = (load_config(name) for name in ("rsa_nyu", "rsa_kitti", "rsa_mixture"))
    assert (nyu.train.batch_size, nyu.train.max_epochs, nyu.rsa.max_depth, nyu.eval.tta) == (8, 50, 10.0, False)
    assert (kitti.rsa.input_height, kitti.rsa.input_width, kitti.rsa.max_depth, kitti.data.kb_crop) == (350, 1204, 80.0, True)
    assert [m.name for m in mixture.mixture] == ["nyu", "kitti", "void"] and mixture.train.mixture_order == "round_robin"
    assert {nyu.model, kitti.model, mixture.model} == {"rsa"}


@pytest.mark.parametrize(
    "override, message",
    [
        ("rsa.loss=smooth", "rsa.loss='smooth': must be one of ['huber', 'l1', 'l2']"),
        ("rsa.scene_widths=[]", "rsa.scene_widths=[]: must be one or more positive integers"),
        ("rsa.max_depth=0.0001", "rsa.min_depth=0.001, rsa.max_depth=0.0001: need 0 < min_depth < max_depth"),
        ("rsa.relative.precision=fp8", "rsa.relative.precision='fp8': must be one of"),
    ],
)
def test_a_bad_value_is_one_line_naming_the_field(override, message):
    with pytest.raises(ConfigError) as error:
        load_config("rsa_nyu", [override])
    assert str(error.value).startswith(message) and "\n" not in str(error.value)


def test_an_rsa_run_refuses_another_models_section_and_a_tr2m_checkpoint_keeps_no_rsa_section(cfg, tmp_path):
    with pytest.raises(ConfigError, match="the rsa model does not read the tr2m section"):
        load_config("rsa_nyu", ["tr2m.max_depth=20"])
    saved = json.loads((build_model(cfg).save_pretrained(tmp_path / "rsa") / "config.json").read_text())["config"]
    assert {"rsa", "depthclip"} <= saved.keys() and not {"tr2m", "clip", "pureclip"} & saved.keys()


# -- the released weights -----------------------------------------------------------------------
def released_file(path, text_dim: int) -> PublishedLanScale:
    """A file as train_3d.py saves it (the published eval_void/*_lanscale layout) of random weights."""
    torch.manual_seed(3)
    released = PublishedLanScale(text_feat_dim=text_dim)
    measures = torch.tensor([9.3, 0.14, 0.06, 0.47, 0.09, 0.16, 0.80, 0.98, 0.998])
    state = OrderedDict(released.state_dict())
    torch.save({"global_step": 47500, "model": state, "best_eval_measures_kitti": measures, "best_eval_measures_nyu": measures}, path)
    return released


def test_the_released_weights_convert_to_a_checkpoint_that_predicts_as_the_release(tmp_path, capsys):
    released = released_file(tmp_path / "da_lanscale", text_dim=32)
    tiny = [o for o in TINY_RSA if o.startswith("depthclip.") or o.startswith("rsa.relative")]
    out = tmp_path / "converted"
    args = ["convert", "rsa-released", str(tmp_path / "da_lanscale"), "--out", str(out), *(f"--set={o}" for o in tiny)]
    assert main(args) == 0
    assert f"wrote {out}: RSA head, input 434 x 560, recipe for nyu" in capsys.readouterr().out
    meta = json.loads((out / "config.json").read_text())
    assert meta["config"]["rsa"]["scene_widths"] == [512, 256, 256] and meta["config"]["rsa"]["head_widths"] == [128, 64]
    assert meta["released_step"] == 47500 and meta["released_format"] == "RSA LanScaleModel"
    model = load_model(out)
    text = torch.randn(3, 32)
    with torch.no_grad():
        scale, shift = released(text)
        got = model.head(text)
    torch.testing.assert_close(got.scale, scale[:, 0, 0], rtol=1e-5, atol=0)
    torch.testing.assert_close(got.shift, shift[:, 0, 0], rtol=1e-5, atol=0)
    assert main([*args[:3], "--out", str(tmp_path / "kitti"), "--dataset", "kitti", *args[5:]]) == 0
    assert json.loads((tmp_path / "kitti" / "config.json").read_text())["config"]["rsa"]["max_depth"] == 80.0


def test_the_converter_refuses_what_is_not_an_rsa_checkpoint_in_one_line(tmp_path):
    released_file(tmp_path / "wide", text_dim=48)
    tiny = [o for o in TINY_RSA if o.startswith("depthclip.") or o.startswith("rsa.relative")]
    with pytest.raises(CheckpointError, match=r"the MLP takes 48-d text features but random-weight CLIP ResNet, seed 0 .* gives 32-d"):
        convert_rsa_released(tmp_path / "wide", tmp_path / "a", "nyu", tiny)
    torch.save({"model": {"decoder.weight": torch.zeros(2, 2)}}, tmp_path / "other")
    with pytest.raises(CheckpointError, match=r"not a released RSA checkpoint: no scene_feat_net.0.weight \(it has decoder.weight"):
        convert_rsa_released(tmp_path / "other", tmp_path / "b", "nyu", tiny)
    assert not (tmp_path / "a").exists() and not (tmp_path / "b").exists()


# -- benchmark and demo -------------------------------------------------------------------------
def test_the_benchmark_puts_an_rsa_checkpoint_beside_the_published_rsa_row(cfg, tmp_path):
    torch.manual_seed(0)
    checkpoint = build_model(cfg).save_pretrained(tmp_path / "rsa")
    suite = tmp_path / "rsa.yaml"
    suite.write_text(
        f"published: tr2m-nyu\nentries:\n  - {{label: nyu, dataset: synthetic_indoor, checkpoint: {checkpoint}, name: mine}}\n"
    )
    result = benchmark.run_benchmark(suite, out=tmp_path / "out", workers=0)
    rows = list(csv.DictReader((tmp_path / "out" / "rsa" / "table.csv").open()))
    published = next(r for r in rows if r["method"] == "RSA")
    assert (published["nyu.d1"], published["nyu.abs_rel"], published["nyu.rmse"]) == ("0.752", "0.156", "0.528")
    assert rows[-1]["method"] == "mine" and float(rows[-1]["nyu.abs_rel"]) > 0
    assert not result.rows[0].real_weights and "depthclip" in result.rows[0].weights


def test_the_tr2m_demo_plan_gives_rsa_the_same_relative_depth_and_its_own_cache(tmp_path):
    from clipdepth.training.demo import DEMO_VARIANTS

    cfg = load_config("demo_tr2m", [f"output_dir={tmp_path}"])
    plan = DEMO_VARIANTS["tr2m"](cfg)
    assert [v.key for v in plan.variants] == ["tr2m", "global_factor", "rsa"] and plan.reference == "global_factor"
    rsa = plan.variants[2].cfg
    assert rsa.model == "rsa" and rsa.rsa.relative == cfg.tr2m.relative and rsa.rsa.relative.source == "oracle"
    assert (rsa.rsa.input_height, rsa.rsa.input_width, rsa.rsa.max_depth) == (
        cfg.tr2m.input_height,
        cfg.tr2m.input_width,
        cfg.tr2m.max_depth,
    )
    assert rsa.train.feature_cache == str(tmp_path / "feature_cache" / "rsa") and rsa.depthclip.random_init
    assert plan.variants[0].cfg.train.feature_cache == str(tmp_path / "feature_cache")
