"""Kernel launches and host syncs per training step, PureCLIP-Depth and TR2M, counted op by op.

One step here is what the trainer does per batch from a device-resident split: the batch drawn
(``EncodedSplit.random_tiles``: tile and flip draws, row gathers, depth decoding) and the
objective's step (forward, losses, backward, optimiser, TR2M's EMA key update). Each aten op it
dispatches is counted by ``clipdepth.training.op_count.count_ops`` (a TorchDispatchMode): on CUDA
an op that computes is about one kernel launch (views launch none and are not counted; a foreach
or fused op launches one per chunk of its tensor list). A host sync is an op whose result the host
must wait for (``.item()``/``bool()``/``.tolist()``, ``nonzero``, ``masked_select``, boolean-mask
indexing, ``unique``, ``equal``, ``repeat_interleave`` without ``output_size``, host-to-device
copies): the list is in ``op_count``'s docstring. The second step is counted (the first creates
the optimiser state).

Random weights at the papers' sizes: the PureCLIP-Depth head on ViT-L/14@336 tokens (width 1024,
projected to 768, 24 x 24 patches, 15 bins, NYU, batch 8) and the TR2M head on DINOv2-L tokens
(width 1024, 31 x 40 patches for 434 x 560, CLIP ViT-L/14 text 768, batch 8). The counts do not
depend on the image size, so ``--grid small`` (the default; 8 x 10 TR2M tokens, seconds on a CPU)
gives the same figures as ``--grid paper`` (minutes on a CPU).

Counted so on the code before the steps were made host-free (58e9837, the same script): PureCLIP-Depth
174 kernels and 8 host syncs per step, TR2M 1,283 kernels (its AdamW's per-parameter loop, as the CPU
runs it, included) and 81 host syncs. Now, on the CPU: PureCLIP-Depth 171 kernels, TR2M 396 (563 once
host-free, before TR2M's losses and head were cut down to fewer kernels), 0 host syncs each.

    python benchmarks/step_overhead.py                 # prints pureclip_*/tr2m_* kernels and syncs per step
    python benchmarks/step_overhead.py --grid paper --device cuda
"""

from __future__ import annotations

import argparse

import torch
from torch import nn

from clipdepth.config import load_config
from clipdepth.data.transforms import Preprocessor
from clipdepth.features.memory import EncodedSplit
from clipdepth.io.depth_store import TrainingDepth
from clipdepth.models.pureclip_depth import PureCLIPDepth, PureCLIPDepthHead
from clipdepth.models.tr2m import TR2M, TR2MHead
from clipdepth.training.objectives import objective_class
from clipdepth.training.op_count import OpCount, count_ops

BATCH, FRAMES, CAPTION_LINES = 8, 16, 3


class _Encoder(nn.Module):
    """Stands in for the frozen encoder: the step reads only its patch size."""

    def __init__(self, patch_size: int) -> None:
        super().__init__()
        self.patch_size = patch_size


def _depth(frames: int, height: int, width: int, max_depth: float, generator: torch.Generator) -> TrainingDepth:
    depth = torch.rand(frames, height, width, generator=generator) * max_depth * 1.1
    depth[:, ::7] = 0  # missing measurements, as real sensors leave
    return TrainingDepth.from_float(depth, 1000.0)


def pureclip(device: str, grid: int, generator: torch.Generator):
    cfg = load_config("pureclip_nyu", [f"device={device}"])
    dim, patch = cfg.clip.projection_dim, cfg.clip.patch_size
    model = PureCLIPDepth(cfg, _Encoder(patch), PureCLIPDepthHead(cfg.pureclip, dim)).to(device)
    tokens = nn.functional.normalize(torch.randn(FRAMES, grid, grid, dim, generator=generator), dim=-1)
    cls = nn.functional.normalize(torch.randn(FRAMES, dim, generator=generator), dim=-1)
    split = EncodedSplit(
        names=[str(i) for i in range(FRAMES)],
        arrays={"tokens": tokens.half(), "cls": cls.half()},
        flipped_arrays=None,
        shapes=torch.full((FRAMES, 2), 480).numpy(),
        depth=_depth(FRAMES, grid * patch, grid * patch, 10.0, generator),
    )
    return cfg, model, split


def tr2m(device: str, grid: tuple[int, int], generator: torch.Generator):
    cfg = load_config("tr2m_nyu", [f"device={device}"])
    t = cfg.tr2m
    dim, text_dim, patch = t.image_encoder.hidden_size, cfg.clip.projection_dim, t.image_encoder.patch_size
    model = TR2M(cfg, _Encoder(patch), TR2MHead(t, dim, text_dim, patch)).to(device)
    h, w = grid[0] * patch, grid[1] * patch
    depth = _depth(FRAMES, h, w, t.max_depth, generator)
    relative = 1.0 / depth.rows(torch.arange(FRAMES)).clamp_min(0.5)  # inverse-depth-like, as Depth Anything's
    arrays = {
        "image_tokens": torch.randn(FRAMES, *grid, dim, generator=generator).half(),
        "relative": relative.half(),
        "text": torch.randn(FRAMES, CAPTION_LINES, text_dim, generator=generator).half(),
        "text_lines": torch.randint(1, CAPTION_LINES + 1, (FRAMES,), generator=generator),
        "image": torch.randint(0, 256, (FRAMES, 3, h, w), generator=generator, dtype=torch.uint8),
    }
    split = EncodedSplit(
        names=[str(i) for i in range(FRAMES)], arrays=arrays, flipped_arrays=None, shapes=torch.full((FRAMES, 2), 480).numpy(), depth=depth
    )
    return cfg, model, split


def count_step(cfg, model, split: EncodedSplit, device: str) -> OpCount:
    """Ops of the second of two steps on a device-resident split (the first creates the optimiser state)."""
    split = split.resident(device)
    size = tuple(split.depth.units.shape[-2:])  # the step reads no preprocessing beyond the batch (NYU: no patch region)
    objective = objective_class(cfg.model)(model, cfg, model.head, Preprocessor.create(size, None))
    tiles = torch.Generator().manual_seed(1)
    samples = torch.Generator(device).manual_seed(2)
    order = torch.randperm(len(split), generator=torch.Generator().manual_seed(0))
    for step in range(2):
        with count_ops() as counted:
            batch = split.random_tiles(order[step * BATCH : (step + 1) * BATCH], tiles, device)
            objective.step(batch, step, samples)
    return counted.count


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cpu")
    parser.add_argument(
        "--grid",
        choices=("small", "paper"),
        default="small",
        help="token grids: paper (24 x 24 CLIP, 31 x 40 DINOv2) or small (6 x 6, 8 x 10)",
    )
    parser.add_argument("--ops", action="store_true", help="also list the ops of each step by count")
    args = parser.parse_args()
    paper = args.grid == "paper"
    generator = torch.Generator().manual_seed(0)
    for name, built in (
        ("pureclip", pureclip(args.device, 24 if paper else 6, generator)),
        ("tr2m", tr2m(args.device, (31, 40) if paper else (8, 10), generator)),
    ):
        counted = count_step(*built, args.device)
        if args.ops:
            print(f"# {name} ops: {dict(counted.ops.most_common())}")
            print(f"# {name} syncs: {dict(counted.syncs.most_common())}")
        print(f"{name}_kernels_per_step={counted.kernels}")
        print(f"{name}_host_syncs_per_step={counted.host_syncs}")


if __name__ == "__main__":
    main()
