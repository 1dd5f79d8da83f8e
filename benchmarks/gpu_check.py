"""Every CUDA path of clipdepth at full size with random weights, printing ``key=value`` figures
(``gpu_check.sh`` prepares the environment and runs this; see benchmarks/README.md):

1. PureCLIP-Depth at ViT-L/14 @ 336 (D = 768) on synthetic indoor frames: the feature cache built
   in bf16 (``pureclip_cache_build_s``, ``pureclip_encode_frames_per_s``), then 3 epochs
   (``pureclip_epoch_s``, ``pureclip_step_ms``, validation included in the epoch);
2. TR2M at 434 x 560 (DINOv2 ViT-L/14, Depth Anything small, CLIP ViT-L/14 text): cache build and
   steps (``tr2m_encode_frames_per_s``, ``tr2m_step_ms``);
3. host syncs inside training steps: counted with ``torch.cuda.set_sync_debug_mode("warn")``
   (``*_host_syncs_per_step``), then one step under ``"error"`` (``*_sync_debug_error_step``: ok, or
   the first line of the error);
4. ``clipdepth predict`` with the trained checkpoint on 32 and on 256 JPEGs of 480 x 640: the
   difference is the throughput once loaded (``predict_images_per_s``);
5. bf16 against fp32 on the same inputs: the frozen CLIP's tokens and both heads' forwards
   (``*_bf16_vs_fp32_max_rel``: the largest difference over the largest fp32 value).

    bash benchmarks/gpu_check.sh                              # the way to run it
    python benchmarks/gpu_check.py --dry-run-cpu              # the same flow at toy size on a CPU (tests)

Without CUDA (and without ``--dry-run-cpu``) it refuses in one line, exit status 2.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import sys
import tempfile
import time
import warnings
from pathlib import Path

import torch


def refuse_without_cuda(dry_run: bool) -> str:
    if dry_run:
        return "cpu"
    if not torch.cuda.is_available():
        print(f"gpu_check: torch {torch.__version__} finds no CUDA GPU here; run it on a machine with one", file=sys.stderr)
        sys.exit(2)
    return "cuda"


def figure(key: str, value) -> None:
    print(f"{key}={value:.4g}" if isinstance(value, float) else f"{key}={value}", flush=True)


def synchronize(device: str) -> None:
    if device == "cuda":
        torch.cuda.synchronize()


@contextlib.contextmanager
def sync_debug(mode: str, device: str):
    """``torch.cuda.set_sync_debug_mode(mode)`` for the block (CUDA only), back to off after it."""
    if device != "cuda":
        yield
        return
    torch.cuda.set_sync_debug_mode(mode)
    try:
        yield
    finally:
        torch.cuda.set_sync_debug_mode(0)


def check_steps(name: str, trainer, device: str, steps: int = 6) -> None:
    """Time ``steps`` training steps, count their host syncs ("warn": one warning each), then run one
    more under "error". The batch's gather from the training arrays is part of each step."""
    source = trainer.sources[0]
    n = len(source.train)
    size = trainer.cfg.train.batch_size

    def one_step(k: int) -> None:
        index = (torch.arange(size) + k * size) % n
        batch = next(source.train.batches([index], trainer.tile_generators[0], trainer.device))
        trainer._step(batch)

    one_step(0)  # the optimiser's state, autocast caches, cuDNN's choices
    synchronize(device)
    with warnings.catch_warnings(record=True) as caught, sync_debug("warn", device):
        warnings.simplefilter("always")
        start = time.perf_counter()
        for k in range(1, steps + 1):
            one_step(k)
        synchronize(device)
        elapsed = time.perf_counter() - start
    syncs = sum("synchroniz" in str(w.message) for w in caught)
    figure(f"{name}_step_ms", elapsed / steps * 1000)
    figure(f"{name}_host_syncs_per_step", syncs / steps)
    try:
        with sync_debug("error", device):
            one_step(steps + 1)
        figure(f"{name}_sync_debug_error_step", "ok")
    except RuntimeError as error:
        figure(f"{name}_sync_debug_error_step", "error: " + str(error).splitlines()[0].replace(" ", "_")[:120])


def max_rel(a: torch.Tensor, b: torch.Tensor) -> float:
    return ((a.float() - b.float()).abs().max() / b.float().abs().max()).item()


def agreement(name: str, model, features, device: str) -> None:
    """The head's forward under bf16 autocast against fp32 (no autocast): the depth, or TR2M's
    per-pixel scale and shift (a random-weight TR2M's depth sits at its clamp)."""
    from clipdepth.models.base import as_float, head_autocast

    def outputs() -> list[torch.Tensor]:
        depth, out = model.predict_from_features(features)
        return [out.scale, out.shift] if hasattr(out, "scale") else [depth]

    features = as_float(features, device)
    model.eval()
    with torch.no_grad():
        reference = outputs()
        with head_autocast("bf16", device):
            bf16 = outputs()
    figure(f"{name}_head_bf16_vs_fp32_max_rel", max(max_rel(a, b) for a, b in zip(bf16, reference)))


def full_size_clip() -> list[str]:
    """Overrides for CLIP ViT-L/14 @ 336 (the clip section's defaults) with random weights, over the demo's small one."""
    from clipdepth.config import CLIPEncoderConfig

    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
    from conftest import TINY_ENCODER  # the size fields

    return [f"clip.{k}={getattr(CLIPEncoderConfig(), k)}" for k in TINY_ENCODER if k != "random_init"] + ["clip.random_init=true"]


def pureclip(work: Path, device: str, dry_run: bool) -> Path:
    from clipdepth.config import load_config
    from clipdepth.training.run import Experiment
    from clipdepth.training.trainer import Trainer

    if dry_run:
        clip = [
            "clip.random_init=true",
            "clip.image_size=56",
            "clip.hidden_size=64",
            "clip.num_layers=2",
            "clip.num_heads=4",
            "clip.intermediate_size=128",
            "clip.projection_dim=32",
            "clip.text_hidden_size=32",
            "clip.text_num_layers=1",
            "clip.text_num_heads=2",
        ]
        frames = ["data.train_size=16", "data.val_size=8", "data.height=48", "data.width=64"]
    else:  # ViT-L/14 @ 336: the clip section's defaults, with random weights
        clip = full_size_clip()
        frames = ["data.train_size=320", "data.val_size=64", "data.height=480", "data.width=640"]
    cfg = load_config(
        "demo",
        clip
        + frames
        + ["train.max_epochs=3", f"train.feature_cache={work / 'pureclip_cache'}", f"device={device}", f"output_dir={work / 'pureclip'}"],
    )
    exp = Experiment.create(cfg)
    synchronize(device)
    start = time.perf_counter()
    train, val = exp.encode("train", flip=False), exp.encode("val", flip=True)
    synchronize(device)
    build = time.perf_counter() - start
    figure("pureclip_cache_build_s", build)
    figure("pureclip_encode_frames_per_s", (len(train) + 2 * len(val)) / build)

    trainer = Trainer.single_dataset(exp.model, cfg, train, val, exp.preprocessor, exp.protocol, work / "probe")
    check_steps("pureclip", trainer, device)
    agreement("pureclip", exp.model, val.features(slice(0, 8)), device)
    encoder_agreement(exp, device)

    exp = Experiment.create(cfg)  # a fresh head: the 3 epochs as `clipdepth train` runs them
    start = time.perf_counter()
    result, _ = exp.train(work / "pureclip")
    synchronize(device)
    figure("pureclip_epoch_s", (time.perf_counter() - start) / cfg.train.max_epochs)
    return result.model_dir


def encoder_agreement(exp, device: str) -> None:
    """The frozen CLIP's tokens under the default (bf16 on CUDA) against fp32, on the same images."""
    model = exp.model
    size = model.input_size
    images = torch.rand(8, 3, size, size, generator=torch.Generator().manual_seed(0)).to(device)
    fp32 = dataclasses.replace(model.cfg, clip=dataclasses.replace(model.cfg.clip, precision="fp32"))
    default, model.cfg = model.cfg, fp32
    with torch.no_grad():
        try:
            reference = model.encode(images).patch_tokens
        finally:
            model.cfg = default
        tokens = model.encode(images).patch_tokens
    figure("pureclip_encoder_precision", model.device_precision(default.clip.precision, device))
    figure("pureclip_encoder_bf16_vs_fp32_max_rel", max_rel(tokens, reference))


def tr2m(work: Path, device: str, dry_run: bool) -> None:
    from clipdepth.config import load_config
    from clipdepth.training.run import Experiment
    from clipdepth.training.trainer import Trainer

    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
    from conftest import TINY_DEPTH_ANYTHING, TINY_ENCODER, TINY_TR2M

    if dry_run:
        overrides = (
            [f"clip.{k}={v}" for k, v in TINY_ENCODER.items()]
            + TINY_TR2M
            + TINY_DEPTH_ANYTHING
            + ["data.train_size=8", "data.val_size=4", "data.height=48", "data.width=64"]
        )
    else:  # the paper's frozen parts at full size with random weights, 434 x 560
        overrides = full_size_clip() + [
            "model=tr2m",
            "tr2m.input_height=434",
            "tr2m.input_width=560",
            "tr2m.image_encoder.random_init=true",
            "tr2m.relative.random_init=true",
            "data.train_size=64",
            "data.val_size=16",
            "data.height=480",
            "data.width=640",
            "eval.tta=false",
        ]
    cfg = load_config(
        "demo",
        overrides + ["train.batch_size=8", f"train.feature_cache={work / 'tr2m_cache'}", f"device={device}", f"output_dir={work / 'tr2m'}"],
    )
    exp = Experiment.create(cfg)
    synchronize(device)
    start = time.perf_counter()
    train = exp.encode("train", flip=False)
    synchronize(device)
    figure("tr2m_encode_frames_per_s", len(train) / (time.perf_counter() - start))
    figure("tr2m_precisions", ",".join(f"{k}:{v}" for k, v in exp.model.run_precisions(cfg.train.head_precision).items()))
    trainer = Trainer.single_dataset(exp.model, cfg, train, train, exp.preprocessor, exp.protocol, work / "tr2m_probe")
    check_steps("tr2m", trainer, device)
    agreement("tr2m", exp.model, train.features(slice(0, 4)), device)


def predict(checkpoint: Path, work: Path, dry_run: bool) -> None:
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from data_throughput import write_pairs

    from clipdepth.cli.main import main

    sizes = (8, 32) if dry_run else (32, 256)
    seconds = []
    for k, n in enumerate((sizes[0], *sizes)):  # the first run pays the imports and cuDNN's choices
        write_pairs(work / f"photos{k}", n)
        start = time.perf_counter()
        status = main(
            [
                "predict",
                str(work / f"photos{k}" / "rgb"),
                "--checkpoint",
                str(checkpoint),
                "--batch-size",
                "32",
                "--out",
                str(work / f"depth{k}"),
            ]
        )
        seconds.append(time.perf_counter() - start)
        if status != 0:
            figure("predict_images_per_s", f"failed_exit_{status}")
            return
    # the difference between two runs: images per second once the model is loaded
    figure("predict_images_per_s", (sizes[1] - sizes[0]) / (seconds[2] - seconds[1]))
    figure("predict_first_run_s", seconds[0])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dry-run-cpu", action="store_true", help="the whole flow at toy size on the CPU (tests)")
    args = parser.parse_args()
    device = refuse_without_cuda(args.dry_run_cpu)
    figure("device", torch.cuda.get_device_name().replace(" ", "_") if device == "cuda" else "cpu")
    figure("torch", torch.__version__)
    start = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        checkpoint = pureclip(work, device, args.dry_run_cpu)
        tr2m(work, device, args.dry_run_cpu)
        predict(checkpoint, work, args.dry_run_cpu)
    figure("gpu_check_total_s", time.perf_counter() - start)


if __name__ == "__main__":
    main()
