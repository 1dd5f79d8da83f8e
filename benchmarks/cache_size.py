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

Last lines: ``cache_bytes_ratio_train=`` and ``cache_bytes_ratio_val=`` (bytes per frame / fp16
token bytes of that frame; for validation, both copies), and the previous format's train ratio.
"""
from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from clipdepth.data.synthetic import SyntheticScenes
from clipdepth.data.transforms import Preprocessor
from clipdepth.features.cache import write_shard
from clipdepth.features.memory import EncodedSplit
from clipdepth.io.depth_store import TrainingDepth, file_scale, quantize

GRID, WIDTH, INPUT = 24, 768, 336  # ViT-L/14 @ 336: 24 x 24 patches, projection 768
NYU_SHAPE, NYU_INPUT_CROP, NYU_TRAIN_FRAMES = (480, 640), (40, 470, 38, 603), 24_231


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
    args = parser.parse_args()

    depths = nyu_like_depths(args.frames, args.depth_pngs)
    n = len(depths)
    pre = Preprocessor.create(INPUT, NYU_INPUT_CROP, resize="linear")
    tokens = {"tokens": torch.zeros(n, GRID, GRID, WIDTH, dtype=torch.float16), "cls": torch.zeros(n, WIDTH, dtype=torch.float16)}
    token_bytes = (GRID * GRID + 1) * WIDTH * 2
    shapes = np.array([d.shape for d in depths])
    train = EncodedSplit([f"f{i}" for i in range(n)], tokens, None, shapes, depth=TrainingDepth.from_maps(
        [quantize(pre.depths(d[None])[0], file_scale(d)) for d in depths]))
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
    print(f"train frame: {sizes['train']:,.0f} bytes ({depth_bytes:,.0f} of depth and frame size, "
          f"{depth_bytes / INPUT**2:.2f} bytes per input pixel); previous format {previous:,} bytes")
    print(f"val frame: {sizes['val']:,.0f} bytes (tokens twice, GT {sizes['val'] - 2 * token_bytes:,.0f})")
    print(f"NYU training set ({NYU_TRAIN_FRAMES:,} frames): {sizes['train'] * NYU_TRAIN_FRAMES / 1e9:.1f} GB "
          f"(previous format {previous * NYU_TRAIN_FRAMES / 1e9:.1f} GB, tokens alone {token_bytes * NYU_TRAIN_FRAMES / 1e9:.1f} GB)")
    print(f"cache_bytes_ratio_train_previous={previous / token_bytes:.3f}")
    print(f"cache_bytes_ratio_val={sizes['val'] / (2 * token_bytes):.3f}")
    print(f"cache_bytes_ratio_train={sizes['train'] / token_bytes:.3f}")


if __name__ == "__main__":
    main()
