"""clipdepth checkpoints through transformers: pipeline("depth-estimation"), the Auto classes, the model card."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from PIL import Image

from clipdepth.config import config_to_dict, load_config_dict
from clipdepth.errors import ConfigError
from clipdepth.models import MODELS, build_model, load_model
from clipdepth.models.base import CARD_LOCATION
from clipdepth.models.pureclip_depth import PureCLIPDepth

from .conftest import TINY_DEPTH_ANYTHING
from .test_depthclip import TINY_RN
from .test_learned_prompts import TINY_PROMPTS

hf = pytest.importorskip("clipdepth.hf")
transformers = pytest.importorskip("transformers")


@pytest.fixture
def photo(tmp_path):
    """A wide photo (two tiles for PureCLIP-Depth) on disk."""
    rgb = np.random.default_rng(0).integers(0, 256, (50, 110, 3), dtype=np.uint8)
    path = tmp_path / "photo.png"
    Image.fromarray(rgb).save(path)
    return path


@pytest.fixture
def pureclip_folder(tiny_cfg, tmp_path):
    return PureCLIPDepth.build(tiny_cfg).save_pretrained(tmp_path / "pureclip")


@pytest.fixture
def tr2m_folder(tiny_tr2m_cfg, tmp_path):
    """A TR2M checkpoint whose head reads the caption (random non-zero weights everywhere: the
    initialisation alone gives depth that does not depend on it)."""
    model = build_model(load_config_dict(config_to_dict(tiny_tr2m_cfg), TINY_DEPTH_ANYTHING))
    torch.manual_seed(0)
    with torch.no_grad():
        for p in model.head.parameters():
            p.normal_(0.0, 0.5)
    return model.save_pretrained(tmp_path / "tr2m")


def test_pipeline_gives_infer_depth_in_metres(pureclip_folder, photo):
    pipe = transformers.pipeline("depth-estimation", model=str(pureclip_folder))
    assert isinstance(pipe.model, hf.ClipdepthForDepthEstimation)
    expected = load_model(pureclip_folder).infer(photo)["depth"][0]
    for given in (str(photo), Image.open(photo)):
        out = pipe(given)
        assert out["predicted_depth"].shape == (50, 110)
        torch.testing.assert_close(out["predicted_depth"], expected, atol=1e-5, rtol=0)
    # the picture is the pipeline's own min-max scaling of the metres, not metres
    d = expected.numpy()
    picture = ((d - d.min()) / (d.max() - d.min()) * 255).astype(np.uint8)
    np.testing.assert_array_equal(np.asarray(out["depth"]), picture)


def test_auto_classes_load_a_checkpoint(pureclip_folder, photo):
    config = transformers.AutoConfig.from_pretrained(pureclip_folder)
    assert config.model_type == "clipdepth_pureclip_depth" and config.architecture == "pureclip_depth"
    processor = transformers.AutoImageProcessor.from_pretrained(pureclip_folder)
    model = transformers.AutoModelForDepthEstimation.from_pretrained(pureclip_folder)
    inputs = processor(images=Image.open(photo), return_tensors="pt")
    assert inputs["pixel_values"].shape == (1, 3, 50, 110)
    depth = model(**inputs).predicted_depth
    torch.testing.assert_close(depth, load_model(pureclip_folder).infer(photo)["depth"], atol=1e-5, rtol=0)
    # every clipdepth model has its transformers classes
    assert all(f"clipdepth_{name}" in transformers.CONFIG_MAPPING for name in MODELS)


def test_wrapper_saves_a_clipdepth_checkpoint(pureclip_folder, photo, tmp_path):
    model = transformers.AutoModelForDepthEstimation.from_pretrained(pureclip_folder)
    again = model.save_pretrained(tmp_path / "again")
    assert sorted(p.name for p in again.iterdir()) == [  # .clipdepth: the list of what clipdepth wrote there
        ".clipdepth",
        "README.md",
        "config.json",
        "model.safetensors",
        "preprocessor_config.json",
    ]
    torch.testing.assert_close(load_model(again).infer(photo)["depth"], load_model(pureclip_folder).infer(photo)["depth"])


def test_tr2m_caption_through_the_pipeline(tr2m_folder, photo):
    pipe = transformers.pipeline("depth-estimation", model=str(tr2m_folder))  # import clipdepth.hf: the caption is taken
    model = load_model(tr2m_folder)
    kitchen = pipe(str(photo), caption="a kitchen with a table")["predicted_depth"]
    road = pipe(str(photo), caption="a long road between fields")["predicted_depth"]
    torch.testing.assert_close(kitchen, model.infer(photo, captions=["a kitchen with a table"])["depth"][0], atol=1e-5, rtol=0)
    torch.testing.assert_close(road, model.infer(photo, captions=["a long road between fields"])["depth"][0], atol=1e-5, rtol=0)
    assert (kitchen - road).abs().max() > 1e-3  # the caption reaches the model
    with pytest.raises(ConfigError, match="needs a caption per image: call the pipeline with caption="):
        pipe(str(photo))
    old_name = transformers.pipeline("depth-estimation", model=str(tr2m_folder), pipeline_class=hf.CaptionedDepthEstimationPipeline)
    torch.testing.assert_close(old_name(str(photo), caption="a kitchen with a table")["predicted_depth"], kitchen)


@pytest.mark.parametrize("recipe, overrides", [("depthclip_nyu", TINY_RN), ("demo", TINY_PROMPTS)], ids=["depthclip", "learned_prompts"])
def test_the_baselines_through_the_pipeline(recipe, overrides, photo, tmp_path):
    from clipdepth.config import load_config

    folder = build_model(load_config(recipe, overrides)).save_pretrained(tmp_path / "baseline")
    out = transformers.pipeline("depth-estimation", model=str(folder))(str(photo))
    torch.testing.assert_close(out["predicted_depth"], load_model(folder).infer(photo)["depth"][0], atol=1e-5, rtol=0)


def test_model_card_has_the_hub_metadata(pureclip_folder, tr2m_folder, tiny_tr2m_cfg, tmp_path):
    from huggingface_hub import ModelCard

    for folder, paper in ((pureclip_folder, "https://arxiv.org/abs/2603.16238"), (tr2m_folder, "https://arxiv.org/abs/2506.13387")):
        card = ModelCard.load(folder / "README.md")
        assert card.data.pipeline_tag == "depth-estimation"
        assert card.data.library_name == "clipdepth" and card.data.license == "apache-2.0"
        assert paper in card.text and "[More Information Needed]" not in card.text
        assert f'pipeline("depth-estimation", model="{CARD_LOCATION}"' in card.text
        assert str(folder) not in card.text and str(folder.parent) not in card.text  # no local path: folders move
        assert "random-weight" in card.text  # the frozen parts are named as what they are
    assert "caption=" in ModelCard.load(tr2m_folder / "README.md").text
    oracle = build_model(tiny_tr2m_cfg).save_pretrained(tmp_path / "oracle")  # relative depth from the GT
    text = ModelCard.load(oracle / "README.md").text
    assert "cannot predict on photos" in text and "load_model(" not in text
    meta = json.loads((pureclip_folder / "preprocessor_config.json").read_text())
    assert meta["image_processor_type"] == hf.ClipdepthImageProcessor.__name__


def test_processor_refuses_mixed_sizes():
    small, large = (np.zeros((h, 20, 3), np.uint8) for h in (10, 12))
    with pytest.raises(ConfigError, match="one size"):
        hf.ClipdepthImageProcessor()(images=[small, large])
