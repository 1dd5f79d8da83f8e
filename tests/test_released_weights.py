"""Released checkpoints of both papers, converted: the same numbers as the released forward.

The released models are re-implemented here from the released code's structure (OpenAI's CLIP
ViT, ``PatchAligner``'s head, TR2M's ``ScaleMapModel``) with their parameter names, at toy sizes,
and never by calling clipdepth's model code; a state dict in those names is saved as the releases
save it, converted, and the converted clipdepth model must give the same depth.
"""

from __future__ import annotations

import json
import math
from collections import OrderedDict

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from clipdepth.cli.main import main
from clipdepth.errors import CheckpointError, DataError
from clipdepth.models import load_model
from clipdepth.models.released import convert_pureclip_released, convert_tr2m_released

from .conftest import TINY_ENCODER

TINY_CLIP = [f"clip.{k}={v}" for k, v in TINY_ENCODER.items()]
MEAN = [0.48145466, 0.4578275, 0.40821073]
STD = [0.26862954, 0.26130258, 0.27577711]


# -- the released PureCLIP-Depth, from utils/final_model.py ------------------------------------
def released_mlp(d_in: int, d: int) -> nn.Sequential:
    return nn.Sequential(
        nn.LayerNorm(d_in), nn.Linear(d_in, 4 * d, bias=False), nn.GELU(), nn.Dropout(0.2), nn.Linear(4 * d, d, bias=False), nn.LayerNorm(d)
    )


class ReleasedPatchAlignerHead(nn.Module):
    """PatchAligner without its CLIP: the names and layers of the release."""

    def __init__(self, d: int, fusion: str, num_bins: int = 15, min_depth: float = 1e-3, max_depth: float = 10.0):
        super().__init__()
        self.fusion = fusion
        self.depth_table = nn.Embedding(num_bins, d)
        bw = (max_depth - min_depth) / num_bins
        self.bin_centers = nn.Parameter(torch.linspace(min_depth + 0.5 * bw, max_depth - 0.5 * bw, num_bins))
        self.rgb_adapter = released_mlp(d, d)
        if fusion == "concat":
            self.fusion_mlp = released_mlp(2 * d, d)
        else:
            self.film_gen = nn.Sequential(nn.Linear(d, 2 * d), nn.GELU(), nn.Linear(2 * d, 2 * d))
        with torch.no_grad():  # no parameter left at a symmetric init, so a swapped name shows
            for p in self.parameters():
                if p is not self.bin_centers:
                    p.add_(0.1 * torch.randn_like(p))

    def forward(self, patches: torch.Tensor, cls: torch.Tensor) -> torch.Tensor:
        b, n, d = patches.shape
        z_rgb = self.rgb_adapter(patches.reshape(-1, d)).view(b, n, d)
        if self.fusion == "concat":
            fused = self.fusion_mlp(torch.cat([z_rgb, cls[:, None].expand(-1, n, -1)], -1).view(-1, 2 * d)).view(b, n, d)
        else:
            g, sh = self.film_gen(cls).chunk(2, -1)
            fused = g[:, None] * z_rgb + sh[:, None]
        z = F.normalize(fused, dim=-1)
        probs = F.softmax(z @ F.normalize(self.depth_table.weight, dim=-1).T / 0.07, -1)
        return (probs * self.bin_centers.view(1, 1, -1)).sum(-1)  # (B, P) per-patch depth


def to_openai_names(hf: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """A transformers CLIPModel state dict in OpenAI CLIP's names and layout (model.py of openai/CLIP)."""
    out = {
        "visual.class_embedding": hf["vision_model.embeddings.class_embedding"],
        "visual.positional_embedding": hf["vision_model.embeddings.position_embedding.weight"],
        "visual.conv1.weight": hf["vision_model.embeddings.patch_embedding.weight"],
        "visual.ln_pre.weight": hf["vision_model.pre_layrnorm.weight"],
        "visual.ln_pre.bias": hf["vision_model.pre_layrnorm.bias"],
        "visual.ln_post.weight": hf["vision_model.post_layernorm.weight"],
        "visual.ln_post.bias": hf["vision_model.post_layernorm.bias"],
        "visual.proj": hf["visual_projection.weight"].T,
        "positional_embedding": hf["text_model.embeddings.position_embedding.weight"],
        "token_embedding.weight": hf["text_model.embeddings.token_embedding.weight"],
        "ln_final.weight": hf["text_model.final_layer_norm.weight"],
        "ln_final.bias": hf["text_model.final_layer_norm.bias"],
        "text_projection": hf["text_projection.weight"].T,
        "logit_scale": hf["logit_scale"],
    }
    for tower, prefix in (("vision_model", "visual.transformer"), ("text_model", "transformer")):
        i = 0
        while f"{tower}.encoder.layers.{i}.layer_norm1.weight" in hf:
            src, dst = f"{tower}.encoder.layers.{i}", f"{prefix}.resblocks.{i}"
            for kind in ("weight", "bias"):
                out[f"{dst}.attn.in_proj_{kind}"] = torch.cat([hf[f"{src}.self_attn.{p}_proj.{kind}"] for p in "qkv"])
                out[f"{dst}.attn.out_proj.{kind}"] = hf[f"{src}.self_attn.out_proj.{kind}"]
                out[f"{dst}.ln_1.{kind}"] = hf[f"{src}.layer_norm1.{kind}"]
                out[f"{dst}.ln_2.{kind}"] = hf[f"{src}.layer_norm2.{kind}"]
                out[f"{dst}.mlp.c_fc.{kind}"] = hf[f"{src}.mlp.fc1.{kind}"]
                out[f"{dst}.mlp.c_proj.{kind}"] = hf[f"{src}.mlp.fc2.{kind}"]
            i += 1
    return {k: v.detach().clone() for k, v in out.items()}


def openai_vit(w: dict[str, torch.Tensor], images: torch.Tensor, heads: int) -> tuple[torch.Tensor, torch.Tensor]:
    """extract_vit_patches of the release on OpenAI-named weights: ln_post and proj on every token."""
    x = (images - torch.tensor(MEAN).view(1, 3, 1, 1)) / torch.tensor(STD).view(1, 3, 1, 1)
    patch = w["visual.conv1.weight"].shape[-1]
    x = F.conv2d(x, w["visual.conv1.weight"], stride=patch).flatten(2).transpose(1, 2)
    width = x.shape[-1]
    x = torch.cat([w["visual.class_embedding"].expand(x.shape[0], 1, width), x], 1) + w["visual.positional_embedding"]

    def ln(t, name):
        return F.layer_norm(t, (width,), w[f"{name}.weight"], w[f"{name}.bias"], 1e-5)

    x = ln(x, "visual.ln_pre")
    i = 0
    while f"visual.transformer.resblocks.{i}.ln_1.weight" in w:
        p = f"visual.transformer.resblocks.{i}"
        h = ln(x, f"{p}.ln_1")
        q, k, v = (h @ w[f"{p}.attn.in_proj_weight"].T + w[f"{p}.attn.in_proj_bias"]).chunk(3, -1)
        split = lambda t: t.unflatten(-1, (heads, width // heads)).transpose(1, 2)  # noqa: E731
        att = (split(q) @ split(k).transpose(-1, -2) / math.sqrt(width // heads)).softmax(-1) @ split(v)
        x = x + att.transpose(1, 2).flatten(2) @ w[f"{p}.attn.out_proj.weight"].T + w[f"{p}.attn.out_proj.bias"]
        h = ln(x, f"{p}.ln_2") @ w[f"{p}.mlp.c_fc.weight"].T + w[f"{p}.mlp.c_fc.bias"]
        x = x + (h * torch.sigmoid(1.702 * h)) @ w[f"{p}.mlp.c_proj.weight"].T + w[f"{p}.mlp.c_proj.bias"]  # QuickGELU
        i += 1
    x = ln(x, "visual.ln_post") @ w["visual.proj"]
    return x[:, 1:], F.normalize(x[:, 0], dim=-1)


@pytest.fixture
def tiny_clip():
    from clipdepth.config import load_config
    from clipdepth.encoders import CLIPEncoder

    return CLIPEncoder.from_config(load_config("demo", TINY_CLIP).clip)


def released_pureclip(tmp_path, clip, fusion="concat", max_depth=10.0, name="released.pth", **edits):
    """A released-format checkpoint file with a random head and ``clip``'s weights in OpenAI names (fp16,
    as clip.load gives on CUDA); returns (path, head, OpenAI-named fp32 CLIP weights)."""
    torch.manual_seed(3)
    head = ReleasedPatchAlignerHead(clip.embed_dim, fusion, max_depth=max_depth).eval()
    openai = to_openai_names(clip.model.state_dict())
    state = {
        **head.state_dict(),
        "clip_mean": torch.tensor(MEAN).view(1, 3, 1, 1),
        "clip_std": torch.tensor(STD).view(1, 3, 1, 1),
        **{f"clip.{k}": v.half() for k, v in openai.items()},
    }
    state.update(edits)
    path = tmp_path / name
    torch.save({"epoch": 42, "model_state": state, "optimizer_state": {"info": {}, "center": {}}, "torch_version": "2.4.0"}, path)
    return path, head, openai


@pytest.mark.parametrize("fusion", ["concat", "film"])
def test_a_converted_pureclip_checkpoint_gives_the_released_per_patch_depth(tmp_path, tiny_clip, fusion):
    path, head, openai = released_pureclip(tmp_path, tiny_clip, fusion)
    out = convert_pureclip_released(path, tmp_path / "converted", overrides=TINY_CLIP)
    model = load_model(out).eval()
    assert model.cfg.pureclip.fusion == fusion and model.cfg.pureclip.min_depth == pytest.approx(1e-3)
    assert model.cfg.data.dataset == "nyu" and model.cfg.data.input_crop == [40, 470, 38, 603]  # told by the 10 m bins
    images = torch.rand(2, 3, 56, 56, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        patches, cls = openai_vit(openai, images, heads=TINY_ENCODER["num_heads"])
        expected = head(patches, cls).view(2, 4, 4)
        features = model.encode(images)
        ours = model.head(features.patch_tokens, features.cls).depth
    assert (ours - expected).abs().max().item() < 1e-5
    meta = json.loads((out / "config.json").read_text())
    assert meta["released_epoch"] == 42 and meta["clip_tensors_checked"] == len(openai)


def test_a_kitti_checkpoint_gets_the_kitti_recipe(tmp_path, tiny_clip):
    path, _, _ = released_pureclip(tmp_path, tiny_clip, max_depth=30.0)
    cfg = load_model(convert_pureclip_released(path, tmp_path / "kitti", overrides=TINY_CLIP)).cfg
    assert (cfg.data.dataset, cfg.data.tiles, cfg.pureclip.patch_region, cfg.pureclip.max_depth) == ("kitti", 4, "garg", 30.0)


def test_converting_with_another_clip_is_refused_naming_the_tensor(tmp_path, tiny_clip):
    name = "clip.visual.transformer.resblocks.1.mlp.c_fc.weight"
    openai = to_openai_names(tiny_clip.model.state_dict())
    changed = openai["visual.transformer.resblocks.1.mlp.c_fc.weight"].clone()
    changed[0, 0] += 1.0
    path, _, _ = released_pureclip(tmp_path, tiny_clip, **{name: changed.half()})
    with pytest.raises(CheckpointError, match=f"'{name}' differs from random-weight CLIP"):
        convert_pureclip_released(path, tmp_path / "a", overrides=TINY_CLIP)
    path, _, _ = released_pureclip(tmp_path, tiny_clip, name="ok.pth")
    with pytest.raises(CheckpointError, match=r"frozen CLIP tensor 'clip\.[\w.]+' differs") as err:
        convert_pureclip_released(path, tmp_path / "b", overrides=[*TINY_CLIP, "clip.seed=1"])
    assert "\n" not in str(err.value) and not (tmp_path / "b").exists()


def fp16_copy(path, out):
    """``path`` with every floating tensor cast to fp16, as a release saved from a half-precision model is."""
    data = torch.load(path, weights_only=True)
    data["model_state"] = {k: v.half() if v.is_floating_point() else v for k, v in data["model_state"].items()}
    torch.save(data, out)
    return out


@pytest.mark.parametrize("max_depth, dataset", [(10.0, "nyu"), (30.0, "kitti")])
def test_an_fp16_copy_converts_to_the_released_bins_and_head(tmp_path, tiny_clip, max_depth, dataset):
    path, head, openai = released_pureclip(tmp_path, tiny_clip, max_depth=max_depth)
    out = convert_pureclip_released(fp16_copy(path, tmp_path / "half.pth"), tmp_path / "converted", overrides=TINY_CLIP)
    model = load_model(out).eval()
    # fp16 stores 10 m to 8 mm and 1 m to 1 mm: the bins are still the release's 1e-3 .. max_depth, exactly
    assert (model.cfg.pureclip.min_depth, model.cfg.pureclip.max_depth, model.cfg.data.dataset) == (1e-3, max_depth, dataset)
    head.half().float()  # the release's head at the precision of the copy
    images = torch.rand(2, 3, 56, 56, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        patches, cls = openai_vit(openai, images, heads=TINY_ENCODER["num_heads"])
        head.bin_centers.copy_(model.head.bin_centres)  # the copy's centres are fp16-rounded; ours are exact
        expected = head(patches, cls).view(2, 4, 4)
        features = model.encode(images)
        ours = model.head(features.patch_tokens, features.cls).depth
    assert (ours - expected).abs().max().item() < 1e-5


def test_another_normalisation_is_refused_at_the_precision_it_is_stored_in(tmp_path, tiny_clip):
    imagenet = torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1)
    off = torch.tensor(MEAN).view(1, 3, 1, 1) + torch.tensor([2e-3, 0, 0]).view(1, 3, 1, 1)  # 8 fp16 steps away
    for i, mean in enumerate([imagenet, imagenet.half(), off.half(), off]):
        path, _, _ = released_pureclip(tmp_path, tiny_clip, name=f"mean{i}.pth", clip_mean=mean)
        with pytest.raises(CheckpointError, match=r"'clip_mean' is \[0\.4[0-9]+, .*not OpenAI CLIP's \[0\.48145466"):
            convert_pureclip_released(path, tmp_path / "o", overrides=TINY_CLIP)
    path, _, _ = released_pureclip(tmp_path, tiny_clip, name="short.pth", clip_std=torch.tensor(STD[:2]))
    with pytest.raises(CheckpointError, match=r"'clip_std' is \[0\.268629[0-9]*, 0\.261302[0-9]*\], not OpenAI"):
        convert_pureclip_released(path, tmp_path / "o", overrides=TINY_CLIP)
    assert not (tmp_path / "o").exists()


def argparse_namespace():
    import argparse

    return argparse.Namespace(lr=1e-3)  # training scripts often save their args: a pickled object


def test_wrong_files_keys_and_shapes_are_one_line_each(tmp_path, tiny_clip):
    missing = tmp_path / "none.pth"
    with pytest.raises(DataError, match="no such checkpoint file"):
        convert_pureclip_released(missing, tmp_path / "o", overrides=TINY_CLIP)
    for i, content in enumerate([b"not a checkpoint", b"hello", b"abc", bytes(range(256)), b""]):
        junk = tmp_path / f"junk{i}.pth"  # foreign bytes fail torch's unpickler in many different ways
        junk.write_bytes(content)
        with pytest.raises(CheckpointError, match="not a checkpoint written by torch.save") as err:
            convert_pureclip_released(junk, tmp_path / "o", overrides=TINY_CLIP)
        assert "\n" not in str(err.value)
    objects = tmp_path / "objects.pth"
    torch.save({"model_state": {"depth_table.weight": torch.zeros(2, 2)}, "args": argparse_namespace()}, objects)
    with pytest.raises(CheckpointError, match="holds Python objects besides tensors"):
        convert_pureclip_released(objects, tmp_path / "o", overrides=TINY_CLIP)
    other = tmp_path / "other.pth"
    torch.save({"state_dict": {"projects.weight": torch.zeros(2, 2)}}, other)
    with pytest.raises(CheckpointError, match="not a released PureCLIP-Depth checkpoint: no 'depth_table.weight'"):
        convert_pureclip_released(other, tmp_path / "o", overrides=TINY_CLIP)
    d = tiny_clip.embed_dim
    path, _, _ = released_pureclip(tmp_path, tiny_clip, name="shape.pth", **{"fusion_mlp.4.weight": torch.zeros(d + 1, 4 * d)})
    with pytest.raises(CheckpointError, match=r"'fusion_mlp.4.weight' has shape \(33, 128\), this head expects \(32, 128\)"):
        convert_pureclip_released(path, tmp_path / "o", overrides=TINY_CLIP)
    path, _, _ = released_pureclip(tmp_path, tiny_clip, name="bins.pth", bin_centers=torch.tensor([1.0, 2.0, 4.0]))
    with pytest.raises(CheckpointError, match="3 'bin_centers' for a depth table of 15 bins"):
        convert_pureclip_released(path, tmp_path / "o", overrides=TINY_CLIP)
    assert not (tmp_path / "o").exists()


def test_the_convert_command_writes_once_and_predict_uses_it(tmp_path, tiny_clip, capsys):
    path, _, _ = released_pureclip(tmp_path, tiny_clip)
    out = tmp_path / "pureclip-nyu"
    sets = [a for o in TINY_CLIP for a in ("--set", o)]
    assert main(["convert", "pureclip-released", str(path), "--out", str(out), *sets]) == 0
    printed = capsys.readouterr().out
    assert "15 bins over 0.001-10 m, concat fusion" in printed and "frozen CLIP tensors equal those of random-weight CLIP" in printed
    assert main(["convert", "pureclip-released", str(path), "--out", str(out), *sets]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "--overwrite" in err
    from PIL import Image

    Image.new("RGB", (64, 48), (90, 120, 150)).save(tmp_path / "photo.png")
    assert main(["predict", str(tmp_path / "photo.png"), "--checkpoint", str(out), "--out", str(tmp_path / "depth")]) == 0
    assert (tmp_path / "depth" / "photo.png").is_file()


# -- the released TR2M, from scalemap_depth.py -------------------------------------------------
class ResidualConvUnit(nn.Module):
    def __init__(self, features: int):
        super().__init__()
        self.conv1 = nn.Conv2d(features, features, 3, padding=1, bias=True)
        self.conv2 = nn.Conv2d(features, features, 3, padding=1, bias=True)

    def forward(self, x):
        return self.conv2(F.relu(self.conv1(F.relu(x)))) + x


class CrossAttentionBlock(nn.Module):
    def __init__(self, d: int, heads: int):
        super().__init__()
        self.attn = nn.MultiheadAttention(d, heads)
        self.ln_1 = nn.LayerNorm(d)
        self.mlp = nn.Sequential(OrderedDict([("c_fc", nn.Linear(d, 4 * d)), ("gelu", nn.Identity()), ("c_proj", nn.Linear(4 * d, d))]))
        self.ln_2 = nn.LayerNorm(d)
        self.attn_cross = nn.MultiheadAttention(d, heads)
        self.ln_text = nn.LayerNorm(d)
        self.ln_visual = nn.LayerNorm(d)

    def forward(self, x, y):  # sequence-first, as the release
        h = self.ln_1(x)
        x = x + self.attn(h, h, h, need_weights=False)[0]
        t = self.ln_text(y)
        x = x + self.attn_cross(self.ln_visual(x), t, t, need_weights=False)[0]
        h = self.mlp.c_fc(self.ln_2(x))
        return x + self.mlp.c_proj(h * torch.sigmoid(1.702 * h))


class ReleasedScaleMapModel(nn.Module):
    def __init__(self, in_channels, out_channels, text_channels, features, heads, coef=0.01):
        super().__init__()
        self.coef = coef
        self.align_mlp = nn.Sequential(OrderedDict([("a_fc", nn.Linear(text_channels, in_channels))]))
        self.crossattn = CrossAttentionBlock(in_channels, heads)
        self.projects = nn.Conv2d(in_channels, out_channels, 1)
        self.resize_layers = nn.ConvTranspose2d(out_channels, out_channels, 2, stride=2)
        self.layer1_rn = nn.Conv2d(out_channels, features, 3, padding=1, bias=False)
        self.resConfUnit1, self.resConfUnit2 = ResidualConvUnit(features), ResidualConvUnit(features)
        self.out_conv1 = nn.Conv2d(features, features, 1)
        self.out_conv2 = nn.Conv2d(features, features, 1)
        for kind in ("scale", "shift"):
            setattr(self, f"output_conv_{kind}1", nn.Conv2d(features, features // 2, 3, padding=1))
            setattr(
                self, f"output_conv_{kind}2", nn.Sequential(nn.Conv2d(features // 2, 32, 3, padding=1), nn.ReLU(True), nn.Conv2d(32, 1, 1))
            )
        with torch.no_grad():
            for p in self.parameters():
                p.add_(0.05 * torch.randn_like(p))

    def forward(self, img, text, ph, pw):
        t = self.align_mlp.a_fc(text)
        t = t * torch.sigmoid(1.702 * t)  # QuickGELU
        x = self.crossattn(img.permute(1, 0, 2), t.permute(1, 0, 2)).permute(1, 0, 2)
        x = x.permute(0, 2, 1).reshape(x.shape[0], x.shape[-1], ph, pw)
        x = self.layer1_rn(self.resize_layers(self.projects(x)))
        x = F.interpolate(self.out_conv1(self.resConfUnit1(x)), scale_factor=2, mode="bilinear", align_corners=True)
        x = F.interpolate(self.out_conv2(self.resConfUnit2(x)), scale_factor=2, mode="bilinear", align_corners=True)
        maps = []
        for kind in ("scale", "shift"):
            mid = F.interpolate(getattr(self, f"output_conv_{kind}1")(x), (ph * 14, pw * 14), mode="bilinear", align_corners=True)
            maps.append(self.coef * torch.exp(getattr(self, f"output_conv_{kind}2")(mid)))
        return maps


TINY_TR2M_ENCODERS = TINY_CLIP + [
    "tr2m.image_encoder.random_init=true",
    "tr2m.image_encoder.hidden_size=32",
    "tr2m.image_encoder.num_layers=1",
    "tr2m.image_encoder.num_heads=2",
    "tr2m.relative.source=oracle",
    "tr2m.num_heads=2",
]


@pytest.mark.parametrize("layout", ["state_dict", "training"])
def test_a_converted_tr2m_checkpoint_gives_the_released_scale_and_shift_maps(tmp_path, layout):
    torch.manual_seed(5)
    released = ReleasedScaleMapModel(in_channels=32, out_channels=16, text_channels=32, features=8, heads=2).eval()
    path = tmp_path / "da_s_vitl_vitl.pth"
    if layout == "state_dict":  # what eval_indomain.py's export_scalemap_weights writes
        torch.save({"state_dict": released.state_dict()}, path)
    else:  # a training checkpoint of the whole model
        torch.save({"model": {f"module.scalemap.{k}": v for k, v in released.state_dict().items()}, "epoch": 3}, path)
    out = convert_tr2m_released(path, tmp_path / "tr2m", overrides=TINY_TR2M_ENCODERS)
    model = load_model(out).eval()
    assert (model.cfg.tr2m.input_height, model.cfg.tr2m.input_width, model.cfg.data.input_crop) == (434, 560, None)
    tokens, text = torch.randn(2, 3, 4, 32), torch.randn(2, 32)
    with torch.no_grad():
        scale, shift = released(tokens.flatten(1, 2), text[:, None], 3, 4)
        ours = model.head(tokens, text)
    assert (ours.scale - scale[:, 0]).abs().max().item() < 1e-5 * scale.abs().max().item()
    assert (ours.shift - shift[:, 0]).abs().max().item() < 1e-5 * shift.abs().max().item()


def test_tr2m_conversion_refuses_foreign_tensors_and_wrong_widths(tmp_path):
    released = ReleasedScaleMapModel(in_channels=32, out_channels=16, text_channels=32, features=8, heads=2)
    state = released.state_dict()
    path = tmp_path / "extra.pth"
    torch.save({"state_dict": {**state, "rope.freq": torch.zeros(1)}}, path)
    with pytest.raises(CheckpointError, match="'rope.freq' is not part of TR2M's released ScaleMapModel"):
        convert_tr2m_released(path, tmp_path / "o", overrides=TINY_TR2M_ENCODERS)
    wide = ReleasedScaleMapModel(in_channels=48, out_channels=16, text_channels=32, features=8, heads=2)
    torch.save(wide.state_dict(), tmp_path / "wide.pth")
    with pytest.raises(CheckpointError, match="takes 48-d image features but random-weight DINOv2"):
        convert_tr2m_released(tmp_path / "wide.pth", tmp_path / "o", overrides=TINY_TR2M_ENCODERS)
    assert not (tmp_path / "o").exists()
