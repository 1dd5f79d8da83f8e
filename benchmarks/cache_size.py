"""Bytes per cached frame at the paper's shapes, against the fp16 encoder outputs alone.

PureCLIP-Depth on NYU as published: CLIP ViT-L/14 @ 336, 24 x 24 patch tokens and CLS projected to
D = 768, kept in fp16: 577 x 768 x 2 = 886,272 bytes a frame (the floor any cache of these outputs
needs). Beside them a training frame keeps its depth at the 336 x 336 input (16-bit PNG, scale per
frame) and its frame size; a validation frame keeps its tokens twice (the mirrored frame, for flip
TTA) and its full-resolution GT losslessly. The shards are written by the cache's own
``write_shard`` from arrays of the real shapes (token values do not change ``.npy`` sizes) and
depth maps that went through the real NYU preprocessing (crop (40, 470, 38, 603), mask-aware
resize to 336 x 336). Depth content does change PNG sizes: by default 480 x 640 synthetic rooms
with millimetre GT as NYU's PNGs store it; ``--depth-pngs`` measures real NYU depth PNGs instead
(uint16 millimetres, e.g. ``sync_depth_*.png`` of the NYU training set).

    python benchmarks/cache_size.py
    python benchmarks/cache_size.py --depth-pngs /data/nyu/sync/*/sync_depth_*.png
    python benchmarks/cache_size.py --samples /work/shared/data/rgbd-samples

Last lines: ``cache_bytes_ratio_train=`` and ``cache_bytes_ratio_val=`` (bytes per frame / fp16
token bytes of that frame; for validation, both copies), and the previous format's train ratio.

TR2M on NYU at 434 x 560 (``tr2m_nyu``): shards written by ``write_shard`` from what
``TR2M.stored`` keeps of a training frame, with the declared shapes of the released encoders
(DINOv2 ViT-L/14: 31 x 40 tokens of 1024; CLIP ViT-L/14 text: 16 caption lines of 768; token values
do not change ``.npy`` sizes, fp16 or int8) and content that compresses like real frames: the real
NYU RGB-D samples of the shared data folder (``--samples``; synthetic rooms where it is absent)
through TR2M's NYU preprocessing (the whole frame resized with align_corners), the relative depth
made from their ground truth by the oracle source (Depth Anything's weights are not downloaded
here), the depth as training keeps it. Prints ``tr2m_bytes_per_train_frame=`` (the defaults: JPEG
image at quality 90, lossless PNG relative depth, fp16 tokens), ``tr2m_bytes_per_train_frame_int8=``
(int8 tokens), the previous format's (raw image, fp16 relative depth) and, per image storage, the
largest change of the smoothness loss's edge weights exp(-mean_c |dI|) (``losses.tr2m.edge_aware_smoothness``).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from clipdepth.config import load_config
from clipdepth.data.synthetic import SyntheticScenes
from clipdepth.data.transforms import Preprocessor
from clipdepth.encoders.relative import OracleRelativeSource
from clipdepth.features.cache import write_shard
from clipdepth.features.memory import EncodedSplit
from clipdepth.io.stored import concat
from clipdepth.io.depth_store import TrainingDepth, file_scale, quantize
from clipdepth.models import build_model

GRID, WIDTH, INPUT = 24, 768, 336  # ViT-L/14 @ 336: 24 x 24 patches, projection 768
NYU_SHAPE, NYU_INPUT_CROP, NYU_TRAIN_FRAMES = (480, 640), (40, 470, 38, 603), 24_231
# TR2M on NYU: input 434 x 560; DINOv2 ViT-L/14 tokens; CLIP ViT-L/14 text, 16 caption lines
TR2M_INPUT, TR2M_GRID, TR2M_DIM, TEXT_LINES, TEXT_DIM = (434, 560), (31, 40), 1024, 16, 768
TR2M_MIXTURE_FRAMES = 102_000  # the paper's NYU + KITTI + VOID + C3VD training frames (about)
SAMPLES = Path(__file__).resolve().parents[2] / "shared" / "data" / "rgbd-samples"


def nyu_like_depths(n: int, pngs: list[str]) -> list[np.ndarray]:
    if pngs:
        return [np.asarray(Image.open(p), dtype=np.float32) / 1000.0 for p in pngs[:n]]
    scenes = SyntheticScenes("indoor", "train", n, *NYU_SHAPE, seed=0)
    return [np.round(scenes[i].depth.astype(np.float64) * 1000).astype(np.float32) / np.float32(1000) for i in range(n)]


def shard_bytes(folder: Path) -> int:
    return sum(p.stat().st_size for p in folder.glob("*.npy"))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--frames", type=int, default=16)
    parser.add_argument("--depth-pngs", nargs="*", default=[], help="real NYU depth PNGs (uint16 mm) to measure with")
    parser.add_argument("--samples", type=Path, default=SAMPLES, help="RGB-D samples folder (manifest.json) for TR2M")
    args = parser.parse_args()

    depths = nyu_like_depths(args.frames, args.depth_pngs)
    n = len(depths)
    pre = Preprocessor.create(INPUT, NYU_INPUT_CROP, resize="linear")
    tokens = {"tokens": torch.zeros(n, GRID, GRID, WIDTH, dtype=torch.float16), "cls": torch.zeros(n, WIDTH, dtype=torch.float16)}
    token_bytes = (GRID * GRID + 1) * WIDTH * 2
    shapes = np.array([d.shape for d in depths])
    train = EncodedSplit(
        [f"f{i}" for i in range(n)],
        tokens,
        None,
        shapes,
        depth=TrainingDepth.from_maps([quantize(pre.depths(d[None])[0], file_scale(d)) for d in depths]),
    )
    val = EncodedSplit([f"f{i}" for i in range(n)], tokens, dict(tokens), shapes, gt=depths)
    with tempfile.TemporaryDirectory() as tmp:
        sizes = {}
        for name, split in (("train", train), ("val", val)):
            (Path(tmp) / name).mkdir()
            write_shard(Path(tmp) / name, split)
            sizes[name] = shard_bytes(Path(tmp) / name) / n
    depth_bytes = sizes["train"] - token_bytes
    previous = token_bytes + INPUT * INPUT * 4 + NYU_SHAPE[0] * NYU_SHAPE[1] * 4  # fp32 input depth + fp32 GT
    source = f"{n} real depth PNGs" if args.depth_pngs else f"{n} synthetic 480x640 rooms, mm GT"
    print(f"depth from {source}; fp16 tokens + CLS: {token_bytes:,} bytes a frame")
    print(
        f"train frame: {sizes['train']:,.0f} bytes ({depth_bytes:,.0f} of depth and frame size, "
        f"{depth_bytes / INPUT**2:.2f} bytes per input pixel); previous format {previous:,} bytes"
    )
    print(f"val frame: {sizes['val']:,.0f} bytes (tokens twice, GT {sizes['val'] - 2 * token_bytes:,.0f})")
    print(
        f"NYU training set ({NYU_TRAIN_FRAMES:,} frames): {sizes['train'] * NYU_TRAIN_FRAMES / 1e9:.1f} GB "
        f"(previous format {previous * NYU_TRAIN_FRAMES / 1e9:.1f} GB, tokens alone {token_bytes * NYU_TRAIN_FRAMES / 1e9:.1f} GB)"
    )
    print(f"cache_bytes_ratio_train_previous={previous / token_bytes:.3f}")
    print(f"cache_bytes_ratio_val={sizes['val'] / (2 * token_bytes):.3f}")
    print(f"cache_bytes_ratio_train={sizes['train'] / token_bytes:.3f}")
    tr2m_sizes(args.samples)


def nyu_samples(folder: Path) -> tuple[list[np.ndarray], list[np.ndarray], str]:
    """RGB (H, W, 3) uint8 and depth (H, W) metres of the NYU frames in the shared samples, else
    of synthetic rooms."""
    manifest = folder / "manifest.json"
    if manifest.is_file():
        frames = [s for s in json.loads(manifest.read_text())["samples"] if s["dataset"] == "nyu"]
        rgb = [np.asarray(Image.open(folder / s["rgb"]).convert("RGB")) for s in frames]
        depth = [np.asarray(Image.open(folder / s["depth"]), dtype=np.float32) / 1000 for s in frames]
        return rgb, depth, f"{len(frames)} real NYU frames ({folder})"
    scenes = [SyntheticScenes("indoor", "train", 4, *NYU_SHAPE, seed=0)[i] for i in range(4)]
    return [s.image for s in scenes], [s.depth for s in scenes], "4 synthetic 480x640 rooms (no shared samples)"


def edge_weights(images: torch.Tensor) -> torch.Tensor:
    """exp(-mean_c |dI|) along x and y, flattened: how losses.tr2m.edge_aware_smoothness weights
    the maps' gradients."""
    x = images.float() / 255.0
    dx, dy = (x[..., :, 1:] - x[..., :, :-1]).abs().mean(1), (x[..., 1:, :] - x[..., :-1, :]).abs().mean(1)
    return torch.cat([torch.exp(-dx).flatten(), torch.exp(-dy).flatten()])


def tr2m_sizes(samples: Path) -> None:
    rgb, depths, source = nyu_samples(samples)
    n, pre = len(rgb), Preprocessor.create(TR2M_INPUT, None, resize="align_corners")
    images = (pre.images(np.stack(rgb)) * 255).round().to(torch.uint8)
    depth = pre.depths(np.stack(depths))
    relative = OracleRelativeSource()(images, depth, [f"f{i}" for i in range(n)])  # (n, 434, 560)
    generator = torch.Generator().manual_seed(0)
    features = {
        "image_tokens": torch.randn(n, *TR2M_GRID, TR2M_DIM, generator=generator).half(),
        "relative": relative.half(),
        "text": torch.randn(n, TEXT_LINES, TEXT_DIM, generator=generator).half(),
        "text_lines": torch.full((n,), TEXT_LINES),
        "image": images,
    }
    train_depth = TrainingDepth.from_maps([quantize(d, file_scale(raw)) for d, raw in zip(depth, depths)])
    print(f"TR2M training frames at {TR2M_INPUT[0]}x{TR2M_INPUT[1]} from {source}")
    settings = {
        "": {},
        "_int8": {"cache_tokens": "int8"},
        "_previous": {"cache_image": "raw", "cache_relative": "fp16"},
        "_png_image": {"cache_image": "png"},
        "_jpeg75": {"cache_image_quality": 75},
        "_jpeg95": {"cache_image_quality": 95},
    }
    model = build_model(load_config("demo_tr2m"))  # small encoders: only its storage (TR2M.stored) is used
    figures, defaults = {}, model.cfg
    with tempfile.TemporaryDirectory() as tmp:
        for label, fields in settings.items():
            model.cfg = dataclasses.replace(defaults, tr2m=dataclasses.replace(defaults.tr2m, **fields))
            start = time.perf_counter()
            stored = model.stored(features, "train")
            encode_ms = (time.perf_counter() - start) * 1e3 / n
            split = EncodedSplit(
                [f"f{i}" for i in range(n)],
                {k: concat([v]) for k, v in stored.items()},
                None,
                np.array([d.shape for d in depths]),
                depth=train_depth,
            )
            folder = Path(tmp) / f"tr2m{label}"
            folder.mkdir()
            write_shard(folder, split)
            figures[label] = shard_bytes(folder) / n
            start = time.perf_counter()
            read = split.features(torch.arange(n))
            decode_ms = (time.perf_counter() - start) * 1e3 / n
            weights = (edge_weights(read["image"]) - edge_weights(images)).abs()
            parts = ", ".join(f"{p.name[:-4]} {p.stat().st_size / n:,.0f}" for p in sorted(folder.glob("*.npy")))
            print(
                f"tr2m{label or '_default'}: {figures[label]:,.0f} bytes a frame ({parts}); stored in {encode_ms:.1f} ms, "
                f"read back in {decode_ms:.1f} ms a frame here; edge weights abs diff max {weights.max():.4f} mean {weights.mean():.5f}"
            )
    print(
        f"TR2M mixture ({TR2M_MIXTURE_FRAMES:,} frames at this size): {figures[''] * TR2M_MIXTURE_FRAMES / 1e9:.0f} GB "
        f"(int8 tokens {figures['_int8'] * TR2M_MIXTURE_FRAMES / 1e9:.0f} GB, previous format "
        f"{figures['_previous'] * TR2M_MIXTURE_FRAMES / 1e9:.0f} GB)"
    )
    print(f"tr2m_bytes_per_train_frame_previous={figures['_previous']:.0f}")
    print(f"tr2m_bytes_per_train_frame_int8={figures['_int8']:.0f}")
    print(f"tr2m_bytes_per_train_frame={figures['']:.0f}")


if __name__ == "__main__":
    main()
