"""Projected time of two full training runs on 1 and 8 H100s, written to ``benchmarks/projection.md``:
PureCLIP-Depth on NYU (cache build + 200 epochs) and TR2M on the paper's 102K-frame mixture (NYU +
KITTI + VOID + C3VD: cache build + 20 epochs).

What is measured here, on this CPU, by the code the library runs:
- decoding and preprocessing one NYU-shaped frame (480 x 640 JPEG + 16-bit PNG) in one worker
  (``data_throughput.py``'s path), and PureCLIP-Depth's compact cached frame (bytes, depth decode);
- FLOPs per frame (``FlopCounterMode``): the frozen encoders on the meta device at full size
  (DINOv2 ViT-L/14 and Depth Anything small at 434 x 560 and 350 x 1204; CLIP ViT-L/14 @ 336 is
  ``train_speed.py``'s hand count), the heads' training step and forward at full width
  (PureCLIP-Depth D = 768 on 24 x 24 patches; TR2M 1024-d DINOv2 tokens, 768-d text, 434 x 560);
- kernels per step: every ATen operator that is not a view, counted with a ``TorchDispatchMode``
  around a real step (the batch's gather, forward, losses, backward, optimiser; TR2M's EMA key
  network), and per validation frame (forward), each taken as one kernel launch. AdamW is counted
  with its multi-tensor (foreach) kernels, as it runs on CUDA (on a CPU it would go tensor by tensor).

What is assumed (stated, not measured: no GPU was at hand) is the ``H100`` table below and the
``RUN`` facts (frame counts, bytes per TR2M frame) with their sources. Each phase takes the longest
of its parts where they overlap (workers decode and the disk reads while the GPU computes) and
says which binds it. A step whose host waits for the device (a host sync: ``.item()``, ``nonzero``,
a blocking copy) cannot queue the next step's launches ahead, so its time is compute + launches;
a host-free step (issue 23's other part) costs max(compute, launches).

    python benchmarks/projection.py            # ~2-4 min on 2 cores; rewrites benchmarks/projection.md
"""

from __future__ import annotations

import copy
import os
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from unittest import mock

import numpy as np
import torch
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils.flop_counter import FlopCounterMode

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from cache_size import nyu_like_depths  # noqa: E402
from conftest import TINY_ENCODER  # noqa: E402
from data_throughput import NYU_INPUT_CROP, write_pairs  # noqa: E402

from clipdepth.config import DINOv2Config, RelativeDepthConfig, load_config  # noqa: E402
from clipdepth.data.folder import DepthFolder  # noqa: E402
from clipdepth.data.loader import prepared_batches  # noqa: E402
from clipdepth.data.transforms import Preprocessor  # noqa: E402
from clipdepth.encoders.dinov2 import DINOv2Encoder  # noqa: E402
from clipdepth.encoders.relative import DepthAnythingSource  # noqa: E402
from clipdepth.features.cache import write_shard  # noqa: E402
from clipdepth.features.memory import EncodedSplit, TrainBatch  # noqa: E402
from clipdepth.io.atomic import write_text_atomic  # noqa: E402
from clipdepth.io.depth_store import TrainingDepth, decode_png16, encode_png16, file_scale, quantize  # noqa: E402
from clipdepth.models import build_model  # noqa: E402
from clipdepth.training.objectives.pureclip import PureCLIPObjective  # noqa: E402
from clipdepth.training.run import Experiment  # noqa: E402
from clipdepth.training.trainer import Trainer  # noqa: E402

BATCH = 8  # both recipes (pureclip_nyu, tr2m_nyu / tr2m_mixture)
ENCODER_GFLOP = 382.83  # CLIP ViT-L/14 @ 336 forward per frame (train_speed.py's hand count)
# CLIP ViT-L/14's text tower per caption line: 12 layers of width 768 on 77 tokens (the most a
# batch pads to), 12 * (24 n d^2 + 4 n^2 d) FLOPs; TR2M encodes every kept line of a frame.
TEXT_GFLOP_PER_LINE = 12 * (24 * 77 * 768**2 + 4 * 77**2 * 768) / 1e9
PEAK_BF16, PEAK_FP32 = 989.0, 67.0  # H100 SXM dense TFLOP/s (fp32 without TF32: torch's default matmul precision)
H100 = {  # one H100 SXM in a host like the lent one (16 cores); achieved fractions are assumptions
    "encoder_bf16_tflops": 0.45 * PEAK_BF16,  # a ViT-L forward at batch 64 under autocast: ~45 % of peak
    "encoder_fp32_tflops": 0.60 * PEAK_FP32,
    "head_bf16_tflops": 0.25 * PEAK_BF16,  # the heads' 768 / 1024-wide matmuls and convolutions: ~25 %
    "head_fp32_tflops": 0.60 * PEAK_FP32,
    "launch_us": 10.0,  # per kernel: issue 23 measured ~1.7 ms for a ~171-kernel PureCLIP step
    "pcie_gbps": 50.0,  # host-to-device, pinned memory, PCIe Gen5 x16
    "nvlink_gbps": 450.0,  # gradient all-reduce between the 8 GPUs of one node
    "disk_gbps": 3.0,  # NVMe sequential read/write
    "cores": 16,  # host cores decoding in worker processes
    "hbm_gb": 80.0,  # of which train.residency=auto loads the training arrays into 80 %
    "host_ram_gb": 128.0,
}
SCORE_KERNELS = 70  # scoring one validation frame today: ~70 ops (issue 23, counted)


@dataclass(frozen=True)
class Dataset:
    name: str
    frames: int  # the training list; clipdepth validates on a held-out data.val_fraction of it
    size: tuple[int, int]  # network input (H, W)
    frame: tuple[int, int]  # the stored frame (H, W) a worker decodes
    source: str


RUN = {  # the recipes' datasets; the frame counts and their sources
    "nyu_pureclip": [Dataset("NYU", 24_231, (336, 336), (480, 640), "BTS nyudepthv2_train_files_with_gt.txt")],
    "tr2m_mixture": [
        Dataset("NYU", 24_231, (434, 560), (480, 640), "BTS nyudepthv2_train_files_with_gt.txt"),
        Dataset("KITTI", 23_158, (350, 1204), (375, 1242), "BTS eigen_train_files_with_gt.txt"),
        Dataset("VOID", 45_000, (434, 560), (480, 640), "VOID's 48 training sequences, ~45K frames (approximate)"),
        Dataset("C3VD", 9_611, (434, 560), (1080, 1350), "the rest of the paper's 102K: its 15 training sequences (approximate)"),
    ],
}
VAL_FRACTION = 0.1  # data.val_fraction (data.val_source: held_out, the default)
TR2M_EPOCHS, NYU_EPOCHS = 20, 200
# Bytes per cached TR2M frame at 434 x 560 (issue 23), as benchmarks/cache_size.py measures them on
# the real NYU samples: as shipped (fp16 DINOv2 tokens 2.54 MB, the raw image 0.73 MB, relative depth
# 0.49 MB, ...: tr2m_bytes_per_train_frame_previous=) and in the compact format (JPEG image, PNG
# relative depth: tr2m_bytes_per_train_frame=).
TR2M_FRAME_BYTES = {"shipped": 3.92e6, "compact": 2.94e6}
# Kernels per step before the steps were made host-free (58e9837), counted by this script's own
# KernelCount on that code (AdamW in its CUDA multi-tensor form): what the steps launched as shipped.
KERNELS_BEFORE = {"pureclip": 196, "tr2m": 1018}


class KernelCount(TorchDispatchMode):
    """ATen operators that launch a kernel (views and empty allocations do not)."""

    NO_KERNEL = {"empty", "empty_strided", "empty_like", "detach", "lift_fresh", "set_", "resize_"}

    def __init__(self) -> None:
        super().__init__()
        self.kernels = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        if not (func.is_view or func.overloadpacket.__name__ in self.NO_KERNEL):
            self.kernels += 1
        return func(*args, **(kwargs or {}))


@dataclass
class Head:
    train_gflop: float  # per frame
    forward_gflop: float  # per frame
    kernels: float  # per step, as this checkout runs it
    kernels_before: float  # per step, before the steps were made host-free (KERNELS_BEFORE)
    forward_kernels: float  # per validation frame (batch 1)
    params: int


def decode_ms_per_frame(frames: int = 32) -> float:
    """Milliseconds of one core to decode and prepare one NYU-shaped frame (one worker, best of 3)."""
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
    return min(times[1:]) / frames * 1000  # the least disturbed of 3 on a shared machine


def compact_frame() -> tuple[float, float]:
    """(bytes per cached PureCLIP-Depth training frame, ms to decode its depth PNG) on NYU-like depth."""
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
    split = EncodedSplit(
        [str(i) for i in range(n)], tokens, None, np.array([d.shape for d in depths]), depth=TrainingDepth.from_maps(units)
    )
    with tempfile.TemporaryDirectory() as tmp:
        write_shard(Path(tmp), split)
        size = sum(p.stat().st_size for p in Path(tmp).glob("*.npy")) / n
    return size, decode_ms


def counted(run) -> tuple[float, KernelCount]:
    """(FLOPs, kernel counts) of ``run()``, AdamW taking its CUDA default (foreach) here too."""
    with (
        FlopCounterMode(display=False) as flops,
        KernelCount() as kernels,
        mock.patch("torch.optim.adam._default_to_fused_or_foreach", lambda *a, **k: (False, True)),
    ):
        run()
    return flops.get_total_flops(), kernels


def pureclip_head() -> Head:
    """The PureCLIP-Depth head at D = 768, K = 15: an Embedding and a Depth step (a run has them in
    equal shares) and a forward, on the encoder's real output shape (24 x 24 patches)."""
    cfg = load_config(
        "demo",
        [
            "clip.image_size=336",
            "clip.patch_size=14",
            "clip.hidden_size=64",
            "clip.num_layers=1",
            "clip.num_heads=2",
            "clip.intermediate_size=64",
            "clip.projection_dim=768",
            "clip.text_hidden_size=64",
            "clip.text_num_layers=1",
            "clip.text_num_heads=2",
            "pureclip.phase_steps=100",
            "device=cpu",
        ],
    )
    model = build_model(cfg)
    objective = PureCLIPObjective(model, cfg, model.head, model.preprocessor())
    features = {"tokens": torch.randn(BATCH, 24, 24, 768), "cls": torch.randn(BATCH, 768)}
    batch = TrainBatch(features, torch.rand(BATCH, 336, 336) * 9 + 0.5, [(480, 640)] * BATCH, torch.zeros(BATCH, dtype=torch.long), 1)
    steps = [counted(lambda s=s: objective.step(batch, s, torch.Generator())) for s in (0, 100)]  # Embedding, Depth
    head = copy.deepcopy(model).eval()
    one = {k: v[:1] for k, v in features.items()}
    with torch.no_grad():
        forward, kernels = counted(lambda: head.predict_from_features(one))
    return Head(
        train_gflop=statistics.mean(f for f, _ in steps) / 1e9 / BATCH,
        forward_gflop=forward / 1e9,
        kernels=statistics.mean(k.kernels for _, k in steps),
        kernels_before=KERNELS_BEFORE["pureclip"],
        forward_kernels=kernels.kernels,
        params=sum(p.numel() for p in model.head.parameters() if p.requires_grad),
    )


def tr2m_head(tmp: Path) -> Head:
    """The TR2M head at the paper's size (DINOv2 ViT-L's 1024-d tokens, CLIP ViT-L's 768-d text, 434 x
    560; the frozen parts one layer deep: only their output shapes matter), a step as the trainer
    runs it (the batch's gather from device-resident arrays, the losses, AdamW, the EMA key network)."""
    overrides = [f"clip.{k}={v}" for k, v in TINY_ENCODER.items() if k != "projection_dim"] + [
        "model=tr2m",
        "clip.projection_dim=768",
        "tr2m.image_encoder.random_init=true",
        "tr2m.image_encoder.num_layers=1",
        "tr2m.relative.source=oracle",
        "data.train_size=8",
        "data.val_size=1",
        "data.height=480",
        "data.width=640",
        "tr2m.input_height=434",
        "tr2m.input_width=560",
        "train.batch_size=8",
        "train.residency=device",
        "eval.tta=false",
        "device=cpu",
        f"output_dir={tmp / 'run'}",
    ]
    cfg = load_config("demo", overrides)  # the synthetic indoor scenes; tr2m's sizes default to the paper's
    exp = Experiment.create(cfg)
    split = exp.encode("train", flip=False)
    trainer = Trainer.single_dataset(exp.model, cfg, split, split, exp.preprocessor, exp.protocol, tmp / "run")
    source = trainer.sources[0]

    def step():
        trainer._step(next(source.train.batches([torch.arange(BATCH)], trainer.tile_generators[0], trainer.device)))

    step()  # the first step builds the optimiser's state
    flops, kernels = counted(step)
    one = split.features(slice(0, 1))
    with torch.no_grad():
        forward, forward_kernels = counted(lambda: exp.model.eval().predict_from_features(one))
    return Head(
        train_gflop=flops / 1e9 / BATCH,
        forward_gflop=forward / 1e9,
        kernels=kernels.kernels,
        kernels_before=KERNELS_BEFORE["tr2m"],
        forward_kernels=forward_kernels.kernels,
        params=sum(p.numel() for p in exp.model.head.parameters()),
    )


def tr2m_encoder_gflop(size: tuple[int, int]) -> float:
    """The frozen parts of one TR2M frame at ``size``: DINOv2 ViT-L/14 and Depth Anything small (counted
    on the meta device at full size) and CLIP ViT-L/14's text tower on 15 caption lines (the released
    captions: about 15 per frame)."""
    with torch.device("meta"):
        image = DINOv2Encoder.from_config(DINOv2Config(random_init=True))
        relative = DepthAnythingSource.from_config(RelativeDepthConfig(random_init=True))
    x = torch.empty(1, 3, *size, device="meta")
    with FlopCounterMode(display=False) as counter, torch.inference_mode():
        image(x)
        relative(x, None, ["frame"])
    return counter.get_total_flops() / 1e9 + 15 * TEXT_GFLOP_PER_LINE


# -- the cost model -------------------------------------------------------------------------------
def bound(parts: dict[str, float]) -> tuple[float, str]:
    name = max(parts, key=parts.get)
    return parts[name], name


def tflops(kind: str, precision: str) -> float:
    return H100[f"{kind}_{precision}_tflops"] * 1e3  # GFLOP/s


def training(steps: float, step_gflop: float, head: Head, precision: str, host_free: bool, gpus: int) -> dict[str, float]:
    """Seconds of ``steps`` optimisation steps per GPU: compute, launches and (several GPUs) the
    gradient all-reduce, which DDP overlaps with the backward pass."""
    compute = steps * step_gflop / tflops("head", precision)
    # the steps with host syncs are the code before issue 23, with its kernel count
    launches = steps * (head.kernels if host_free else head.kernels_before) * H100["launch_us"] / 1e6
    parts = (
        {"GPU compute": compute, "kernel launches": launches} if host_free else {"GPU compute + launches (host syncs)": compute + launches}
    )
    if gpus > 1:  # ring all-reduce of fp32 gradients
        parts["all-reduce"] = steps * 2 * (gpus - 1) / gpus * head.params * 4 / (H100["nvlink_gbps"] * 1e9)
    return parts


@dataclass
class Scenario:
    name: str
    precision: str  # head and frozen encoders ("fp32": as shipped for TR2M)
    encoder_precision: str
    host_free: bool  # steps that never wait for the host (and batched validation on the device)
    sharded: bool  # one shard per GPU, validation split across ranks
    tr2m_bytes: float


SHIPPED = Scenario(
    "as shipped (fp32 head; host syncs in steps; validation frame by frame on rank 0)",
    "fp32",
    "fp32",
    False,
    False,
    TR2M_FRAME_BYTES["shipped"],
)
BF16 = Scenario(
    "bf16 alone (the code before with today's bf16 default; host syncs in steps)", "bf16", "bf16", False, False, TR2M_FRAME_BYTES["shipped"]
)
ISSUE = Scenario(
    "issue 23 built (bf16; host-free steps; batched, split validation; one shard per GPU; compact cache)",
    "bf16",
    "bf16",
    True,
    True,
    TR2M_FRAME_BYTES["compact"],
)


def validation(frames: float, forwards: int, head: Head, sc: Scenario, gpus: int, gflop: float) -> dict[str, float]:
    """Seconds of validating ``frames`` (``forwards`` per frame: 2 with flip TTA) once."""
    share = gpus if sc.sharded else 1  # today rank 0 alone validates
    n = frames / share
    compute = n * forwards * gflop / tflops("head", sc.precision)
    if sc.host_free:  # batches of eval.batch_size, scored on the device in one pass per batch
        kernels = n / BATCH * (forwards * head.forward_kernels + SCORE_KERNELS)
        return {"GPU compute": compute, "kernel launches": kernels * H100["launch_us"] / 1e6}
    kernels = n * (forwards * head.forward_kernels + SCORE_KERNELS)
    return {"GPU compute + launches (one frame at a time)": compute + kernels * H100["launch_us"] / 1e6}


def nyu_rows(sc: Scenario, gpus: int, m: dict) -> list[tuple[str, dict[str, float]]]:
    head: Head = m["pureclip"]
    (nyu,) = RUN["nyu_pureclip"]
    val = round(VAL_FRACTION * nyu.frames)
    train = nyu.frames - val
    frame_bytes = m["pureclip_frame_bytes"]
    # Cache build (once): training frames once, validation frames twice (mirrored for flip TTA).
    encodes = train + 2 * val
    build = {  # CLIP runs in 16 bits either way: fp16 as released (and shipped), bf16 now, at the same speed
        "GPU compute": encodes * ENCODER_GFLOP / tflops("encoder", "bf16") / gpus,
        "host decode": nyu.frames * m["decode_ms"] / 1000 / H100["cores"],
        "disk write": encodes * frame_bytes / (H100["disk_gbps"] * 1e9),
    }
    rows = [("cache build (once; shared by later runs)", build)]
    train_bytes = train * frame_bytes
    per_gpu = train_bytes / gpus if sc.sharded else train_bytes
    load = {"disk read": train_bytes / (H100["disk_gbps"] * 1e9), "PCIe": per_gpu / (H100["pcie_gbps"] * 1e9)}
    rows.append((f"training arrays onto the GPU{'s' if gpus > 1 else ''} ({per_gpu / 1e9:.0f} GB each)", load))
    steps = NYU_EPOCHS * (train // (BATCH * gpus))
    rows.append(
        (
            f"{NYU_EPOCHS} epochs of head training ({steps:,} steps per GPU, batch {BATCH} per GPU)",
            training(steps, BATCH * head.train_gflop, head, sc.precision, sc.host_free, gpus),
        )
    )
    one = validation(val, 2, head, sc, gpus, head.forward_gflop)
    rows.append((f"{NYU_EPOCHS} validations ({val:,} frames, flip TTA)", {k: v * NYU_EPOCHS for k, v in one.items()}))
    return rows


def tr2m_rows(sc: Scenario, gpus: int, m: dict) -> list[tuple[str, dict[str, float]]]:
    head: Head = m["tr2m"]
    sets = RUN["tr2m_mixture"]
    ratio = {d.name: m["tr2m_tokens"][d.size] / m["tr2m_tokens"][(434, 560)] for d in sets}  # the head scales with tokens
    val = {d.name: round(VAL_FRACTION * d.frames) for d in sets}
    train = {d.name: d.frames - val[d.name] for d in sets}
    n_train, n_val = sum(train.values()), sum(val.values())
    frame_bytes = {d.name: sc.tr2m_bytes * ratio[d.name] for d in sets}
    build = {
        "GPU compute": sum(d.frames * m["tr2m_encoder"][d.size] for d in sets) / tflops("encoder", sc.encoder_precision) / gpus,
        "host decode": sum(d.frames * m["decode_ms"] * d.frame[0] * d.frame[1] / (480 * 640) for d in sets) / 1000 / H100["cores"],
        "disk write": sum(d.frames * frame_bytes[d.name] for d in sets) / (H100["disk_gbps"] * 1e9),
    }
    rows = [("cache build (once; shared by later runs)", build)]
    train_bytes = sum(train[d.name] * frame_bytes[d.name] for d in sets)
    per_gpu = train_bytes / gpus if sc.sharded else train_bytes
    resident = per_gpu <= 0.8 * H100["hbm_gb"] * 1e9
    steps_per_epoch = sum(train.values()) / (BATCH * gpus)
    step_gflop = BATCH * head.train_gflop * sum(train[d.name] * ratio[d.name] for d in sets) / n_train
    parts = training(TR2M_EPOCHS * steps_per_epoch, step_gflop, head, sc.precision, sc.host_free, gpus)
    if resident:
        rows.append(
            (
                f"training arrays onto the GPU{'s' if gpus > 1 else ''} ({per_gpu / 1e9:.0f} GB each)",
                {"disk read": train_bytes / (H100["disk_gbps"] * 1e9), "PCIe": per_gpu / (H100["pcie_gbps"] * 1e9)},
            )
        )
    else:  # read from the cache's shards every epoch; all ranks share one disk
        parts["disk stream"] = TR2M_EPOCHS * train_bytes / (H100["disk_gbps"] * 1e9)
        parts["PCIe"] = TR2M_EPOCHS * train_bytes / gpus / (H100["pcie_gbps"] * 1e9)  # each rank its batches
    where = "resident in GPU memory" if resident else f"streamed from disk, {train_bytes / 1e9:.0f} GB an epoch"
    rows.append((f"{TR2M_EPOCHS} epochs of head training ({n_train:,} frames, {where})", parts))
    forward = m["tr2m"].forward_gflop * sum(val[d.name] * ratio[d.name] for d in sets) / n_val
    one = validation(n_val, 1, head, sc, gpus, forward)
    if not sc.host_free:  # re-read from the shards every epoch
        one["disk re-read"] = sum(val[d.name] * frame_bytes[d.name] for d in sets) / (H100["disk_gbps"] * 1e9)
    rows.append((f"{TR2M_EPOCHS} validations ({n_val:,} frames, no TTA)", {k: v * TR2M_EPOCHS for k, v in one.items()}))
    return rows


def table(title: str, scenarios: list[Scenario], rows_of, gpus: int, m: dict) -> tuple[list[str], dict[str, float]]:
    lines, totals = [f"### {title}, {gpus} H100{'s' if gpus > 1 else ''}", ""], {}
    for sc in scenarios:
        rows = rows_of(sc, gpus, m)
        total = sum(bound(parts)[0] for _, parts in rows)
        totals[sc.name] = total
        lines += [
            f"**{sc.name}: {total / 60:.0f} minutes**",
            "",
            "| phase | minutes | bound by | other parts (minutes) |",
            "|---|---:|---|---|",
        ]
        for name, parts in rows:
            seconds, by = bound(parts)
            others = ", ".join(f"{k} {v / 60:.1f}" for k, v in parts.items() if k != by) or "-"
            lines.append(f"| {name} | {seconds / 60:.1f} | {by} | {others} |")
        lines.append("")
    return lines, totals


def main() -> None:
    torch.manual_seed(0)
    m = {"decode_ms": decode_ms_per_frame()}
    m["pureclip_frame_bytes"], m["depth_decode_ms"] = compact_frame()
    m["pureclip"] = pureclip_head()
    with tempfile.TemporaryDirectory() as tmp:
        m["tr2m"] = tr2m_head(Path(tmp))
    sizes = {d.size for d in RUN["tr2m_mixture"]}
    m["tr2m_encoder"] = {s: tr2m_encoder_gflop(s) for s in sizes}
    m["tr2m_tokens"] = {s: (s[0] // 14) * (s[1] // 14) for s in sizes}
    p, t = m["pureclip"], m["tr2m"]
    d = H100
    lines = [
        "# Projected training runs on 1 and 8 H100s",
        "",
        "Written by `python benchmarks/projection.py` (it measures on the CPU it runs on and projects; no GPU "
        "was used). Every total includes the cache build, which later runs on the same cache skip.",
        "",
        "## Measured here",
        "",
        f"- Host decode + preprocess: {m['decode_ms']:.1f} ms per 480 x 640 NYU frame per core (load average "
        f"{os.getloadavg()[0]:.1f} on {os.cpu_count()} cores while measuring) (scaled by the stored "
        "frame's pixels for the other datasets); PureCLIP-Depth's cached training frame "
        f"{m['pureclip_frame_bytes']:,.0f} bytes.",
        f"- PureCLIP-Depth head (D = 768, K = 15, 24 x 24 patches): train step {p.train_gflop:.1f} GFLOP and forward "
        f"{p.forward_gflop:.1f} GFLOP per frame; **{p.kernels:.0f} kernels per step** (batch {BATCH}), {p.forward_kernels} "
        f"per validation forward; {p.params:,} trained parameters. Frozen CLIP ViT-L/14 @ 336: {ENCODER_GFLOP} GFLOP per frame.",
        f"- TR2M head (1024-d DINOv2 tokens, 768-d text, 434 x 560): train step {t.train_gflop:.1f} GFLOP and forward "
        f"{t.forward_gflop:.1f} GFLOP per frame; **{t.kernels:.0f} kernels per step** (batch {BATCH}, EMA key network "
        f"included), {t.forward_kernels} per validation forward; {t.params:,} parameters. Frozen parts (DINOv2 ViT-L/14 + "
        "Depth Anything small + CLIP text on 15 caption lines): "
        + ", ".join(f"{v:.0f} GFLOP per frame at {s[0]} x {s[1]}" for s, v in sorted(m["tr2m_encoder"].items()))
        + ".",
        "- Host syncs per step: counted by `benchmarks/step_overhead.py`, and on CUDA by `benchmarks/gpu_check.sh`.",
        "",
        "## Assumed",
        "",
        "- One H100 SXM: " + ", ".join(f"{k} {v:g}" for k, v in d.items()) + f" (peaks: bf16 {PEAK_BF16:g}, fp32 "
        f"{PEAK_FP32:g} TFLOP/s dense; fp32 matmuls without TF32, torch's default). Validation scoring: {SCORE_KERNELS} "
        "kernels per frame today (issue 23), per batch once batched.",
        "- Precision: clipdepth's defaults are now bf16 on CUDA for the head's step and validation "
        "(`train.head_precision: auto`) and for the frozen encoders (`clip.precision`, `tr2m.*.precision`: `auto`); "
        "`--config variants/released_precision` runs each release's (PureCLIP-Depth's CLIP fp16, at bf16's speed; "
        "everything else fp32). As shipped before, the head and TR2M's encoders ran in fp32.",
        "- NYU (PureCLIP-Depth, recipe `pureclip_nyu`): the BTS training list's 24,231 frames, of which "
        f"`data.val_fraction` {VAL_FRACTION:g} is held out and validated with flip TTA after every epoch; batch {BATCH}, "
        f"{NYU_EPOCHS} epochs (the recipe's patience is the whole run).",
        f"- TR2M mixture (recipe `tr2m_mixture`): {TR2M_EPOCHS} epochs, batch {BATCH}, each dataset's held-out "
        f"{VAL_FRACTION:g} validated every epoch without TTA: "
        + "; ".join(f"{x.name} {x.frames:,} frames at {x.size[0]} x {x.size[1]} ({x.source})" for x in RUN["tr2m_mixture"])
        + f". The head's FLOPs and cache bytes scale with the input's patch count (KITTI: "
        f"{m['tr2m_tokens'][(350, 1204)] / m['tr2m_tokens'][(434, 560)]:.2f}x). Cached bytes per 434 x 560 frame: "
        f"{TR2M_FRAME_BYTES['shipped'] / 1e6:.2f} MB as shipped, {TR2M_FRAME_BYTES['compact'] / 1e6:.2f} MB in the "
        "compact format (`benchmarks/cache_size.py`). As shipped, `tr2m_mixture` sets no `train.feature_cache` and "
        "runs out of host memory while encoding; its rows assume `train.feature_cache` set.",
        "- Several GPUs: `torchrun`, batch 8 per GPU, steps per epoch divided by the GPUs; as shipped every rank holds "
        "the whole training split and rank 0 alone validates; with one shard per GPU each holds 1/8 and validation "
        "is split across ranks.",
        "- A phase costs its slowest part where the parts overlap; a step with host syncs costs compute + launches. "
        'The "issue 23 built" column counts the kernels of the steps this checkout runs; the two columns with host '
        "syncs in the step count those of the code before (PureCLIP-Depth "
        f"{KERNELS_BEFORE['pureclip']}, TR2M {KERNELS_BEFORE['tr2m']:,} per step, this script on 58e9837).",
        "",
        "## Projections",
        "",
    ]
    summary = {}
    for title, rows_of in (("NYU, PureCLIP-Depth, 200 epochs", nyu_rows), ("TR2M mixture, 20 epochs", tr2m_rows)):
        for gpus in (1, 8):
            block, totals = table(title, [SHIPPED, BF16, ISSUE], rows_of, gpus, m)
            lines += block
            summary[title, gpus] = totals
    lines += [
        "## Summary (minutes, cache build included)",
        "",
        "| run | GPUs | as shipped | bf16 alone | issue 23 built |",
        "|---|---:|---:|---:|---:|",
    ]
    for (title, gpus), totals in summary.items():
        lines.append(f"| {title} | {gpus} | " + " | ".join(f"{v / 60:.0f}" for v in totals.values()) + " |")
    lines.append("")
    out = Path(__file__).resolve().parent / "projection.md"
    write_text_atomic(out, "\n".join(lines))
    print("\n".join(lines))
    print(f"pureclip_kernels_per_step={p.kernels:.0f} tr2m_kernels_per_step={t.kernels:.0f}")
    for (title, gpus), totals in summary.items():
        key = ("nyu_pureclip" if title.startswith("NYU") else "tr2m_mixture") + f"_{gpus}gpu"
        print(" ".join(f"{key}_{tag}_minutes={v / 60:.1f}" for tag, v in zip(("shipped", "bf16", "built"), totals.values())))


if __name__ == "__main__":
    main()
