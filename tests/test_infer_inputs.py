"""`infer` takes what people have: paths, PIL images, arrays, tensors, lists at mixed sizes; with
intrinsics it adds the back-projected points."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from clipdepth.errors import ConfigError, DataError
from clipdepth.io.pointcloud import as_intrinsics, points_from_depth
from clipdepth.models import PureCLIPDepth


@pytest.fixture
def model(tiny_cfg):
    torch.manual_seed(0)
    return PureCLIPDepth.build(tiny_cfg)


def photo(height, width, seed):
    return np.random.default_rng(seed).integers(0, 256, (height, width, 3), dtype=np.uint8)


def test_every_kind_of_image_gives_the_same_depth(model, tmp_path):
    image = photo(48, 64, 0)
    expected = model.infer(image)["depth"]
    assert expected.shape == (1, 48, 64)
    Image.fromarray(image).save(tmp_path / "a.png")
    chw = torch.from_numpy(image).permute(2, 0, 1)
    for kind in (
        str(tmp_path / "a.png"),
        tmp_path / "a.png",
        Image.fromarray(image),
        image[None],
        chw.float() / 255,
        chw[None].float() / 255,
        chw,
    ):
        assert torch.equal(model.infer(kind)["depth"], expected), type(kind)


def test_a_list_at_mixed_sizes_gives_one_result_per_image_in_order(model, monkeypatch):
    images = [photo(48, 64, 0), photo(40, 56, 1), photo(48, 64, 2)]
    batches = []
    original = type(model)._infer_batch

    def spy(self, batch, *args, **kwargs):
        batches.append(tuple(batch.shape))
        return original(self, batch, *args, **kwargs)

    monkeypatch.setattr(type(model), "_infer_batch", spy)
    results = model.infer(images)
    assert sorted(batches) == [(1, 3, 40, 56), (2, 3, 48, 64)]  # the two 48 x 64 images in one batch
    for image, result in zip(images, results):
        assert result["depth"].shape == image.shape[:2]
        # batching changes nothing: each equals the image run alone
        assert torch.allclose(result["depth"], original(model, image, False, None, None, 64)["depth"][0], atol=1e-6)


def test_points_are_the_back_projection_of_the_depth():
    # 2 x 2 by hand: fx = 2, fy = 4, cx = 0.5, cy = 0.5; x = (u - cx) z / fx, y = (v - cy) z / fy
    depth = torch.tensor([[1.0, 2.0], [3.0, 4.0]])
    expected = torch.tensor([[[-0.25, -0.125, 1.0], [0.5, -0.25, 2.0]], [[-0.75, 0.375, 3.0], [1.0, 0.5, 4.0]]])
    assert torch.allclose(points_from_depth(depth, (2.0, 4.0, 0.5, 0.5)), expected)
    assert as_intrinsics([[2, 0, 0.5], [0, 4, 0.5], [0, 0, 1]]) == (2.0, 4.0, 0.5, 0.5)
    assert as_intrinsics(torch.tensor([2.0, 4.0, 0.5, 0.5])) == (2.0, 4.0, 0.5, 0.5)


def test_infer_adds_points_with_intrinsics_one_camera_or_one_each(model):
    image = photo(48, 64, 0)
    out = model.infer(image, intrinsics=(50.0, 50.0, 31.5, 23.5))
    assert out["points"].shape == (1, 48, 64, 3)
    assert torch.equal(out["points"][..., 2], out["depth"])
    assert torch.allclose(out["points"][0, 0, 0, 0], -31.5 * out["depth"][0, 0, 0] / 50.0)
    cameras = [(50.0, 50.0, 31.5, 23.5), None]
    first, second = model.infer([image, photo(40, 56, 1)], intrinsics=cameras)
    assert torch.equal(first["points"], out["points"][0]) and "points" not in second
    both = model.infer([image, image], intrinsics=[[50, 0, 31.5], [0, 50, 23.5], [0, 0, 1]])  # one K for all
    assert all(torch.equal(r["points"], out["points"][0]) for r in both)


def test_bad_inputs_are_one_line(model, tmp_path):
    (tmp_path / "broken.jpg").write_bytes(b"not an image")
    with pytest.raises(DataError, match="broken.jpg") as err:
        model.infer([photo(48, 64, 0), tmp_path / "broken.jpg"])
    assert "\n" not in str(err.value)
    with pytest.raises(ConfigError, match=r"uint8, got \(48, 64\) uint8"):
        model.infer(np.zeros((48, 64), np.uint8))
    with pytest.raises(ConfigError, match="cannot read an image from a dict"):
        model.infer({"image": 1})
    with pytest.raises(ConfigError, match="intrinsics must be fx fy cx cy or a 3x3 matrix K"):
        model.infer(photo(48, 64, 0), intrinsics=(1.0, 2.0))
    with pytest.raises(ConfigError, match="focal lengths fx, fy must be positive"):
        model.infer(photo(48, 64, 0), intrinsics=(0.0, 2.0, 1.0, 1.0))
