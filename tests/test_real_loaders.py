"""Real-data decoders: every shared sample decodes to plausible metres; KITTI layout, DIODE, HyperSim."""

import math

import h5py
import numpy as np
import pytest
from PIL import Image

from clipdepth.data.folder import ManifestDataset
from clipdepth.data.kitti import KITTIEigen, read_calib, read_velodyne, velodyne_to_depth
from clipdepth.data.splits import read_split_list
from clipdepth.data.zeroshot import read_diode_depth, read_hypersim_depth
from clipdepth.errors import DataError


def manifest(rgbd_samples, dataset):
    return list(ManifestDataset(rgbd_samples / "manifest.json", dataset))


def valid(depth):
    return depth[depth > 0]


def test_nyu_samples_are_dense_metres_within_10m(rgbd_samples):
    for sample in manifest(rgbd_samples, "nyu"):
        assert sample.depth.dtype == np.float32 and sample.depth.shape == sample.image.shape[:2] == (480, 640)
        assert valid(sample.depth).max() <= 10.0 and valid(sample.depth).size > 0.5 * sample.depth.size


def test_kitti_samples_are_sparse_outdoor_metres(rgbd_samples):
    for sample in manifest(rgbd_samples, "kitti"):
        depth = valid(sample.depth)
        assert depth.size < 0.5 * sample.depth.size  # semi-dense annotated ground truth
        # The annotated maps reach a few metres past the 80 m evaluation cap; the bulk is within it.
        assert depth.min() > 0 and np.percentile(depth, 99) <= 80.0 and depth.max() <= 100.0


def test_sun_rgbd_needs_the_bit_rotation(rgbd_samples):
    (sample,) = manifest(rgbd_samples, "sun_rgbd")
    depth = valid(sample.depth)
    assert depth.min() > 0 and depth.max() <= 10.0
    plain = np.asarray(Image.open(rgbd_samples / "sun" / "SUN_depth.png"), dtype=np.float32) / 1000
    assert not np.allclose(sample.depth, plain)


def test_tum_is_uint16_over_5000(rgbd_samples):
    (sample,) = manifest(rgbd_samples, "tum")
    raw = np.asarray(Image.open(rgbd_samples / "tum" / "TUM_depth.png"))
    row, col = np.argwhere(raw > 0)[len(np.argwhere(raw > 0)) // 2]
    assert sample.depth[row, col] == pytest.approx(raw[row, col] / 5000)
    assert valid(sample.depth).max() <= 10.0


def test_velodyne_projection_lands_in_the_image_at_plausible_depths(rgbd_samples):
    samples = manifest(rgbd_samples, "kitti_raw")
    assert len(samples) == 3
    for sample in samples:
        depth = valid(sample.depth)
        assert sample.depth.shape == sample.image.shape[:2]
        assert depth.size > 3000 and depth.max() <= 120.0
        assert np.mean((depth >= 4) & (depth <= 80)) > 0.9
        assert not math.isnan(sample.intrinsics[0])


def test_velodyne_projection_keeps_the_nearest_point_in_front_inside_the_image():
    # Identity extrinsics, so LiDAR coordinates are camera coordinates.
    calib = {"P2": np.array([[100.0, 0, 50, 0], [0, 100.0, 40, 0], [0, 0, 1, 0]]), "R0_rect": np.eye(3), "Tr_velo_to_cam": np.eye(3, 4)}
    points = np.array([[0, 0, 5, 1], [0, 0, 2, 1], [0, 0, -3, 1], [10, 0, 1, 1], [1, 1, 10, 1]], dtype=np.float32)
    depth = velodyne_to_depth(points, calib, (80, 100))
    assert depth[40, 50] == pytest.approx(2.0)  # nearest of two on one ray; the one behind is dropped
    assert depth[50, 60] == pytest.approx(10.0)
    assert np.count_nonzero(depth) == 2  # (10, 0, 1) projects to column 1050, outside


def test_calib_and_velodyne_errors_name_the_file(tmp_path):
    bad = tmp_path / "000000.txt"
    bad.write_text("P2: 1 2 3\n")
    with pytest.raises(DataError, match="000000.txt"):
        read_calib(bad)
    odd = tmp_path / "000000.bin"
    np.arange(5, dtype=np.float32).tofile(odd)
    with pytest.raises(DataError, match="000000.bin"):
        read_velodyne(odd)


def test_kitti_eigen_over_the_official_layout_skips_lines_without_gt(rgbd_samples, tmp_path):
    drive = "2011_09_26_drive_0002_sync"
    lines = []
    for frame in ("0000000005", "0000000050", "0000000100"):
        image = tmp_path / drive / "image_02" / "data" / f"{frame}.png"
        gt = tmp_path / drive / "proj_depth" / "groundtruth" / "image_02" / f"{frame}.png"
        for link, target in (
            (image, rgbd_samples / "kitti" / "rgb" / f"{frame}.png"),
            (gt, rgbd_samples / "kitti" / "depth" / f"{frame}.png"),
        ):
            link.parent.mkdir(parents=True, exist_ok=True)
            link.symlink_to(target)
        has_gt = frame != "0000000100"
        lines.append(f"{image.relative_to(tmp_path)} {gt.relative_to(tmp_path) if has_gt else 'None'} 721.5377")
    listing = tmp_path / "eigen_test.txt"
    listing.write_text("\n".join(lines) + "\n")
    dataset = KITTIEigen(read_split_list(listing), tmp_path, listing)
    assert (dataset.n_listed, dataset.n_without_gt, len(dataset)) == (3, 1, 2)
    names = [sample.name for sample in dataset]
    assert names == [f"{drive}_0000000005", f"{drive}_0000000050"]
    sample = dataset[0]
    assert sample.intrinsics.tolist() == pytest.approx([721.5377, 721.5377, 621.0, 187.5])
    assert 0 < valid(sample.depth).min() and np.percentile(valid(sample.depth), 99) <= 80.0


def test_diode_depth_is_zeroed_where_the_mask_is_zero(tmp_path):
    depth = np.full((4, 5, 1), 7.5, dtype=np.float32)
    mask = np.ones((4, 5), dtype=np.float32)
    mask[0, 0] = 0
    np.save(tmp_path / "scan_depth.npy", depth)
    np.save(tmp_path / "scan_depth_mask.npy", mask)
    decoded = read_diode_depth(tmp_path / "scan_depth.npy")
    assert decoded.shape == (4, 5) and decoded[0, 0] == 0 and decoded[1, 1] == pytest.approx(7.5)
    (tmp_path / "scan_depth_mask.npy").unlink()
    with pytest.raises(DataError, match="scan_depth_mask.npy"):
        read_diode_depth(tmp_path / "scan_depth.npy")


def test_hypersim_ray_distance_becomes_planar_depth(tmp_path):
    height, width = 5, 7  # odd, so one pixel centre lies on the optical axis
    distance = np.full((height, width), 10.0)
    distance[1, 1] = np.nan
    path = tmp_path / "frame.depth_meters.hdf5"
    with h5py.File(path, "w") as handle:
        handle["dataset"] = distance
    depth = read_hypersim_depth(path)
    assert depth[2, 3] == pytest.approx(10.0)
    focal = 0.5 * width / math.tan(math.radians(30))
    corner_ray = np.array([0.5 - width / 2, 0.5 - height / 2, focal])
    cos_angle = focal / np.linalg.norm(corner_ray)
    assert depth[0, 0] == pytest.approx(10.0 * cos_angle, rel=1e-6)
    assert depth[1, 1] == 0
    with pytest.raises(DataError, match="missing.hdf5"):
        read_hypersim_depth(tmp_path / "missing.hdf5")
