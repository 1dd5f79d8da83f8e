"""The fast data path: worker processes change no result, the compact cache changes no loss or
metric beyond 1e-6, the device-resident split trains exactly as the streamed one, and the head's
bf16 / compiled steps stay within stated tolerances of fp32."""

import copy
import dataclasses
import json

import numpy as np
import pytest
import torch

from clipdepth.data import get_dataset
from clipdepth.data.loader import prepared_batches
from clipdepth.errors import CheckpointError
from clipdepth.evaluation.evaluate import ScoringTargets, evaluate_encoded
from clipdepth.features.cache import cache_info, load_cache
from clipdepth.features.memory import EncodedSplit, encode_split
from clipdepth.io.depth_store import decode_gt, encode_gt, file_scale, quantize
from clipdepth.training.run import Experiment
from clipdepth.training.trainer import Trainer


def with_train(cfg, **fields):
    return dataclasses.replace(cfg, train=dataclasses.replace(cfg.train, **fields))


def shard_bytes(folder):
    return {p.relative_to(folder).as_posix(): p.read_bytes() for p in sorted(folder.rglob("shard_*/*.npy"))}


# -- workers change nothing ----------------------------------------------------------------------
def test_a_cache_built_with_two_workers_is_byte_identical(tiny_cfg, tmp_path):
    tiny_cfg.data.train_size = 9  # three shards of 4, 4 and 1 frames
    for workers in (0, 2):
        cfg = with_train(tiny_cfg, feature_cache=str(tmp_path / f"w{workers}"), num_workers=workers, cache_shard_size=4)
        exp = Experiment.create(cfg)
        exp.encode("train", flip=False)
        exp.encode("val", flip=True)
    for split in ("train", "val_flip"):
        zero, two = shard_bytes(tmp_path / "w0" / split), shard_bytes(tmp_path / "w2" / split)
        assert zero.keys() == two.keys() and len(zero) > 4
        assert all(zero[name] == two[name] for name in zero), split


def test_frames_prepared_here_and_in_workers_are_bit_identical():
    """The CPU bilinear resize rounds differently with another number of threads: the main process
    (torch on 2 threads here) must prepare a frame exactly as a one-thread worker does."""
    from clipdepth.data.synthetic import SyntheticScenes
    from clipdepth.data.transforms import Preprocessor

    frames = SyntheticScenes("indoor", "train", 4, 240, 320, seed=0)
    pre = Preprocessor.create(224, None, resize="linear")
    threads = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        here, there = ([f for b in prepared_batches(frames, pre, 2, workers) for f in b] for workers in (0, 2))
        here, there = list(here), list(there)
    finally:
        torch.set_num_threads(threads)
    assert torch.get_num_threads() == threads  # restored after the single-thread preprocessing
    assert all(torch.equal(a.image, b.image) and torch.equal(a.depth, b.depth) for a, b in zip(here, there, strict=True))


def test_workers_reuse_their_buffers_yet_never_overwrite_frames_the_caller_keeps(monkeypatch):
    """A worker refills a shared-memory slot only once the main process has let go of every frame in
    it: a caller that keeps all frames (more batches than slots) gets them intact, one that lets
    each batch go gets later batches in the same few slots, and both match frames prepared here."""
    from clipdepth.data import loader
    from clipdepth.data.synthetic import SyntheticScenes
    from clipdepth.data.transforms import Preprocessor

    frames = SyntheticScenes("indoor", "train", 24, 48, 64, seed=0)
    pre = Preprocessor.create(28, None, resize="linear")
    expected = [f for b in prepared_batches(frames, pre, 2, 0, keep_image=True) for f in b]
    sent = []  # per shipment: whether its buffer crossed (a fresh segment, or a slot's first batch)
    unpack = loader._Unpacker.__call__
    monkeypatch.setattr(loader._Unpacker, "__call__", lambda self, s: sent.append(s.buffer is not None) or unpack(self, s))

    kept = [f for b in prepared_batches(frames, pre, 2, 2, keep_image=True) for f in b]  # 12 batches, 8 slots
    assert len(kept) == 24 and sent.count(True) == 12  # every slot in use: fresh segments after the 8
    for a, b in zip(expected, kept, strict=True):
        assert torch.equal(a.image, b.image) and torch.equal(a.depth, b.depth)
        assert np.array_equal(a.sample.image, b.sample.image) and np.array_equal(a.sample.depth, b.sample.depth)

    sent.clear()
    for i, batch in enumerate(prepared_batches(frames, pre, 2, 2, keep_image=True)):
        for a, b in zip(expected[2 * i : 2 * i + 2], batch, strict=True):
            assert torch.equal(a.image, b.image) and np.array_equal(a.sample.image, b.sample.image)
        del batch, a, b  # let go: the slot may be filled again
    assert len(sent) == 12 and sent.count(True) <= 2 * loader.SLOTS_PER_WORKER and sent.count(False) >= 4


def test_on_the_fly_training_with_two_workers_gives_the_same_weights(tiny_cfg, tmp_path):
    heads = {}
    for workers in (0, 2):
        cfg = dataclasses.replace(
            with_train(tiny_cfg, encode_on_the_fly=True, num_workers=workers, max_epochs=2), output_dir=str(tmp_path / f"w{workers}")
        )
        exp = Experiment.create(cfg)
        exp.train(cfg.output_dir)
        heads[workers] = exp.model.head.state_dict()
    assert all(torch.equal(heads[0][k], heads[2][k]) for k in heads[0])


def test_evaluation_with_two_workers_gives_the_same_metrics(tiny_cfg, tmp_path):
    from clipdepth.evaluation.checkpoint import evaluate_checkpoint
    from clipdepth.models import PureCLIPDepth

    torch.manual_seed(0)
    checkpoint = PureCLIPDepth.build(tiny_cfg).save_pretrained(tmp_path / "ckpt")
    summaries = [evaluate_checkpoint(checkpoint, workers=w, out=tmp_path / f"eval{w}")[0] for w in (0, 2)]
    assert summaries[0] == {**summaries[1], "checkpoint": summaries[0]["checkpoint"]}
    assert (tmp_path / "eval0" / "per_image.csv").read_text() == (tmp_path / "eval2" / "per_image.csv").read_text()


def test_a_bad_frame_read_by_a_worker_is_one_line_naming_it(tmp_path):
    from clipdepth.data.folder import DepthFolder
    from clipdepth.errors import DataError
    from PIL import Image

    (tmp_path / "rgb").mkdir()
    (tmp_path / "depth").mkdir()
    for i in range(3):
        Image.fromarray(np.full((8, 8, 3), 9 * i, np.uint8)).save(tmp_path / "rgb" / f"{i}.png")
        Image.fromarray(np.full((8, 8), 1000, np.uint16)).save(tmp_path / "depth" / f"{i}.png")
    (tmp_path / "rgb" / "1.png").write_bytes(b"not a png")
    failed: list[str] = []
    kept = [f.sample.name for b in prepared_batches(DepthFolder(tmp_path), None, 2, 2, skip_errors=True, failed=failed) for f in b]
    assert kept == ["0", "2"] and len(failed) == 1 and "1.png" in failed[0] and "\n" not in failed[0]
    with pytest.raises(DataError, match=r"1\.png") as err:
        list(prepared_batches(DepthFolder(tmp_path), None, 2, 2))
    assert "\n" not in str(err.value) and "Traceback" not in str(err.value)


# -- the compact depth ---------------------------------------------------------------------------
def test_16_bit_depth_keeps_validity_and_the_files_own_precision():
    millimetres = np.array([[0, 1, 999, 65535], [1234, 0, 5, 10000]], np.uint16)
    nyu = millimetres.astype(np.float32) / 1000  # as NYU's loader decodes its PNGs
    assert file_scale(nyu) == 1000.0 and file_scale(millimetres.astype(np.float32) / 256) == 256.0
    assert file_scale(np.array([[0.1234567]], np.float32)) is None
    units, scale = quantize(torch.from_numpy(nyu), file_scale(nyu))
    assert scale == 1000.0 and torch.equal(units.int(), torch.from_numpy(millimetres.astype(np.int32)))
    # a float map: the finest scale that fits, every valid pixel stays valid (>= 1 unit)
    depth = torch.tensor([[0.0, 1e-9, 2.5, 40.0]])
    units, scale = quantize(depth)
    assert scale == pytest.approx(65535 / 40.0) and units.int().tolist() == [[0, 1, round(2.5 * scale), 65535]]
    for gt in (nyu, np.array([[0.0, 0.1234567, np.float32(3.3)]], np.float32)):
        data, scale = encode_gt(gt)
        assert np.array_equal(decode_gt(data, scale, gt.shape), gt)  # lossless, bit for bit


def float_depth_split(split: EncodedSplit, dataset, preprocessor) -> EncodedSplit:
    """The training split as the previous cache format held it: float32 input-size depth."""

    class FloatDepth:
        units = None  # read per batch, like packed depth

        def __init__(self, depth):
            self.depth = depth

        def __len__(self):
            return len(self.depth)

        def rows(self, index):
            return self.depth[index]

        def loaded_nbytes(self):
            return self.depth.numel() * self.depth.element_size()

    depth = torch.stack([f.depth for b in prepared_batches(dataset, preprocessor, 4, 0) for f in b])
    return dataclasses.replace(split, depth=FloatDepth(depth))


def test_the_compact_cache_gives_the_same_losses_and_metrics_to_1e_6(tiny_cfg, tmp_path):
    cfg = with_train(tiny_cfg, feature_cache=str(tmp_path / "cache"), log_every=1, residency="stream")
    cfg.pureclip.phase_steps = 1  # Embedding and Depth steps alternate
    exp = Experiment.create(cfg)
    compact, val = exp.encode("train", flip=False), exp.encode("val", flip=cfg.eval.tta)
    previous = float_depth_split(compact, get_dataset(cfg.data, "train"), exp.preprocessor)
    previous_val = dataclasses.replace(val, gt=[np.array(g) for g in val.gt])
    runs = {}
    for name, (train_split, val_split) in {"compact": (compact, val), "previous": (previous, previous_val)}.items():
        model = copy.deepcopy(exp.model)
        trainer = Trainer.single_dataset(model, cfg, train_split, val_split, exp.preprocessor, exp.protocol, tmp_path / name)
        torch.manual_seed(5)  # the same dropout masks
        losses = [r["loss"] for _, r in trainer.steps([torch.tensor([0, 3, 1, 5]), torch.tensor([2, 4, 0, 1])] * 3)]
        runs[name] = losses, trainer.validate()[0]
    (compact_losses, compact_metrics), (previous_losses, previous_metrics) = runs["compact"], runs["previous"]
    assert len(compact_losses) == 6
    np.testing.assert_allclose(compact_losses, previous_losses, rtol=0, atol=1e-6)
    for metric, value in previous_metrics.items():
        # to 1e-6, relative where a metric is not of order 1 (silog is in per cent: x 100)
        assert compact_metrics[metric] == pytest.approx(value, rel=1e-6, abs=1e-6), metric


def test_scoring_on_the_device_equals_scoring_with_numpy(tiny_cfg):
    exp = Experiment.create(tiny_cfg)
    val = exp.encode("val", flip=True)
    on_host = evaluate_encoded(exp.model, val, exp.preprocessor, exp.protocol, tta=True).mean()
    targets = ScoringTargets(val.gt, exp.protocol, exp.model.device)
    on_device = evaluate_encoded(exp.model, val, exp.preprocessor, exp.protocol, tta=True, targets=targets).mean()
    assert on_device.keys() == on_host.keys()
    assert all(on_device[k] == pytest.approx(on_host[k], rel=1e-12, abs=1e-12) for k in on_host)


def test_a_cache_in_the_previous_format_is_refused_with_one_line(tiny_cfg, tmp_path):
    cfg = with_train(tiny_cfg, feature_cache=str(tmp_path / "cache"))
    exp = Experiment.create(cfg)
    exp.encode("train", flip=False)
    index_path = tmp_path / "cache" / "train" / "cache.json"
    index = json.loads(index_path.read_text())
    index["key"]["format"] = 2
    index_path.write_text(json.dumps(index))
    with pytest.raises(CheckpointError, match=r"cache/train: feature cache written in format 2 .*builds the cache anew") as err:
        load_cache(tmp_path / "cache" / "train", index["key"])  # reading it: refused (a build rebuilds it)
    assert "\n" not in str(err.value)


def test_cache_info_reports_bytes_per_frame(tiny_cfg, tmp_path):
    cfg = with_train(tiny_cfg, feature_cache=str(tmp_path / "cache"))
    split = Experiment.create(cfg).encode("train", flip=False)
    info = cache_info(tmp_path / "cache" / "train")
    token_bytes = sum(int(np.prod(v.shape[1:])) * v.dtype.itemsize for v in split.arrays.values())
    assert info["purpose"] == "train" and info["feature_bytes_per_frame"] >= token_bytes
    assert info["bytes_per_frame"] == pytest.approx(info["feature_bytes_per_frame"] + info["depth_bytes_per_frame"])
    assert info["bytes_per_frame"] * info["frames"] == info["bytes"]


# -- residency and precision ---------------------------------------------------------------------
def test_the_device_resident_split_trains_exactly_as_the_streamed_one(tiny_cfg, tmp_path):
    cfg = with_train(tiny_cfg, feature_cache=str(tmp_path / "cache"), cache_shard_size=4)
    exp = Experiment.create(cfg)
    shards, val = exp.encode("train", flip=False), exp.encode("val", flip=True)
    heads = {}
    for residency in ("stream", "device"):
        model = copy.deepcopy(exp.model)
        run_cfg = with_train(cfg, residency=residency)
        trainer = Trainer.single_dataset(model, run_cfg, shards, val, exp.preprocessor, exp.protocol, tmp_path / residency)
        # the same code path a GPU takes, here on the CPU: every array a tensor on the device, the
        # depth decoded once into one uint16 tensor
        resident = trainer.sources[0].train.resident_on
        assert (resident == torch.device("cpu")) == (residency == "device")
        if residency == "device":
            assert all(isinstance(v, torch.Tensor) for v in trainer.sources[0].train.arrays.values())
            assert trainer.sources[0].train.depth.units.dtype == torch.uint16
        torch.manual_seed(3)
        trainer.fit()
        heads[residency] = model.head.state_dict()
    assert all(torch.equal(heads["stream"][k], heads["device"][k]) for k in heads["stream"])


def test_auto_residency_loads_what_fits_and_streams_what_does_not(tiny_cfg, tmp_path, monkeypatch):
    from clipdepth.training import trainer as trainer_module

    cfg = with_train(tiny_cfg, feature_cache=str(tmp_path / "cache"))
    shards = Experiment.create(cfg).encode("train", flip=False)
    assert shards.resident_on is None
    monkeypatch.setattr(trainer_module, "available_bytes", lambda device: shards.nbytes() * 2)
    assert trainer_module.place_training_split(shards, "cpu", "auto").resident_on == torch.device("cpu")
    monkeypatch.setattr(trainer_module, "available_bytes", lambda device: shards.nbytes())  # over 80 % of it
    assert trainer_module.place_training_split(shards, "cpu", "auto").resident_on is None
    # room for the depth alone: the rows stay on disk
    monkeypatch.setattr(trainer_module, "available_bytes", lambda device: shards.depth.loaded_nbytes() / 0.8 + 1)
    streamed = trainer_module.place_training_split(shards, "cpu", "auto")
    assert streamed.resident_on is None and not isinstance(streamed.arrays["tokens"], torch.Tensor)  # rows from disk
    # ... but its small 16-bit depth decoded once into host memory, the same values as per batch
    assert streamed.depth.units is not None and shards.depth.units is None
    frames = torch.tensor([3, 0, 5])
    assert torch.equal(streamed.depth.rows(frames), shards.depth.rows(frames))
    monkeypatch.setattr(trainer_module, "available_bytes", lambda device: 0)  # not even that fits: per batch
    assert trainer_module.place_training_split(shards, "cpu", "stream").depth.units is None


def losses_of(cfg, split, exp, tmp_path, name):
    trainer = Trainer.single_dataset(copy.deepcopy(exp.model), cfg, split, split, exp.preprocessor, exp.protocol, tmp_path / name)
    torch.manual_seed(7)
    return [r["loss"] for _, r in trainer.steps([torch.tensor([0, 1, 2, 3]), torch.tensor([4, 5, 0, 1])])]


@pytest.mark.parametrize("option, tolerance", [({"head_precision": "bf16"}, 2e-2), ({"compile_head": True}, 1e-4)])
def test_bf16_and_compiled_head_steps_stay_close_to_fp32(tiny_cfg, tmp_path, option, tolerance):
    """bf16 keeps 8 bits of mantissa: a loss within 2 % of fp32's; compiling changes only the
    order of floating-point operations: within 1e-4. Without dropout, whose compiled masks come
    from another generator."""
    tiny_cfg.pureclip.phase_steps, tiny_cfg.pureclip.dropout = 1, 0.0
    exp = Experiment.create(tiny_cfg)
    split = exp.encode("train", flip=False)
    reference = losses_of(tiny_cfg, split, exp, tmp_path, "fp32")
    changed = losses_of(with_train(tiny_cfg, **option), split, exp, tmp_path, "changed")
    np.testing.assert_allclose(changed, reference, rtol=tolerance)


def test_a_non_finite_loss_is_named_by_its_step_when_read_back_in_groups(tiny_cfg, tmp_path):
    from clipdepth.errors import TrainingError

    from .test_training import make_trainer

    trainer = make_trainer(tiny_cfg, tmp_path, log_every=4)
    trainer.sources[0].train.arrays["tokens"][5] = float("nan")
    batches = [torch.tensor([0, 1, 2, 3])] * 2 + [torch.tensor([4, 5, 6, 7])] + [torch.tensor([0, 1, 2, 3])]
    with pytest.raises(TrainingError, match=r"^step 3 \(depth\): the loss is nan"):
        list(trainer.steps(batches))


def test_a_split_loaded_from_the_cache_reads_its_frames_in_order(tiny_cfg, tmp_path):
    cfg = with_train(tiny_cfg, feature_cache=str(tmp_path / "cache"), cache_shard_size=2)
    exp = Experiment.create(cfg)
    fresh = encode_split(exp.model, get_dataset(cfg.data, "train"), exp.preprocessor, 4, purpose="train")
    exp.encode("train", flip=False)
    index = json.loads((tmp_path / "cache" / "train" / "cache.json").read_text())
    loaded = load_cache(tmp_path / "cache" / "train", index["key"])
    order = torch.tensor([5, 0, 3, 2])
    a = next(loaded.batches([order], torch.Generator().manual_seed(0)))
    b = next(fresh.batches([order], torch.Generator().manual_seed(0)))
    assert torch.equal(a.depth, b.depth) and a.frame_shapes == b.frame_shapes
    assert all(torch.equal(a.features[k], b.features[k]) for k in a.features)
