"""Nothing lost, nothing silently wrong: each kind of failure, with its example and more cases.

K1 bounded memory, K2 outputs never lost or overwritten, K3 outputs right and readable, K4 inputs
checked before work, K5 damaged state named, K6 no silently wrong numbers. The CLI in
subprocesses is in test_robustness_cli.py; packaging (K7) in test_packaging.py.
"""

from __future__ import annotations

import dataclasses
import json
import os
import stat
import subprocess
import sys
import time

import numpy as np
import pytest
import torch
from PIL import Image

from clipdepth.cli.main import main, parse
from clipdepth.config import load_config
from clipdepth.errors import CheckpointError, ConfigError, DataError, TrainingError
from clipdepth.io.atomic import atomic_dir, atomic_path, clean_stale
from clipdepth.io.depth_io import read_depth, read_rgb, write_depth_png
from clipdepth.models import PureCLIPDepth, load_model

from .conftest import TINY_ENCODER


@pytest.fixture
def checkpoint(tiny_cfg, tmp_path):
    torch.manual_seed(0)
    return PureCLIPDepth.build(tiny_cfg).save_pretrained(tmp_path / "ckpt")


def _png(path, height=8, width=8, seed=0):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.random.default_rng(seed).integers(0, 255, (height, width, 3), dtype=np.uint8)).save(path)
    return path


# -- K1: bounded memory for any input -------------------------------------------------------------
def test_tiles_are_capped_and_the_cap_names_the_limit(tiny_cfg):
    model = PureCLIPDepth.build(tiny_cfg)
    assert model.tiles_for(100, 800) == 8  # round(800 / 100) = 8: at the limit
    for height, width in ((1, 5000), (100, 900)):  # 5000 and 9 tiles
        with pytest.raises(DataError, match=rf"{width}x{height} image needs \d+ tiles, more than the limit of 8"):
            model.tiles_for(height, width)
    assert model.tiles_for(1, 5000, max_tiles=5000) == 5000  # the limit is overridable
    with pytest.raises(DataError, match="needs 9 tiles"):
        model.infer(np.zeros((100, 900, 3), np.uint8))


def test_the_pixel_limit_is_read_from_the_header(tmp_path):
    path = _png(tmp_path / "big.png", 1000, 1200)  # 1.2 megapixels
    with pytest.raises(DataError, match=r"1200x1000 is 1.2 megapixels, over the limit of 1") as err:
        read_rgb(path, photo=True, max_pixels=1_000_000)
    assert str(err.value).startswith(str(path))
    assert read_rgb(path, photo=True, max_pixels=1_200_000).shape == (1000, 1200, 3)


def test_a_1x5000_image_runs_under_a_small_memory_limit(checkpoint, tmp_path):
    """Before the limits this image made 5000 tiles and 20 GB; now it is one line, and the other
    image of the run is written, all within a 2 GB address space."""
    _png(tmp_path / "in" / "wide.png", 1, 5000)
    _png(tmp_path / "in" / "fine.png", 8, 8)
    script = (
        "import resource, sys; resource.setrlimit(resource.RLIMIT_AS, (2 * 2**30, 2 * 2**30));"
        "from clipdepth.cli.main import main; sys.exit(main(sys.argv[1:]))"
    )
    done = subprocess.run(
        [sys.executable, "-c", script, "predict", str(tmp_path / "in"), "--checkpoint", str(checkpoint), "--out", str(tmp_path / "out")],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 2, done.stderr[-2000:]
    assert "wide.png: a 5000x1 image needs 5000 tiles" in done.stderr and "Traceback" not in done.stderr
    assert (tmp_path / "out" / "fine.png").is_file() and not (tmp_path / "out" / "wide.png").exists()


def test_the_point_cloud_is_written_in_blocks_with_the_same_points(tmp_path):
    from clipdepth.io.pointcloud import ROWS_PER_CHUNK, VERTEX, depth_to_ply

    rng = np.random.default_rng(0)
    height = 2 * ROWS_PER_CHUNK + 7  # three blocks, the last partial
    depth = rng.uniform(0.5, 9.0, (height, 5)).astype(np.float32)
    depth[rng.random(depth.shape) < 0.3] = 0  # unmeasured pixels are left out
    image = rng.integers(0, 255, (height, 5, 3), dtype=np.uint8)
    fx, fy, cx, cy = 100.0, 110.0, 2.0, 250.0
    assert depth_to_ply(tmp_path / "c.ply", depth, image, (fx, fy, cx, cy)) == np.count_nonzero(depth)
    raw = (tmp_path / "c.ply").read_bytes()
    vertices = np.frombuffer(raw[raw.index(b"end_header\n") + 11 :], dtype=VERTEX)
    v, u = np.nonzero(depth)  # row-major, as written
    z = depth[v, u]
    np.testing.assert_allclose(vertices["x"], (u - cx) * z / fx, rtol=1e-6)
    np.testing.assert_allclose(vertices["y"], (v - cy) * z / fy, rtol=1e-6, atol=1e-6)
    np.testing.assert_array_equal(vertices["red"], image[v, u, 0])


def test_the_colour_image_of_a_large_map_is_shown_at_a_bounded_size(tmp_path):
    from clipdepth.io.predictions import MAX_COLOUR_PIXELS, colour_image

    side = int(np.sqrt(MAX_COLOUR_PIXELS)) * 2 + 1  # ~16 megapixels: shown every 3rd pixel
    image = colour_image(np.ones((side, side), np.float32), 10.0)
    assert image.shape[0] <= side // 3 + 30  # rows of the map shown, plus a margin


# -- K2: outputs are never lost, overwritten or left half-made -------------------------------------
def test_every_distinct_input_gets_distinct_outputs(tmp_path):
    from clipdepth.io.predictions import collect_inputs

    for name in ("clip.0001.png", "clip.0002.png", "clip.0003.png"):
        _png(tmp_path / "seq" / name)
    _png(tmp_path / "same" / "a.png")
    _png(tmp_path / "same" / "a.jpg")
    _png(tmp_path / "x" / "b.png")
    _png(tmp_path / "y" / "b.png")
    for name in ("c.png", "c_color.png", "e.jpg", "e.png", "e.jpg.png"):
        _png(tmp_path / "side" / name)
    jobs = collect_inputs(
        [
            str(tmp_path / "seq"),
            str(tmp_path / "same" / "a.png"),
            str(tmp_path / "same" / "a.jpg"),
            str(tmp_path / "x" / "b.png"),
            str(tmp_path / "y" / "b.png"),
            str(tmp_path / "x" / "b.png"),
            str(tmp_path / "side"),
        ]
    )
    names = {image.relative_to(tmp_path).as_posix(): name.as_posix() for image, name in jobs}
    assert names == {
        "seq/clip.0001.png": "clip.0001",
        "seq/clip.0002.png": "clip.0002",
        "seq/clip.0003.png": "clip.0003",
        "same/a.png": "a.png",
        "same/a.jpg": "a.jpg",  # same folder and stem: the extension stays
        "x/b.png": "x/b",
        "y/b.png": "y/b",  # same name in two folders: the folders stay; one job per file
        # c's colour image would be c_color.png, c_color's depth too; e.jpg's depth e.jpg.png, whose name e.jpg is
        "side/c.png": "c.png",
        "side/c_color.png": "c_color.png",
        "side/e.jpg": "e.jpg",
        "side/e.png": "e.png",
        "side/e.jpg.png": "e.jpg.png",
    }
    claimed = [f"{name}{tail}" for name in names.values() for tail in (".png", "_color.png", ".npy", ".ply")]
    assert len(claimed) == len(set(claimed))  # no file claimed twice


def test_an_earlier_runs_output_for_another_image_is_never_taken_for_this_one(checkpoint, tmp_path, capsys):
    first, second = _png(tmp_path / "f1" / "same.png", seed=1), _png(tmp_path / "f2" / "same.png", seed=2)
    out = tmp_path / "out"
    assert main(["predict", str(first), "--checkpoint", str(checkpoint), "--out", str(out)]) == 0
    before = (out / "same.png").read_bytes()
    assert main(["predict", str(second), "--checkpoint", str(checkpoint), "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert f"{second}: {out / 'same.png'} holds the depth of {first.resolve()}" in err and "--overwrite" in err
    assert (out / "same.png").read_bytes() == before
    assert main(["predict", str(first), "--checkpoint", str(checkpoint), "--out", str(out)]) == 0  # its own: kept
    assert "kept 1 finished before" in capsys.readouterr().out


def test_predict_writes_what_is_missing_and_never_reads_its_own_outputs(checkpoint, tmp_path):
    photos = tmp_path / "photos"
    for name in ("clip.0001.png", "clip.0002.png"):
        _png(photos / name)
    out = photos / "depth"  # inside the input folder
    args = ["predict", str(photos), "--checkpoint", str(checkpoint), "--out", str(out)]
    assert main(args) == 0
    assert sorted(p.name for p in out.iterdir()) == ["clip.0001.png", "clip.0001_color.png", "clip.0002.png", "clip.0002_color.png"]
    first = (out / "clip.0001.png").stat().st_mtime_ns
    (out / "clip.0002_color.png").unlink()  # as a kill between two outputs would leave it
    time.sleep(0.01)
    assert main([*args, "--npy"]) == 0  # run twice, and ask for more
    assert sorted(p.name for p in out.iterdir()) == [
        "clip.0001.npy",
        "clip.0001.png",
        "clip.0001_color.png",
        "clip.0002.npy",
        "clip.0002.png",
        "clip.0002_color.png",
    ]
    assert (out / "clip.0001.png").stat().st_mtime_ns == first  # what existed is kept
    assert np.allclose(np.load(out / "clip.0001.npy"), read_depth(out / "clip.0001.png", 1000), atol=5e-4)


def test_a_killed_writer_leaves_nothing_once_the_folder_is_used_again(tmp_path):
    code = (
        "import os, sys; from clipdepth.io.atomic import atomic_path, atomic_dir;"
        f"ca = atomic_path({str(tmp_path / 'd.png')!r}); open(ca.__enter__(), 'w').write('half');"
        f"cb = atomic_dir({str(tmp_path / 'shard_00000')!r}); cb.__enter__(); os._exit(9)"
    )
    assert subprocess.run([sys.executable, "-c", code]).returncode == 9  # killed mid-write
    left = sorted(p.name for p in tmp_path.iterdir())
    assert len(left) == 2 and all(".tmp" in name for name in left)
    with atomic_path(tmp_path / "live.png") as mine:  # a writer that is alive keeps its temporary
        mine.write_text("x")
        assert clean_stale(tmp_path) == 2 and mine.exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["live.png"]


def test_a_new_run_refuses_the_folder_of_an_earlier_one(tiny_cfg, tmp_path):
    from clipdepth.training.run import Experiment

    cfg = dataclasses.replace(tiny_cfg, train=dataclasses.replace(tiny_cfg.train, max_epochs=1))
    Experiment.create(cfg).train(tmp_path / "run")
    best = (tmp_path / "run" / "checkpoints" / "best_abs_rel" / "model.safetensors").read_bytes()
    with pytest.raises(CheckpointError, match="holds a training run"):
        Experiment.create(cfg).train(tmp_path / "run")
    assert (tmp_path / "run" / "checkpoints" / "best_abs_rel" / "model.safetensors").read_bytes() == best
    assert (tmp_path / "run" / "checkpoints" / "resume").is_dir()
    assert (
        main(
            [
                "train",
                "--out",
                str(tmp_path / "run"),
                *(f"{k}={v}" for k, v in (("train.max_epochs", 1), *((f"clip.{k}", v) for k, v in TINY_ENCODER.items()))),
            ]
        )
        == 2
    )


# -- K3: outputs are right and readable by the next tool ------------------------------------------
@pytest.mark.parametrize("umask, file_mode, dir_mode", [(0o022, 0o644, 0o755), (0o077, 0o600, 0o700)])
def test_outputs_get_the_permissions_of_the_umask(tmp_path, umask, file_mode, dir_mode):
    old = os.umask(umask)
    try:
        with atomic_path(tmp_path / "f.json") as tmp:
            tmp.write_text("{}")
        with atomic_dir(tmp_path / "d") as tmp:
            (tmp / "x").write_text("1")
            fd = os.open(tmp / "private", os.O_WRONLY | os.O_CREAT, 0o600)  # as safetensors' save_file makes it
            os.close(fd)
    finally:
        os.umask(old)
    assert stat.S_IMODE((tmp_path / "f.json").stat().st_mode) == file_mode
    assert stat.S_IMODE((tmp_path / "d").stat().st_mode) == dir_mode
    assert {stat.S_IMODE(p.stat().st_mode) for p in (tmp_path / "d").rglob("*") if p.is_file()} == {file_mode}
    assert {stat.S_IMODE(p.stat().st_mode) for p in (tmp_path / "d").rglob("*") if p.is_dir()} == {dir_mode}  # .clipdepth


def test_a_checkpoint_is_readable_by_others_under_umask_022(tiny_cfg, tmp_path):
    old = os.umask(0o022)
    try:
        PureCLIPDepth.build(tiny_cfg).save_pretrained(tmp_path / "ckpt")
    finally:
        os.umask(old)
    assert {stat.S_IMODE(p.stat().st_mode) for p in (tmp_path / "ckpt").rglob("*") if p.is_file()} == {0o644}


def test_score_reads_predicts_folder_as_it_is(tmp_path, capsys):
    """predict writes <stem>.png (declared scale), <stem>_color.png and maybe <stem>.npy: scoring that
    folder against KITTI-style GT (uint16 / 256, no declared scale) must see the right metres."""
    gt_dir, pred_dir = tmp_path / "gt", tmp_path / "pred"
    gt_dir.mkdir()
    pred_dir.mkdir()
    gt = np.zeros((20, 40), np.float32)
    gt[8:, :] = np.linspace(5.0, 70.0, 12 * 40).reshape(12, 40)  # 5..70 m in the lower rows
    Image.fromarray(np.round(gt * 256).astype(np.uint16)).save(gt_dir / "0000000005.png")
    Image.fromarray(np.round(gt * 256).astype(np.uint16)).save(gt_dir / "0000000050.png")
    prediction = np.where(gt > 0, gt, 30.0).astype(np.float32)
    write_depth_png(pred_dir / "0000000005.png", prediction, 256.0)  # an 80 m model: 1/256 m, declared
    _png(pred_dir / "0000000005_color.png", 20, 40)
    write_depth_png(pred_dir / "0000000050.png", prediction * 1.1, 256.0)
    np.save(pred_dir / "0000000050.npy", prediction * 1.1)  # .npy beside it: the exact one is read
    assert main(["score", "--pred", str(pred_dir), "--gt", str(gt_dir), "--protocol", "kitti", "--json", str(tmp_path / "s.json")]) == 0
    result = json.loads((tmp_path / "s.json").read_text())
    # image 1 perfect (PNG rounding < 2e-3 m), image 2 exactly 10% too far: AbsRel (0 + 0.1) / 2
    assert result["n_images"] == 2 and result["abs_rel"] == pytest.approx(0.05, abs=2e-4)


def test_the_json_is_written_before_a_closed_pipe_ends_the_output(tmp_path):
    (tmp_path / "p").mkdir()
    (tmp_path / "g").mkdir()
    np.save(tmp_path / "p" / "a.npy", np.full((4, 4), 2.0, np.float32))
    np.save(tmp_path / "g" / "a.npy", np.full((4, 4), 2.0, np.float32))
    command = (
        f"{sys.executable} -m clipdepth.cli.main score --pred {tmp_path / 'p'} --gt {tmp_path / 'g'} "
        f"--protocol synthetic_indoor --json {tmp_path / 's.json'} | head -c 1"
    )
    done = subprocess.run(["bash", "-o", "pipefail", "-c", command], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0 and "Traceback" not in done.stderr and "BrokenPipe" not in done.stderr
    assert json.loads((tmp_path / "s.json").read_text())["abs_rel"] == 0.0


# -- K4: inputs are checked before any work, with the rule in the message ---------------------------
@pytest.mark.parametrize(
    "override, message",
    [
        ("train.batch_size=-4", "train.batch_size=-4: must be a positive integer"),
        ("train.batch_size=0", "train.batch_size=0: must be a positive integer"),
        ("pureclip.num_bins=0", "pureclip.num_bins=0: must be an integer >= 2"),
        ("data.tiles=0", "data.tiles=0: must be a positive integer"),
        ("pureclip.tau=0", "pureclip.tau=0.0: must be a positive finite number"),
        ("pureclip.max_depth=0.0005", "need 0 <= min_depth < max_depth"),
        ("tr2m.max_depth=0.0001", "need 0 < min_depth < max_depth"),
        ("data.input_crop=[470,40,38,603]", "0 <= top < bottom"),
        ("eval.batch_size=0", "eval.batch_size=0: must be a positive integer"),
        ("pureclip.final_lr_factor=0", "pureclip.final_lr_factor=0.0: must be in (0, 1]"),
        ("clip.precision=fp8", "clip.precision=.fp8.: must be one of"),
        ("clip.image_size=50", "clip.image_size=50: must be a multiple of clip.patch_size=14"),
        ("clip.patch_size=0", "clip.patch_size=0: must be a positive integer"),
        ("output_dir= ", "output_dir"),
    ],
)
def test_bad_config_values_are_refused_when_the_config_is_made(override, message):
    with pytest.raises(ConfigError, match=message.replace("(", r"\(").replace(")", r"\)").replace("[", r"\[")):
        load_config("demo", [override])


def test_a_trained_heads_settings_cannot_change_at_inference(checkpoint):
    with pytest.raises(ConfigError, match="override 'pureclip.max_depth=100'"):
        load_model(checkpoint, ["pureclip.max_depth=100"])
    assert load_model(checkpoint, ["device=cpu"]).cfg.device == "cpu"  # where and how it runs may


def test_partial_intrinsics_use_the_image_centre():
    from clipdepth.io.predictions import ply_intrinsics

    args = parse(["predict", "x.png", "--checkpoint", "c", "--out", "o", "--fx", "500"])
    assert ply_intrinsics(args, 480, 640) == (500.0, 500.0, 319.5, 239.5)  # fy = fx, centre
    args = parse(["predict", "x.png", "--checkpoint", "c", "--out", "o", "--fx", "500", "--fy", "510", "--cx", "300", "--cy", "200"])
    assert ply_intrinsics(args, 480, 640) == (500.0, 510.0, 300.0, 200.0)


def test_counts_and_output_locations_are_checked_first(checkpoint, tmp_path, capsys):
    image = str(_png(tmp_path / "i.png"))
    for flags in (["--tiles", "-2"], ["--batch-size", "0"], ["--batch-size", "-3"]):
        with pytest.raises(SystemExit) as exited:
            main(["predict", image, "--checkpoint", str(checkpoint), "--out", str(tmp_path / "o"), *flags])
        assert exited.value.code == 2 and "positive integer" in capsys.readouterr().err
    (tmp_path / "afile").write_text("x")
    assert main(["predict", image, "--checkpoint", str(checkpoint), "--out", str(tmp_path / "afile")]) == 2
    assert "exists and is not a folder" in capsys.readouterr().err
    assert main(["predict", image, "--checkpoint", str(checkpoint), "--out", str(tmp_path / "afile" / "sub")]) == 2
    assert "afile is a file, so the folder cannot be made" in capsys.readouterr().err
    assert main(["predict", image, "--checkpoint", str(checkpoint), "--out", str(tmp_path / "o"), "--cx", "3"]) == 2
    assert "--cx and --cy go together" in capsys.readouterr().err


@pytest.mark.parametrize(
    "command",
    [
        ["predict", "x.png", "--checkpoint", "c", "--out", "o"],
        ["serve", "--checkpoint", "c"],
        ["caption", "x.png", "--model", "m", "--out", "o"],
    ],
)
@pytest.mark.parametrize("value", ["inf", "1e999"])
def test_the_pixel_limit_must_be_a_finite_number(command, value, capsys):
    # int(inf * 1e6) would overflow once the images are read
    with pytest.raises(SystemExit) as exited:
        parse([*command, "--max-pixels", value])
    err = capsys.readouterr().err
    assert exited.value.code == 2 and err.endswith(f"argument --max-pixels: expected a finite number of megapixels, got {value}\n")


@pytest.mark.skipif(os.geteuid() == 0, reason="root may write anywhere, so a read-only folder cannot be tested")
def test_an_unwritable_output_folder_is_refused_first(checkpoint, tmp_path, capsys):
    locked = tmp_path / "locked"
    locked.mkdir(mode=0o500)
    assert main(["predict", str(_png(tmp_path / "i.png")), "--checkpoint", str(checkpoint), "--out", str(locked / "o")]) == 2
    assert "no write permission" in capsys.readouterr().err


def test_an_output_folder_on_a_read_only_file_system_is_named_as_such(checkpoint, tmp_path, monkeypatch, capsys):
    mounted = tmp_path / "mounted"
    mounted.mkdir()
    real = os.statvfs

    def statvfs(path):  # `mounted` as a read-only mount shows it (os.access then refuses root too)
        found = real(path)
        if os.path.abspath(path) != str(mounted):
            return found
        return os.statvfs_result((*found[:8], found.f_flag | os.ST_RDONLY, found.f_namemax))

    monkeypatch.setattr(os, "statvfs", statvfs)
    out = mounted / "depth" / "o"
    assert main(["predict", str(_png(tmp_path / "i.png")), "--checkpoint", str(checkpoint), "--out", str(out)]) == 2
    assert capsys.readouterr().err == (
        f"clipdepth predict: error: {out}: cannot write there ({mounted} is on a read-only file system); write elsewhere\n"
    )
    assert os.listdir(mounted) == []


def test_overrides_may_follow_options():
    args = parse(["train", "a.b=1", "--out", "X", "c.d=2"])
    assert args.overrides == ["a.b=1", "c.d=2"] and str(args.out) == "X"
    from clipdepth.cli.cache import SPLITS  # noqa: F401 - `--splits` is greedy: it must let overrides go

    args = parse(["cache", "build", "--splits", "train", "val", "data.seed=3", "--cache", "C"])
    assert args.splits == ["train", "val", "data.seed=3"]  # separated by the command, tested below


def test_cache_build_takes_overrides_after_its_splits(tiny_cfg, tmp_path):
    overrides = [f"clip.{k}={v}" for k, v in TINY_ENCODER.items()] + [
        "data.train_size=2",
        "data.val_size=1",
        "data.height=48",
        "data.width=64",
    ]
    assert main(["cache", "build", "--cache", str(tmp_path / "c"), "--splits", "train", *overrides]) == 0
    assert (tmp_path / "c" / "train" / "cache.json").is_file()
    assert json.loads((tmp_path / "c" / "train" / "cache.json").read_text())["key"]["n_frames"] == 2


def test_split_lists_with_a_byte_order_mark_and_crlf_are_read(tmp_path):
    from clipdepth.data.splits import read_split_list

    path = tmp_path / "list.txt"
    path.write_bytes("\ufeffa/rgb.png a/d.png 518.8\r\nb/rgb.png None\r\n".encode("utf-8"))
    entries = read_split_list(path)
    assert [(e.rgb, e.depth, e.focal) for e in entries] == [("a/rgb.png", "a/d.png", 518.8), ("b/rgb.png", None, None)]


def test_an_input_crop_larger_than_the_frame_names_the_frame(tiny_cfg):
    from clipdepth.data.transforms import Preprocessor
    from clipdepth.data.loader import prepared_batches
    from clipdepth.data import RGBDSample

    sample = RGBDSample(np.zeros((48, 64, 3), np.uint8), np.ones((48, 64), np.float32), np.zeros(4, np.float32), "room_7")
    for workers in (0, 1):  # one line, not the worker's traceback
        with pytest.raises(DataError, match=r"^frame room_7: input crop \(40, 470, 38, 603\) does not fit a \(48, 64\) frame"):
            next(prepared_batches([sample], Preprocessor.create(56, (40, 470, 38, 603)), 1, workers))


# -- K5: damaged state is named, not a traceback ---------------------------------------------------
@pytest.mark.parametrize("damage", ["truncated", "empty", "config list", "config without config"])
def test_a_damaged_checkpoint_is_one_line(checkpoint, damage):
    weights, config = checkpoint / "model.safetensors", checkpoint / "config.json"
    if damage == "truncated":
        weights.write_bytes(weights.read_bytes()[:1000])
    elif damage == "empty":
        weights.write_bytes(b"")
    elif damage == "config list":
        config.write_text("[1, 2]")
    else:
        config.write_text('{"architecture": "pureclip_depth"}')
    with pytest.raises(CheckpointError) as err:
        load_model(checkpoint)
    message = str(err.value)
    assert "\n" not in message and ("model.safetensors" in message or "config.json" in message)
    assert "damaged" in message


def test_damaged_cache_shards_are_named_and_rebuilt(tiny_cfg, tmp_path):
    from clipdepth.features.cache import cache_key, files_digest, frame_names, load_cache
    from clipdepth.training.run import Experiment

    cfg = dataclasses.replace(tiny_cfg, train=dataclasses.replace(tiny_cfg.train, feature_cache=str(tmp_path / "c"), cache_shard_size=2))
    exp = Experiment.create(cfg)
    expected = exp.encode("train", flip=False).arrays["tokens"][:].clone()  # a copy: the files get damaged
    folder = tmp_path / "c" / "train"
    tokens = folder / "shard_00001" / "tokens.npy"
    tokens.write_bytes(tokens.read_bytes()[:200])  # truncated
    from clipdepth.data import get_dataset

    dataset = get_dataset(cfg.data, "train")
    key = cache_key(exp.model, exp.preprocessor, cfg.data, "train", False, frame_names(dataset), files_digest(dataset), "train")
    with pytest.raises(CheckpointError, match=r"shard_00001: damaged cache shard \(tokens.npy is unreadable.*cache build"):
        load_cache(folder, key)
    rebuilt = exp.encode("train", flip=False)  # the build finds it damaged and makes it again
    torch.testing.assert_close(rebuilt.arrays["tokens"][:], expected)
    (folder / "shard_00000" / "cls.npy").unlink()  # a missing array
    with pytest.raises(CheckpointError, match="cls.npy is missing"):
        load_cache(folder, key)
    (folder / "cache.json").write_text('{"key": ')  # a truncated index
    with pytest.raises(CheckpointError, match="damaged cache index; delete the folder"):
        exp.encode("train", flip=False)


def test_a_resume_state_of_wrong_types_is_one_line(tiny_cfg, tmp_path):
    from clipdepth.training.run import Experiment
    from clipdepth.training.resume import read_resume_meta, resume_dir

    cfg = dataclasses.replace(tiny_cfg, train=dataclasses.replace(tiny_cfg.train, max_epochs=1))
    Experiment.create(cfg).train(tmp_path / "run")
    state = resume_dir(tmp_path / "run") / "state.json"
    meta = json.loads(state.read_text())
    for key, bad in (("epoch", "x"), ("history", 5), ("best", [])):
        state.write_text(json.dumps({**meta, key: bad}))
        with pytest.raises(CheckpointError, match=rf"state.json: {key} should be .*damaged") as err:
            read_resume_meta(tmp_path / "run", cfg)
        assert "\n" not in str(err.value)


# -- K6: no silently wrong numbers ------------------------------------------------------------------
def test_a_non_finite_loss_stops_training_at_that_step(tiny_cfg, tmp_path):
    from .test_training import make_trainer

    trainer = make_trainer(tiny_cfg, tmp_path)
    trainer.sources[0].train.arrays["tokens"][1] = float("nan")  # a damaged cache row
    with pytest.raises(TrainingError, match=r"step 1 \(embedding\): the loss is nan"):
        trainer.train_step(torch.tensor([0, 1]))


def test_the_feature_cache_key_follows_the_files(tmp_path, rgbd_samples):
    import shutil

    from clipdepth.config import DataConfig
    from clipdepth.data import get_dataset
    from clipdepth.features.cache import files_digest

    root = tmp_path / "kitti"
    shutil.copytree(rgbd_samples / "kitti", root / "kitti")
    (tmp_path / "test.txt").write_text("kitti/rgb/0000000005.png kitti/depth/0000000005.png 707.0493\n")
    data = DataConfig(dataset="kitti", root=str(root), test_list=str(tmp_path / "test.txt"))
    before = files_digest(get_dataset(data, "test"))
    depth = root / "kitti" / "depth" / "0000000005.png"
    depth.write_bytes(depth.read_bytes())  # re-exported in place: same content, new time
    os.utime(depth, ns=(depth.stat().st_atime_ns, depth.stat().st_mtime_ns + 10**9))
    assert files_digest(get_dataset(data, "test")) != before
    assert files_digest(get_dataset(DataConfig(), "train")) is None  # synthetic scenes have no files


@pytest.mark.parametrize("prediction", [-np.arange(1.0, 17.0), np.zeros(16)])
def test_median_scaling_refuses_a_prediction_without_a_positive_median(prediction):
    from clipdepth.evaluation.protocol import get_protocol, score_pair

    gt = np.arange(1.0, 17.0).reshape(4, 4)
    with pytest.raises(DataError, match="median scaling needs a positive prediction"):
        score_pair(prediction.reshape(4, 4), gt, get_protocol("synthetic_indoor"), align="median")


def test_score_reads_a_datasets_own_gt_format_and_warns_beyond_the_cap(tmp_path, capsys):
    (tmp_path / "p").mkdir()
    (tmp_path / "g").mkdir()
    depth = np.full((6, 8), 2.0, np.float32)
    Image.fromarray(np.full((6, 8), 10000, np.uint16)).save(tmp_path / "g" / "tum.png")  # TUM: 10000 / 5000 = 2 m
    np.save(tmp_path / "p" / "tum.npy", depth)
    args = ["score", "--pred", str(tmp_path / "p"), "--gt", str(tmp_path / "g"), "--protocol", "synthetic_indoor"]
    assert main([*args, "--gt-format", "tum"]) == 0
    assert "0.0000" in capsys.readouterr().out  # AbsRel 0: read as 2 m
    # read as millimetres the same file says 10 m, at the synthetic indoor cap: not one pixel scored
    assert main(args) == 2
    err = capsys.readouterr().err
    assert "100% of the ground-truth values are at or beyond the 10 m cap" in err and "--gt-format" in err


def test_empty_prediction_arrays_are_one_line(tmp_path, capsys):
    (tmp_path / "p").mkdir()
    (tmp_path / "g").mkdir()
    np.save(tmp_path / "p" / "a.npy", np.zeros((0, 4), np.float32))
    np.save(tmp_path / "g" / "a.npy", np.ones((4, 4), np.float32))
    assert main(["score", "--pred", str(tmp_path / "p"), "--gt", str(tmp_path / "g"), "--protocol", "synthetic_indoor"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "a.npy: the depth map is empty" in err


def test_nyu_lines_without_depth_are_counted_as_without_ground_truth(tmp_path, rgbd_samples):
    from clipdepth.config import DataConfig
    from clipdepth.data import get_dataset

    (tmp_path / "test.txt").write_text("nyu/rgb_00000.jpg nyu/sync_depth_00000.png 518.8579\nnyu/rgb_00050.jpg None 518.8579\n")
    dataset = get_dataset(DataConfig(dataset="nyu", root=str(rgbd_samples), test_list=str(tmp_path / "test.txt")), "test")
    assert (len(dataset), dataset.n_listed, dataset.n_without_gt) == (1, 2, 1)


def test_a_loaded_model_is_in_eval_mode(checkpoint):
    model = load_model(checkpoint)
    assert not model.training and not model.head.training
    image = np.random.default_rng(0).integers(0, 255, (40, 50, 3), dtype=np.uint8)
    torch.testing.assert_close(model.infer(image)["depth"], model.infer(image)["depth"])  # dropout off


# -- cases found by trying the finished work as an attacker would --------------------------------
def test_tall_images_have_the_same_aspect_limit_as_wide_ones(tiny_cfg):
    model = PureCLIPDepth.build(tiny_cfg)
    assert model.tiles_for(800, 100) == 1  # 8 times taller than wide: at the limit
    with pytest.raises(DataError, match="a 1x5000 image is more than 8 times taller than wide"):
        model.tiles_for(5000, 1)


def test_gifs_in_folders_and_list_paths_relative_to_the_list(tmp_path):
    from clipdepth.io.predictions import collect_inputs

    _png(tmp_path / "lists" / "imgs" / "a.png")
    Image.new("RGB", (8, 8)).save(tmp_path / "lists" / "imgs" / "anim.gif")
    (tmp_path / "lists" / "todo.txt").write_text("imgs/a.png\n")
    assert [p.name for p, _ in collect_inputs([str(tmp_path / "lists" / "imgs")])] == ["a.png", "anim.gif"]
    assert collect_inputs([str(tmp_path / "lists" / "todo.txt")])[0][0] == tmp_path / "lists" / "imgs" / "a.png"


@pytest.mark.parametrize(
    "flags, message",
    [
        (["--fx", "nan", "--ply"], "positive finite number"),
        (["--fx", "-5", "--ply"], "positive finite number"),
        (["--fx", "0", "--ply"], "positive finite number"),
        (["--cx", "inf", "--cy", "3", "--ply"], "finite number"),
        (["--out", ""], "empty string"),
    ],
)
def test_intrinsics_and_paths_must_make_sense(checkpoint, tmp_path, capsys, flags, message):
    args = ["predict", str(_png(tmp_path / "i.png")), "--checkpoint", str(checkpoint), "--out", str(tmp_path / "o")]
    with pytest.raises(SystemExit) as exited:
        main([*args, *flags])
    assert exited.value.code == 2 and message in capsys.readouterr().err


def test_intrinsics_without_a_point_cloud_are_refused(checkpoint, tmp_path, capsys):
    assert (
        main(["predict", str(_png(tmp_path / "i.png")), "--checkpoint", str(checkpoint), "--out", str(tmp_path / "o"), "--fx", "500"]) == 2
    )
    assert "add --ply" in capsys.readouterr().err and not (tmp_path / "o").exists()


def test_score_refuses_a_zero_scale_and_warns_about_predictions_it_must_clamp(tmp_path, capsys):
    (tmp_path / "p").mkdir()
    (tmp_path / "g").mkdir()
    np.save(tmp_path / "g" / "a.npy", np.full((4, 4), 2.0, np.float32))
    np.save(tmp_path / "p" / "a.npy", np.full((4, 4), np.nan, np.float32))
    args = ["score", "--pred", str(tmp_path / "p"), "--gt", str(tmp_path / "g"), "--protocol", "synthetic_indoor"]
    with pytest.raises(SystemExit):
        main([*args, "--pred-scale", "0"])
    assert "positive finite number" in capsys.readouterr().err
    assert main(args) == 0
    assert "1 of 1 predictions hold NaN, inf or values <= 0" in capsys.readouterr().err


def test_a_write_that_fails_is_one_line(tmp_path, monkeypatch, capsys):
    def full(*args, **kwargs):
        raise OSError(28, "No space left on device", str(tmp_path / "s.json"))

    (tmp_path / "p").mkdir()
    np.save(tmp_path / "p" / "a.npy", np.full((4, 4), 2.0, np.float32))
    monkeypatch.setattr("clipdepth.cli.score.write_text_atomic", full)
    assert (
        main(
            [
                "score",
                "--pred",
                str(tmp_path / "p"),
                "--gt",
                str(tmp_path / "p"),
                "--protocol",
                "synthetic_indoor",
                "--json",
                str(tmp_path / "s.json"),
            ]
        )
        == 2
    )
    assert capsys.readouterr().err.strip() == f"clipdepth score: error: {tmp_path / 's.json'}: No space left on device"


def test_a_run_that_failed_before_its_first_epoch_does_not_block_the_next(tiny_cfg, tmp_path):
    from clipdepth.training.run_folder import check_run_folder

    (tmp_path / "run").mkdir()
    (tmp_path / "run" / "train_steps.jsonl").write_text("")  # all a run leaves when step 1 fails
    check_run_folder(tmp_path / "run", resume=False, overwrite=False)  # not refused
    (tmp_path / "run" / "train_epochs.csv").write_text("epoch\n1\n")
    with pytest.raises(CheckpointError, match="holds a training run"):
        check_run_folder(tmp_path / "run", resume=False, overwrite=False)


def test_resume_state_that_cannot_be_right_is_refused_before_any_work(tiny_cfg, tmp_path, monkeypatch):
    import argparse

    from clipdepth.cli import train as cli_train
    from clipdepth.errors import ClipdepthError
    from clipdepth.training.run import Experiment
    from clipdepth.training.resume import read_resume_meta, resume_dir

    cfg = dataclasses.replace(tiny_cfg, train=dataclasses.replace(tiny_cfg.train, max_epochs=1))
    Experiment.create(cfg).train(tmp_path / "run")
    state = resume_dir(tmp_path / "run") / "state.json"
    meta = json.loads(state.read_text())
    for bad, message in (
        ({"epoch": 1000}, "epoch 1000 does not match"),
        ({"best": {"d1": {"value": "x", "epoch": 1}}}, r"best\['d1'\] should be"),
    ):
        state.write_text(json.dumps({**meta, **bad}))
        with pytest.raises(CheckpointError, match=message):
            read_resume_meta(tmp_path / "run", cfg)
    state.write_text(json.dumps(meta))
    longer = dataclasses.replace(cfg, train=dataclasses.replace(cfg.train, max_epochs=3))
    read_resume_meta(tmp_path / "run", longer)  # a longer run continues a shorter one
    tensors = resume_dir(tmp_path / "run") / "training_state.pt"
    tensors.write_bytes(tensors.read_bytes()[:100])
    monkeypatch.setattr("clipdepth.training.run.Experiment.create", lambda *a, **k: pytest.fail("built before checking"))
    args = argparse.Namespace(
        config=["demo"],
        out=tmp_path / "run",
        resume=True,
        overwrite=False,
        workers=None,
        overrides=[f"clip.{k}={v}" for k, v in TINY_ENCODER.items()]
        + [
            "data.train_size=6",
            "data.val_size=3",
            "data.test_size=3",
            "data.height=48",
            "data.width=64",
            "train.batch_size=4",
            "train.max_epochs=1",
            "eval.batch_size=4",
        ],
    )
    with pytest.raises(ClipdepthError, match=r"training_state.pt: cannot load optimiser/RNG state .*start a new run with --overwrite"):
        cli_train.run(args)


def test_a_checkpoint_of_another_shape_names_the_tensor(checkpoint):
    from safetensors.torch import load_file, save_file

    state = load_file(str(checkpoint / "model.safetensors"))
    state["phi.1.weight"] = torch.zeros(3, 3)
    save_file(state, str(checkpoint / "model.safetensors"))
    with pytest.raises(CheckpointError, match=r"tensor 'phi.1.weight' has shape \(3, 3\), this head expects"):
        load_model(checkpoint)
    config = json.loads((checkpoint / "config.json").read_text())
    (checkpoint / "config.json").write_text(json.dumps({**config, "config": {**config["config"], "pureclip": []}}))
    with pytest.raises(CheckpointError, match="config section 'pureclip' is not an object"):
        load_model(checkpoint)


def test_cache_info_names_damaged_shards_and_reads_a_cache_root(tiny_cfg, tmp_path, capsys):
    overrides = [f"clip.{k}={v}" for k, v in TINY_ENCODER.items()] + [
        "data.train_size=4",
        "data.val_size=1",
        "data.height=48",
        "data.width=64",
        "train.cache_shard_size=2",
    ]
    assert main(["cache", "build", "--cache", str(tmp_path / "c"), *overrides]) == 0
    capsys.readouterr()
    assert main(["cache", "info", str(tmp_path / "c")]) == 0  # the --cache folder: each split in it
    out = capsys.readouterr().out
    assert f"{tmp_path / 'c' / 'train'}: 4 frames, 2/2 shards" in out and f"{tmp_path / 'c' / 'val_flip'}: 1 frames" in out
    (tmp_path / "c" / "train" / "shard_00001" / "names.json").unlink()
    assert main(["cache", "info", str(tmp_path / "c" / "train")]) == 2
    captured = capsys.readouterr()
    assert "1/2 shards" in captured.out and "shard_00001: damaged (names.json is missing or damaged" in captured.err


def test_predict_then_score_on_nyus_own_folder(checkpoint, rgbd_samples, tmp_path, capsys):
    """NYU keeps rgb_N images (8-bit, some PNG) beside sync_depth_N maps in one folder: predictions
    of the images score against that folder as it is."""
    nyu = rgbd_samples / "nyu"
    assert main(["predict", str(nyu / "rgb_*"), "--checkpoint", str(checkpoint), "--out", str(tmp_path / "pred")]) == 0
    assert main(["score", "--pred", str(tmp_path / "pred"), "--gt", str(nyu), "--protocol", "nyu", "--json", str(tmp_path / "s.json")]) == 0
    assert json.loads((tmp_path / "s.json").read_text())["n_images"] == 4  # rgb_u0001.png is an image, not GT


def test_a_missing_local_checkpoint_is_named_not_looked_up_on_the_hub(tmp_path, monkeypatch):
    from clipdepth.models.base import checkpoint_folder

    monkeypatch.chdir(tmp_path)
    (tmp_path / "runs").mkdir()  # "runs/model" reads like a Hub id, but its first folder is here
    with pytest.raises(CheckpointError, match=r"^runs/model: checkpoint folder not found$"):
        checkpoint_folder("runs/model")
