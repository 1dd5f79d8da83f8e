"""Frames per second of the real decode + preprocess path with 0, 1 and 2 worker processes.

The script writes NYU-shaped pairs into a temporary folder (480 x 640 JPEG photos of textured
synthetic rooms at quality 95, as NYU's extracted frames, and 16-bit millimetre PNG depth), reads
them as the "folder" dataset does and runs PureCLIP-Depth's NYU preprocessing on them: the crop
(40, 470, 38, 603), the bilinear resize to 336 x 336 (OpenCV-style) and the mask-aware depth
resize, through ``clipdepth.data.loader.prepared_batches``, the path cache build, on-the-fly
training and evaluation read frames by. Two uses are timed: **training** frames (cache build of
the training split, on-the-fly training: the GT's scale is found, only its size travels back) and
**scored** frames (evaluation, validation cache: the full-resolution GT travels back too). The
worker counts are timed interleaved, after a warm-up, and medians are reported: on a shared
machine only ratios measured side by side mean anything.

    python benchmarks/data_throughput.py                 # 96 frames, ~1-2 min on 2 cores
    python benchmarks/data_throughput.py --frames 256 --workers 0 1 2 4 8

Last lines: ``loader_speedup_2_workers_scored=`` and ``loader_speedup_2_workers=<training frames/s
with 2 workers / with 0>``.
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

from clipdepth.data.folder import DepthFolder
from clipdepth.data.loader import prepared_batches
from clipdepth.data.synthetic import SyntheticScenes
from clipdepth.data.transforms import Preprocessor

NYU_SHAPE = (480, 640)
NYU_INPUT_CROP = (40, 470, 38, 603)  # the released PureCLIP-Depth NYU crop (pureclip_nyu recipe)


def write_pairs(root: Path, n: int) -> None:
    """``n`` NYU-shaped pairs under ``root/rgb`` and ``root/depth``; a few distinct scenes repeated
    under distinct names (rendering is not what is measured)."""
    (root / "rgb").mkdir(parents=True)
    (root / "depth").mkdir()
    scenes = SyntheticScenes("indoor", "train", min(n, 8), *NYU_SHAPE, seed=0)
    for i in range(n):
        sample = scenes[i % len(scenes)]
        Image.fromarray(sample.image).save(root / "rgb" / f"{i:05d}.jpg", quality=95)
        Image.fromarray(np.round(sample.depth * 1000).astype(np.uint16)).save(root / "depth" / f"{i:05d}.png")


def one_pass(dataset: DepthFolder, preprocessor: Preprocessor, workers: int, batch_size: int, training: bool) -> float:
    """Seconds to decode and prepare every frame once (workers started inside the timing), as
    ``encode_split`` reads training (``training``) or scored frames."""
    start = time.perf_counter()
    batches = prepared_batches(dataset, preprocessor, batch_size, workers, gt_scale=training, keep_gt=not training)
    n = sum(len(frames) for frames in batches)
    assert n == len(dataset)
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--frames", type=int, default=320)
    parser.add_argument("--workers", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    if 0 not in args.workers or 2 not in args.workers:
        parser.error("--workers must include 0 and 2 (the reported speedup compares them)")

    preprocessor = Preprocessor.create(336, NYU_INPUT_CROP, resize="linear")
    with tempfile.TemporaryDirectory() as tmp:
        write_pairs(Path(tmp), args.frames)
        dataset = DepthFolder(tmp, depth_scale=1000.0)
        print(
            f"{len(dataset)} NYU-shaped pairs (480x640 JPEG + 16-bit PNG) -> crop + 336x336, batch {args.batch_size}, "
            f"{torch.get_num_threads()} torch threads in the main process"
        )
        runs = [(use, workers) for use in ("training", "scored") for workers in args.workers]
        for use, workers in runs:  # warm-up: page cache, first imports
            one_pass(dataset, preprocessor, workers, args.batch_size, use == "training")
        seconds: dict[tuple[str, int], list[float]] = {run: [] for run in runs}
        for _ in range(args.repeats):
            for use, workers in runs:
                seconds[use, workers].append(one_pass(dataset, preprocessor, workers, args.batch_size, use == "training"))
    fps = {run: len(dataset) / statistics.median(t) for run, t in seconds.items()}
    for use, workers in runs:
        print(
            f"{use} frames, workers={workers}: {fps[use, workers]:.1f} frames/s ({1000 / fps[use, workers]:.1f} ms "
            f"per frame; passes {', '.join(f'{t:.2f}' for t in seconds[use, workers])} s)"
        )
    print(f"ms_per_frame_0_workers={1000 / fps['training', 0]:.2f}")
    print(f"loader_speedup_2_workers_scored={fps['scored', 2] / fps['scored', 0]:.3f}")
    print(f"loader_speedup_2_workers={fps['training', 2] / fps['training', 0]:.3f}")


if __name__ == "__main__":
    main()
