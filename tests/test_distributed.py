"""`torchrun` with 2 CPU processes (gloo): cache shards split by rank, DDP training, one writer."""
import json
import subprocess
import sys

from .conftest import TINY_ENCODER


def test_two_process_torchrun_builds_the_cache_and_trains(tmp_path):
    out, cache = tmp_path / "run", tmp_path / "cache"
    overrides = [f"clip.{k}={v}" for k, v in TINY_ENCODER.items()] + [
        "data.train_size=6", "data.val_size=2", "data.height=48", "data.width=64", "train.batch_size=2",
        "train.max_epochs=2", "train.log_every=1", "train.cache_shard_size=2",
        f"train.feature_cache={cache}", f"output_dir={out}",
    ]
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
               "-m", "clipdepth.cli.main", "train", "--config", "demo", *overrides]
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
