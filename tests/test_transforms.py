"""Model-input preprocessing: mask-aware depth resizing and mapping predictions back."""

import numpy as np
import pytest
import torch

from clipdepth.config import load_config
from clipdepth.data.transforms import Preprocessor, resize_depth_masked
from clipdepth.errors import ConfigError


def test_mask_aware_resize_never_blends_missing_depth():
    depth = torch.full((1, 8, 8), 3.0)
    depth[0, :, 4:] = 0.0  # right half missing
    depth[0, 0, 0] = 0.0  # and one hole
    out = resize_depth_masked(depth, (4, 4))[0]
    # plain bilinear would pull valid pixels towards 0 near holes; mask-aware keeps 3 m exactly
    assert torch.allclose(out[:, :2], torch.full((4, 2), 3.0)) and torch.all(out[:, 3] == 0)


def test_mask_aware_resize_marks_mostly_missing_as_invalid():
    depth = torch.tensor([[[3.0, 0.0], [0.0, 0.0]]])
    assert resize_depth_masked(depth, (1, 1)).item() == 0.0  # resized mask 0.25 < 0.5
    depth = torch.tensor([[[3.0, 5.0], [0.0, 0.0]]])
    assert resize_depth_masked(depth, (1, 1)).item() == 4.0  # mask 0.5: mean of the valid pixels


def test_crop_then_resize_and_restore_onto_the_frame():
    pp = Preprocessor.create(4, (40, 470, 38, 603))  # the reference NYU input crop
    image = np.zeros((1, 480, 640, 3), np.uint8)
    image[:, 40:470, 38:603] = 255  # white exactly inside the crop
    x = pp.images(image)
    assert x.shape == (1, 3, 4, 4) and torch.allclose(x, torch.ones_like(x))
    pred = torch.arange(16.0).reshape(1, 4, 4)
    frame = pp.restore(pred, (480, 640))[0]
    assert frame.shape == (480, 640)
    # corners of the crop carry the prediction's corners (align_corners=True) ...
    assert frame[40, 38].item() == 0.0 and frame[469, 602].item() == 15.0
    # ... and the frame outside repeats the nearest edge (NYU eval row 470 lies outside the crop)
    assert frame[470, 602].item() == 15.0 and frame[0, 0].item() == 0.0


def test_kb_crop_is_the_bottom_352_rows_and_central_1216_columns_of_each_frame():
    pre = Preprocessor.create((14, 28), None, kb_crop=True)
    assert pre.crop_box((375, 1242)) == (23, 375, 13, 1229)
    assert pre.crop_box((370, 1224)) == (18, 370, 4, 1220)  # another drive's frame size
    with pytest.raises(ValueError, match="at least 352x1216"):
        pre.crop_box((300, 1242))
    # restore stretches the prediction over exactly that box (align_corners: corners map to corners)
    pred = torch.arange(14 * 28, dtype=torch.float32).reshape(1, 14, 28)
    restored = pre.restore(pred, (375, 1242))[0]
    assert restored.shape == (375, 1242)
    assert restored[23, 13] == pred[0, 0, 0] and restored[374, 1228] == pred[0, -1, -1]
    assert restored[23, 12] == restored[23, 13] and restored[22, 13] == restored[23, 13]  # outside: edge copies


def _cv2():
    return pytest.importorskip("cv2", reason="opencv-python-headless (a dev dependency) is the resize oracle")


@pytest.mark.parametrize("size", [(20, 30), (336, 336), (61, 97)])  # shrink, the NYU input, enlarge
def test_linear_resize_is_opencv_inter_linear_on_float_images(size):
    cv2 = _cv2()
    rgb = np.random.default_rng(0).integers(0, 256, (47, 71, 3), dtype=np.uint8)
    # the release resizes the float image rgb / 255
    theirs = cv2.resize(rgb.astype(np.float32) / 255, (size[1], size[0]), interpolation=cv2.INTER_LINEAR)
    ours = Preprocessor.create(size, None).images(rgb[None])[0].permute(1, 2, 0).numpy()
    assert ours.shape == theirs.shape and np.abs(ours - theirs).max() < 1e-5


def test_mask_aware_depth_resize_is_the_released_opencv_computation():
    cv2 = _cv2()
    rng = np.random.default_rng(1)
    depth = (rng.random((48, 64)) * 9 + 0.5).astype(np.float32)
    depth[rng.random((48, 64)) < 0.4] = 0.0  # sparse holes
    depth[:10, :20] = 0.0  # and a large missing block
    # released dataset7_NYU_KITTI.py: valid = finite & > 1e-3; num / (den + 1e-8); invalid where den < 0.5
    valid = (np.isfinite(depth) & (depth > 1e-3)).astype(np.float32)
    num = cv2.resize(depth * valid, (29, 21), interpolation=cv2.INTER_LINEAR)
    den = cv2.resize(valid, (29, 21), interpolation=cv2.INTER_LINEAR)
    expected = np.where(den < 0.5, 0.0, num / (den + 1e-8))
    ours = Preprocessor.create((21, 29), None).depths(depth[None])[0].numpy()
    # OpenCV computes its weights in another float order (~1e-6 apart): validity may differ only
    # where the resized mask is 0.5 within that rounding
    differ = (ours == 0) != (expected == 0)
    assert np.all(np.abs(den[differ] - 0.5) < 1e-5) and differ.sum() < 0.02 * differ.size
    both = (ours > 0) & (expected > 0)
    assert np.abs(ours[both] - expected[both]).max() < 1e-4


def test_resize_modes_differ_where_they_should():
    ramp = torch.arange(8.0).reshape(1, 1, 1, 8).expand(1, 1, 2, 8)
    # align_corners maps the end pixels onto each other: 0 .. 7 in 3 steps = 0, 3.5, 7
    aligned = Preprocessor.create((2, 3), None, resize="align_corners").images(
        (ramp[0].permute(1, 2, 0).expand(2, 8, 3) * 30).numpy().astype(np.uint8)[None]
    )
    assert aligned[0, 0, 0].tolist() == pytest.approx([0.0, 105 / 255, 210 / 255])
    # half-pixel centres: source x = (i + 0.5) * 8 / 3 - 0.5 = 0.833, 3.5, 6.167 (no antialias)
    linear = Preprocessor.create((2, 3), None).images((ramp[0].permute(1, 2, 0).expand(2, 8, 3) * 30).numpy().astype(np.uint8)[None])
    assert linear[0, 0, 0].tolist() == pytest.approx([25 / 255, 105 / 255, 185 / 255], abs=1e-6)
    # the data section's values are checked where they are declared (the config's rules), once
    with pytest.raises(ConfigError, match="data.resize"):
        load_config("demo", ["data.resize=bicubic"])
    with pytest.raises(ConfigError, match="data.kb_crop and data.input_crop exclude each other"):
        load_config("demo", ["data.kb_crop=true", "data.input_crop=[0,10,0,10]"])


def test_nearest_depth_resize_copies_source_pixels():
    depth = torch.tensor([[[1.0, 2.0, 3.0, 4.0], [5.0, 0.0, 7.0, 8.0]]])
    out = Preprocessor.create((1, 2), None, depth_resize="nearest").depths(depth.numpy())
    assert out.tolist() == [[[1.0, 3.0]]]  # source index floor(dst * 2): rows 0, cols 0 and 2


def test_garg_region_on_a_kitti_frame_at_the_released_input_size():
    from clipdepth.evaluation.protocol import crop_mask

    # 375 x 1242: Garg rows int(0.40810811 * 375) = 153 .. 371, cols int(0.03594771 * 1242) = 44 .. 1197.
    # Nearest to 336 x 1344 takes source row floor(r * 375 / 336) and column floor(c * 1242 / 1344):
    # r = 137 -> 152.9 (out), 138 -> 154.0 (in); r = 332 -> 370.5 (in), 333 -> 371.7 (out);
    # c = 47 -> 43.4 (out), 48 -> 44.4 (in); c = 1295 -> 1196.7 (in), 1296 -> 1197.6 (out).
    pre = Preprocessor.create(336, None, tiles=4)
    region = pre.region(crop_mask((375, 1242), "garg")[None])[0]
    expected = torch.zeros(336, 1344, dtype=torch.bool)
    expected[138:333, 48:1296] = True
    assert region.shape == (336, 1344) and torch.equal(region, expected)
