"""A model's predictions as files a user can use: their names and their writing, shared by
``clipdepth predict`` (``clipdepth.inference.predict_to_folder``) and the web demo.

Per image named N: ``N.png`` 16-bit depth (metres = value / the scale in its ``depth_scale`` text
chunk: millimetres when the model's range fits, else KITTI's 1/256 m; its ``source`` chunk names
the image), ``N_color.png`` colourised with a metre scale, and on request ``N.npy`` (float32
metres), ``N.ply`` (a coloured point cloud) and ``N_uncertainty.png`` / ``.npy`` (models that give
one). N is the image's stem (its path inside a folder given as input); images that would claim a
common file keep their folders, then their extension, then a number, so that no output is written
twice.
"""
from __future__ import annotations

import glob
import os
from pathlib import Path
from typing import Any, Callable

import numpy as np

from ..errors import DataError
from .depth_io import depth_png_scale, write_depth_png, write_npy
from .panels import save_depth_colour
from .pointcloud import default_intrinsics, depth_to_ply

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp", ".gif")
# Every file an image named N may get is N + one of these tails (-> what it holds, see
# write_prediction): names are chosen so that no two images claim one file, whatever options a
# later run adds.
OUTPUT_KINDS = {
    ".png": "depth", "_color.png": "color", ".npy": "npy", "_uncertainty.png": "uncertainty",
    "_uncertainty.npy": "uncertainty_npy", ".ply": "ply",
}
OUTPUT_TAILS = tuple(OUTPUT_KINDS)


# -- naming ---------------------------------------------------------------------------------------
def _inside(path: Path, folder: Path) -> bool:
    try:
        path.resolve().relative_to(folder.resolve())
    except ValueError:
        return False
    return True


def collect_inputs(inputs: list[str], out: Path | None = None) -> list[tuple[Path, Path]]:
    """(image path, output name as a relative path without suffix) per image of ``inputs``: images,
    folders (recursive, sub-folders kept in the names), globs, and ``.txt`` lists of paths (relative
    ones from the list's folder).

    Anything under ``out`` is skipped (a rerun must not read its own outputs); the same file given
    twice is one image. Raises DataError naming an input that is none of these, or when no image is found.
    """
    found: list[tuple[Path, Path]] = []
    for item in inputs:
        path = Path(item)
        if path.is_dir():
            files = sorted(p for p in path.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file())
            found += [(p, p.relative_to(path).with_name(p.stem)) for p in files if out is None or not _inside(p, out)]
        elif path.suffix.lower() == ".txt" and path.is_file():
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
    unique: dict[Path, tuple[Path, Path]] = {}
    for image, name in found:
        unique.setdefault(image.resolve(), (image, name))
    return distinct_names(list(unique.values()))


def _conflicts(named: list[tuple[Path, Path]]) -> list[list[int]]:
    """Groups of images (indices) that claim a common output file."""
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


def distinct_names(jobs: list[tuple[Path, Path]]) -> list[tuple[Path, Path]]:
    """(image, name) pairs renamed so that no two images claim one output file: images whose
    outputs would meet keep their folders (relative to their common parent), then their
    extensions, then a number."""
    named = list(jobs)
    for rule in (_keep_folders, _keep_extension, _number):
        while groups := _conflicts(named):
            before = list(named)
            for group in groups:
                rule(named, group)
            if named == before:  # this rule cannot tell them apart: the next one
                break
    return named


# -- writing --------------------------------------------------------------------------------------
def output_paths(out: Path, name: Path, tails: list[str]) -> list[Path]:
    """The files of the image named ``name`` under ``out``, one per tail of ``OUTPUT_TAILS``."""
    return [out / name.parent / f"{name.name}{tail}" for tail in tails]


def ply_intrinsics(given: Any, height: int, width: int) -> tuple[float, float, float, float]:
    """fx, fy, cx, cy (pixels) from ``given``'s attributes of those names: fy = fx and the image
    centre where not given, a 60 degree horizontal field of view without any."""
    fx, fy, cx, cy = default_intrinsics(height, width)
    fx = given.fx if given.fx is not None else (given.fy if given.fy is not None else fx)
    fy = given.fy if given.fy is not None else fx
    return fx, fy, cx if given.cx is None else given.cx, cy if given.cy is None else given.cy


def write_prediction(
    files: dict[str, Path], depth: np.ndarray, image: np.ndarray, max_depth: float, *,
    uncertainty: np.ndarray | None = None, intrinsics: tuple[float, float, float, float] | None = None,
    source: str | None = None,
) -> int:
    """Write one image's prediction: ``files`` maps each kind wanted to its path. Kinds: ``depth``
    (16-bit PNG, scale from ``max_depth``, ``source`` recorded), ``color`` (colour PNG over 0..max_depth),
    ``npy``, ``uncertainty`` (16-bit PNG), ``uncertainty_npy``, ``uncertainty_color`` (colour PNG
    over 0..its max) and ``ply`` (``intrinsics`` fx fy cx cy, default a 60 degree field of view).

    ``depth`` and ``uncertainty`` are (H, W) metres, ``image`` (H, W, 3) uint8. Each file is
    written atomically. Returns the number of points in the PLY (0 without one).
    """
    scale = depth_png_scale(max_depth)
    writers: dict[str, Callable[[Path], Any]] = {
        "depth": lambda path: write_depth_png(path, depth, scale, source=source),
        "color": lambda path: save_depth_colour(path, depth, max_depth),
        "npy": lambda path: write_npy(path, depth.astype(np.float32)),
        "uncertainty": lambda path: write_depth_png(path, uncertainty, scale),
        "uncertainty_npy": lambda path: write_npy(path, uncertainty.astype(np.float32)),
        "uncertainty_color": lambda path: save_depth_colour(path, uncertainty, float(uncertainty.max()) or 1.0),
        "ply": lambda path: depth_to_ply(path, depth, image, intrinsics or default_intrinsics(*depth.shape)),
    }
    points = 0
    for kind, path in files.items():
        written = writers[kind](path)
        points = written if kind == "ply" else points
    return points
