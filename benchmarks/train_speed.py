"""Seconds per training epoch from the on-disk feature cache vs running the encoder every step.

Both sides train PureCLIP-Depth's head through the same ``Trainer.steps`` on the same frames,
stored as real-format files (JPEG photos at quality 95, 16-bit millimetre PNG depth, read as the
"folder" dataset reads a user's data):

- **cached**: the cache is built once on disk (``build_cache``, its time reported apart) and
  training reads its memory-mapped shards as a run does with ``train.residency=stream``: each
  batch's token rows gathered and its depth PNGs decoded one batch ahead on a thread. The same
  split loaded into memory (``residency=device``, what an H100 gets for NYU) is timed beside it.
- **uncached**: ``OnTheFlySplit``: every step decodes its frames (in ``--workers`` processes,
  the library default when unset), preprocesses them and runs the frozen encoder.

``flop_bound`` = (encoder forward + head train step) / head train step FLOPs per batch of 8: the
speedup FLOPs alone allow. The encoder is counted on the meta device, where attention runs as
matmuls that ``FlopCounterMode`` sees (on a real CPU run the fused attention kernel is not
counted: 6.48 instead of 6.72 at the small size); the head's step is counted on a real batch.

Hand count at the paper's size (ViT-L/14 @ 336, width 1024, 24 layers, MLP 4096, 577 tokens,
projection 768), per image, 2 FLOPs per multiply-add:
  patch embedding 576 x 588 x 1024 x 2 = 0.694 GFLOP; per layer QKV + output projections
  8 x 577 x 1024^2 = 4.840, MLP 16 x 577 x 1024^2 = 9.681, attention (QK^T and AV)
  4 x 577^2 x 1024 = 1.364, so 15.885 x 24 = 381.23; projection of the 577 tokens to 768
  577 x 1024 x 768 x 2 = 0.908. Total 382.83 GFLOP per image, 3,062.6 per batch of 8, which the
  meta-device count reproduces (the script asserts it to 0.1 %). The head's train step at D = 768
  (11.8 M parameters, 576 tokens a frame) is about three times its forward, 2 x 11.8 M x 577, so
  ~41 GFLOP per image: flop_bound_full ~ (382.8 + 41) / 41 ~ 10.4.

    python benchmarks/train_speed.py                  # ViT-B/16 @ 224, 32 frames; then the full size on 8
    python benchmarks/train_speed.py --skip-full      # small size only (~4 min on 2 cores)

Last lines: ``flop_bound_full=``, then ``cache_speedup=<uncached/cached> flop_bound=<bound>``;
the goal is cache_speedup >= 0.85 x flop_bound.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch.utils.flop_counter import FlopCounterMode

from clipdepth.config import load_config
from clipdepth.data.folder import DepthFolder
from clipdepth.data.synthetic import SyntheticScenes
from clipdepth.encoders.clip import CLIPEncoder
from clipdepth.features import OnTheFlySplit
from clipdepth.features.cache import build_cache, cache_key, files_digest, frame_names, load_cache
from clipdepth.training.run import Experiment
from clipdepth.training.trainer import Trainer

TINY_TEXT = ["clip.random_init=true", "clip.text_hidden_size=64", "clip.text_num_layers=1", "clip.text_num_heads=2"]
# ViT-B/16 @ 224 with projection 512: the reference head shape at D = 512.
SMALL = TINY_TEXT + [
    "clip.image_size=224",
    "clip.patch_size=16",
    "clip.hidden_size=768",
    "clip.num_layers=12",
    "clip.num_heads=12",
    "clip.intermediate_size=3072",
    "clip.projection_dim=512",
]
# The paper's ViT-L/14 @ 336 with projection 768 (the demo recipe these start from is smaller).
FULL = TINY_TEXT + [
    "clip.image_size=336",
    "clip.patch_size=14",
    "clip.hidden_size=1024",
    "clip.num_layers=24",
    "clip.num_heads=16",
    "clip.intermediate_size=4096",
    "clip.projection_dim=768",
]
BATCH = 8
HAND_COUNT_FULL_GFLOP = 382.83 * BATCH


def write_frames(root: Path, n: int) -> DepthFolder:
    (root / "rgb").mkdir(parents=True)
    (root / "depth").mkdir()
    scenes = SyntheticScenes("indoor", "train", n, 240, 320, seed=0)
    for i in range(n):
        sample = scenes[i]
        Image.fromarray(sample.image).save(root / "rgb" / f"{i:05d}.jpg", quality=95)
        Image.fromarray(np.round(sample.depth * 1000).astype(np.uint16)).save(root / "depth" / f"{i:05d}.png")
    return DepthFolder(root, depth_scale=1000.0)


def encoder_gflop(cfg) -> float:
    """FLOPs of one encoder forward on a batch, counted on the meta device (attention as matmuls)."""
    with torch.device("meta"):
        encoder = CLIPEncoder.from_config(cfg.clip)
    with FlopCounterMode(display=False) as counter, torch.inference_mode():
        encoder(torch.empty(BATCH, 3, cfg.clip.image_size, cfg.clip.image_size, device="meta"))
    return counter.get_total_flops() / 1e9


def run_epoch(trainer: Trainer, n: int, generator: torch.Generator) -> tuple[float, float]:
    """One epoch as ``Trainer.fit`` runs it (without validation): wall and CPU seconds."""
    start, cpu_start = time.perf_counter(), time.process_time()
    order = torch.randperm(n, generator=generator)
    for _ in trainer.steps([order[i : i + BATCH] for i in range(0, n - BATCH + 1, BATCH)]):
        pass
    return time.perf_counter() - start, time.process_time() - cpu_start


def measure(overrides: list[str], frames: int, repeats: int, workers: int | None, label: str) -> dict[str, float]:
    # phase_steps = half an epoch: Embedding and Depth steps in equal shares, as a full run on average.
    cfg = load_config(
        "demo",
        overrides + ["train.batch_size=8", f"pureclip.phase_steps={max(frames // BATCH // 2, 1)}", "device=cpu", "train.log_every=10"],
    )
    exp = Experiment.create(cfg)
    model, pre = exp.model, exp.preprocessor
    with tempfile.TemporaryDirectory() as tmp:
        dataset = write_frames(Path(tmp) / "frames", frames)
        key = cache_key(model, pre, cfg.data, "train", False, frame_names(dataset), files_digest(dataset), "train")
        start = time.perf_counter()
        build_cache(Path(tmp) / "cache", model, dataset, pre, key, batch_size=BATCH, workers=workers)
        build_seconds = time.perf_counter() - start
        shards = load_cache(Path(tmp) / "cache", key)
        stream_cfg = load_config("demo", [*overrides, "train.residency=stream"])
        paths = {
            "cached": Trainer.single_dataset(model, stream_cfg, shards, shards, pre, exp.protocol, Path(tmp) / "a"),
            "cached_in_memory": Trainer.single_dataset(model, cfg, shards.resident("cpu"), shards, pre, exp.protocol, Path(tmp) / "b"),
            "uncached": Trainer.single_dataset(
                model, cfg, OnTheFlySplit(model, dataset, pre, workers=workers), shards, pre, exp.protocol, Path(tmp) / "c"
            ),
        }
        encoder = encoder_gflop(cfg)
        with FlopCounterMode(display=False) as counter:
            paths["cached_in_memory"].train_step(torch.arange(BATCH))
        head = counter.get_total_flops() / 1e9
        generator = torch.Generator().manual_seed(0)
        for trainer in paths.values():  # warm-up
            run_epoch(trainer, frames, generator)
        wall: dict[str, list[float]] = {name: [] for name in paths}
        cpu: dict[str, list[float]] = {name: [] for name in paths}
        for _ in range(repeats):  # interleaved, so that other load hits every path alike
            for name, trainer in paths.items():
                w, c = run_epoch(trainer, frames, generator)
                wall[name].append(w)
                cpu[name].append(c)
    med = {name: statistics.median(t) for name, t in wall.items()}
    print(
        f"[{label}] {frames} frames 240x320 (JPEG + PNG), batch {BATCH}, encoder {model.encoder.description}, "
        f"D = {model.encoder.embed_dim}, head {sum(p.numel() for p in model.head.parameters()) / 1e6:.1f}M params, "
        f"{torch.get_num_threads()} threads"
    )
    print(f"[{label}] cache build: {build_seconds:.2f} s ({build_seconds / frames * 1000:.0f} ms per frame)")
    for name in paths:
        print(
            f"[{label}] {name}: {med[name]:.2f} s/epoch (median of {repeats}: {', '.join(f'{t:.2f}' for t in wall[name])}); "
            f"CPU {statistics.median(cpu[name]):.2f} s"
        )
    print(f"[{label}] per batch: encoder forward {encoder:.1f} GFLOP, head train step {head:.1f} GFLOP")
    return {
        "encoder_gflop": encoder,
        "head_gflop": head,
        "flop_bound": (encoder + head) / head,
        "cache_speedup": med["uncached"] / med["cached"],
        "in_memory_speedup": med["uncached"] / med["cached_in_memory"],
        "cpu_speedup": statistics.median(cpu["uncached"]) / statistics.median(cpu["cached"]),
        "build_s_per_frame": build_seconds / frames,
        "cached_s_per_step": med["cached"] / (frames // BATCH),
        "uncached_s_per_step": med["uncached"] / (frames // BATCH),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--frames", type=int, default=32, help="training frames at the small size (a multiple of 8)")
    parser.add_argument("--full-frames", type=int, default=8, help="training frames at the paper's size")
    parser.add_argument("--repeats", type=int, default=5, help="timed epochs per path; medians are reported")
    parser.add_argument("--workers", type=int, default=None, help="decoding processes (default: the library's)")
    parser.add_argument("--skip-full", action="store_true", help="skip the run at the paper's size")
    args = parser.parse_args()

    full = None
    if not args.skip_full:
        full = measure(FULL, args.full_frames, 2, args.workers, "ViT-L/14@336")
        assert abs(full["encoder_gflop"] / HAND_COUNT_FULL_GFLOP - 1) < 1e-3, full["encoder_gflop"]
    small = measure(SMALL, args.frames, args.repeats, args.workers, "ViT-B/16@224")
    if full is not None:
        print(f"full size: cache_speedup_full={full['cache_speedup']:.3f} (in memory {full['in_memory_speedup']:.3f})")
        print(f"flop_bound_full={full['flop_bound']:.3f}")
    print(f"in-memory cache_speedup={small['in_memory_speedup']:.3f}; CPU-time speedup {small['cpu_speedup']:.3f}")
    goal = 0.85 * small["flop_bound"]
    print(f"goal cache_speedup >= 0.85 * flop_bound = {goal:.2f}: {'met' if small['cache_speedup'] >= goal else 'NOT met'}")
    print(f"cache_speedup={small['cache_speedup']:.3f} flop_bound={small['flop_bound']:.3f}")


if __name__ == "__main__":
    main()
