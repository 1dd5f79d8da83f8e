"""Example images for the page: the user's own, or scenes rendered by clipdepth's synthetic data."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

from PIL import Image

from ..data.captions import read_caption_file
from ..data.synthetic import DEFAULT_SIZE, render_scene
from ..io.atomic import atomic_path
from ..io.predictions import collect_inputs

MAX_EXAMPLES = 24  # the page lists them all; a large folder is cut here
# (kind, seed) of the built-in examples: a room and a street
SYNTHETIC = (("indoor", 3), ("outdoor", 1))


def synthetic_examples(folder: str | os.PathLike) -> list[tuple[Path, str]]:
    """Render a room and a street (``clipdepth.data.synthetic``) as PNGs into ``folder``, named
    ``synthetic_<kind>.png``; returns (image, its scene's first caption) each."""
    examples = []
    for kind, seed in SYNTHETIC:
        scene = render_scene(kind, seed, *DEFAULT_SIZE[kind])
        path = Path(folder) / f"synthetic_{kind}.png"
        with atomic_path(path) as tmp:
            Image.fromarray(scene.image).save(tmp, format="PNG")
        examples.append((path, scene.captions[0] if scene.captions else ""))
    return examples


def folder_examples(source: str | os.PathLike, folder: str | os.PathLike) -> list[tuple[Path, str]]:
    """The first ``MAX_EXAMPLES`` images found in ``source`` (recursively), copied into ``folder``,
    and each one's caption: the first line of ``<stem>.txt`` beside it, if there is one, else "".
    DataError when ``source`` holds no image."""
    examples = []
    for image, name in collect_inputs([str(source)])[:MAX_EXAMPLES]:
        path = Path(folder) / name.parent / f"{name.name}{image.suffix}"
        with atomic_path(path) as tmp:
            shutil.copyfile(image, tmp)
        caption_file = image.with_suffix(".txt")
        examples.append((path, read_caption_file(caption_file)[0] if caption_file.is_file() else ""))
    return examples
