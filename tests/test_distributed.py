"""`torchrun` with 2 CPU processes (gloo): cache shards split by rank, DDP training, one writer; each
rank holding its block of the splits, validation split across the ranks and summed."""

import json
import os
import socket
import subprocess
import sys

import numpy as np
import pytest
import torch

from clipdepth.config import load_config
from clipdepth.data import get_dataset
from clipdepth.features import OnTheFlySplit
from clipdepth.training.distributed import rank_share, shard_bounds
from clipdepth.training.mixture import epoch_schedule
from clipdepth.training.run import Experiment
from clipdepth.training.trainer import Trainer

from .conftest import TINY_ENCODER


def test_two_process_torchrun_builds_the_cache_and_trains(tmp_path):
    out, cache = tmp_path / "run", tmp_path / "cache"
    overrides = [f"clip.{k}={v}" for k, v in TINY_ENCODER.items()] + [
        "data.train_size=6",
        "data.val_size=2",
        "data.height=48",
        "data.width=64",
        "train.batch_size=2",
        "train.max_epochs=2",
        "train.log_every=1",
        "train.cache_shard_size=2",
        f"train.feature_cache={cache}",
        f"output_dir={out}",
    ]
    command = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        "--nproc_per_node=2",
        "-m",
        "clipdepth.cli.main",
        "train",
        "--config",
        "demo",
        *overrides,
    ]
    done = subprocess.run(command, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    # 6 frames in shards of 2: rank 0 built shards 0 and 2, rank 1 shard 1; all complete
    assert sorted(p.name for p in (cache / "train").glob("shard_*")) == ["shard_00000", "shard_00001", "shard_00002"]
    # each rank takes 3 frames per epoch = 1 full batch of 2 (the partial one is dropped, as the
    # release does); rank 0 alone logs the steps, once each
    steps = [json.loads(line)["step"] for line in (out / "train_steps.jsonl").read_text().splitlines()]
    assert steps == [1, 2]
    assert len((out / "train_epochs.csv").read_text().splitlines()) == 1 + 2
    assert (out / "model" / "model.safetensors").is_file()


# -- one block per rank: residency, schedule and split validation (gloo, 2 processes) -------------
def _cfg(tmp_path):
    overrides = [f"clip.{k}={v}" for k, v in TINY_ENCODER.items()] + [
        "data.train_size=6",
        "data.val_size=5",
        "data.height=48",
        "data.width=64",
        "train.batch_size=3",
        "train.max_epochs=1",
        "eval.batch_size=2",
        "train.cache_shard_size=2",
        f"train.feature_cache={tmp_path / 'cache'}",
        f"output_dir={tmp_path / 'run'}",
    ]
    return load_config("demo", overrides)


def _trainer(cfg, out):
    exp = Experiment.create(cfg)
    train, val = exp.encode("train", flip=False), exp.encode("val", flip=cfg.eval.tta)
    return Trainer.single_dataset(exp.model, cfg, train, val, exp.preprocessor, exp.protocol, out, exp.dist), train


def _rank(rank, world, port, cfg, out):
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank), LOCAL_RANK=str(rank), WORLD_SIZE=str(world))
    torch.set_num_threads(1)
    trainer, whole = _trainer(cfg, out / "run")
    placed = trainer.sources[0].train
    storage = [v.untyped_storage().nbytes() for v in [*placed.arrays.values(), placed.depth.units]]
    schedule = [placed.names[int(i)] for _, frames in trainer.epoch_schedule() for i in frames]
    record = {
        "names": placed.names,
        "nbytes": placed.nbytes(),
        "whole_nbytes": whole.nbytes(),
        "storage": sum(storage),
        "resident": str(placed.resident_on),
        "val_names": trainer.sources[0].val.names,
        "schedule": schedule,
        "metrics": trainer.validate()[0],
    }
    trainer.fit()
    record["head"] = {k: v.tolist() for k, v in trainer.model.head.state_dict().items()}
    (out / f"rank{rank}.json").write_text(json.dumps(record))
    torch.distributed.destroy_process_group()


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_two_ranks_hold_half_the_training_split_each_and_split_validation_equals_one_process(tmp_path, monkeypatch):
    for name in ("WORLD_SIZE", "RANK", "LOCAL_RANK"):
        monkeypatch.delenv(name, raising=False)
    cfg = _cfg(tmp_path)
    single, whole = _trainer(cfg, tmp_path / "single")  # builds the cache the ranks then read
    expected = single.validate()[0]
    torch.multiprocessing.spawn(_rank, args=(2, _free_port(), cfg, tmp_path), nprocs=2)
    ranks = [json.loads((tmp_path / f"rank{r}.json").read_text()) for r in (0, 1)]

    # each rank holds its own contiguous block (frames 0-2, 3-5) on its device, in memory of its own:
    # half the rows and half the bytes, its arrays not views of the whole split
    assert [r["names"] for r in ranks] == [whole.names[:3], whole.names[3:]]
    assert all(r["resident"] == "cpu" for r in ranks)
    assert [r["nbytes"] for r in ranks] == [whole.nbytes() // 2] * 2 and ranks[0]["whole_nbytes"] == whole.nbytes()
    assert all(r["storage"] == r["nbytes"] - 3 * 4 for r in ranks)  # all but the 3 float32 scales
    # an epoch's batch of 3 per rank: each takes its own block, together every frame once
    assert [sorted(r["schedule"]) for r in ranks] == [whole.names[:3], whole.names[3:]]
    # validation: 5 frames scored as blocks of 2 and 3 in batches of 2, summed across the ranks; the
    # mean over frames is the single process's (batches of other compositions: float32 head, 1e-6)
    assert [r["val_names"] for r in ranks] == [single.sources[0].val.names[:2], single.sources[0].val.names[2:]]
    for r in ranks:
        assert r["metrics"].keys() == expected.keys()
        for metric, value in expected.items():
            assert r["metrics"][metric] == pytest.approx(value, rel=1e-6, abs=1e-9), metric
    # DDP: both ranks end the epoch with the same head
    assert ranks[0]["head"] == ranks[1]["head"]


def test_a_rank_share_reads_the_same_rows_as_the_whole_split(tmp_path):
    cfg = _cfg(tmp_path)
    exp = Experiment.create(cfg)
    for whole in (exp.encode("train", flip=True), exp.encode("val", flip=True)):
        start, stop = shard_bounds(len(whole), 1, 2)
        share = rank_share(whole, 1, 2)
        assert (start, stop, len(share)) == (len(whole) // 2, len(whole), stop - start)
        assert share.names == whole.names[start:stop] and (share.shapes == whole.shapes[start:stop]).all()
        frames = torch.arange(stop - start).flip(0)
        for key in whole.arrays:  # still memory-mapped: rows of the shards, cut to the block
            assert not isinstance(share.arrays[key], torch.Tensor)
            assert torch.equal(share.features(frames)[key], whole.features(frames + start)[key])
            assert torch.equal(share.flipped_features(frames)[key], whole.flipped_features(frames + start)[key])
        if whole.depth is not None:
            assert share.depth.units is None and torch.equal(share.depth.rows(frames), whole.depth.rows(frames + start))
        else:
            assert all(np.array_equal(a, b) for a, b in zip(share.gt, whole.gt[start:stop], strict=True))
    # frames decoded at every step: the rank's block of the dataset
    frames = get_dataset(cfg.data, "train")
    share = rank_share(OnTheFlySplit(exp.model, frames, exp.preprocessor), 1, 2)
    assert [s.name for s in share.dataset] == [frames[i].name for i in range(3, 6)]


def test_every_rank_draws_the_same_datasets_and_only_frames_of_its_block():
    sizes, weights = [7, 5], [1.0, 1.0]
    schedules = [epoch_schedule(sizes, weights, 2, True, "weighted", torch.Generator().manual_seed(3), rank, 2) for rank in (0, 1)]
    assert [k for k, _ in schedules[0]] == [k for k, _ in schedules[1]]  # the same dataset at every step
    assert len(schedules[0]) == 2 + 1  # ceil(7 / 2) = 4 frames: 2 batches; ceil(5 / 2) = 3: 1 batch
    for rank, schedule in enumerate(schedules):
        for k, frames in schedule:
            held = shard_bounds(sizes[k], rank, 2)
            assert len(frames) == 2 and 0 <= int(frames.min()) and int(frames.max()) < held[1] - held[0]
    # one dataset: a permutation of the block, a block one short wrapping to its first frame
    mine = [epoch_schedule([7], [7], 4, False, "weighted", torch.Generator().manual_seed(1), r, 2) for r in (0, 1)]
    assert sorted(mine[0][0][1].tolist()) == [0, 0, 1, 2] and sorted(mine[1][0][1].tolist()) == [0, 1, 2, 3]


def test_auto_residency_counts_the_mirrored_frames_of_a_validation_split(tmp_path, monkeypatch):
    from clipdepth.training import trainer as trainer_module

    val = Experiment.create(_cfg(tmp_path)).encode("val", flip=True)
    features = sum(v[:].numel() * v.dtype.itemsize for v in val.arrays.values())
    assert val.nbytes() == features  # no training depth: the features alone, without their mirrored copies
    share = trainer_module.RESIDENT_SHARE
    monkeypatch.setattr(trainer_module, "available_bytes", lambda device: 1.5 * features / share)
    assert trainer_module.place_training_split(val, "cpu", "auto").resident_on is None  # 2 x features do not fit
    monkeypatch.setattr(trainer_module, "available_bytes", lambda device: 2 * features / share)
    placed = trainer_module.place_training_split(val, "cpu", "auto")
    assert placed.resident_on == torch.device("cpu")
    assert all(isinstance(v, torch.Tensor) for v in placed.flipped_arrays.values())


def test_a_training_split_with_fewer_frames_than_processes_is_one_line(tmp_path, monkeypatch):
    from clipdepth.errors import ConfigError
    from clipdepth.training import trainer as trainer_module
    from clipdepth.training.distributed import Distributed

    cfg = _cfg(tmp_path)
    exp = Experiment.create(cfg)
    train, val = exp.encode("train", flip=False), exp.encode("val", flip=True)
    one = rank_share(train, 0, 6)  # a training split of one frame
    monkeypatch.setattr(trainer_module, "DistributedDataParallel", lambda head: head)  # no process group here
    trainer = Trainer.single_dataset(
        exp.model, cfg, one, val, exp.preprocessor, exp.protocol, tmp_path / "run", Distributed(rank=0, world_size=2)
    )
    assert len(trainer.sources[0].train) == 0  # rank 0 of 2 holds no frame of it: it could draw no batch
    with pytest.raises(ConfigError, match=r"^the training split has 1 frames, fewer than the 2 processes: run fewer"):
        trainer._epoch_steps()
