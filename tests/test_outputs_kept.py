"""Outputs never lost, failures as one line: folder swaps touch only what clipdepth wrote (kind B),
nothing escapes as a traceback (D), a failed write names its file and cause (E), a record several
runs update loses no update (F). Each at its shared mechanism (io.atomic, data.loader, the CLI's
last resort, io.atomic.locked), and through a command that goes through it."""

from __future__ import annotations

import errno
import json
import multiprocessing
import os
import re
import shutil
import signal
import subprocess
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors import SafetensorError

from clipdepth.cli.main import main
from clipdepth.errors import DataError
from clipdepth.io.atomic import atomic_dir, atomic_path, clean_stale, is_temporary
from clipdepth.models import PureCLIPDepth, load_model

CHECKPOINT_FILES = ["README.md", "config.json", "model.safetensors", "preprocessor_config.json"]
NUMPY_SHORT_WRITE = "307200 requested and 51168 written"  # numpy's whole message (tofile, np.save) on a full disk
SAFETENSORS_FULL = "Error while serializing: I/O error: No space left on device (os error 28)"  # safetensors 0.8's


class Killed(BaseException):
    """A kill at a chosen step: nothing of the writer's runs after it but its `finally` clauses."""


def _head(model) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in model.head.state_dict().items()}


def _same(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def _user_files(folder):
    (folder / "notes.txt").write_text("my notes")
    (folder / "data").mkdir()
    (folder / "data" / "x.bin").write_bytes(b"\x00\x01")


def _user_files_kept(folder) -> bool:
    return (folder / "notes.txt").read_text() == "my notes" and (folder / "data" / "x.bin").read_bytes() == b"\x00\x01"


def _killed_at(step: int, write) -> bool:
    """Run ``write()`` with its ``step``-th os.replace raising Killed; whether it was killed."""
    real, calls = os.replace, []

    def replace(src, dst):
        calls.append(src)
        if len(calls) == step:
            raise Killed
        real(src, dst)

    os.replace = replace
    try:
        write()
    except Killed:
        return True
    finally:
        os.replace = real
    return False


@pytest.fixture
def two_heads(tiny_cfg):
    torch.manual_seed(0)
    old = PureCLIPDepth.build(tiny_cfg)
    torch.manual_seed(1)
    new = PureCLIPDepth.build(tiny_cfg)
    assert not _same(_head(old), _head(new))
    return old, new


# -- B: a folder swap touches only what clipdepth wrote ---------------------------------------------
def test_saving_over_a_checkpoint_keeps_the_users_files(two_heads, tmp_path):
    old, new = two_heads
    folder = old.save_pretrained(tmp_path / "ckpt")
    _user_files(folder)
    new.save_pretrained(folder)
    assert _user_files_kept(folder)
    assert sorted(p.name for p in folder.iterdir()) == sorted([".clipdepth", *CHECKPOINT_FILES, "data", "notes.txt"])
    assert _same(_head(load_model(folder)), _head(new))


def test_the_pipelines_save_keeps_the_users_files(two_heads, tmp_path):
    import transformers

    import clipdepth.hf  # noqa: F401  (registers the model classes)

    old, new = two_heads
    source = new.save_pretrained(tmp_path / "new")
    folder = old.save_pretrained(tmp_path / "ckpt")
    _user_files(folder)
    transformers.pipeline("depth-estimation", model=str(source)).save_pretrained(folder)
    assert _user_files_kept(folder) and _same(_head(load_model(folder)), _head(new))


def test_a_file_clipdepth_did_not_write_is_refused_and_nothing_changes(two_heads, tmp_path):
    folder = tmp_path / "mine"
    folder.mkdir()
    (folder / "config.json").write_text('{"my": "settings"}')
    _user_files(folder)
    with pytest.raises(DataError) as err:
        two_heads[0].save_pretrained(folder)
    assert str(err.value) == (f"{folder / 'config.json'}: exists and was not written there by clipdepth; move it, or write elsewhere")
    assert sorted(p.name for p in folder.iterdir()) == ["config.json", "data", "notes.txt"]  # no temporary left either
    assert (folder / "config.json").read_text() == '{"my": "settings"}' and _user_files_kept(folder)


def test_a_checkpoint_saved_without_the_list_is_replaced_and_the_users_files_kept(two_heads, tmp_path):
    old, new = two_heads
    folder = old.save_pretrained(tmp_path / "ckpt")
    shutil.rmtree(folder / ".clipdepth")  # as saved before checkpoint folders kept one
    _user_files(folder)
    new.save_pretrained(folder)
    assert _user_files_kept(folder) and _same(_head(load_model(folder)), _head(new))


def test_a_save_killed_at_any_step_leaves_the_old_or_the_new_checkpoint(two_heads, tmp_path):
    """A kill at each rename of the swap in turn; after clean_stale (odd steps) or with only a
    reader (even steps: load_model finishes the swap itself) the folder holds one whole checkpoint,
    its weights, config and card of one save, and the user's files."""
    old, new = two_heads
    heads = {1: _head(old), 2: _head(new)}
    folder = old.save_pretrained(tmp_path / "ckpt", extra={"epoch": 1})
    _user_files(folder)
    seen = set()
    for step in range(1, 40):
        killed = _killed_at(step, lambda: new.save_pretrained(folder, extra={"epoch": 2}))
        if step % 2:
            clean_stale(tmp_path)
        loaded = load_model(folder)
        epoch = json.loads((folder / "config.json").read_text())["epoch"]
        assert _same(_head(loaded), heads[epoch]) and f"epoch {epoch}" in (folder / "README.md").read_text()
        assert sorted(p.name for p in folder.iterdir()) == sorted([".clipdepth", *CHECKPOINT_FILES, "data", "notes.txt"])
        assert sorted(p.name for p in (folder / ".clipdepth").iterdir()) == [".written.json.lock", "written.json"]
        assert _user_files_kept(folder)
        if not killed:
            break
        seen.add(epoch)
        old.save_pretrained(folder, extra={"epoch": 1})  # the next step starts from the old one again
    assert step > 5 and seen == {1, 2}  # kills before the swap's commit (old) and after it (new) were tried


def test_finishing_a_swap_never_replaces_a_file_made_meanwhile(tmp_path):
    folder = tmp_path / "d"
    with atomic_dir(folder) as tmp:
        (tmp / "a").write_text("old a")

    def write():
        with atomic_dir(folder) as tmp:
            (tmp / "a").write_text("new a")
            (tmp / "b").write_text("new b")

    assert _killed_at(2, write)  # committed, nothing moved yet
    (folder / "b").write_text("mine")  # someone's file, of a name the new content has
    with pytest.raises(DataError, match=f"^{folder / 'b'}: exists and was not written there by clipdepth; move it, and run"):
        clean_stale(folder)
    assert (folder / "b").read_text() == "mine"
    (folder / "b").rename(tmp_path / "b")
    assert clean_stale(folder) == 1
    assert [(folder / n).read_text() for n in "ab"] == ["new a", "new b"] and (tmp_path / "b").read_text() == "mine"


def test_a_resume_state_cut_short_is_finished_when_read(tmp_path):
    from clipdepth.training.resume import find_resume_state, write_resume_state

    write_resume_state(tmp_path, {"w": torch.zeros(2)}, {"rng": torch.zeros(1)}, {"epoch": 1})
    assert _killed_at(4, lambda: write_resume_state(tmp_path, {"w": torch.ones(2)}, {"rng": torch.ones(1)}, {"epoch": 2}))
    folder = find_resume_state(tmp_path)  # without clean_stale
    assert json.loads((folder / "state.json").read_text()) == {"epoch": 2}
    assert sorted(p.name for p in folder.iterdir()) == [".clipdepth", "head.safetensors", "state.json", "training_state.pt"]


# -- E: a failed write names its file and its cause ------------------------------------------------
def _error_line(stderr: str) -> str:
    """The command's one error line (the rest of stderr may only be progress bars)."""
    [line] = [line for line in stderr.splitlines() if line.startswith("clipdepth ")]
    assert "Traceback" not in stderr
    return line


def _disk(monkeypatch, free: int) -> None:
    monkeypatch.setattr(shutil, "disk_usage", lambda path: shutil._ntuple_diskusage(2**40, 2**40 - free, free))


FULL = "no space left on device; free some space there, or write elsewhere"


@pytest.mark.parametrize(
    "error, free, said",
    [
        (OSError(NUMPY_SHORT_WRITE), 0, FULL),
        (OSError(NUMPY_SHORT_WRITE), 2**30, f"{NUMPY_SHORT_WRITE}; write elsewhere"),  # not for lack of space: as numpy said
        (SafetensorError(SAFETENSORS_FULL), 2**30, FULL),
        (OSError(errno.ENOSPC, "No space left on device"), 2**30, FULL),  # Pillow's, a plain write's
        (
            RuntimeError("[enforce fail at inline_container.cc:626] . PytorchStreamWriter failed writing file data/0: file write failed"),
            0,
            FULL,
        ),  # torch.save's
        (RuntimeError("[enforce fail at inline_container.cc:672] . unexpected pos 704 vs 598"), 0, FULL),  # also torch.save's
    ],
)
def test_a_failed_write_is_one_line_naming_the_file_and_the_cause(tmp_path, monkeypatch, error, free, said):
    _disk(monkeypatch, free)

    def write(path):
        path.write_bytes(b"partly")
        raise error

    with pytest.raises(DataError) as err:
        with atomic_path(tmp_path / "out" / "a.npy") as tmp:
            write(tmp)
    assert str(err.value) == f"{tmp_path / 'out' / 'a.npy'}: cannot write it: {said}"
    with pytest.raises(DataError) as err:
        with atomic_dir(tmp_path / "out" / "ckpt") as tmp:
            write(tmp / "model.safetensors")
    assert str(err.value) == f"{tmp_path / 'out' / 'ckpt'}: cannot write it: {said}"
    assert list((tmp_path / "out").iterdir()) == []  # the temporaries are removed
    with pytest.raises(FileNotFoundError):  # an error about another file is not taken for a failed write
        with atomic_path(tmp_path / "out" / "a.png") as tmp:
            shutil.copyfile(tmp_path / "missing.png", tmp)  # an input that is not there
    with pytest.raises(ValueError):  # nor a writer's own complaint about what it is given
        with atomic_path(tmp_path / "out" / "a.png") as tmp:
            raise ValueError("bad array")


def test_a_temporary_that_cannot_be_made_is_reported_for_the_target(tmp_path, monkeypatch):
    def refused(prefix, suffix, dir):  # as a read-only folder refuses it (root may write anywhere)
        raise PermissionError(errno.EACCES, "Permission denied", os.path.join(dir, f"{prefix}x1y2{suffix}"))

    def writer_refused(tmp):  # a file's temporary is made by the writer's own open
        raise PermissionError(errno.EACCES, "Permission denied", str(tmp))

    (tmp_path / "ckpt").mkdir()
    monkeypatch.setattr("tempfile.mkdtemp", refused)
    for target, writer in ((tmp_path / "a.png", atomic_path), (tmp_path / "ckpt", atomic_dir)):
        with pytest.raises(DataError) as err:
            with writer(target) as tmp:
                if writer is atomic_path:
                    writer_refused(tmp)
        assert str(err.value) == f"{target}: cannot write it: Permission denied; write elsewhere"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ckpt"]


@pytest.mark.parametrize("error", [SafetensorError(SAFETENSORS_FULL), OSError(errno.ENOSPC, "No space left on device")])
def test_a_save_on_a_full_disk_is_one_line_and_keeps_the_old_checkpoint(two_heads, tmp_path, monkeypatch, error):
    old, new = two_heads
    folder = old.save_pretrained(tmp_path / "ckpt")

    def full(*args, **kwargs):
        raise error

    monkeypatch.setattr("clipdepth.models.base.save_file", full)
    with pytest.raises(DataError) as err:
        new.save_pretrained(folder)
    assert str(err.value) == f"{folder}: cannot write it: {FULL}"
    assert sorted(p.name for p in folder.iterdir()) == [".clipdepth", *CHECKPOINT_FILES]
    assert _same(_head(load_model(folder)), _head(old))


def test_predict_on_a_full_disk_is_one_line(tiny_cfg, tmp_path, monkeypatch, capsys):
    torch.manual_seed(0)
    checkpoint = PureCLIPDepth.build(tiny_cfg).save_pretrained(tmp_path / "ckpt")
    Image.fromarray(np.full((8, 8, 3), 90, np.uint8)).save(tmp_path / "a.png")

    def short_write(file, array, *args, **kwargs):
        file.write(b"\x93NUMPY")
        raise OSError(NUMPY_SHORT_WRITE)

    monkeypatch.setattr(np, "save", short_write)
    _disk(monkeypatch, 0)
    out = tmp_path / "out"
    assert main(["predict", str(tmp_path / "a.png"), "--checkpoint", str(checkpoint), "--out", str(out), "--npy"]) == 2
    assert _error_line(capsys.readouterr().err) == f"clipdepth predict: error: {out / 'a.npy'}: cannot write it: {FULL}"
    assert not [p for p in out.iterdir() if is_temporary(p.name)] and not (out / "a.npy").exists()


# -- D: worker processes that die or run out of shared memory ---------------------------------------
def _in_worker() -> bool:
    return torch.utils.data.get_worker_info() is not None


def _kill_own_worker(*args, **kwargs):
    if _in_worker():
        os.kill(os.getpid(), signal.SIGKILL)
    return np.zeros((8, 8, 3), np.uint8)


class _Dataset(torch.utils.data.Dataset):
    def __init__(self, fail) -> None:
        self.fail = fail

    def __len__(self) -> int:
        return 4

    def __getitem__(self, index: int):
        if _in_worker():
            self.fail()
        raise AssertionError("read in the main process")


def _shm_full() -> None:
    raise RuntimeError("unable to write to file </torch_4242_1793116049_0>: No space left on device (28)")


def test_a_worker_killed_or_out_of_shared_memory_is_one_line():
    from clipdepth.data.loader import prepared_batches, read_ahead

    with pytest.raises(
        DataError,
        match=r"^a process reading the data stopped \(DataLoader worker \(pid\(s\) \d+\) "
        r"exited unexpectedly\), most often killed for lack of memory; read with fewer worker processes",
    ) as err:
        list(read_ahead([_kill_own_worker] * 3, workers=1))
    assert err.value.setting == "workers"
    with pytest.raises(DataError, match="^a process reading the data stopped"):
        list(prepared_batches(_Dataset(lambda: _kill_own_worker()), None, 2, workers=1))
    with pytest.raises(
        DataError,
        match=r"^the processes reading the data ran out of shared memory in /dev/shm .*"
        r"free space there .*or read with fewer worker processes \(0: none, no shared memory\)$",
    ) as err:
        list(prepared_batches(_Dataset(_shm_full), None, 2, workers=1))
    assert err.value.setting == "workers"


def test_predict_with_a_killed_worker_names_the_option(tiny_cfg, tmp_path, monkeypatch, capsys):
    torch.manual_seed(0)
    checkpoint = PureCLIPDepth.build(tiny_cfg).save_pretrained(tmp_path / "ckpt")
    Image.fromarray(np.full((8, 8, 3), 90, np.uint8)).save(tmp_path / "a.png")
    monkeypatch.setattr("clipdepth.inference.folder.read_rgb", _kill_own_worker)
    assert main(["predict", str(tmp_path / "a.png"), "--checkpoint", str(checkpoint), "--out", str(tmp_path / "o"), "--workers", "1"]) == 2
    line = _error_line(capsys.readouterr().err)
    assert line.startswith("clipdepth predict: error: a process reading the data stopped") and line.endswith("(--workers)")


def test_a_worker_killed_while_the_command_is_busy_elsewhere_is_one_line(tiny_cfg, tmp_path, monkeypatch, capsys):
    # `kill -9` of a worker (as the out-of-memory killer does) while the main process runs the model, outside
    # the loop over the loader: torch's SIGCHLD handler raises the death there, and the CLI's last resort
    # words it as the loader does
    from clipdepth.inference import folder

    torch.manual_seed(0)
    checkpoint = PureCLIPDepth.build(tiny_cfg).save_pretrained(tmp_path / "ckpt")
    for name in ("a", "b"):
        Image.fromarray(np.full((8, 8, 3), 90, np.uint8)).save(tmp_path / f"{name}.png")

    earlier = {child.pid for child in multiprocessing.active_children()}  # another test's, not to be killed

    def busy(*args, **kwargs):
        [worker] = [child for child in multiprocessing.active_children() if child.pid not in earlier]
        subprocess.run(["kill", "-9", str(worker.pid)], check=True)
        time.sleep(60)  # the handler raises in here, as soon as the worker is gone
        raise AssertionError("the worker's death was not noticed")

    monkeypatch.setattr(folder, "infer_batch", busy)
    monkeypatch.setenv("CLIPDEPTH_TRACEBACK_DIR", str(tmp_path / "tb"))  # where an unexpected error's would go
    assert (
        main(
            [
                "predict",
                str(tmp_path / "a.png"),
                str(tmp_path / "b.png"),
                "--checkpoint",
                str(checkpoint),
                "--out",
                str(tmp_path / "o"),
                "--workers",
                "1",
            ]
        )
        == 2
    )
    assert re.fullmatch(
        r"clipdepth predict: error: a process reading the data stopped \(DataLoader worker \(pid \d+\) "
        r"is killed by signal: Killed\), most often killed for lack of memory; read with fewer worker "
        r"processes \(0: none, all in this one\) \(--workers\)",
        _error_line(capsys.readouterr().err),
    )


# -- D: the CLI's last resort ------------------------------------------------------------------------
def test_an_unexpected_error_is_one_line_and_its_traceback_is_saved(tmp_path, monkeypatch, capsys):
    def bug(args):
        raise RuntimeError("no such thing\nsecond line")

    monkeypatch.setattr("clipdepth.cli.score.run", bug)
    monkeypatch.setenv("CLIPDEPTH_TRACEBACK_DIR", str(tmp_path / "tb"))
    argv = ["score", "--pred", str(tmp_path), "--gt", str(tmp_path), "--protocol", "nyu"]
    assert main(argv) == 1
    err = capsys.readouterr().err
    [saved] = (tmp_path / "tb").iterdir()
    assert err == (
        f"clipdepth score: error: RuntimeError: no such thing (an unexpected error: please report it with its "
        f"traceback, saved in {saved})\n"
    )
    text = saved.read_text()
    assert f"command: clipdepth score --pred {tmp_path} --gt {tmp_path} --protocol nyu" in text
    assert "Traceback (most recent call last)" in text and "RuntimeError: no such thing\nsecond line" in text
    (tmp_path / "file").write_text("")
    monkeypatch.setenv("CLIPDEPTH_TRACEBACK_DIR", str(tmp_path / "file"))  # not a folder: said, still one line
    assert main(argv) == 1
    [line] = capsys.readouterr().err.splitlines()
    assert line.startswith(
        "clipdepth score: error: RuntimeError: no such thing (an unexpected error; its traceback could not be saved: "
    ) and line.endswith("; set CLIPDEPTH_TRACEBACK_DIR to a writable folder)")


# -- F: a record several runs update keeps every update --------------------------------------------
def _record_cameras(folder, me: str, both_read) -> None:
    from clipdepth.io.intrinsics import Camera, CameraRecord

    record = CameraRecord(folder)
    both_read.wait(timeout=60)  # both runs read the record before either writes
    for i in range(12):
        record.add(Path(f"{me}{i:02d}"), Path(f"{me}{i:02d}.png"), Camera(50.0 + i, 50.0, 31.5, 23.5, 64, 48, "default"))
        record.save()


def test_two_runs_recording_cameras_into_one_folder_keep_all_24(tmp_path):
    fork = multiprocessing.get_context("fork")  # two processes, started in an instant
    both_read = fork.Barrier(2)
    runs = [fork.Process(target=_record_cameras, args=(tmp_path, me, both_read)) for me in "ab"]
    for run in runs:
        run.start()
    for run in runs:
        run.join(timeout=60)
    assert [run.exitcode for run in runs] == [0, 0]
    record = json.loads((tmp_path / "cameras.json").read_text())
    assert sorted(record) == [f"{me}{i:02d}" for me in "ab" for i in range(12)]
    assert [record[f"b{i:02d}"]["fx"] for i in range(12)] == [50.0 + i for i in range(12)]


def test_a_file_temporary_is_this_writers_own_and_made_by_its_open(tmp_path):
    # Two writes of one target at once (two threads of a process) never share a temporary; the temporary does not
    # exist until the writer opens it (a file made first and truncated by that open is flushed when closed, on ext4).
    target = tmp_path / "a.png"
    with atomic_path(target) as first, atomic_path(target) as second:
        assert first != second and first.parent == second.parent == tmp_path
        assert is_temporary(first.name) and is_temporary(second.name)
        assert not first.exists() and not second.exists()
        first.write_bytes(b"first")
        second.write_bytes(b"second")
    assert target.read_bytes() == b"first" and sorted(p.name for p in tmp_path.iterdir()) == ["a.png"]
