"""Model-input preprocessing: mask-aware depth resizing and mapping predictions back."""
import numpy as np
import pytest
import torch

from clipdepth.data.transforms import Preprocessor, resize_depth_masked


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
