"""TR2M: seconds per training epoch from cached frozen-part outputs vs recomputing them every step.

TR2M has three frozen parts per frame (Depth Anything for relative depth, DINOv2 for image tokens,
the CLIP text tower for every caption line), and only its head trains, so the feature cache pays
off more than for PureCLIP-Depth. Both paths run the very same ``Trainer.train_step``:

- cached: the training split encoded once (``encode_split``, the one-time cost, reported apart);
- on the fly: ``OnTheFlySplit``, which prepares the batch's frames and runs all frozen parts at
  every step (as ``train.encode_on_the_fly=true`` trains).

Random weights at the real architectures' shapes: Depth Anything small (ViT-S/14 backbone, DPT
neck) as the relative source, DINOv2 ViT-S/14 (``--dinov2-large`` for the paper's ViT-L/14), a
small CLIP text tower; the head at the paper's layer shapes for that image width. Epochs of the
two paths are interleaved after a warm-up and medians reported: only the ratio means anything
on a shared machine.

    python benchmarks/tr2m_train_speed.py                 # 16 frames at 224 x 294, ~3 min on 2 cores
    python benchmarks/tr2m_train_speed.py --device cuda --frames 64 --dinov2-large
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time

import torch

from clipdepth.config import load_config
from clipdepth.data import get_dataset
from clipdepth.features import OnTheFlySplit, encode_split
from clipdepth.training.run import Experiment
from clipdepth.training.trainer import Trainer

FROZEN = [
    "tr2m.relative.source=depth_anything",
    "tr2m.relative.random_init=true",  # Depth Anything small's shapes
    "tr2m.image_encoder.random_init=true",
    "tr2m.image_encoder.hidden_size=384",
    "tr2m.image_encoder.num_layers=12",
    "tr2m.image_encoder.num_heads=6",
    "tr2m.input_height=224",
    "tr2m.input_width=294",
    "tr2m.num_heads=6",
    "tr2m.neck_channels=192",
    "tr2m.decoder_channels=128",
    "tr2m.head_channels=64",
    "tr2m.head_hidden=32",
]
DINOV2_LARGE = [
    "tr2m.image_encoder.hidden_size=1024",
    "tr2m.image_encoder.num_layers=24",
    "tr2m.image_encoder.num_heads=16",
    "tr2m.num_heads=16",
]


def run_epoch(trainer: Trainer, n: int, batch_size: int, generator: torch.Generator) -> float:
    start = time.perf_counter()
    order = torch.randperm(n, generator=generator)
    for first in range(0, n, batch_size):
        trainer.train_step(order[first : first + batch_size])
    if torch.cuda.is_available():
        torch.cuda.synchronize()
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--frames", type=int, default=16, help="synthetic_indoor training frames (240 x 320)")
    parser.add_argument("--repeats", type=int, default=3, help="timed epochs per path; medians are reported")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--dinov2-large", action="store_true", help="DINOv2 ViT-L/14 (the paper's) instead of ViT-S/14")
    args = parser.parse_args()

    cfg = load_config(
        "demo_tr2m",
        FROZEN
        + (DINOV2_LARGE if args.dinov2_large else [])
        + [f"data.train_size={args.frames}", "train.batch_size=8", f"device={args.device}"],
    )
    exp = Experiment.create(cfg)
    model, pre, batch_size = exp.model, exp.preprocessor, cfg.train.batch_size
    dataset = get_dataset(cfg.data, "train")
    print(
        f"{len(dataset)} frames -> {cfg.tr2m.input_height}x{cfg.tr2m.input_width}, batch {batch_size}, "
        f"DINOv2 width {model.encoder.image.embed_dim}, head {sum(p.numel() for p in model.head.parameters()) / 1e6:.1f}M "
        f"params, device {args.device}, {torch.get_num_threads()} threads"
    )
    start = time.perf_counter()
    encoded = encode_split(model, dataset, pre, batch_size=batch_size, captions=exp.captions)
    cache_seconds = time.perf_counter() - start

    with tempfile.TemporaryDirectory() as out_dir:
        paths = {
            "cached": Trainer.single_dataset(model, cfg, encoded, encoded, pre, exp.protocol, out_dir),
            "on_the_fly": Trainer.single_dataset(
                model, cfg, OnTheFlySplit(model, dataset, pre, exp.captions), encoded, pre, exp.protocol, out_dir
            ),
        }
        generator = torch.Generator().manual_seed(0)
        for trainer in paths.values():  # warm-up
            run_epoch(trainer, len(dataset), batch_size, generator)
        times: dict[str, list[float]] = {name: [] for name in paths}
        for _ in range(args.repeats):  # interleaved: other load hits both paths alike
            for name, trainer in paths.items():
                times[name].append(run_epoch(trainer, len(dataset), batch_size, generator))
    med = {name: statistics.median(t) for name, t in times.items()}
    print(f"one-time cache build (encode_split): {cache_seconds:.2f} s")
    for name, values in times.items():
        print(f"{name}: {med[name]:.2f} s/epoch (median of {args.repeats}: {', '.join(f'{t:.2f}' for t in values)})")
    print(f"cache_speedup={med['on_the_fly'] / med['cached']:.2f}")


if __name__ == "__main__":
    main()
