"""Checkpoints written by clipdepth with its first config layout (sections encoder, head, loss and
PureCLIP's settings inside train) load and predict the same depth.

The fixtures in tests/fixtures/layout_v1 were written by that version: a PureCLIP-Depth head (FiLM
fusion, paper patch rule) and a TR2M head, both over tiny random-weight frozen parts, with the
depth each predicted for tests/fixtures/layout_v1_image.npy.
"""

from pathlib import Path

import numpy as np
import pytest
import torch

from clipdepth.models import load_model

FIXTURES = Path(__file__).parent / "fixtures"


@pytest.mark.parametrize("name, captions", [("pureclip", None), ("tr2m", ["a room"])])
def test_a_checkpoint_of_the_first_config_layout_predicts_the_same_depth(name, captions, monkeypatch):
    folder = FIXTURES / "layout_v1" / name
    model = load_model(folder)
    image = np.load(FIXTURES / "layout_v1_image.npy")
    expected = np.load(folder / "expected_depth.npy")
    depth = model.infer(image, captions=captions)["depth"].numpy()
    if name == "pureclip":
        # That version's PureCLIP-Depth infer ran the head on CLIP's float32 output; infer now rounds the
        # features to their stored half precision, as evaluate and the feature cache do. Unrounded, the
        # loaded checkpoint is that version's model exactly; rounded, within half precision's step.
        np.testing.assert_allclose(depth, expected, rtol=0, atol=1e-3)
        monkeypatch.setattr("clipdepth.models.pureclip_depth.FEATURE_DTYPE", torch.float32)
        depth = model.infer(image, captions=captions)["depth"].numpy()
    np.testing.assert_allclose(depth, expected, rtol=1e-5, atol=1e-5)
