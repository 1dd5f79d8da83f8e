"""`clipdepth predict`: metric depth for your own images, files you can use.

Per image, with the input's stem: ``<stem>.png`` 16-bit depth in millimetres (the PNG's text
chunks say so), ``<stem>_color.png`` colourised with a metre scale, and on request ``.npy``
(metres), a ``.ply`` point cloud and ``<stem>_uncertainty.png`` (PureCLIP-Depth: per-patch bin
spread, mm). Any checkpoint type works; TR2M checkpoints take a caption per image (``--caption``
for all; ``--captions`` a folder of ``<stem>.txt`` files, or one ``.txt`` file for all; line 0).
"""
from __future__ import annotations

import argparse
import glob
import sys
from pathlib import Path

from .args import positive_int

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp")


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "predict", help="metric depth for your images (PNG in mm, colour PNG, npy, ply)",
        description="Example: clipdepth predict photos/ --checkpoint outputs/demo/model --out depth/ --ply",
    )
    p.add_argument("inputs", nargs="+", metavar="INPUT", help="image, folder (recursive), glob, or .txt list of paths")
    p.add_argument("--checkpoint", required=True, help="a head checkpoint folder")
    p.add_argument("--encoder", help="CLIP hub id or folder to use instead of the one the checkpoint names")
    captions = p.add_mutually_exclusive_group()
    captions.add_argument("--caption", help="TR2M: one caption for every image")
    captions.add_argument(
        "--captions", type=Path,
        help="TR2M: folder of <stem>.txt caption files (e.g. from `clipdepth caption`), or one .txt for all; line 0 is used",
    )
    p.add_argument(
        "--set", action="append", default=[], metavar="KEY=VALUE", dest="overrides",
        help="point a frozen part elsewhere, e.g. tr2m.relative.name=/models/depth-anything-small (repeatable)",
    )
    p.add_argument("--out", required=True, type=Path, help="output folder")
    p.add_argument("--npy", action="store_true", help="also write <stem>.npy (float32 metres)")
    p.add_argument("--ply", action="store_true", help="also write a coloured point cloud <stem>.ply")
    p.add_argument("--uncertainty", action="store_true", help="also write <stem>_uncertainty.png (mm) and .npy")
    for name in ("fx", "fy", "cx", "cy"):
        p.add_argument(f"--{name}", type=float, help="intrinsics for --ply (default: a 60 degree horizontal field of view)")
    p.add_argument("--tta", action="store_true", help="flip test-time augmentation")
    p.add_argument("--tiles", type=positive_int, help="square tiles across the image (default: automatic, wide images get several)")
    p.add_argument("--batch-size", type=positive_int, default=8)
    p.add_argument("--overwrite", action="store_true", help="replace outputs that exist (default: keep them, skip the image)")
    p.set_defaults(func=run)


def collect_inputs(inputs: list[str]) -> list[tuple[Path, Path]]:
    """(image path, output path without suffix) per image; folders keep their sub-folders."""
    from ..errors import DataError

    found: list[tuple[Path, Path]] = []
    for item in inputs:
        path = Path(item)
        if path.is_dir():
            files = sorted(p for p in path.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES)
            found += [(p, p.relative_to(path).with_suffix("")) for p in files]
        elif path.suffix.lower() == ".txt" and path.is_file():
            lines = [line.strip() for line in path.read_text().splitlines() if line.strip()]
            found += [(Path(line), Path(Path(line).stem)) for line in lines]
        elif path.is_file():
            found.append((path, Path(path.stem)))
        elif glob.has_magic(item):
            found += [(Path(p), Path(Path(p).stem)) for p in sorted(glob.glob(item, recursive=True))
                      if Path(p).suffix.lower() in IMAGE_SUFFIXES]
        else:
            raise DataError(f"{item}: no such image, folder, glob match or list")
    if not found:
        raise DataError(f"no images found in {' '.join(inputs)}")
    seen: dict[Path, Path] = {}
    for image, stem in found:
        if stem in seen and seen[stem] != image:
            raise DataError(f"{image} and {seen[stem]} would both be written as {stem}.png; pass their folder instead")
        seen[stem] = image
    return found


def run(args: argparse.Namespace) -> int:
    import numpy as np
    from tqdm.auto import tqdm

    from ..data.captions import read_caption_file
    from ..errors import ConfigError, DataError
    from ..io.depth_io import read_rgb, write_depth_png, write_npy
    from ..io.panels import save_depth_colour
    from ..io.pointcloud import default_intrinsics, depth_to_ply
    from ..models import load_model
    from ..training.run import resolve_device

    jobs = collect_inputs(args.inputs)
    if args.captions is not None and not args.captions.exists():
        raise DataError(f"{args.captions}: no such caption folder or file (--captions takes a folder of <stem>.txt files or one .txt)")
    model = load_model(args.checkpoint, [*args.overrides, *([f"encoder.name={args.encoder}"] if args.encoder else [])])
    uses_captions = model.uses_captions
    if uses_captions and args.caption is None and args.captions is None:
        raise ConfigError(f"{args.checkpoint} is a TR2M checkpoint: give a caption (--caption TEXT, or --captions DIR)")
    if not uses_captions and (args.caption is not None or args.captions is not None):
        raise ConfigError(f"{args.checkpoint} ({model.architecture}) takes no caption; drop --caption/--captions")
    if args.uncertainty and not model.gives_uncertainty:
        raise ConfigError(f"--uncertainty: {model.architecture} checkpoints give no uncertainty")
    model.to(resolve_device(model.cfg.device))

    shared_caption = read_caption_file(args.captions)[0] if args.captions is not None and args.captions.is_file() else args.caption

    def caption_for(stem: Path) -> str | None:
        if args.captions is not None and args.captions.is_dir():
            return read_caption_file(args.captions / stem.with_suffix(".txt"))[0]
        return shared_caption
    failed: list[str] = []
    kept = 0

    def write(image: np.ndarray, out: dict, stem: Path) -> None:
        base = args.out / stem
        depth = out["depth"].cpu().numpy()
        write_depth_png(base.with_suffix(".png"), depth, 1000.0)
        save_depth_colour(base.with_name(base.name + "_color.png"), depth, model.max_depth)
        if args.npy:
            write_npy(base.with_suffix(".npy"), depth.astype(np.float32))
        if args.uncertainty:
            spread = out["uncertainty"].cpu().numpy()
            write_depth_png(base.with_name(base.name + "_uncertainty.png"), spread, 1000.0)
            if args.npy:
                write_npy(base.with_name(base.name + "_uncertainty.npy"), spread.astype(np.float32))
        if args.ply:
            h, w = depth.shape
            given = (args.fx, args.fy, args.cx, args.cy)
            intrinsics = given if all(v is not None for v in given) else default_intrinsics(h, w)
            depth_to_ply(base.with_suffix(".ply"), depth, image, intrinsics)

    # Consecutive images of one size go through the model together.
    batch: list[tuple[np.ndarray, Path, str | None]] = []

    def flush() -> None:
        if batch:
            captions = [c for _, _, c in batch] if uses_captions else None
            result = model.infer(np.stack([im for im, _, _ in batch]), tta=args.tta, tiles=args.tiles, captions=captions)
            for i, (image, stem, _) in enumerate(batch):
                write(image, {k: v[i] for k, v in result.items()}, stem)
            batch.clear()

    for path, stem in tqdm(jobs, desc="predict", unit="image", dynamic_ncols=True):
        if not args.overwrite and (args.out / stem).with_suffix(".png").exists():
            kept += 1  # a rerun after an interruption continues; nothing written is replaced
            continue
        try:
            image = read_rgb(path, photo=True)
            caption = caption_for(stem)
        except DataError as exc:  # one bad file must not lose the others' results
            failed.append(str(exc))
            continue
        if batch and (image.shape != batch[0][0].shape or len(batch) == args.batch_size):
            flush()
        batch.append((image, stem, caption))
    flush()
    print(f"wrote depth for {len(jobs) - len(failed) - kept} image(s) to {args.out} (16-bit PNG: millimetres)"
          + (f"; kept {kept} existing (--overwrite to replace)" if kept else ""))
    return report_failures("predict", failed, "could not be read or lack a caption")


def report_failures(command: str, failed: list[str], what: str) -> int:
    """List the images a command skipped (one line each) on stderr; the exit status."""
    if not failed:
        return 0
    print(f"clipdepth {command}: {len(failed)} image(s) {what}:", file=sys.stderr)
    for message in failed:
        print(f"  {message}", file=sys.stderr)
    return 2
