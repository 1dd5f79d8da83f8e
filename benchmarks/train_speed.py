"""Seconds per training epoch with cached encoder features vs recomputing the encoder every step.

Cached: the training split is encoded once (``encode_split``, the one-time cost, reported apart)
and every step is ``Trainer.train_step`` on the in-memory ``EncodedSplit``. Uncached: every step
prepares its frames (uint8 -> float, resize to the encoder input, masked depth resize) and runs
the frozen encoder under inference_mode (``encode_split`` on just that batch), then takes the
very same ``Trainer.train_step``. Scenes are rendered once, before any timing, and shared by
both paths, so rendering is counted in neither (real data would add JPEG/PNG decoding to the
uncached path only).

``flop_bound`` is the speedup FLOPs alone allow: (encoder forward + head train step) / head train
step per batch, both counted with FlopCounterMode. The goal: cache_speedup >= 0.7 * flop_bound.

    python benchmarks/train_speed.py
    python benchmarks/train_speed.py --profile    # where a cached step spends its time
"""
from __future__ import annotations

import argparse
import statistics
import tempfile
import time

import torch
from torch.utils.flop_counter import FlopCounterMode

from clipdepth.config import load_config
from clipdepth.data import RGBDSample, get_dataset
from clipdepth.features import encode_split
from clipdepth.training.run import Experiment
from clipdepth.training.trainer import Trainer

# ViT-B/16 @ 224 with projection 512, so the head is the reference head at D = 512; the text
# tower only initialises the depth table, so it is kept tiny.
ENCODER = [
    "clip.random_init=true", "clip.image_size=224", "clip.patch_size=16",
    "clip.hidden_size=768", "clip.num_layers=12", "clip.num_heads=12",
    "clip.intermediate_size=3072", "clip.projection_dim=512",
    "clip.text_hidden_size=64", "clip.text_num_layers=1", "clip.text_num_heads=2",
]


class UncachedTrainer(Trainer):
    """``Trainer.train_step``, with the batch's features recomputed from its frames at every step."""

    def __init__(self, frames: list[RGBDSample], *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.frames = frames

    def train_step(self, index: torch.Tensor) -> dict[str, float]:
        batch = [self.frames[i] for i in index.tolist()]
        self.train_split = encode_split(self.model, batch, self.preprocessor, batch_size=len(batch))
        return super().train_step(torch.arange(len(batch)))


def run_epoch(trainer: Trainer, n: int, batch_size: int, generator: torch.Generator) -> tuple[float, float]:
    """One epoch as ``Trainer.fit`` runs it (without validation); returns its wall and CPU seconds.

    CPU seconds of this process are reported beside wall time because on a shared machine the
    wall time of one epoch swings with other processes' load far more than its CPU time does.
    """
    start, cpu_start = time.perf_counter(), time.process_time()
    order = torch.randperm(n, generator=generator)
    for first in range(0, n, batch_size):
        trainer.train_step(order[first : first + batch_size])
    return time.perf_counter() - start, time.process_time() - cpu_start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--frames", type=int, default=32, help="synthetic_indoor training frames (240 x 320)")
    parser.add_argument("--repeats", type=int, default=5, help="timed epochs per path; medians are reported")
    parser.add_argument("--profile", action="store_true", help="print a torch.profiler table of cached steps")
    args = parser.parse_args()

    # phase_steps = half an epoch: each timed epoch runs Embedding and Depth steps in equal shares,
    # as a full run (100-step phases over many epochs) does on average.
    steps_per_epoch = -(-args.frames // 8)
    cfg = load_config("demo", ENCODER + [
        f"data.train_size={args.frames}", "data.height=240", "data.width=320", "train.batch_size=8",
        f"pureclip.phase_steps={max(steps_per_epoch // 2, 1)}", "device=cpu",
    ])
    exp = Experiment.create(cfg)
    model, pre, batch_size = exp.model, exp.preprocessor, cfg.train.batch_size
    dataset = get_dataset(cfg.data, "train")
    frames = [dataset[i] for i in range(len(dataset))]
    print(
        f"{len(frames)} frames {cfg.data.height}x{cfg.data.width}, batch {batch_size}, encoder ViT-B/16 @ 224 "
        f"(D = {model.encoder.embed_dim}), head {sum(p.numel() for p in model.head.parameters()) / 1e6:.1f}M params, "
        f"{torch.get_num_threads()} threads"
    )

    start = time.perf_counter()
    encoded = encode_split(model, frames, pre, batch_size=batch_size)
    cache_seconds = time.perf_counter() - start

    with tempfile.TemporaryDirectory() as out_dir:
        cached = Trainer(model, cfg, encoded, encoded, pre, exp.protocol, out_dir)
        uncached = UncachedTrainer(frames, model, cfg, encoded, encoded, pre, exp.protocol, out_dir)

        index = torch.arange(batch_size)
        with FlopCounterMode(display=False) as counter, torch.inference_mode():
            model.encode(pre.images(torch.stack([torch.from_numpy(f.image) for f in frames[:batch_size]])))
        encoder_flops = counter.get_total_flops()
        with FlopCounterMode(display=False) as counter:
            cached.train_step(index)
        head_flops = counter.get_total_flops()
        flop_bound = (encoder_flops + head_flops) / head_flops

        if args.profile:
            with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU]) as prof:
                for _ in range(4):
                    cached.train_step(index)
            print(prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=25))

        generator = torch.Generator().manual_seed(0)
        paths = {"cached": cached, "uncached": uncached}
        for trainer in paths.values():  # warm-up
            run_epoch(trainer, len(frames), batch_size, generator)
        # Interleaved epochs, so that load from other processes hits both paths alike.
        times: dict[str, list[float]] = {name: [] for name in paths}
        cpu_times: dict[str, list[float]] = {name: [] for name in paths}
        for _ in range(args.repeats):
            for name, trainer in paths.items():
                wall, cpu = run_epoch(trainer, len(frames), batch_size, generator)
                times[name].append(wall)
                cpu_times[name].append(cpu)

    med = {name: statistics.median(t) for name, t in times.items()}
    cpu_med = {name: statistics.median(t) for name, t in cpu_times.items()}
    speedup = med["uncached"] / med["cached"]
    print(f"one-time cache build (encode_split): {cache_seconds:.2f} s")
    for name in paths:
        print(
            f"{name}: {med[name]:.2f} s/epoch (median of {args.repeats}: {', '.join(f'{t:.2f}' for t in times[name])}); "
            f"CPU {cpu_med[name]:.2f} s/epoch"
        )
    print(f"CPU-time speedup (less sensitive to other load): {cpu_med['uncached'] / cpu_med['cached']:.3f}")
    print(
        f"per batch of {batch_size}: encoder forward {encoder_flops / 1e9:.1f} GFLOP, head train step "
        f"{head_flops / 1e9:.1f} GFLOP; cached achieves {head_flops * steps_per_epoch / med['cached'] / 1e9:.1f} GFLOP/s, "
        f"uncached {(encoder_flops + head_flops) * steps_per_epoch / med['uncached'] / 1e9:.1f} GFLOP/s"
    )
    print(f"goal cache_speedup >= 0.7 * flop_bound = {0.7 * flop_bound:.2f}: {'met' if speedup >= 0.7 * flop_bound else 'NOT met'}")
    print(f"cache_speedup={speedup:.3f} flop_bound={flop_bound:.3f}")


if __name__ == "__main__":
    main()
