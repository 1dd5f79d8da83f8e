"""One image processor per model: every road from an image to a depth map (``infer``, ``evaluate``,
``predict``, the web demo's service, the transformers pipeline) converts the image and brings the
prediction back through the model's ``Preprocessor``, with the same geometry for the same frames.
A road with a resize or crop of its own would not call it, and fails here."""

import collections

import numpy as np
import pytest
import torch
import transformers
from PIL import Image

import clipdepth.hf  # noqa: F401  (the pipeline)
from clipdepth.cli.main import main
from clipdepth.data.transforms import Preprocessor
from clipdepth.models import PureCLIPDepth, load_model
from clipdepth.serve import DepthService, find_checkpoints


@pytest.fixture
def spied(monkeypatch):
    """Calls of the Preprocessor's conversions, per method: the geometry (``describe``) of each."""
    calls: dict[str, list[str]] = collections.defaultdict(list)
    for method in ("images", "frames", "restore"):
        original = getattr(Preprocessor, method)

        def spy(self, *args, _original=original, _method=method, **kwargs):
            calls[_method].append(self.describe())
            return _original(self, *args, **kwargs)

        monkeypatch.setattr(Preprocessor, method, spy)
    return calls


@pytest.fixture
def checkpoint(tiny_cfg, tmp_path):
    tiny_cfg.data.test_size = 2
    torch.manual_seed(0)
    return PureCLIPDepth.build(tiny_cfg).save_pretrained(tmp_path / "ckpt")


def test_every_road_goes_through_the_models_one_processor(checkpoint, spied, tmp_path):
    image = tmp_path / "room.png"
    Image.fromarray(np.random.default_rng(0).integers(0, 256, (48, 64, 3), dtype=np.uint8)).save(image)
    model = load_model(checkpoint)
    expected = model.processor_for(48, 64, "trained").describe()  # the geometry every road must feed

    def road(run) -> set[str]:
        spied.clear()
        run()
        into = spied["images"] + spied["frames"]
        assert into and spied["restore"], "this road converts the image or restores the depth by itself"
        return set(into) | set(spied["restore"])

    roads = {
        "infer": lambda: model.infer(np.asarray(Image.open(image)), crop="trained"),
        "predict": lambda: main(
            ["predict", str(image), "--checkpoint", str(checkpoint), "--crop", "trained", "--npy", "--out", str(tmp_path / "pred")]
        ),
        "serve": lambda: DepthService(find_checkpoints([checkpoint])[0], tmp_path / "serve", crop="trained").predict(
            image, find_checkpoints([checkpoint])[0][0].label
        ),
        "pipeline": lambda: transformers.pipeline("depth-estimation", model=str(checkpoint))(str(image), crop="trained"),
    }
    for name, run in roads.items():
        assert road(run) == {expected}, name
    # evaluate feeds its dataset's frames (64 x 64 synthetic rooms) with the same rule
    assert road(lambda: main(["evaluate", "--checkpoint", str(checkpoint), "--out", str(tmp_path / "eval")])) == {
        model.processor_for(64, 64, "trained").describe()
    }
