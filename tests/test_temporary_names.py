"""Temporary names stay within the file system's limit on a name (255 bytes), so that an output of
any legal name can be written, and stay what ``clean_stale`` recognises (this host and pid)."""

from __future__ import annotations

import os
import subprocess
import sys

import numpy as np
import pytest
import torch
from PIL import Image

from clipdepth.cli.main import main
from clipdepth.data.synthetic import render_scene
from clipdepth.io.atomic import atomic_dir, atomic_path, clean_stale, is_temporary
from clipdepth.io.depth_io import read_depth
from clipdepth.models import PureCLIPDepth, load_model

NAME_MAX = 255  # bytes, on the file systems the tests run on (ext4, tmpfs, XFS, btrfs)


@pytest.fixture
def checkpoint(tiny_cfg, tmp_path):
    torch.manual_seed(0)
    return PureCLIPDepth.build(tiny_cfg).save_pretrained(tmp_path / "ckpt")


def test_an_image_with_a_230_character_stem_is_predicted_with_every_output(checkpoint, tmp_path, capsys):
    """Its longest output name, <stem>_uncertainty.npy, is 246 bytes: legal, and written (its
    temporary name, name + host + pid + random + .tmp, was over 255 bytes and stopped the run)."""
    stem = "s" * 230
    inputs, out = tmp_path / "in", tmp_path / "out"
    inputs.mkdir()
    image = render_scene("indoor", 0, 48, 64).image
    Image.fromarray(image).save(inputs / f"{stem}.png")
    args = ["predict", str(inputs), "--checkpoint", str(checkpoint), "--out", str(out), "--npy", "--ply", "--uncertainty", "--side-by-side"]
    assert main(args) == 0, capsys.readouterr().err
    tails = [".png", "_color.png", ".npy", "_uncertainty.png", "_uncertainty.npy", ".ply", "_side.png"]
    assert sorted(p.name for p in out.iterdir()) == sorted([*(stem + tail for tail in tails), "cameras.json"])
    expected = load_model(checkpoint).infer(image)["depth"][0].numpy()
    np.testing.assert_allclose(np.load(out / f"{stem}.npy"), expected, rtol=1e-5)
    assert np.abs(read_depth(out / f"{stem}.png", 1000.0) - expected).max() <= 0.0005 + 1e-6
    capsys.readouterr()
    assert main(args) == 0 and "kept 1 finished before" in capsys.readouterr().out


@pytest.mark.parametrize("name", ["a" * 251 + ".png", "é" * 125 + ".npy", "b" * 255])
def test_a_killed_writer_of_a_long_name_leaves_a_temporary_that_clean_stale_removes(tmp_path, name):
    """A file and a folder of names up to 255 bytes (multi-byte characters cut whole) are written
    under temporaries within the limit that carry this host and pid: a killed writer's are removed
    by clean_stale, a live writer's are kept."""
    code = (
        "import os; from clipdepth.io.atomic import atomic_path, atomic_dir;"
        f"ca = atomic_path({str(tmp_path / 'f' / name)!r}); open(ca.__enter__(), 'w').write('half');"
        f"cb = atomic_dir({str(tmp_path / 'd' / name)!r}); cb.__enter__(); os._exit(9)"
    )
    assert subprocess.run([sys.executable, "-c", code], check=False).returncode == 9  # killed mid-write
    left = [*(tmp_path / "f").iterdir(), *(tmp_path / "d").iterdir()]
    assert len(left) == 2 and all(is_temporary(p.name) and len(os.fsencode(p.name)) <= NAME_MAX for p in left)
    with atomic_path(tmp_path / "f" / name) as mine:
        mine.write_text("whole")
        assert len(os.fsencode(mine.name)) <= NAME_MAX and f"-{os.getpid()}." in mine.name and is_temporary(mine.name)
        assert clean_stale(tmp_path) == 2 and mine.exists()  # the killed writer's two, not this one's
    with atomic_dir(tmp_path / "d" / name) as folder:
        (folder / "x.txt").write_text("x")
    assert [p.name for p in (tmp_path / "f").iterdir()] == [name] and (tmp_path / "f" / name).read_text() == "whole"
    assert [p.name for p in (tmp_path / "d").iterdir()] == [name] and (tmp_path / "d" / name / "x.txt").exists()
