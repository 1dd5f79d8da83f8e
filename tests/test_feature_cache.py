"""The on-disk feature cache: same content as computing it, refusal of another key, and a kill
during the build that a rebuild recovers from without redoing finished shards."""

import dataclasses

import numpy as np
import pytest
import torch

from clipdepth.data import get_dataset
from clipdepth.errors import CheckpointError
from clipdepth.features import cache as cache_module
from clipdepth.features.cache import ShardedRows, build_cache, cache_key, frame_names, load_cache
from clipdepth.features.memory import encode_split
from clipdepth.training.run import Experiment


@pytest.fixture
def experiment(tiny_cfg, tmp_path):
    tiny_cfg.data.train_size = 7
    tiny_cfg.train.feature_cache = str(tmp_path / "cache")
    return Experiment.create(tiny_cfg)


def test_sharded_rows_index_like_one_tensor():
    full = torch.arange(10 * 3).reshape(10, 3)
    rows = ShardedRows([full[:4], full[4:7], full[7:]])
    index = torch.tensor([9, 0, 5, 4, 3])
    assert torch.equal(rows[index], full[index]) and torch.equal(rows[2:8], full[2:8]) and rows.shape == (10, 3)


def test_cached_split_equals_the_computed_one(experiment):
    cached = experiment.encode("val", flip=True)
    dataset = get_dataset(experiment.cfg.data, "val")
    fresh = encode_split(experiment.model, dataset, experiment.preprocessor, 2, flip=True)
    assert cached.names == fresh.names
    every = torch.arange(len(fresh))
    for name in ("tokens", "cls"):
        assert torch.equal(cached.arrays[name][every], fresh.arrays[name]), name
        assert torch.equal(cached.flipped_arrays[name][every], fresh.flipped_arrays[name]), name
    assert all(np.array_equal(a, b) for a, b in zip(cached.gt, fresh.gt, strict=True))  # lossless GT


def test_cached_training_split_keeps_the_computed_depth(experiment):
    cached = experiment.encode("train", flip=False)
    dataset = get_dataset(experiment.cfg.data, "train")
    fresh = encode_split(experiment.model, dataset, experiment.preprocessor, 2, purpose="train")
    every = torch.arange(len(fresh))
    assert cached.gt is None and np.array_equal(cached.shapes, fresh.shapes)
    assert torch.equal(cached.depth.rows(every), fresh.depth.rows(every))  # the PNGs hold the 16-bit values


def test_a_cache_for_other_weights_or_preprocessing_is_refused(experiment, tiny_cfg):
    experiment.encode("val", flip=False)
    other = Experiment.create(dataclasses.replace(tiny_cfg, clip=dataclasses.replace(tiny_cfg.clip, seed=5)))
    with pytest.raises(CheckpointError, match="built for another setting .*encoder"):
        other.encode("val", flip=False)
    tiled = dataclasses.replace(tiny_cfg, data=dataclasses.replace(tiny_cfg.data, tiles=2))
    with pytest.raises(CheckpointError, match="tiles"):
        Experiment.create(tiled).encode("val", flip=False)


def test_a_kill_during_build_leaves_finished_shards_and_the_rebuild_completes(experiment, tmp_path, monkeypatch):
    dataset = get_dataset(experiment.cfg.data, "train")
    key = cache_key(experiment.model, experiment.preprocessor, experiment.cfg.data, "train", False, frame_names(dataset))
    folder = tmp_path / "killed"
    real_encode, calls = cache_module.encode_split, []

    def dies_on_third_shard(*args, **kwargs):
        calls.append(kwargs.get("desc"))
        if len(calls) == 3:
            raise KeyboardInterrupt  # the kill, mid-build
        return real_encode(*args, **kwargs)

    monkeypatch.setattr(cache_module, "encode_split", dies_on_third_shard)
    with pytest.raises(KeyboardInterrupt):
        build_cache(folder, experiment.model, dataset, experiment.preprocessor, key, shard_size=3)
    assert sorted(p.name for p in folder.iterdir()) == ["cache.json", "shard_00000", "shard_00001"]
    with pytest.raises(CheckpointError, match="incomplete"):
        load_cache(folder, key)
    finished = (folder / "shard_00000" / "tokens.npy").stat().st_mtime_ns
    calls.clear()
    build_cache(folder, experiment.model, dataset, experiment.preprocessor, key, shard_size=3)
    assert calls == ["shard_00002"]  # only the missing shard was computed
    assert (folder / "shard_00000" / "tokens.npy").stat().st_mtime_ns == finished
    split = load_cache(folder, key)
    fresh = real_encode(experiment.model, dataset, experiment.preprocessor, 2, False)
    assert torch.equal(split.arrays["tokens"][torch.arange(7)], fresh.arrays["tokens"]) and split.names == fresh.names


def test_training_from_the_disk_cache_matches_training_in_memory(tiny_cfg, tmp_path):
    def final_head(feature_cache):
        cfg = dataclasses.replace(
            tiny_cfg,
            train=dataclasses.replace(tiny_cfg.train, feature_cache=feature_cache),
            output_dir=str(tmp_path / f"run_{bool(feature_cache)}"),
        )
        exp = Experiment.create(cfg)
        exp.train(cfg.output_dir)
        return exp.model.head.state_dict()

    in_memory, on_disk = final_head(None), final_head(str(tmp_path / "cache"))
    assert all(torch.equal(in_memory[k], on_disk[k]) for k in in_memory)


def test_cached_and_on_the_fly_training_give_the_same_losses(tiny_cfg, tmp_path):
    import copy

    from clipdepth.data.transforms import Preprocessor
    from clipdepth.evaluation.protocol import get_protocol
    from clipdepth.features import OnTheFlySplit
    from clipdepth.models import PureCLIPDepth
    from clipdepth.training.trainer import Trainer

    cfg = dataclasses.replace(tiny_cfg, pureclip=dataclasses.replace(tiny_cfg.pureclip, phase_steps=1))
    torch.manual_seed(0)
    model = PureCLIPDepth.build(cfg)
    pre, protocol = Preprocessor.create(model.input_size, None, tiles=2), get_protocol("synthetic_indoor")
    dataset = get_dataset(cfg.data, "train")
    cached = encode_split(model, dataset, pre, 4, flip=False, purpose="train")
    losses = {}
    for name, split in (("cached", cached), ("on_the_fly", OnTheFlySplit(model, dataset, pre))):
        trainer = Trainer.single_dataset(copy.deepcopy(model), cfg, split, cached, pre, protocol, tmp_path / name)
        records = []
        for _ in range(2):  # an Embedding step, then a Depth step
            torch.manual_seed(1)  # the same dropout masks for both
            records.append(trainer.train_step(torch.tensor([4, 1, 2])))
        losses[name] = records
    for a, b in zip(losses["cached"], losses["on_the_fly"]):
        assert a["phase"] == b["phase"]
        assert a["loss"] == pytest.approx(b["loss"], rel=2e-3)  # the cache holds fp16 features
