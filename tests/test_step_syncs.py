"""A training step queues its kernels without waiting for the device: no op of a PureCLIP-Depth,
TR2M or RSA step (batch drawn from a resident split, forward, losses, backward, optimiser, EMA) reads a
device value on the host (``clipdepth.training.op_count``)."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch
from torch import nn

from clipdepth.data.transforms import Preprocessor
from clipdepth.features.memory import EncodedSplit
from clipdepth.io.depth_store import TrainingDepth
from clipdepth.models.pureclip_depth import PureCLIPDepth, PureCLIPDepthHead
from clipdepth.models.rsa import RSA, RSAHead
from clipdepth.models.tr2m import TR2M, TR2MHead
from clipdepth.training.objectives import objective_class
from clipdepth.training.op_count import count_ops

FRAMES, BATCH, PATCH = 6, 4, 14


class _Encoder(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.patch_size = PATCH


def _depth(frames: int, h: int, w: int, g: torch.Generator) -> TrainingDepth:
    depth = torch.rand(frames, h, w, generator=g) * 9 + 0.5
    depth[:, ::3] = 0  # missing pixels
    return TrainingDepth.from_float(depth, 1000.0)


def _pureclip(cfg, g):
    """A tiled split with flips, so that tile and flip draws are made too."""
    tiles, grid, dim = 2, 2, 16
    model = PureCLIPDepth(cfg, _Encoder(), PureCLIPDepthHead(cfg.pureclip, dim))
    tokens = nn.functional.normalize(torch.randn(FRAMES * tiles, grid, grid, dim, generator=g), dim=-1).half()
    cls = nn.functional.normalize(torch.randn(FRAMES * tiles, dim, generator=g), dim=-1).half()
    arrays = {"tokens": tokens, "cls": cls}
    split = EncodedSplit(
        [str(i) for i in range(FRAMES)],
        arrays,
        {k: v.flip(0) for k, v in arrays.items()},
        np.full((FRAMES, 2), 48),
        _depth(FRAMES, grid * PATCH, tiles * grid * PATCH, g),
        tiles=tiles,
        flip_prob=0.5,
    )
    return model, split, Preprocessor.create(grid * PATCH, None, tiles)


def _tr2m(cfg, g):
    grid, dim, text_dim, lines = (2, 3), cfg.tr2m.image_encoder.hidden_size, 16, 3
    model = TR2M(cfg, _Encoder(), TR2MHead(cfg.tr2m, dim, text_dim, PATCH))
    h, w = grid[0] * PATCH, grid[1] * PATCH
    depth = _depth(FRAMES, h, w, g)
    arrays = {
        "image_tokens": torch.randn(FRAMES, *grid, dim, generator=g).half(),
        "relative": (1.0 / depth.rows(torch.arange(FRAMES)).clamp_min(0.5)).half(),
        "text": torch.randn(FRAMES, lines, text_dim, generator=g).half(),
        "text_lines": torch.tensor([1, 3, 2, 3, 1, 2]),
        "image": torch.randint(0, 256, (FRAMES, 3, h, w), generator=g, dtype=torch.uint8),
    }
    split = EncodedSplit([str(i) for i in range(FRAMES)], arrays, None, np.full((FRAMES, 2), 48), depth)
    return model, split, Preprocessor.create((h, w), None)


def _rsa(cfg, g):
    h, w, text_dim = 2 * PATCH, 3 * PATCH, 16
    model = RSA(cfg, _Encoder(), RSAHead(text_dim, cfg.rsa.scene_widths, cfg.rsa.head_widths))
    depth = _depth(FRAMES, h, w, g)
    arrays = {
        "relative": (1.0 / depth.rows(torch.arange(FRAMES)).clamp_min(0.5)).half(),
        "text": torch.randn(FRAMES, 3, text_dim, generator=g).half(),
        "text_lines": torch.tensor([1, 3, 2, 3, 1, 2]),
    }
    split = EncodedSplit([str(i) for i in range(FRAMES)], arrays, None, np.full((FRAMES, 2), 48), depth)
    return model, split, Preprocessor.create((h, w), None)


def _second_step(cfg, model, split, preprocessor):
    """The ops of the second of two steps (the first creates the optimiser state) and its record."""
    objective = objective_class(cfg.model)(model, cfg, model.head, preprocessor)
    tiles, samples = torch.Generator().manual_seed(1), torch.Generator().manual_seed(2)
    for step, frames in enumerate([torch.tensor([0, 2, 4, 5]), torch.tensor([3, 1, 5, 0])]):
        with count_ops() as counted:
            record = objective.step(split.random_tiles(frames, tiles, "cpu"), step, samples)
    return counted.count, record


def test_the_counter_counts_reads_to_the_host():
    x = torch.randn(5, requires_grad=True)
    with count_ops() as counted:
        x.sum().item()  # a deliberate sync
        x[x > 0].sum().backward()  # boolean-mask indexing
        bool((x > 0).any())
        torch.arange(3).to("meta")  # a copy from host memory to another device
        x.detach().view(5, 1)  # a view: neither a kernel nor a sync
    assert counted.count.host_syncs == 4, dict(counted.count.syncs)
    assert counted.count.syncs["_local_scalar_dense"] == 2 and counted.count.syncs["index"] == 1
    assert counted.count.kernels > 0 and "view" not in counted.count.ops


def test_a_pureclip_step_has_no_host_sync(tiny_cfg):
    cfg = dataclasses.replace(tiny_cfg, pureclip=dataclasses.replace(tiny_cfg.pureclip, phase_steps=1))
    count, record = _second_step(cfg, *_pureclip(cfg, torch.Generator().manual_seed(0)))
    assert record["phase"] == "depth"  # step 1: the Depth phase; step 0 (Embedding) ran too
    assert count.host_syncs == 0, dict(count.syncs)


def test_a_tr2m_step_has_no_host_sync(tiny_tr2m_cfg):
    count, record = _second_step(tiny_tr2m_cfg, *_tr2m(tiny_tr2m_cfg, torch.Generator().manual_seed(0)))
    assert count.host_syncs == 0, dict(count.syncs)
    # read back with the losses, every train.log_every steps
    assert isinstance(record["pseudo_gated"], torch.Tensor) and record["pseudo_gated"].dim() == 0


def test_an_rsa_step_has_no_host_sync(tiny_cfg):
    from clipdepth.config import config_to_dict, load_config_dict

    from .conftest import TINY_RSA

    cfg = load_config_dict(config_to_dict(tiny_cfg), TINY_RSA)
    count, record = _second_step(cfg, *_rsa(cfg, torch.Generator().manual_seed(0)))
    assert count.host_syncs == 0, dict(count.syncs)
    assert isinstance(record["loss"], torch.Tensor) and record["loss"].dim() == 0


def test_the_key_network_stops_at_the_pixel_features(tiny_tr2m_cfg):
    model, split, preprocessor = _tr2m(tiny_tr2m_cfg, torch.Generator().manual_seed(0))
    objective = objective_class("tr2m")(model, tiny_tr2m_cfg, model.head, preprocessor)
    calls = []
    for name in ("scale_head", "shift_head", "decoder"):
        getattr(objective.key_head, name).register_forward_hook(lambda *_, name=name: calls.append(name))
    objective.step(split.random_tiles(torch.arange(BATCH), torch.Generator().manual_seed(1)), 0, torch.Generator().manual_seed(2))
    assert calls == ["decoder"]
    features = split.features(torch.arange(BATCH))
    text = features["text"][:, 0]
    with torch.no_grad():
        assert torch.equal(
            model.head.pixel_features(features["image_tokens"], text), model.head(features["image_tokens"], text).pixel_features
        )


def test_pixel_features_of_a_head_with_global_factors_is_refused(tiny_tr2m_cfg):
    head = TR2MHead(dataclasses.replace(tiny_tr2m_cfg.tr2m, global_factor=True), 32, 16, PATCH)
    with pytest.raises(ValueError, match="global_factor"):
        head.pixel_features(torch.zeros(1, 2, 2, 32), torch.zeros(1, 16))


def test_a_tr2m_step_launches_at_most_a_third_of_the_old_kernels(tiny_tr2m_cfg):
    """Issue 23: a TR2M step counted 1,251-1,283 kernels before the steps were made host-free and 563
    after; a third of the old count is 417. The count depends on the ops, not on the sizes."""
    count, _ = _second_step(tiny_tr2m_cfg, *_tr2m(tiny_tr2m_cfg, torch.Generator().manual_seed(0)))
    assert count.kernels <= 417, dict(count.ops.most_common())
