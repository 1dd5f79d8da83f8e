"""The real `clipdepth` command in subprocesses, on damaged or wrong input (kinds K2-K5 of the
robustness sweep): exit code 2, one line naming the file and what to do, and nothing lost."""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from clipdepth.models import PureCLIPDepth

from .conftest import TINY_ENCODER

TINY = [f"clip.{k}={v}" for k, v in TINY_ENCODER.items()] + [
    "data.train_size=4",
    "data.val_size=2",
    "data.height=48",
    "data.width=64",
    "train.batch_size=2",
    "train.max_epochs=1",
]


def cli(*args: str, cwd: Path | None = None) -> tuple[int, str, str]:
    done = subprocess.run(
        [sys.executable, "-m", "clipdepth.cli.main", *map(str, args)], capture_output=True, text=True, timeout=300, cwd=cwd
    )
    return done.returncode, done.stdout, done.stderr


def one_error_line(stderr: str) -> str:
    """The command's error line; everything else on stderr may only be progress bars."""
    lines = [line for line in stderr.splitlines() if line.startswith("clipdepth ")]
    assert len(lines) == 1 and "Traceback" not in stderr, stderr[-2000:]
    return lines[0]


def digest(folder: Path) -> dict[str, str]:
    return {p.relative_to(folder).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.fixture
def checkpoint(tiny_cfg, tmp_path):
    torch.manual_seed(0)
    return PureCLIPDepth.build(tiny_cfg).save_pretrained(tmp_path / "ckpt")


@pytest.fixture
def run_folder(tmp_path):
    """A finished one-epoch run, trained by the real command."""
    code, _, err = cli("train", "--out", tmp_path / "run", *TINY)
    assert code == 0, err[-2000:]
    return tmp_path / "run"


def test_k2_a_new_run_over_an_old_one_is_refused_and_changes_nothing(run_folder):
    before = digest(run_folder)
    code, _, err = cli("train", "--out", run_folder, *TINY)
    line = one_error_line(err)
    assert code == 2 and str(run_folder) in line and "--resume" in line and "--overwrite" in line
    assert digest(run_folder) == before


def test_k2_inputs_with_dots_in_their_names_get_their_own_outputs(checkpoint, tmp_path):
    for i in range(1, 4):
        Image.fromarray(np.full((8, 8, 3), 40 * i, np.uint8)).save(tmp_path / f"clip.000{i}.png")
    code, out, err = cli(
        "predict", *(tmp_path / f"clip.000{i}.png" for i in range(1, 4)), "--checkpoint", checkpoint, "--out", tmp_path / "depth"
    )
    assert code == 0, err[-2000:]
    assert "wrote depth for 3 image(s)" in out
    assert sorted(p.name for p in (tmp_path / "depth").glob("*[0-9].png")) == ["clip.0001.png", "clip.0002.png", "clip.0003.png"]


def test_k4_a_bad_value_stops_before_any_output(tmp_path):
    code, _, err = cli("train", "--out", tmp_path / "run", *TINY, "train.batch_size=-4")
    line = one_error_line(err)
    assert code == 2 and "train.batch_size=-4: must be a positive integer" in line
    assert not (tmp_path / "run").exists()


def test_k4_an_output_folder_that_is_a_file_is_refused_first(checkpoint, tmp_path):
    Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(tmp_path / "i.png")
    (tmp_path / "out").write_text("my notes")
    code, _, err = cli("predict", tmp_path / "i.png", "--checkpoint", checkpoint, "--out", tmp_path / "out")
    line = one_error_line(err)
    assert code == 2 and f"{tmp_path / 'out'}: exists and is not a folder" in line
    assert (tmp_path / "out").read_text() == "my notes"


def test_k5_a_truncated_checkpoint_is_named(checkpoint, tmp_path):
    weights = checkpoint / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:500])
    Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(tmp_path / "i.png")
    code, _, err = cli("predict", tmp_path / "i.png", "--checkpoint", checkpoint, "--out", tmp_path / "depth")
    line = one_error_line(err)
    assert code == 2 and str(weights) in line and "damaged" in line
    assert not (tmp_path / "depth").exists() or not any((tmp_path / "depth").iterdir())


def test_k5_a_damaged_cache_index_and_resume_state_are_named(run_folder, tmp_path):
    cache = tmp_path / "cache"
    code, _, err = cli("cache", "build", "--cache", cache, "--splits", "train", *TINY)
    assert code == 0, err[-2000:]
    (cache / "train" / "cache.json").write_text('{"key": {"n_fra')
    code, _, err = cli("cache", "info", cache / "train")
    line = one_error_line(err)
    assert code == 2 and "cache.json: damaged cache index; delete the folder" in line

    state = run_folder / "checkpoints" / "resume" / "state.json"
    meta = json.loads(state.read_text())
    state.write_text(json.dumps({**meta, "epoch": "one"}))
    before = digest(run_folder)
    code, _, err = cli("train", "--out", run_folder, "--resume", *TINY)
    line = one_error_line(err)
    assert code == 2 and "state.json: epoch should be an integer >= 0" in line and "--overwrite" in line
    assert digest(run_folder) == before


@pytest.mark.parametrize(
    ("setting", "says"),
    [
        ("tr2m.cache_tokens=int4", "tr2m.cache_tokens='int4': must be one of ['fp16', 'int8']"),
        ("tr2m.cache_image=gif", "tr2m.cache_image='gif': must be one of ['jpeg', 'png', 'raw']"),
        ("tr2m.cache_image_quality=101", "tr2m.cache_image_quality=101: must be an integer in [1, 95]"),
        ("train.cuda_graph=true", "train.cuda_graph: CUDA graphs need a CUDA device, and this run trains on cpu"),
    ],
)
def test_a_storage_or_cuda_graph_setting_that_cannot_work_is_refused_before_anything_is_written(tmp_path, setting, says):
    out = tmp_path / "run"
    code, _, err = cli("train", "--config", "demo_tr2m", "--out", str(out), "device=cpu", setting)
    assert code == 2 and says in err and len(err.strip().splitlines()) == 1, err
    assert not out.exists()
