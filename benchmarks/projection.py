"""Projected time of PureCLIP-Depth's NYU cache build and 200-epoch training on one H100, written to
``benchmarks/projection.md``.

What is measured here, on this machine, by the same code the library runs:
- decoding and preprocessing one NYU-shaped frame (480 x 640 JPEG + 16-bit PNG -> crop + 336 x 336)
  in one worker process (``data_throughput.py``'s path), and decoding one training frame's
  compact depth (16-bit PNG, ``io.depth_store``), in milliseconds of one CPU core;
- bytes per cached training frame (``cache_size.py``'s shard writer);
- FLOPs per frame: the encoder forward at ViT-L/14 @ 336 (counted on the meta device, 382.8
  GFLOP, hand-checked in ``train_speed.py``), the head's train step and its forward at D = 768
  (``FlopCounterMode`` on a real batch).

What is assumed about the device (stated, not measured: no GPU was at hand) is the ``DEVICE``
table below: achieved bf16 throughput of the encoder and of the head's small matmuls, host-to-
device bandwidth, disk bandwidth and host cores. Each phase takes the longest of its parts
(they overlap: workers decode and the disk reads while the GPU computes), and says which bound it.

    python benchmarks/projection.py            # ~1-2 min; rewrites benchmarks/projection.md
"""
from __future__ import annotations

import copy
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from torch.utils.flop_counter import FlopCounterMode

sys.path.insert(0, str(Path(__file__).resolve().parent))
from cache_size import nyu_like_depths  # noqa: E402
from data_throughput import NYU_INPUT_CROP, write_pairs  # noqa: E402

from clipdepth.config import load_config  # noqa: E402
from clipdepth.data.folder import DepthFolder  # noqa: E402
from clipdepth.data.loader import prepared_batches  # noqa: E402
from clipdepth.data.transforms import Preprocessor  # noqa: E402
from clipdepth.features.cache import write_shard  # noqa: E402
from clipdepth.features.memory import EncodedSplit  # noqa: E402
from clipdepth.io.atomic import write_text_atomic  # noqa: E402
from clipdepth.io.depth_store import TrainingDepth, decode_png16, encode_png16, file_scale, quantize  # noqa: E402
from clipdepth.models import build_model  # noqa: E402

NYU_TRAIN, NYU_VAL, EPOCHS, BATCH = 24_231, 654, 200, 8
ENCODER_GFLOP = 382.83  # ViT-L/14 @ 336 forward per frame (train_speed.py's hand count)
DEVICE = {  # one H100 SXM (bf16 dense peak 989 TFLOP/s) in a host like the lent H200's: 16 cores
    "encoder_tflops": 0.45 * 989,  # a ViT-L forward at batch 64 under bf16 autocast: ~45 % of peak
    "head_tflops": 0.25 * 989,  # the head's 768/3072-wide matmuls on 4,608-row batches: ~25 %
    "pcie_gbps": 50.0,  # host-to-device, pinned memory, PCIe Gen5 x16
    "disk_gbps": 3.0,  # NVMe sequential read/write
    "cores": 16,  # host cores decoding in worker processes
    "hbm_gb": 80.0,  # H100 memory; 80 % may hold the training arrays (train.residency: auto)
    "step_launch_ms": 0.5,  # ~120 kernel launches of a head step (forward, loss, backward, AdamW) at ~4 us
}


def decode_ms_per_frame(frames: int = 32) -> float:
    """Milliseconds of one core to decode and prepare one NYU-shaped frame (one worker, median of 3)."""
    pre = Preprocessor.create(336, NYU_INPUT_CROP, resize="linear")
    with tempfile.TemporaryDirectory() as tmp:
        write_pairs(Path(tmp), frames)
        dataset = DepthFolder(tmp, depth_scale=1000.0)
        times = []
        for _ in range(4):
            start = time.perf_counter()
            for _ in prepared_batches(dataset, pre, BATCH, workers=1):
                pass
            times.append(time.perf_counter() - start)
    return statistics.median(times[1:]) / frames * 1000


def compact_frame() -> tuple[float, float]:
    """(bytes per cached training frame, ms to decode its depth PNG) on NYU-like depth."""
    depths = nyu_like_depths(8, [])
    pre = Preprocessor.create(336, NYU_INPUT_CROP, resize="linear")
    units = [quantize(pre.depths(d[None])[0], file_scale(d)) for d in depths]
    pngs = [encode_png16(u.numpy()) for u, _ in units]
    start = time.perf_counter()
    for _ in range(5):
        for png in pngs:
            decode_png16(png)
    decode_ms = (time.perf_counter() - start) / (5 * len(pngs)) * 1000
    n = len(depths)
    tokens = {"tokens": torch.zeros(n, 24, 24, 768, dtype=torch.float16), "cls": torch.zeros(n, 768, dtype=torch.float16)}
    split = EncodedSplit([str(i) for i in range(n)], tokens, None, np.array([d.shape for d in depths]),
                         depth=TrainingDepth.from_maps(units))
    with tempfile.TemporaryDirectory() as tmp:
        write_shard(Path(tmp), split)
        size = sum(p.stat().st_size for p in Path(tmp).glob("*.npy")) / n
    return size, decode_ms


def head_gflop_per_frame() -> tuple[float, float]:
    """(train step, forward) GFLOP per frame of the PureCLIP-Depth head at D = 768, K = 15."""
    from clipdepth.training.objectives.pureclip import PureCLIPObjective
    from clipdepth.features.memory import TrainBatch

    # A one-layer encoder (only the head is counted) with the paper's output: 24 x 24 patches of 768.
    cfg = load_config("demo", ["clip.image_size=336", "clip.patch_size=14", "clip.hidden_size=64", "clip.num_layers=1",
                               "clip.num_heads=2", "clip.intermediate_size=64", "clip.projection_dim=768",
                               "clip.text_hidden_size=64", "clip.text_num_layers=1", "clip.text_num_heads=2", "device=cpu"])
    model = build_model(cfg)
    objective = PureCLIPObjective(model, cfg, model.head, model.preprocessor())
    features = {"tokens": torch.randn(BATCH, 24, 24, 768), "cls": torch.randn(BATCH, 768)}
    batch = TrainBatch(features, torch.rand(BATCH, 336, 336) * 9 + 0.5, [(480, 640)] * BATCH, torch.zeros(BATCH, dtype=torch.long), 1)
    with FlopCounterMode(display=False) as train:
        objective.step(batch, 100, torch.Generator())  # a Depth step: it also upsamples to 336 x 336
    head = copy.deepcopy(model).eval()
    with FlopCounterMode(display=False) as forward, torch.no_grad():
        head.predict_from_features(features)
    return train.get_total_flops() / 1e9 / BATCH, forward.get_total_flops() / 1e9 / BATCH


def bound(parts: dict[str, float]) -> tuple[float, str]:
    name = max(parts, key=parts.get)
    return parts[name], name


def main() -> None:
    decode_ms = decode_ms_per_frame()
    frame_bytes, depth_decode_ms = compact_frame()
    head_train, head_forward = head_gflop_per_frame()
    d = DEVICE
    rows = []

    # Cache build: train frames once, val frames twice (mirrored for flip TTA), written once.
    encodes = NYU_TRAIN + 2 * NYU_VAL
    build = {
        "GPU compute": encodes * ENCODER_GFLOP / (d["encoder_tflops"] * 1e3),
        "decode": (NYU_TRAIN + NYU_VAL) * decode_ms / 1000 / d["cores"],
        "disk": (NYU_TRAIN + 2 * NYU_VAL) * frame_bytes / (d["disk_gbps"] * 1e9),
    }
    rows.append(("cache build (once)", build))

    train_bytes = NYU_TRAIN * frame_bytes
    resident = train_bytes <= 0.8 * d["hbm_gb"] * 1e9
    steps = EPOCHS * (NYU_TRAIN // BATCH)
    train = {"GPU compute": steps * BATCH * head_train / (d["head_tflops"] * 1e3),
             "kernel launches": steps * d["step_launch_ms"] / 1000}
    if not resident:
        train["disk"] = EPOCHS * train_bytes / (d["disk_gbps"] * 1e9)
        train["PCIe"] = EPOCHS * train_bytes / (d["pcie_gbps"] * 1e9)
        train["decode"] = EPOCHS * NYU_TRAIN * depth_decode_ms / 1000 / d["cores"]
    rows.append((f"200 epochs of head training ({'arrays resident in GPU memory' if resident else 'streamed'})", train))
    load = {"disk": train_bytes / (d["disk_gbps"] * 1e9), "decode": NYU_TRAIN * depth_decode_ms / 1000 / d["cores"]}
    if resident:
        rows.append(("loading the training arrays onto the GPU (once per run)", load))
    val = {"GPU compute": EPOCHS * NYU_VAL * 2 * head_forward / (d["head_tflops"] * 1e3)}
    rows.append(("200 validations (flip TTA, scored on the GPU)", val))

    total = sum(bound(parts)[0] for _, parts in rows)
    lines = [
        "# Projected NYU run of PureCLIP-Depth on one H100",
        "",
        "Written by `python benchmarks/projection.py`. Measured on this machine: "
        f"decode + preprocess {decode_ms:.1f} ms per NYU frame per core; compact training frame "
        f"{frame_bytes:,.0f} bytes (depth PNG decode {depth_decode_ms:.2f} ms); head train step "
        f"{head_train:.1f} GFLOP and forward {head_forward:.1f} GFLOP per frame at D = 768; encoder "
        f"{ENCODER_GFLOP} GFLOP per frame (ViT-L/14 @ 336, hand count). Assumed for the device (not measured): "
        + ", ".join(f"{k} {v:g}" for k, v in d.items()) + ".",
        "",
        f"NYU: {NYU_TRAIN:,} training frames ({train_bytes / 1e9:.1f} GB cached), {NYU_VAL} validation frames, "
        f"batch {BATCH}, {EPOCHS} epochs = {steps:,} steps.",
        "",
        "| phase | minutes | bound by | other parts (minutes) |",
        "|---|---:|---|---|",
    ]
    for name, parts in rows:
        seconds, by = bound(parts)
        others = ", ".join(f"{k} {v / 60:.1f}" for k, v in parts.items() if k != by) or "-"
        lines.append(f"| {name} | {seconds / 60:.1f} | {by} | {others} |")
    lines += ["", f"Total: **{total / 60:.0f} minutes** (cache build included; later runs on the same cache skip it).", ""]
    out = Path(__file__).resolve().parent / "projection.md"
    write_text_atomic(out, "\n".join(lines))
    print("\n".join(lines))
    print(f"projected_total_minutes={total / 60:.1f}")


if __name__ == "__main__":
    main()
