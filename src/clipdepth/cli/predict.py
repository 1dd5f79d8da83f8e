"""`clipdepth predict`: metric depth for your own images, files you can use.

Per image: ``<name>.png`` 16-bit depth (metres = value / the scale in its ``depth_scale`` text
chunk: millimetres when the model's range fits, else KITTI's 1/256 m), ``<name>_color.png``
colourised with a metre scale, and on request ``.npy`` (metres), a ``.ply`` point cloud and
``<name>_uncertainty.png``/``.npy`` (PureCLIP-Depth: per-patch bin spread). ``<name>`` is the
image's stem (its path inside a folder given as input); inputs that would share a name keep their
folders, then their extension, so that no output is written twice. Any checkpoint type works;
TR2M checkpoints take a caption per image (``--caption`` for all; ``--captions`` a folder of
``<stem>.txt`` files, or one ``.txt`` file for all; line 0).
"""
from __future__ import annotations

import argparse
import glob
import os
import sys
from pathlib import Path

from .args import finite_float, output_folder, path_arg, positive_float, positive_int

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp", ".gif")


def _megapixels(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number of megapixels, got {text!r}") from None
    if not value > 0:
        raise argparse.ArgumentTypeError(f"expected a positive number of megapixels, got {value:g}")
    return value


def register(sub: argparse._SubParsersAction) -> None:
    from ..io.depth_io import MAX_PHOTO_PIXELS
    from ..models.base import MAX_TILES

    p = sub.add_parser(
        "predict", help="metric depth for your images (16-bit PNG, colour PNG, npy, ply)",
        description="Example: clipdepth predict photos/ --checkpoint outputs/demo/model --out depth/ --ply",
    )
    p.add_argument("inputs", nargs="+", metavar="INPUT",
                   help="image, folder (recursive), glob, or .txt list of paths (relative ones from the list's folder)")
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
        help="point a frozen part elsewhere, e.g. tr2m.relative.name=/models/depth-anything-small (repeatable); "
        "a trained head's own settings cannot change",
    )
    p.add_argument("--out", required=True, type=path_arg, help="output folder")
    p.add_argument("--npy", action="store_true", help="also write <name>.npy (float32 metres)")
    p.add_argument("--ply", action="store_true", help="also write a coloured point cloud <name>.ply")
    p.add_argument("--uncertainty", action="store_true", help="also write <name>_uncertainty.png (and .npy with --npy)")
    p.add_argument("--fx", type=positive_float, help="focal length in pixels for --ply (default: a 60 degree horizontal field of view)")
    p.add_argument("--fy", type=positive_float, help="vertical focal length for --ply (default: --fx)")
    p.add_argument("--cx", type=finite_float, help="principal point for --ply (default: the image centre)")
    p.add_argument("--cy", type=finite_float, help="principal point for --ply (default: the image centre)")
    p.add_argument("--tta", action="store_true", help="flip test-time augmentation")
    p.add_argument("--tiles", type=positive_int, help="square tiles across the image (default: automatic, wide images get several)")
    p.add_argument(
        "--max-tiles", type=positive_int, default=MAX_TILES,
        help=f"refuse images that need more tiles than this (default {MAX_TILES}: an aspect ratio up to about {MAX_TILES}:1)",
    )
    p.add_argument(
        "--max-pixels", type=_megapixels, default=MAX_PHOTO_PIXELS / 1e6, metavar="MP",
        help=f"refuse images larger than this many megapixels (default {MAX_PHOTO_PIXELS / 1e6:g})",
    )
    p.add_argument("--batch-size", type=positive_int, default=8)
    p.add_argument("--overwrite", action="store_true", help="replace outputs that exist (default: keep them, write only the missing ones)")
    p.set_defaults(func=run)


def _inside(path: Path, folder: Path) -> bool:
    try:
        path.resolve().relative_to(folder.resolve())
    except ValueError:
        return False
    return True


def collect_inputs(inputs: list[str], out: Path | None = None) -> list[tuple[Path, Path]]:
    """(image path, output name as a relative path without suffix) per image.

    A folder keeps its sub-folders; anything under ``out`` is skipped (a rerun must not read its own
    outputs). Names that would collide keep the images' folders (relative to their common
    parent), then also their extensions, so every distinct image gets distinct outputs.
    """
    from ..errors import DataError

    found: list[tuple[Path, Path]] = []
    for item in inputs:
        path = Path(item)
        if path.is_dir():
            files = sorted(p for p in path.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file())
            found += [(p, p.relative_to(path).with_name(p.stem)) for p in files if out is None or not _inside(p, out)]
        elif path.suffix.lower() == ".txt" and path.is_file():  # relative paths: from the list's folder
            lines = [line.strip() for line in path.read_text(encoding="utf-8-sig").splitlines() if line.strip()]
            found += [(path.parent / line, Path(Path(line).stem)) for line in lines]
        elif path.is_file():
            found.append((path, Path(path.stem)))
        elif glob.has_magic(item):
            found += [(Path(p), Path(Path(p).stem)) for p in sorted(glob.glob(item, recursive=True))
                      if Path(p).suffix.lower() in IMAGE_SUFFIXES and (out is None or not _inside(Path(p), out))]
        else:
            raise DataError(f"{item}: no such image, folder, glob match or list")
    if not found:
        raise DataError(f"no images found in {' '.join(inputs)}")
    unique: dict[Path, Path] = {}
    for image, name in found:  # the same file given twice is one job
        unique.setdefault(image.resolve(), (image, name))  # type: ignore[arg-type]
    return _distinct_names(list(unique.values()))


# Every file predict may write for an image named N is N + one of these: names are chosen so that
# no two images claim one file, whatever options a later run adds.
OUTPUT_TAILS = (".png", "_color.png", ".npy", "_uncertainty.png", "_uncertainty.npy", ".ply")


def _conflicts(named: list[tuple[Path, Path]]) -> list[list[int]]:
    """Groups of jobs (indices) that claim a common output file."""
    owners: dict[Path, list[int]] = {}
    for i, (_, name) in enumerate(named):
        for tail in OUTPUT_TAILS:
            owners.setdefault(name.parent / f"{name.name}{tail}", []).append(i)
    parent = list(range(len(named)))

    def root(i: int) -> int:
        while parent[i] != i:
            i = parent[i]
        return i

    for members in owners.values():
        for other in members[1:]:
            parent[root(other)] = root(members[0])
    groups: dict[int, list[int]] = {}
    for i in range(len(named)):
        groups.setdefault(root(i), []).append(i)
    return [g for g in groups.values() if len(g) > 1]


def _keep_folders(named: list[tuple[Path, Path]], group: list[int]) -> None:
    images = [named[i][0].resolve() for i in group]
    parent = Path(os.path.commonpath([str(p.parent) for p in images]))
    for i, image in zip(group, images):
        relative = image.relative_to(parent)
        named[i] = (named[i][0], relative.with_name(relative.stem))


def _keep_extension(named: list[tuple[Path, Path]], group: list[int]) -> None:
    for i in group:
        image, name = named[i]
        named[i] = (image, name.with_name(name.name + image.suffix) if not name.name.endswith(image.suffix) else name)


def _number(named: list[tuple[Path, Path]], group: list[int]) -> None:
    for k, i in enumerate(group[1:], start=2):
        image, name = named[i]
        named[i] = (image, name.with_name(f"{name.name}~{k}"))


def _distinct_names(jobs: list[tuple[Path, Path]]) -> list[tuple[Path, Path]]:
    """Names such that no two images claim one output file: images whose outputs would meet keep
    their folders (relative to their common parent), then their extensions, then a number."""
    named = list(jobs)
    for rule in (_keep_folders, _keep_extension, _number):
        while groups := _conflicts(named):
            before = list(named)
            for group in groups:
                rule(named, group)
            if named == before:  # this rule cannot tell them apart: the next one
                break
    return named


def output_paths(out: Path, name: Path, args: argparse.Namespace) -> list[Path]:
    """Every file ``predict`` writes for the image named ``name`` with these options."""
    tails = [".png", "_color.png"]
    tails += [".npy"] if args.npy else []
    tails += ["_uncertainty.png"] + (["_uncertainty.npy"] if args.npy else []) if args.uncertainty else []
    tails += [".ply"] if args.ply else []
    return [out / name.parent / f"{name.name}{tail}" for tail in tails]


def ply_intrinsics(args: argparse.Namespace, height: int, width: int) -> tuple[float, float, float, float]:
    """fx, fy, cx, cy for --ply: the given ones, fy = fx and the image centre where not given,
    a 60 degree horizontal field of view without any."""
    from ..io.pointcloud import default_intrinsics

    fx, fy, cx, cy = default_intrinsics(height, width)
    fx = args.fx if args.fx is not None else (args.fy if args.fy is not None else fx)
    fy = args.fy if args.fy is not None else fx
    return fx, fy, cx if args.cx is None else args.cx, cy if args.cy is None else args.cy


def run(args: argparse.Namespace) -> int:
    import numpy as np
    from tqdm.auto import tqdm

    from ..data.captions import read_caption_file
    from ..errors import ConfigError, DataError
    from ..io.atomic import clean_stale
    from ..io.depth_io import depth_png_scale, png_source, read_rgb, write_depth_png, write_npy
    from ..io.panels import save_depth_colour
    from ..io.pointcloud import depth_to_ply
    from ..models import load_model
    from ..training.run import resolve_device

    output_folder(args.out)
    if (args.cx is None) != (args.cy is None):
        raise ConfigError("--cx and --cy go together (the principal point); give both or neither (the image centre)")
    if not args.ply and any(v is not None for v in (args.fx, args.fy, args.cx, args.cy)):
        raise ConfigError("--fx/--fy/--cx/--cy are the point cloud's intrinsics: add --ply, or drop them")
    jobs = collect_inputs(args.inputs, args.out)
    if args.captions is not None and not args.captions.exists():
        raise DataError(f"{args.captions}: no such caption folder or file (--captions takes a folder of <stem>.txt files or one .txt)")
    model = load_model(args.checkpoint, [*args.overrides, *([f"clip.name={args.encoder}"] if args.encoder else [])])
    uses_captions = model.uses_captions
    if uses_captions and args.caption is None and args.captions is None:
        raise ConfigError(f"{args.checkpoint} is a TR2M checkpoint: give a caption (--caption TEXT, or --captions DIR)")
    if not uses_captions and (args.caption is not None or args.captions is not None):
        raise ConfigError(f"{args.checkpoint} ({model.architecture}) takes no caption; drop --caption/--captions")
    if args.uncertainty and not model.gives_uncertainty:
        raise ConfigError(f"--uncertainty: {model.architecture} checkpoints give no uncertainty")
    if args.tiles is not None and args.tiles > args.max_tiles:
        raise ConfigError(f"--tiles {args.tiles} is over --max-tiles {args.max_tiles}")
    model.to(resolve_device(model.cfg.device))
    clean_stale(args.out)  # what a killed run left half-written
    scale = depth_png_scale(model.max_depth)
    max_pixels = int(args.max_pixels * 1e6)

    shared_caption = read_caption_file(args.captions)[0] if args.captions is not None and args.captions.is_file() else args.caption

    def caption_for(image: Path) -> str | None:
        if args.captions is not None and args.captions.is_dir():
            return read_caption_file(args.captions / f"{image.stem}.txt")[0]
        return shared_caption

    failed: list[str] = []
    kept = done = 0

    def write(image: np.ndarray, out: dict, name: Path, source: str) -> None:
        """The outputs of one image that do not exist yet (all of them with --overwrite)."""
        wanted = {path.name[len(name.name):]: path for path in output_paths(args.out, name, args)}
        todo = {tail: path for tail, path in wanted.items() if args.overwrite or not path.exists()}
        depth = out["depth"].cpu().numpy()
        spread = out["uncertainty"].cpu().numpy() if args.uncertainty else None
        writers = {
            ".png": lambda path: write_depth_png(path, depth, scale, source=source),
            "_color.png": lambda path: save_depth_colour(path, depth, model.max_depth),
            ".npy": lambda path: write_npy(path, depth.astype(np.float32)),
            "_uncertainty.png": lambda path: write_depth_png(path, spread, scale),
            "_uncertainty.npy": lambda path: write_npy(path, spread.astype(np.float32)),
            ".ply": lambda path: depth_to_ply(path, depth, image, ply_intrinsics(args, *depth.shape)),
        }
        for tail, path in todo.items():
            writers[tail](path)

    # Consecutive images of one size go through the model together.
    batch: list[tuple[np.ndarray, Path, str | None, str]] = []

    def flush() -> None:
        nonlocal done
        if batch:
            captions = [c for _, _, c, _ in batch] if uses_captions else None
            result = model.infer(np.stack([im for im, _, _, _ in batch]), tta=args.tta, tiles=args.tiles,
                                 captions=captions, max_tiles=args.max_tiles)
            for i, (image, name, _, source) in enumerate(batch):
                write(image, {k: v[i] for k, v in result.items()}, name, source)
            done += len(batch)
            batch.clear()

    for path, name in tqdm(jobs, desc="predict", unit="image", dynamic_ncols=True):
        outputs, source = output_paths(args.out, name, args), str(path.resolve())
        if not args.overwrite and outputs[0].exists():
            made_from = png_source(outputs[0])
            if made_from != source:  # an earlier run's output for another image: never taken for this one's
                failed.append(
                    f"{path}: {outputs[0]} holds the depth of {made_from or 'another image (it does not say which)'}; "
                    "choose another --out, or pass --overwrite to replace it"
                )
                continue
            if all(p.exists() for p in outputs):
                kept += 1  # a rerun after an interruption continues; nothing written is replaced
                continue
        try:  # one bad file must not lose the others' results
            image = read_rgb(path, photo=True, max_pixels=max_pixels)
            model.tiles_for(image.shape[0], image.shape[1], args.tiles, args.max_tiles)
            caption = caption_for(path)
        except DataError as exc:
            message = str(exc)
            failed.append(message if message.startswith(str(path)) else f"{path}: {message}")
            continue
        if batch and (image.shape != batch[0][0].shape or len(batch) == args.batch_size):
            flush()
        batch.append((image, name, caption, source))
    flush()
    unit = "millimetres" if scale == 1000.0 else f"metres = value / {scale:g}"
    print(f"wrote depth for {done} image(s) to {args.out} (16-bit PNG: {unit})"
          + (f"; kept {kept} finished before (--overwrite to replace)" if kept else ""))
    return report_failures("predict", failed, "were skipped")


def report_failures(command: str, failed: list[str], what: str) -> int:
    """List the images a command skipped (one line each) on stderr; the exit status."""
    if not failed:
        return 0
    print(f"clipdepth {command}: {len(failed)} image(s) {what}:", file=sys.stderr)
    for message in failed:
        print(f"  {message}", file=sys.stderr)
    return 2
