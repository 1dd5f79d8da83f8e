"""Every shipped real-data recipe, end to end, on the real samples in ../shared at toy encoder sizes.

Per training recipe (pureclip_nyu, pureclip_kitti, tr2m_nyu, tr2m_kitti, rsa_nyu, rsa_kitti): `cache build`, a one-epoch
`train` from the cache, a second run that reuses the cache untouched, `evaluate`, `predict`. The
zero-shot recipes are evaluation recipes: each scores the tr2m_nyu checkpoint through
`evaluate --config zeroshot/NAME`. SUN RGB-D is a real sample; iBims-1, DIODE and HyperSim have
none in ../shared, so their files are written here in each dataset's own format (from the real NYU
depth) to run those recipes' readers and settings.
"""

from __future__ import annotations

import json
from pathlib import Path

import h5py
import numpy as np
import pytest

from clipdepth.cli.main import main
from clipdepth.data.zeroshot import IBIMS_SCALE
from clipdepth.io.depth_io import read_depth

from .conftest import TINY_DEPTH_ANYTHING, TINY_ENCODER, TINY_RSA

TINY_CLIP = [f"clip.{k}={v}" for k, v in TINY_ENCODER.items()]
TINY_TR2M = (
    TINY_CLIP
    + TINY_DEPTH_ANYTHING
    + [
        "tr2m.image_encoder.random_init=true",
        "tr2m.image_encoder.hidden_size=32",
        "tr2m.image_encoder.num_layers=1",
        "tr2m.image_encoder.num_heads=2",
        "tr2m.num_heads=2",
        "tr2m.neck_channels=16",
        "tr2m.decoder_channels=8",
        "tr2m.head_channels=8",
        "tr2m.head_hidden=4",
        "tr2m.contrast_pixels=16",
        "data.caption=a room with a table",
    ]
)
# RSA: its tiny random RN50 text tower and MLP on the random Depth Anything (not the oracle: it predicts on photos).
TINY_RSA_REAL = [
    *(o for o in TINY_RSA if o.startswith(("depthclip.", "rsa.scene", "rsa.head"))),
    *(o.replace("tr2m.relative", "rsa.relative") for o in TINY_DEPTH_ANYTHING),
    "data.caption=a room with a table",
]
NYU_LINES = [f"nyu/rgb_{n}.jpg nyu/sync_depth_{n}.png 518.8579" for n in ("00000", "00050", "00100")]
KITTI_TRAIN = [f"kitti/rgb/{n}.png kitti/depth/{n}.png 707.0493" for n in ("0000000005", "0000000100")]
KITTI_TEST = KITTI_TRAIN + ["kitti/rgb/0000000050.png None 707.0493"]  # a frame without GT, as in the Eigen list
RECIPES = {
    # recipe: (model overrides, train lines, test lines, validation fraction, image to predict on, caption)
    "pureclip_nyu": (TINY_CLIP, NYU_LINES, NYU_LINES, 0.34, "nyu/rgb_u0001.png", None),
    "pureclip_kitti": (TINY_CLIP, KITTI_TRAIN, KITTI_TEST, 0.5, "kitti/rgb/0000000050.png", None),
    "tr2m_nyu": (TINY_TR2M + ["tr2m.input_height=28", "tr2m.input_width=42"], NYU_LINES, NYU_LINES, 0.34, "nyu/rgb_u0001.png", "a room"),
    "tr2m_kitti": (
        TINY_TR2M + ["tr2m.input_height=28", "tr2m.input_width=98"],
        KITTI_TRAIN,
        KITTI_TEST,
        0.5,
        "kitti/rgb/0000000050.png",
        "a street",
    ),
    "rsa_nyu": (TINY_RSA_REAL + ["rsa.input_height=28", "rsa.input_width=42"], NYU_LINES, NYU_LINES, 0.34, "nyu/rgb_u0001.png", "a room"),
    "rsa_kitti": (
        TINY_RSA_REAL + ["rsa.input_height=28", "rsa.input_width=98"],
        KITTI_TRAIN,
        KITTI_TEST,
        0.5,
        "kitti/rgb/0000000050.png",
        "a street",
    ),
}


def _files(folder: Path) -> dict[str, tuple[int, int]]:
    """Every file's (size, modification time): a cache rebuilt with the same content still shows."""
    return {p.relative_to(folder).as_posix(): (p.stat().st_size, p.stat().st_mtime_ns) for p in sorted(folder.rglob("*")) if p.is_file()}


def _lists(tmp_path: Path, name: str, train: list[str], test: list[str]) -> tuple[Path, Path]:
    (tmp_path / f"{name}_train.txt").write_text("\n".join(train) + "\n")
    (tmp_path / f"{name}_test.txt").write_text("\n".join(test) + "\n")
    return tmp_path / f"{name}_train.txt", tmp_path / f"{name}_test.txt"


def train_recipe(recipe: str, samples: Path, tmp_path: Path) -> Path:
    """The whole path for one recipe; returns the checkpoint it trained."""
    overrides, train, test, val_fraction, image, caption = RECIPES[recipe]
    train_list, test_list = _lists(tmp_path, recipe, train, test)
    cache = tmp_path / f"{recipe}_cache"
    data = [
        f"data.root={samples}",
        f"data.train_list={train_list}",
        f"data.test_list={test_list}",
        f"data.val_fraction={val_fraction}",
        "train.batch_size=1",
        "train.max_epochs=1",
        "eval.batch_size=2",
        *overrides,
    ]
    assert main(["cache", "build", "--config", recipe, "--cache", str(cache), "--splits", "train", "val", *data]) == 0
    built = _files(cache)
    for run in ("run", "again"):  # the second run reuses the cache and changes nothing in it
        assert main(["train", "--config", recipe, "--out", str(tmp_path / f"{recipe}_{run}"), f"train.feature_cache={cache}", *data]) == 0
        assert _files(cache) == built
    model = tmp_path / f"{recipe}_run" / "model"
    out = tmp_path / f"{recipe}_eval"
    assert (
        main(
            [
                "evaluate",
                "--checkpoint",
                str(model),
                "--data-root",
                str(samples),
                "--split",
                str(test_list),
                "--out",
                str(out),
                *(["--caption", caption] if caption else []),
            ]
        )
        == 0
    )
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["n_images"] == len([line for line in test if "None" not in line])
    assert metrics["n_without_gt"] == len(test) - metrics["n_images"] and np.isfinite(metrics["abs_rel"])
    predicted = tmp_path / f"{recipe}_predict"
    assert (
        main(
            [
                "predict",
                str(samples / image),
                "--checkpoint",
                str(model),
                "--out",
                str(predicted),
                *(["--caption", caption] if caption else []),
            ]
        )
        == 0
    )
    depth = read_depth(predicted / f"{Path(image).stem}.png", 1000)
    assert depth.shape == ((375, 1242) if "kitti" in image else (480, 640)) and depth.max() > 0
    return model


@pytest.mark.parametrize("recipe", ["pureclip_nyu", "pureclip_kitti", "tr2m_kitti", "rsa_nyu", "rsa_kitti"])
def test_a_training_recipe_runs_end_to_end_on_real_samples(recipe, rgbd_samples, tmp_path):
    train_recipe(recipe, rgbd_samples, tmp_path)


def _zero_shot_files(samples: Path, root: Path) -> dict[str, list[str]]:
    """Split lines per zero-shot set: SUN RGB-D's real sample, the others written in their formats."""
    depth = read_depth(samples / "nyu" / "sync_depth_00000.png", 1000)
    rgb = (samples / "nyu" / "rgb_00000.jpg").read_bytes()
    for name in ("ibims", "diode", "hypersim"):
        (root / name).mkdir(parents=True)
        (root / name / "rgb.jpg").write_bytes(rgb)
    from PIL import Image

    Image.fromarray(np.round(depth * IBIMS_SCALE).astype(np.uint16)).save(root / "ibims" / "depth.png")
    np.save(root / "diode" / "x_depth.npy", depth[..., None])
    np.save(root / "diode" / "x_depth_mask.npy", (depth > 0).astype(np.float32))
    with h5py.File(root / "hypersim" / "frame.depth_meters.hdf5", "w") as handle:
        handle["dataset"] = np.where(depth > 0, depth, np.nan)  # a ray distance; NaN where no geometry
    (root / "sun").symlink_to(samples / "sun")
    return {
        "sun_rgbd": ["sun/SUN_color.jpg sun/SUN_depth.png"],
        "ibims": ["ibims/rgb.jpg ibims/depth.png"],
        "diode": ["diode/rgb.jpg diode/x_depth.npy"],
        "hypersim": ["hypersim/rgb.jpg hypersim/frame.depth_meters.hdf5"],
    }


def test_tr2m_nyu_and_every_zero_shot_recipe_run_end_to_end(rgbd_samples, tmp_path):
    model = train_recipe("tr2m_nyu", rgbd_samples, tmp_path)
    root = tmp_path / "zeroshot"
    for name, lines in _zero_shot_files(rgbd_samples, root).items():
        split = tmp_path / f"{name}.txt"
        split.write_text("\n".join(lines) + "\n")
        out = tmp_path / f"{name}_eval"
        assert (
            main(
                [
                    "evaluate",
                    "--checkpoint",
                    str(model),
                    "--config",
                    f"zeroshot/{name}",
                    "--data-root",
                    str(root),
                    "--split",
                    str(split),
                    "--caption",
                    "a room",
                    "--out",
                    str(out),
                ]
            )
            == 0
        ), name
        metrics = json.loads((out / "metrics.json").read_text())
        assert metrics["dataset"] == name and metrics["n_images"] == 1 and np.isfinite(metrics["abs_rel"])
