"""The PureCLIP-Depth head and model: shapes, soft binning, table init, head-only checkpoints."""

import dataclasses
from pathlib import Path
import numpy as np
import pytest
import torch
import torch.nn.functional as F

from clipdepth.config import PureCLIPConfig
from clipdepth.encoders import CLIPEncoder
from clipdepth.errors import CheckpointError, ConfigError
from clipdepth.models import PureCLIPDepth, PureCLIPDepthHead, load_model
from clipdepth.models.base import WEIGHTS_NAME, FrameBatch
from clipdepth.models.pureclip_depth import bin_centres, depth_phrases


def test_nyu_bin_centres_and_phrases():
    c = bin_centres(0.0, 10.0, 15)
    assert c[0].item() == pytest.approx(1 / 3) and c[1].item() == pytest.approx(1.0) and c[-1].item() == pytest.approx(29 / 3)
    ref = depth_phrases(c, "released")
    assert ref[:3] == ["0.33 meter", "1.00 meter", "1.67 meter"] and ref[-1] == "9.67 meter"
    paper = depth_phrases(bin_centres(0.0, 3.0, 3), "paper")
    assert paper == ["0.5 meters", "1.5 meters", "2.5 meters"]
    assert depth_phrases(torch.tensor([1.0, 2.0]), "paper") == ["1 meter", "2 meters"]


def test_head_has_the_released_shapes_and_parameter_count():
    with torch.device("meta"):  # full size without allocating it
        head = PureCLIPDepthHead(PureCLIPConfig(), embed_dim=768)
        film = PureCLIPDepthHead(PureCLIPConfig(fusion="film"), embed_dim=768)
        old = PureCLIPDepthHead(PureCLIPConfig(psi_bias=True), embed_dim=768)
    d = 768
    phi = 8 * d * d + 4 * d  # two bias-free Linears (d -> 4d -> d), LN(d) twice
    psi = 2 * d * 4 * d + 4 * d * d + 4 * d + 2 * d  # bias-free Linears 2d -> 4d -> d, LN(2d), LN(d)
    assert phi + psi + 15 * d == 11_815_680  # the released PatchAligner without its CLIP
    assert sum(p.numel() for p in head.parameters()) == 11_815_680
    assert sum(p.numel() for p in old.parameters()) == 11_815_680 + 4 * d + d  # clipdepth 0.1's biased psi
    film_gen = (d * 2 * d + 2 * d) + (2 * d * 2 * d + 2 * d)  # Linear(d, 2d), Linear(2d, 2d), biased
    assert sum(p.numel() for p in film.parameters()) == phi + film_gen + 15 * d and film.psi is None
    assert head.phi[1].bias is None and head.psi[1].bias is None and head.psi[1].in_features == 2 * d
    assert PureCLIPDepthHead(PureCLIPConfig(use_cls=False), embed_dim=8).psi[1].in_features == 8


def test_film_fusion_is_gain_times_phi_plus_shift():
    torch.manual_seed(0)
    head = PureCLIPDepthHead(PureCLIPConfig(fusion="film", num_bins=3, min_depth=0.0, max_depth=3.0), embed_dim=8).eval()
    tokens, cls = torch.randn(2, 2, 2, 8), F.normalize(torch.randn(2, 8), dim=-1)
    with torch.no_grad():
        out = head(tokens, cls)
        lin1, lin2 = head.film[0], head.film[2]
        gb = F.linear(F.gelu(F.linear(cls, lin1.weight, lin1.bias)), lin2.weight, lin2.bias)  # (B, 2d)
        fused = gb[:, None, None, :8] * head.phi(tokens) + gb[:, None, None, 8:]
    torch.testing.assert_close(out.z, F.normalize(fused, dim=-1))
    with pytest.raises(ConfigError, match="use_cls"):
        PureCLIPDepthHead(PureCLIPConfig(fusion="film", use_cls=False), embed_dim=8)
    with pytest.raises(ConfigError, match="pureclip.fusion"):
        PureCLIPDepthHead(PureCLIPConfig(fusion="sum"), embed_dim=8)


def test_head_soft_bins_depth_and_renormalises_table():
    torch.manual_seed(0)
    head = PureCLIPDepthHead(PureCLIPConfig(num_bins=4, min_depth=0.0, max_depth=8.0), embed_dim=16).eval()
    tokens, cls = torch.randn(2, 3, 3, 16), F.normalize(torch.randn(2, 16), dim=-1)
    with torch.no_grad():
        out = head(tokens, cls)
    torch.testing.assert_close(out.z.norm(dim=-1), torch.ones(2, 3, 3))
    expected = (out.logits.softmax(-1) * torch.tensor([1.0, 3.0, 5.0, 7.0])).sum(-1)
    torch.testing.assert_close(out.depth, expected)
    assert torch.allclose(out.logits, out.z @ F.normalize(head.table, dim=-1).T / 0.07)
    with torch.no_grad():
        head.table.mul_(5.0)  # W is re-normalised at every use: scale does not matter
    torch.testing.assert_close(head(tokens, cls).depth, out.depth)


def test_table_is_initialised_from_text_embeddings(tiny_cfg):
    model = PureCLIPDepth.build(tiny_cfg)
    phrases = depth_phrases(bin_centres(tiny_cfg.pureclip.min_depth, 10.0, 15), "released")
    with torch.no_grad():
        text = model.encoder.encode_text(phrases)
    torch.testing.assert_close(model.head.table.detach(), F.normalize(text, dim=-1))


def test_checkpoint_is_head_only_and_round_trips(tiny_cfg, tmp_path):
    torch.manual_seed(0)
    model = PureCLIPDepth.build(tiny_cfg).eval()
    model.save_pretrained(tmp_path / "ckpt")
    from safetensors.torch import load_file

    keys = load_file(str(tmp_path / "ckpt" / WEIGHTS_NAME)).keys()
    assert keys and all(k.split(".")[0] in {"phi", "psi", "table"} for k in keys)
    loaded = load_model(tmp_path / "ckpt")
    images = np.random.default_rng(0).integers(0, 255, (2, 40, 50, 3), dtype=np.uint8)
    a, b = model.infer(images, tta=True), loaded.infer(images, tta=True)
    assert a["depth"].shape == (2, 40, 50) and a["bin_probs"].shape == (2, 4, 4, 15)
    torch.testing.assert_close(a["depth"], b["depth"])


def test_checkpoint_refuses_another_encoder(tiny_cfg, tmp_path):
    PureCLIPDepth.build(tiny_cfg).save_pretrained(tmp_path / "ckpt")
    other = CLIPEncoder.from_config(dataclasses.replace(tiny_cfg.clip, seed=1))
    with pytest.raises(CheckpointError, match="trained on frozen weights"):
        PureCLIPDepth.from_pretrained(tmp_path / "ckpt", encoder=other)
    with pytest.raises(CheckpointError, match="no config.json"):
        load_model(tmp_path)


def test_flip_tta_averages_the_mirrored_prediction(tiny_cfg):
    torch.manual_seed(0)
    model = PureCLIPDepth.build(tiny_cfg).eval()
    images = torch.rand(1, 3, 56, 56)
    batch = FrameBatch(images, ["f"])
    with torch.no_grad():
        plain = model.predict_frames(batch)
        mirrored = model.predict_frames(batch.flipped())
        tta = model.predict_frames(batch, tta=True)
    torch.testing.assert_close(tta, 0.5 * (plain + mirrored.flip(-1)))
    assert tta.shape == (1, 56, 56)


def test_hub_mixin_saves_head_only_with_a_model_card_and_loads_back(tiny_cfg, tmp_path):
    torch.manual_seed(0)
    model = PureCLIPDepth.build(tiny_cfg).eval()
    model.save_pretrained(tmp_path / "ckpt", extra={"epoch": 3})
    assert sorted(p.name for p in (tmp_path / "ckpt").iterdir()) == [  # .clipdepth: the list of what clipdepth wrote there
        ".clipdepth",
        "README.md",
        "config.json",
        "model.safetensors",
        "preprocessor_config.json",
    ]
    assert "depth-estimation" in (tmp_path / "ckpt" / "README.md").read_text()
    loaded = PureCLIPDepth.from_pretrained(tmp_path / "ckpt")
    image = np.zeros((32, 40, 3), np.uint8)
    torch.testing.assert_close(loaded.infer(image)["depth"], model.infer(image)["depth"])


def test_push_to_hub_uploads_the_checkpoint_folder(tiny_cfg, monkeypatch):
    uploaded = {}

    def upload_folder(self, *, repo_id, folder_path, **kwargs):
        files = [p.relative_to(folder_path).as_posix() for p in Path(folder_path).rglob("*") if p.is_file()]
        uploaded["repo"], uploaded["files"] = (
            repo_id,
            sorted(
                filter_repo_objects(  # what upload_folder sends
                    files, allow_patterns=kwargs.get("allow_patterns"), ignore_patterns=kwargs.get("ignore_patterns")
                )
            ),
        )
        uploaded["card"] = (Path(folder_path) / "README.md").read_text()

    from huggingface_hub.utils import filter_repo_objects

    monkeypatch.setattr("huggingface_hub.HfApi.create_repo", lambda self, repo_id, **kw: type("R", (), {"repo_id": repo_id})())
    monkeypatch.setattr("huggingface_hub.HfApi.upload_folder", upload_folder)
    PureCLIPDepth.build(tiny_cfg).push_to_hub("someone/pureclip-demo")
    card = uploaded.pop("card")
    assert uploaded == {
        "repo": "someone/pureclip-demo",
        "files": ["README.md", "config.json", "model.safetensors", "preprocessor_config.json"],
    }
    assert 'load_model("someone/pureclip-demo")' in card  # the card shows how to load it from there


def test_an_unreachable_hub_id_is_one_clear_error(monkeypatch):
    monkeypatch.setattr("huggingface_hub.constants.HF_HUB_OFFLINE", True)
    with pytest.raises(CheckpointError, match="cannot download checkpoint 'someone/missing'.*local checkpoint folder"):
        PureCLIPDepth.from_pretrained("someone/missing")


def test_the_heads_dropout_is_torchs_in_distribution():
    """Kept values are x / (1 - p), the rest 0, each kept with probability 1 - p (a binomial count
    over 10^6 values: 5 standard deviations); identity in eval mode."""
    from clipdepth.models.pureclip_depth import Dropout

    drop, x = Dropout(0.1), torch.full((1000, 1000), 2.0)
    torch.manual_seed(0)
    y = drop(x)
    kept = y != 0
    assert torch.all(y[kept] == 2.0 / 0.9)
    assert abs(kept.float().mean().item() - 0.9) < 5 * (0.9 * 0.1 / 1e6) ** 0.5
    assert torch.equal(drop.eval()(x), x)
