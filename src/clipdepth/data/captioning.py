"""Caption files for TR2M, written by any transformers image-to-text model.

Per image or dataset frame, ``<out>/<name>.txt`` holds ``lines`` captions, one per line: the first
is greedy (what evaluation reads), the others are sampled with a fixed seed, so that training can
draw among several wordings as TR2M's released data allows. Existing files are kept, so an
interrupted run resumes. ``clipdepth caption`` calls ``caption_to_folder``.
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
import torch
from huggingface_hub.utils import HFValidationError, validate_repo_id
from tqdm.auto import tqdm

from ..config import DataConfig, with_overrides
from ..encoders.loading import first_line, quiet_transformers
from ..errors import ConfigError, EncoderLoadError
from .loader import read_ahead
from ..io.atomic import write_text_atomic
from ..io.depth_io import MAX_PHOTO_PIXELS, read_rgb
from ..io.predictions import collect_inputs
from . import get_dataset

SAMPLING_ROUNDS = 3  # tries to find the sampled lines that differ from those already written


def load_captioner(name_or_path: str) -> tuple[Any, Any]:
    """(processor, model) from a hub id or a save_pretrained folder, or one EncoderLoadError line."""
    from transformers import AutoModelForImageTextToText, AutoProcessor

    def failure(reason: str) -> EncoderLoadError:
        return EncoderLoadError(
            f"cannot load captioning model '{name_or_path}' ({reason}): run once with network access so it "
            "is cached, or pass a folder saved by save_pretrained (model and processor)"
        )

    if not Path(name_or_path).is_dir():
        try:  # a path that cannot be a hub id would reach the Hub as a confusing id error
            validate_repo_id(name_or_path)
        except HFValidationError:
            raise failure("no such folder") from None
    with quiet_transformers():
        try:
            processor = AutoProcessor.from_pretrained(name_or_path)
            model = AutoModelForImageTextToText.from_pretrained(name_or_path)
        except Exception as exc:  # noqa: BLE001 - offline, wrong id, incomplete folder, not an image-to-text model
            raise failure(first_line(exc)) from None
    return processor, model.eval()


def caption_image(processor: Any, model: Any, image: np.ndarray, prompt: str | None, lines: int,
                  max_new_tokens: int, seed: int) -> list[str]:
    """Up to ``lines`` distinct non-empty captions of ``image`` (H, W, 3) uint8: greedy first, then
    sampled (seeded per image, so a file does not depend on which images were captioned before it)."""
    inputs = processor(images=image, text=prompt, return_tensors="pt") if prompt else processor(images=image, return_tensors="pt")
    inputs = {k: v.to(model.device, model.dtype) if v.is_floating_point() else v.to(model.device) for k, v in inputs.items()}

    def generate(count: int, **options: Any) -> list[str]:
        with torch.inference_mode():
            ids = model.generate(**inputs, max_new_tokens=max_new_tokens, num_return_sequences=count, **options)
        prompt_ids = inputs.get("input_ids")
        if prompt_ids is not None and ids.shape[1] >= prompt_ids.shape[1] and torch.equal(
            ids[:, : prompt_ids.shape[1]], prompt_ids.expand(count, -1)
        ):  # decoder-only models echo the prompt: keep only the caption
            ids = ids[:, prompt_ids.shape[1]:]
        return [" ".join(text.split()) for text in processor.batch_decode(ids, skip_special_tokens=True)]

    found = [text for text in generate(1, do_sample=False, num_beams=1) if text]
    torch.manual_seed(seed)
    for _ in range(SAMPLING_ROUNDS):
        if len(found) >= lines:
            break
        for text in generate(lines - len(found), do_sample=True, num_beams=1):
            if text and text not in found and len(found) < lines:
                found.append(text)
    return found


def images_to_caption(inputs: list[str]) -> list[tuple[str, Callable[[], np.ndarray]]]:
    """(name, image loader) per image of ``inputs`` (as ``collect_inputs`` finds them); images
    load only when captioned. ConfigError when there are none to look at."""
    if not inputs:
        raise ConfigError("nothing to caption: give images, folders, globs or lists, or a dataset", setting="inputs")
    return [(stem.as_posix(), partial(read_rgb, path, photo=True, max_pixels=MAX_PHOTO_PIXELS))
            for path, stem in collect_inputs(inputs)]


def _frame_image(frames: Any, index: int) -> np.ndarray:
    return frames[index].image


def frames_to_caption(dataset: str, split: str, overrides: list[str]) -> list[tuple[str, Callable[[], np.ndarray]]]:
    """(frame name, image loader) per frame of a registered dataset's split, its ``data`` settings
    given as ``field=value`` overrides."""
    frames = get_dataset(with_overrides(DataConfig(), [f"dataset={dataset}", *overrides]), split)
    # Datasets that list their names skip existing files without decoding a frame.
    names = getattr(frames, "names", None) or [frames[i].name for i in range(len(frames))]
    return [(name, partial(_frame_image, frames, i)) for i, name in enumerate(names)]


@dataclass
class CaptionReport:
    written: int = 0
    kept: int = 0  # files an earlier run wrote
    short: int = 0  # files with fewer lines than asked (the model repeated itself)
    failed: list[str] = field(default_factory=list)  # one line per image skipped, naming it


def caption_to_folder(
    jobs: list[tuple[str, Callable[[], np.ndarray]]], out: Path, model_name: str, *, device: str = "auto",
    prompt: str | None = None, lines: int = 5, max_new_tokens: int = 40, seed: int = 0, overwrite: bool = False,
    progress: bool = True, workers: int | None = None,
) -> CaptionReport:
    """Write ``<out>/<name>.txt`` for each (name, loader) of ``jobs`` with the captioning model
    ``model_name`` (hub id or folder) on ``device`` ("auto": CUDA if available). Files that exist are
    kept unless ``overwrite``; an image that cannot be read is named in the report, the others go on.
    The loaders run ahead in ``workers`` processes (``data.loader.read_ahead``; 0: here)."""
    processor, model = load_captioner(model_name)
    model.to(torch.device(("cuda" if torch.cuda.is_available() else "cpu") if device == "auto" else device))
    report = CaptionReport()
    wanted = [overwrite or not (out / f"{name}.txt").exists() for name, _ in jobs]
    images = read_ahead([load for (_, load), want in zip(jobs, wanted) if want], workers)
    for (name, _), want in zip(tqdm(jobs, desc="caption", unit="image", dynamic_ncols=True, disable=not progress), wanted):
        path = out / f"{name}.txt"
        image = next(images) if want else None
        if path.exists() and not overwrite:  # also a file an earlier job of this run wrote, as before
            report.kept += 1
            continue
        if isinstance(image, str):
            report.failed.append(image)
            continue
        found = caption_image(processor, model, image, prompt, lines, max_new_tokens, seed)
        if not found:
            report.failed.append(f"{name}: the model wrote only an empty caption")
            continue
        report.short += len(found) < lines
        write_text_atomic(path, "\n".join(found) + "\n")
        report.written += 1
    return report
