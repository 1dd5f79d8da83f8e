"""A split is encoded into memory only where it fits in the run's memory budget, else streamed to a
cache folder; encoding never holds a split twice; the TR2M mixture at the paper's frame counts is
planned to stream instead of running out of memory."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap

import numpy as np
import pytest
import torch

from clipdepth.config import config_to_dict, load_config, load_config_dict
from clipdepth.data import get_dataset
from clipdepth.data.loader import prepared_batches
from clipdepth.features.memory import SplitSize, encode_split, frame_batch, frame_bytes, plan_memory
from clipdepth.io.depth_store import U16_MAX
from clipdepth.training import run as run_module
from clipdepth.training.run import Experiment

from .conftest import TINY_ENCODER, TINY_TR2M

MB = 1e6
# TR2M at 224 x 280 on 300 tiny synthetic frames: ~0.46 MB per frame in memory (uint8 image, fp16
# relative depth, 16-bit depth, small tokens), ~138 MB in all, against a 40 MB budget. The image and
# relative depth are kept raw here, so that a frame's size does not depend on how well it compresses.
FRAMES, BUDGET = 300, 40 * MB
MEASURE = textwrap.dedent("""
    import json, sys
    from pathlib import Path
    import torch
    from clipdepth.config import load_config_dict
    from clipdepth.features.memory import held_nbytes
    from clipdepth.training import run
    from clipdepth.training.run import Experiment

    def status(field):  # kB -> bytes, from the kernel's own accounting of this process
        line = next(l for l in Path("/proc/self/status").read_text().splitlines() if l.startswith(field + ":"))
        return int(line.split()[1]) * 1024

    def peak_of(encode):  # the peak resident size while encoding, above the size before it
        Path("/proc/self/clear_refs").write_text("5")  # resets VmHWM to the current VmRSS
        before = status("VmRSS")
        split = encode()
        return split, status("VmHWM") - before

    torch.set_num_threads(1)
    cfg = load_config_dict(json.loads(sys.argv[1]))
    budget = float(sys.argv[2])
    exp = Experiment.create(cfg)
    # The process's first streamed encoding allocates for good (thread pools, kernels, PNG encoder):
    # the validation split, streamed under no budget at all, first.
    run.available_bytes = lambda device: 0
    exp.encode("val", flip=False)
    run.available_bytes = lambda device: budget / cfg.train.memory_share  # the mocked RAM
    streamed, streamed_peak = peak_of(lambda: exp.encode("train", flip=False))
    run.available_bytes = lambda device: 1e12
    kept, kept_peak = peak_of(lambda: Experiment.create(cfg).encode("train", flip=False))
    every = torch.arange(len(kept))
    print(json.dumps({
        "streamed_peak": streamed_peak, "kept_peak": kept_peak, "held": held_nbytes(kept),
        "streamed_in_memory": all(isinstance(v, torch.Tensor) for v in streamed.arrays.values()),
        "kept_in_memory": all(isinstance(v, torch.Tensor) for v in kept.arrays.values()),
        "names_equal": streamed.names == kept.names,
        "arrays_equal": sorted(streamed.arrays) == sorted(kept.arrays) and all(
            torch.equal(streamed.arrays[k][every], kept.arrays[k]) for k in kept.arrays),
        "depth_equal": torch.equal(streamed.depth.rows(every), kept.depth.rows(every)),
    }))
""")


def big_tr2m_cfg(tiny_tr2m_cfg, tmp_path):
    return load_config_dict(
        config_to_dict(tiny_tr2m_cfg),
        [
            f"data.train_size={FRAMES}",
            "tr2m.input_height=224",
            "tr2m.input_width=280",
            "train.num_workers=0",
            "eval.batch_size=2",
            f"output_dir={tmp_path / 'run'}",
            "tr2m.cache_image=raw",
            "tr2m.cache_relative=fp16",
        ],
    )


def test_a_split_over_the_memory_budget_streams_to_disk_with_peak_rss_under_the_budget(tiny_tr2m_cfg, tmp_path):
    cfg = big_tr2m_cfg(tiny_tr2m_cfg, tmp_path)
    done = subprocess.run(
        [sys.executable, "-c", MEASURE, json.dumps(config_to_dict(cfg)), str(BUDGET)],
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    out = json.loads(done.stdout.strip().splitlines()[-1])
    assert out["held"] > 3 * BUDGET  # the split is well above the budget ...
    assert not out["streamed_in_memory"] and (tmp_path / "run" / "feature_cache" / "train" / "cache.json").is_file()
    assert out["streamed_peak"] < BUDGET, out  # ... and encoding it never held the budget
    said = [line for line in done.stderr.splitlines() if "streaming them to" in line and "train" in line.split(":")[0]]
    assert len(said) == 1 and "feature_cache" in said[0] and f"{FRAMES:,} frames" in said[0], done.stderr[-2000:]
    # Under a large budget the same split is kept in memory, identical, and encoding it held the split
    # once plus about a batch (lists of batches then their concatenation held it twice).
    assert out["kept_in_memory"] and out["names_equal"] and out["arrays_equal"] and out["depth_equal"], out
    assert out["kept_peak"] < 1.25 * out["held"], out


def old_road(model, dataset, preprocessor, batch_size, flip, captions, purpose):
    """encode_split as clipdepth 0.x wrote it: per-batch lists, torch.cat, depth quantized per frame and stacked."""
    arrays, flipped, names, shapes, units, scales, gts = {}, {}, [], [], [], [], []
    for frames in prepared_batches(dataset, preprocessor, batch_size, 0, gt_scale=True):
        batch = frame_batch(frames, captions, model.device)
        with torch.inference_mode():
            for key, value in model.encode_frames(batch).items():
                arrays.setdefault(key, []).append(value)
            for key, value in model.encode_frames(batch.flipped()).items() if flip else ():
                flipped.setdefault(key, []).append(value)
        for frame in frames:
            names.append(frame.sample.name)
            shapes.append(frame.sample.depth.shape)
            gts.append(frame.sample.depth)
            depth = torch.nan_to_num(frame.depth.double(), nan=0.0, posinf=0.0, neginf=0.0).clamp_min(0)
            cap, largest = frame.gt_scale, float(depth.max())
            scale = cap if cap and round(largest * cap) <= U16_MAX else U16_MAX / largest
            q = (depth * scale).round().clamp(0, U16_MAX)
            units.append(torch.where(depth > 0, q.clamp_min(1), 0).to(torch.int32))
            scales.append(scale)

    def cat(group):
        return {k: torch.cat(v) for k, v in group.items()}

    return names, np.array(shapes), cat(arrays), cat(flipped), torch.stack(units), torch.tensor(scales), gts


@pytest.mark.parametrize("purpose", ["train", "score"])
def test_encode_split_equals_lists_then_concatenation(tiny_cfg, purpose):
    cfg = load_config_dict(config_to_dict(tiny_cfg), ["data.tiles=2", "data.train_size=7"])
    exp = Experiment.create(cfg)
    dataset = get_dataset(cfg.data, "train")
    split = encode_split(exp.model, dataset, exp.preprocessor, 3, flip=True, purpose=purpose, workers=0)
    names, shapes, arrays, flipped, units, scales, gts = old_road(exp.model, dataset, exp.preprocessor, 3, True, None, purpose)
    assert split.names == names and np.array_equal(split.shapes, shapes) and split.tiles == 2
    assert sorted(split.arrays) == sorted(arrays) == ["cls", "tokens"] and len(arrays["tokens"]) == 14
    for key in arrays:
        assert split.arrays[key].dtype == arrays[key].dtype and torch.equal(split.arrays[key], arrays[key]), key
        assert torch.equal(split.flipped_arrays[key], flipped[key]), key
    if purpose == "train":
        assert split.gt is None and split.depth.units.dtype == torch.uint16
        assert torch.equal(split.depth.units.to(torch.int32), units)
        assert torch.equal(split.depth.scale, scales.float())
    else:
        assert split.depth is None and all(np.array_equal(a, b) for a, b in zip(split.gt, gts, strict=True))


def test_the_mixture_at_the_paper_frame_counts_is_planned_to_stream_on_a_128_gb_host():
    """tr2m_mixture with DINOv2-L's token width (1024, patch 14; one layer: the stored shapes do not
    depend on the depth) at each dataset's input size, one synthetic frame of the dataset's frame
    size encoded to size it."""
    cfg = load_config(
        "tr2m_mixture",
        [
            *TINY_TR2M,
            *(f"clip.{k}={v}" for k, v in TINY_ENCODER.items()),
            "tr2m.image_encoder.hidden_size=1024",
            "tr2m.image_encoder.num_heads=16",
            "tr2m.image_encoder.num_layers=1",
            "tr2m.max_depth=80.0",
        ],
    )
    exp = Experiment.create(cfg)
    frames = {"nyu": ("synthetic_indoor", 480, 640), "kitti": ("synthetic_outdoor", 375, 1242), "void": ("synthetic_indoor", 480, 640)}
    sizes = {}
    for source in exp.sources[:3]:
        kind, height, width = frames[source.name]
        data = load_config("demo", [f"data.dataset={kind}", "data.train_size=1", f"data.height={height}", f"data.width={width}"]).data
        pre = exp.model.preprocessor(source.data, source.input_size)
        sizes[source.name] = frame_bytes(exp.model, get_dataset(data, "train"), pre, captions=exp.captions_of(data), purpose="train")
    # 31 x 40 tokens x 1024 in fp16 and the 16-bit depth at 434 x 560 (the image and relative depth
    # are stored compressed, tr2m.cache_image / cache_relative): a lower bound
    assert tuple(exp.sources[0].input_size) == (434, 560) and sizes["nyu"] >= 31 * 40 * 1024 * 2 + 434 * 560 * 2
    assert tuple(exp.sources[1].input_size) == (350, 1204) and sizes["kitti"] >= 25 * 86 * 1024 * 2 + 350 * 1204 * 2
    # NYU's BTS list and KITTI's Eigen split (docs/baselines.md); VOID and C3VD hold the rest of the
    # paper's 102K, both at 434 x 560
    paper = [
        SplitSize("nyu train", 24_231, sizes["nyu"]),
        SplitSize("kitti train", 23_158, sizes["kitti"]),
        SplitSize("void + c3vd train", 102_000 - 24_231 - 23_158, sizes["void"]),
    ]
    host = 128 * 1024**3
    assert plan_memory(paper, 0.5 * host) == [False, False, False]
    assert sum(s.nbytes for s in paper) > host  # held in memory, it would not fit at all
    assert plan_memory([SplitSize("nyu train", 32, sizes["nyu"])], 0.5 * host) == [True]  # a toy split stays


def test_plan_memory_shares_the_budget_in_order():
    splits = [SplitSize("a", 10, 5), SplitSize("b", 10, 6), SplitSize("c", 2, 5), SplitSize("d", 0, 100)]
    assert plan_memory(splits, 60) == [True, False, True, True]  # 50 kept; 60 more would not fit beside it, 10 does
    assert plan_memory(splits, 49) == [False, False, True, True]


def test_a_run_plans_its_splits_together_and_says_where_the_training_split_went(tiny_cfg, tmp_path, monkeypatch, capsys):
    """train plans the training and validation splits at once; the one that does not fit is read
    from <run>/feature_cache, and the run's log says so."""
    cfg = load_config_dict(config_to_dict(tiny_cfg), ["train.max_epochs=1", "train.num_workers=0", "data.train_size=12"])
    exp = Experiment.create(cfg)
    pre = exp.preprocessor
    train_bytes = frame_bytes(exp.model, get_dataset(cfg.data, "train"), pre, purpose="train")
    val_bytes = frame_bytes(exp.model, get_dataset(cfg.data, "val"), pre, flip=True)
    budget = 3 * val_bytes  # validation (3 frames, mirrored too) fits, the training split does not
    assert 12 * train_bytes > budget
    monkeypatch.setattr(run_module, "available_bytes", lambda device: budget / cfg.train.memory_share)
    out = tmp_path / "run"
    exp.train(out)
    where = {key: in_memory for key, (_, in_memory) in exp.placement.items()}
    assert where == {("synthetic_indoor", "train", False): False, ("synthetic_indoor", "val", True): True}
    assert (out / "feature_cache" / "train" / "cache.json").is_file()
    assert not (out / "feature_cache" / "val_flip").exists()
    assert f"read from {out / 'feature_cache'}" in (out / "train_log.txt").read_text()
    assert capsys.readouterr().err.count("streaming them to") == 1


def test_a_runs_streamed_cache_is_reused_for_the_same_settings_and_made_anew_for_others(tiny_tr2m_cfg, tmp_path, monkeypatch, capsys):
    """The run folder's own streamed cache: a rerun with the same frames and settings reads it, one
    with other settings (as `train --overwrite` after a change) replaces it instead of refusing it."""
    monkeypatch.setattr(run_module, "available_bytes", lambda device: 0)  # nothing fits: everything streams
    base = load_config_dict(config_to_dict(tiny_tr2m_cfg), ["train.num_workers=0", f"output_dir={tmp_path / 'run'}"])
    folder = tmp_path / "run" / "feature_cache" / "train"

    def encode(*overrides):
        split = Experiment.create(load_config_dict(config_to_dict(base), list(overrides))).encode("train", flip=False)
        said = [line for line in capsys.readouterr().err.splitlines() if str(folder) in line]
        return split, said

    first, said = encode()
    assert len(said) == 1 and f"streaming them to {folder}," in said[0]
    shards = {p.name: p.stat().st_mtime_ns for p in folder.iterdir()}
    again, said = encode()
    assert len(said) == 1 and f"reusing (and completing) the shards in {folder}," in said[0]
    assert {p.name: p.stat().st_mtime_ns for p in folder.iterdir()} == shards  # read, not written again
    other, said = encode("tr2m.cache_tokens=int8")
    assert len(said) == 1 and f"other settings there: streaming them anew to {folder}," in said[0]
    assert type(other.arrays["image_tokens"]).__name__ == "QuantizedRows"
    assert type(first.arrays["image_tokens"]).__name__ != "QuantizedRows" and again.names == first.names
