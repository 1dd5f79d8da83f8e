"""Model cards: the licence of where the weights came from, the Hub metadata (read back with
``huggingface_hub.ModelCard.load``), the results with their protocol, TTA and frozen weights said."""

from __future__ import annotations

import json
from types import SimpleNamespace

import torch
from huggingface_hub import ModelCard
from torch import nn

from clipdepth.models import PureCLIPDepth, load_model
from clipdepth.models.card import frozen_hub_ids, write_model_card
from clipdepth.models.released import convert_pureclip_released, convert_tr2m_released

from .test_released_weights import TINY_CLIP, TINY_TR2M_ENCODERS, ReleasedScaleMapModel, released_pureclip, tiny_clip  # noqa: F401

# The release's LICENSE (github ryutaroLF/PureCLIP-Depth), copied here by hand from the file.
MIT_COPYRIGHT = "Copyright (c) 2026 Ryutaro Miya"
MIT_CLAUSE = "The above copyright notice and this permission notice shall be included in all"


def test_a_converted_pureclip_head_says_mit_with_the_release_notice(tmp_path, tiny_clip):  # noqa: F811
    path, _, _ = released_pureclip(tmp_path, tiny_clip)
    out = convert_pureclip_released(path, tmp_path / "converted", overrides=TINY_CLIP)
    card = ModelCard.load(out / "README.md")
    assert card.data.license == "mit" and card.data.library_name == "clipdepth"
    licence = card.text.split("## Licence", 1)[1].split("## Citation", 1)[0]
    assert "MIT" in licence and MIT_COPYRIGHT in licence and MIT_CLAUSE in licence
    assert "ryutaroLF/PureCLIP-Depth" in licence
    assert "@article{miya2026pureclipdepth" in card.text  # the paper's BibTeX
    assert card.data.eval_results is None and card.data.datasets is None  # converted: no run of ours to report
    meta = json.loads((out / "config.json").read_text())
    assert meta["released_licence"]["id"] == "mit" and MIT_COPYRIGHT in meta["released_licence"]["notice"]


def test_a_converted_tr2m_head_says_no_licence_was_published(tmp_path):
    torch.manual_seed(5)
    released = ReleasedScaleMapModel(in_channels=32, out_channels=16, text_channels=32, features=8, heads=2)
    path = tmp_path / "da_s_vitl_vitl.pth"
    torch.save({"state_dict": released.state_dict()}, path)
    out = convert_tr2m_released(path, tmp_path / "tr2m", overrides=TINY_TR2M_ENCODERS)
    card = ModelCard.load(out / "README.md")
    assert card.data.license is None  # no licence to name
    licence = card.text.split("## Licence", 1)[1]
    assert "No licence was published" in licence and "BeileiCui/TR2M" in licence
    assert "Check with the authors before you share" in licence
    assert "@inproceedings{cui2026tr2m" in card.text


def test_a_trained_head_is_apache_with_its_validation_results_in_the_metadata(tiny_cfg, tmp_path):
    model = PureCLIPDepth.build(tiny_cfg)
    metrics = {"abs_rel": 0.25, "d1": 0.5, "rmse": 1.25, "n_images": 3}
    folder = model.save_pretrained(tmp_path / "ckpt", extra={"epoch": 2, "val_metrics": metrics})
    card = ModelCard.load(folder / "README.md")
    assert card.data.license == "apache-2.0" and card.data.datasets == [tiny_cfg.data.dataset]
    assert "frozen parts it needs" in card.text and "own licences" in card.text
    results = {r.metric_type: r for r in card.data.eval_results}
    assert set(results) == {"abs_rel", "d1", "rmse"}  # a count is no metric
    assert [results[k].metric_value for k in ("abs_rel", "d1", "rmse")] == [0.25, 0.5, 1.25]
    said = f"protocol {tiny_cfg.eval.protocol}, flip TTA {'on' if tiny_cfg.eval.tta else 'off'}, random frozen weights (clip)"
    assert all(r.metric_config == said and r.dataset_split == "validation" for r in results.values())
    assert f"Validation on `{tiny_cfg.data.dataset}` ({said})" in card.text and "| abs_rel | 0.25 |" in card.text
    assert card.data.base_model is None  # random weights have no Hub id


def test_an_evaluation_is_added_to_the_card_from_its_metrics_json(tiny_cfg, tmp_path):
    folder = PureCLIPDepth.build(tiny_cfg).save_pretrained(tmp_path / "ckpt", extra={"epoch": 1, "val_metrics": {"abs_rel": 0.3}})
    summary = {"abs_rel": 0.125, "d1": 0.875, "n_images": 654, "dataset": "nyu", "protocol": "nyu_eigen", "flip_tta": True}
    summary["untrained_frozen_parts"] = []
    (tmp_path / "metrics.json").write_text(json.dumps(summary))
    write_model_card(folder, [tmp_path / "metrics.json"], location="someone/pureclip-nyu")
    card = ModelCard.load(folder / "README.md")
    tests = [r for r in card.data.eval_results if r.dataset_split == "test"]
    assert {(r.dataset_type, r.metric_type, r.metric_value) for r in tests} == {("nyu", "abs_rel", 0.125), ("nyu", "d1", 0.875)}
    assert all(r.metric_config == "protocol nyu_eigen, flip TTA on, real frozen weights" for r in tests)
    assert 'load_model("someone/pureclip-nyu")' in card.text
    assert load_model(folder) is not None  # the folder is still a checkpoint


def test_base_model_names_the_hub_ids_of_real_frozen_parts():
    class Part(nn.Module):
        def __init__(self, part: str, untrained: bool) -> None:
            super().__init__()
            self.part, self.untrained = part, untrained

    encoder = nn.ModuleList([Part("clip", False), Part("tr2m.image_encoder", False), Part("tr2m.relative", True)])
    cfg = SimpleNamespace(
        clip=SimpleNamespace(name="openai/clip-vit-large-patch14", random_init=False),
        tr2m=SimpleNamespace(
            image_encoder=SimpleNamespace(name="/models/dinov2-large", random_init=False),  # a local folder: no id
            relative=SimpleNamespace(name="LiheYoung/depth-anything-small-hf", random_init=False),  # untrained weights
        ),
    )
    assert frozen_hub_ids(encoder, cfg) == ["openai/clip-vit-large-patch14"]
    cfg.tr2m.image_encoder.name = "facebook/dinov2-large"
    assert frozen_hub_ids(encoder, cfg) == ["openai/clip-vit-large-patch14", "facebook/dinov2-large"]
