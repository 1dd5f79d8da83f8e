"""Built-in synthetic scenes: deterministic, disjoint splits, exact planar depth, world-unit texture."""

import numpy as np
import pytest

from clipdepth.data import synthetic
from clipdepth.data.synthetic import Box, Camera, Scene, SyntheticScenes, _render, render_scene
from clipdepth.errors import ConfigError


def flat(albedo=0.5):
    return lambda a, b: np.full((a.size, 3), albedo)


def room_scene(camera_height=1.5, length=6.0, texture=None, width=240, height=160):
    """A 4 x 3 x `length` m room with a level camera, the back wall `length` m ahead."""
    faces = (texture or flat(),) * 6
    room = Box((-2.0, 0.0, -0.5), (2.0, 3.0, length), faces, hollow=True)
    camera = Camera((200.0, 200.0, width / 2 - 0.5, height / 2 - 0.5), height, width, (0.0, camera_height, 0.0))
    return Scene(camera, (room,), 10.0, light=(0.0, 1.0, 0.0), ambient=0.5, fog_colour=(0.5, 0.5, 0.5), fog_distance=1e9)


def test_floor_and_back_wall_depth_are_exact():
    scene = room_scene(camera_height=1.5, length=6.0)
    _, depth = _render(scene)
    fy, cy = 200.0, 79.5
    v = 150  # below the horizon: the floor, nearer than the back wall's bottom edge
    assert 1.5 * fy / (v - cy) < 6.0
    assert depth[v, 120] == pytest.approx(1.5 * fy / (v - cy), rel=1e-5)
    # straight ahead, level: the back wall, whose planar depth is its distance
    assert depth[80, 120] == pytest.approx(6.0, rel=1e-5)
    # a side wall at x = -2 m: the ray of column u meets it at z = 2 * fx / (cx - u)
    assert depth[80, 10] == pytest.approx(2 * 200.0 / (119.5 - 10), rel=1e-5)


def test_depth_beyond_the_cap_is_marked_missing():
    _, depth = _render(room_scene(length=12.0))
    assert depth[80, 120] == 0.0 and depth.max() <= 10.0


def test_texture_period_is_fixed_in_metres():
    # 0.5 m stripes across the floor: a far stripe covers fewer image rows than a near one
    def stripes(a, b):
        return np.where(np.floor(b / 0.5) % 2 == 0, 0.9, 0.1)[:, None].repeat(3, 1)

    image, depth = _render(room_scene(texture=stripes, length=9.5, height=320))
    floor_rows = np.flatnonzero((depth[:, 120] > 0) & (depth[:, 120] < 9.4))
    column = image[floor_rows, 120, 0] > 127
    runs = np.diff(np.flatnonzero(np.diff(column)))  # rows per whole stripe, far (top) to near
    assert len(runs) >= 4 and runs[0] < runs[-1] / 4
    # near stripes span many rows, so their edges land within a pixel: consecutive edges lie
    # 0.5 m apart on the floor (depth at row v: h * fy / (v - cy))
    edges = floor_rows[np.flatnonzero(np.diff(column)) + 1][-6:]
    assert np.allclose(np.diff(1.5 * 200.0 / (edges - 159.5)), -0.5, atol=0.05)


def test_pixel_windows_drop_no_geometry(monkeypatch):
    # boxes are ray-cast only over the pixels they can cover; streets have boxes behind, across
    # and ahead of the camera plane, and the result must match casting every ray at every box
    windowed = [render_scene(kind, seed, 48, 160) for kind in ("indoor", "outdoor") for seed in range(3)]
    monkeypatch.setattr(synthetic, "_pixel_window", lambda box, camera, rotation: (slice(None), slice(None)))
    everywhere = [render_scene(kind, seed, 48, 160) for kind in ("indoor", "outdoor") for seed in range(3)]
    for a, b in zip(windowed, everywhere, strict=True):
        assert np.array_equal(a.depth, b.depth) and np.array_equal(a.image, b.image)


def test_scenes_are_deterministic_and_splits_disjoint():
    a, b = render_scene("indoor", 7, 48, 64), render_scene("indoor", 7, 48, 64)
    assert np.array_equal(a.image, b.image) and np.array_equal(a.depth, b.depth)
    assert not np.array_equal(render_scene("indoor", 8, 48, 64).depth, a.depth)
    seeds = {split: {SyntheticScenes("indoor", split, 50, 48, 64).scene_seed(i) for i in range(50)} for split in ("train", "val", "test")}
    assert not (seeds["train"] & seeds["val"] or seeds["train"] & seeds["test"] or seeds["val"] & seeds["test"])


@pytest.mark.parametrize("kind, cap", [("indoor", 10.0), ("outdoor", 80.0)])
def test_ranges_shapes_and_intrinsics(kind, cap):
    s = SyntheticScenes(kind, "train", 2, 96, 128)[1]
    assert s.image.shape == (96, 128, 3) and s.image.dtype == np.uint8 and s.depth.dtype == np.float32
    assert s.depth.max() <= cap and s.depth.min() >= 0.0 and (s.depth > 0).mean() > 0.5
    assert s.name == f"{kind}_train_00001"
    full = render_scene(kind, 0, 2 * 96, 2 * 128)
    assert np.allclose(full.intrinsics, 2 * render_scene(kind, 0, 96, 128).intrinsics)


def test_outdoor_sky_has_no_depth():
    for seed in range(3):
        s = render_scene("outdoor", seed, 96, 320)
        sky = (s.depth == 0) & (np.arange(96)[:, None] < 30)  # no depth in the upper image: sky
        assert sky.any() and s.image[sky].mean() > 100


def test_unknown_kind_or_split_is_one_clear_error():
    with pytest.raises(ConfigError, match="kind 'forest'"):
        SyntheticScenes("forest", "train", 1, 8, 8)
    with pytest.raises(ConfigError, match="split 'dev'"):
        SyntheticScenes("indoor", "dev", 1, 8, 8)
