"""Checkpoints written by clipdepth with its first config layout (sections encoder, head, loss and
PureCLIP's settings inside train) load and predict the same depth.

The fixtures in tests/fixtures/layout_v1 were written by that version: a PureCLIP-Depth head (FiLM
fusion, paper patch rule) and a TR2M head, both over tiny random-weight frozen parts, with the
depth each predicted for tests/fixtures/layout_v1_image.npy.
"""
from pathlib import Path

import numpy as np
import pytest

from clipdepth.models import load_model

FIXTURES = Path(__file__).parent / "fixtures"


@pytest.mark.parametrize("name, captions", [("pureclip", None), ("tr2m", ["a room"])])
def test_a_checkpoint_of_the_first_config_layout_predicts_the_same_depth(name, captions):
    folder = FIXTURES / "layout_v1" / name
    model = load_model(folder)
    image = np.load(FIXTURES / "layout_v1_image.npy")
    depth = model.infer(image, captions=captions)["depth"].numpy()
    np.testing.assert_allclose(depth, np.load(folder / "expected_depth.npy"), rtol=1e-5, atol=1e-5)
