"""Caption files for TR2M, written by any transformers image-to-text model.

Per image or dataset frame, ``<out>/<name>.txt`` holds ``lines`` captions, one per line: the first
is greedy (what evaluation reads), the others are sampled with a fixed seed, so that training can
draw among several wordings as TR2M's released data allows. ``clipdepth caption`` calls
``caption_to_folder``.

"Already done" is decided from content (``io.fingerprint``): beside each file it writes, clipdepth
records in ``<out>/.clipdepth/<name>.json`` the image it captioned (its content's digest), the
model (its weights' fingerprint) and settings, and the digest of the text it wrote. A rerun keeps a
file made from the same content with the same settings (an interrupted run resumes), captions again
one whose image was rewritten in place, and never replaces a file edited since (its text is not
what clipdepth wrote) nor one without a record (written by hand, or by an earlier clipdepth); one
made with other settings is named and left as it is. ``overwrite`` replaces them all.
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
from ..device import resolve_device
from ..encoders.loading import first_line, quiet_transformers, weights_fingerprint
from ..errors import ConfigError, DataError, EncoderLoadError
from .loader import read_ahead
from ..io.atomic import atomic_path
from ..io.depth_io import MAX_PHOTO_PIXELS, read_rgb
from ..io.fingerprint import RECORD_FOLDER, Made, bytes_digest, file_digest, read_record, write_record
from ..io.predictions import collect_inputs
from . import get_dataset

SAMPLING_ROUNDS = 3  # tries to find the sampled lines that differ from those already written


def load_captioner(name_or_path: str) -> tuple[Any, Any]:
    """(processor, model) from a hub id or a save_pretrained folder, or one EncoderLoadError line."""
    from transformers import AutoModelForImageTextToText, AutoProcessor

    def failure(reason: str) -> EncoderLoadError:
        return EncoderLoadError(
            f"cannot load captioning model '{name_or_path}' ({reason}): run once with network access so it "
            "is cached (offline, HF_HUB_OFFLINE=1 says so at once), or pass a folder saved by save_pretrained "
            "(model and processor)"
        )

    if not Path(name_or_path).is_dir():
        try:  # a path that cannot be a hub id would reach the Hub as a confusing id error
            validate_repo_id(name_or_path)
        except HFValidationError:
            raise EncoderLoadError(
                f"cannot load captioning model '{name_or_path}': no such folder; pass a folder "
                "saved by save_pretrained (model and processor), or a Hub id"
            ) from None
    with quiet_transformers():
        try:
            processor = AutoProcessor.from_pretrained(name_or_path)
            model = AutoModelForImageTextToText.from_pretrained(name_or_path)
        except Exception as exc:  # noqa: BLE001 - offline, wrong id, incomplete folder, not an image-to-text model
            raise failure(first_line(exc)) from None
    return processor, model.eval()


def caption_image(
    processor: Any, model: Any, image: np.ndarray, prompt: str | None, lines: int, max_new_tokens: int, seed: int
) -> list[str]:
    """Up to ``lines`` distinct non-empty captions of ``image`` (H, W, 3) uint8: greedy first, then
    sampled (seeded per image, so a file does not depend on which images were captioned before it)."""
    inputs = processor(images=image, text=prompt, return_tensors="pt") if prompt else processor(images=image, return_tensors="pt")
    inputs = {k: v.to(model.device, model.dtype) if v.is_floating_point() else v.to(model.device) for k, v in inputs.items()}

    def generate(count: int, **options: Any) -> list[str]:
        with torch.inference_mode():
            ids = model.generate(**inputs, max_new_tokens=max_new_tokens, num_return_sequences=count, **options)
        prompt_ids = inputs.get("input_ids")
        if (
            prompt_ids is not None
            and ids.shape[1] >= prompt_ids.shape[1]
            and torch.equal(ids[:, : prompt_ids.shape[1]], prompt_ids.expand(count, -1))
        ):  # decoder-only models echo the prompt: keep only the caption
            ids = ids[:, prompt_ids.shape[1] :]
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


@dataclass(frozen=True)
class CaptionJob:
    """One image to caption into ``<out>/<name>.txt``: ``load`` gives it ((H, W, 3) uint8; a
    DataError for one that cannot be read), ``source`` says which it is (its path, or the dataset
    frame), ``digest`` gives the digest of its content (``io.fingerprint``)."""

    name: str
    load: Callable[[], np.ndarray]
    source: str
    digest: Callable[[], str]


def images_to_caption(inputs: list[str], max_pixels: int = MAX_PHOTO_PIXELS) -> list[CaptionJob]:
    """A job per image of ``inputs`` (as ``collect_inputs`` finds them), named by its stem; images
    load only when captioned (one over ``max_pixels`` pixels is a DataError, from its header), their
    content is the file's bytes. ConfigError when there are none to look at."""
    if not inputs:
        raise ConfigError("nothing to caption: give images, folders, globs or lists, or a dataset", setting="inputs")
    return [
        CaptionJob(
            stem.as_posix(), partial(read_rgb, path, photo=True, max_pixels=max_pixels), str(path.resolve()), partial(file_digest, path)
        )
        for path, stem in collect_inputs(inputs)
    ]


def _frame_image(frames: Any, index: int) -> np.ndarray:
    return frames[index].image


def _frame_digest(frames: Any, index: int) -> str:
    """The content of a dataset frame: its files' bytes (image and depth: depth rewritten captions the
    frame again, to the same lines), or the decoded image for a dataset without files (synthetic)."""
    files = getattr(frames, "files", None)
    if files is None:
        image = np.ascontiguousarray(_frame_image(frames, index))
        return bytes_digest(f"{image.shape}|{image.dtype};".encode() + image.tobytes())
    return bytes_digest("|".join(file_digest(path) for path in files(index)).encode())


def frames_to_caption(dataset: str, split: str, overrides: list[str]) -> list[CaptionJob]:
    """A job per frame of a registered dataset's split, its ``data`` settings given as
    ``field=value`` overrides; named as the frame, its source the dataset and that name."""
    frames = get_dataset(with_overrides(DataConfig(), [f"dataset={dataset}", *overrides]), split)
    # Datasets that list their names decide what is done without decoding a frame.
    names = getattr(frames, "names", None) or [frames[i].name for i in range(len(frames))]
    return [
        CaptionJob(name, partial(_frame_image, frames, i), f"{dataset} {name}", partial(_frame_digest, frames, i))
        for i, name in enumerate(names)
    ]


@dataclass
class CaptionReport:
    written: int = 0
    kept: int = 0  # files an earlier run wrote from the same content with the same settings (or without a record)
    again: int = 0  # of ``written``, files an earlier run wrote from content the image no longer has
    edited: int = 0  # files edited since clipdepth wrote them: kept, whatever their image
    short: int = 0  # files with fewer lines than asked (the model repeated itself)
    failed: list[str] = field(default_factory=list)  # one line per image skipped, naming it


def _earlier(name: str, path: Path, record: Path, now: Callable[[], Made], overwrite: bool) -> str:
    """What to do with ``path``, the caption file of the image ``name``, given its ``record``:
    "write" (none there, or ``overwrite``), "kept", "edited" (its text is not what clipdepth
    wrote), "again" (made from other content of its image), or the message for one made from
    another image or with other settings (``now()``: what this run would record)."""
    if overwrite or not path.exists():
        return "write"
    earlier = read_record(record)
    if earlier is None:  # written by hand, or by a clipdepth that kept no record: never replaced
        return "kept"
    if earlier.written != file_digest(path):
        return "edited"
    made = now()
    refused = made.refusal(earlier, path, "the captions")
    if refused is not None:
        return f"{name}: {refused}"
    return "again" if made.compare(earlier) == "inputs changed" else "kept"


def caption_to_folder(
    jobs: list[CaptionJob],
    out: Path,
    model_name: str,
    *,
    device: str = "auto",
    prompt: str | None = None,
    lines: int = 5,
    max_new_tokens: int = 40,
    seed: int = 0,
    overwrite: bool = False,
    progress: bool = True,
    workers: int | None = None,
) -> CaptionReport:
    """Write ``<out>/<name>.txt`` for each job (``images_to_caption``, ``frames_to_caption``) with
    the captioning model ``model_name`` (hub id or folder) on ``device`` ("auto": CUDA if
    available; ``device.resolve_device``, whose ConfigError names the devices there are), and
    its record in ``<out>/.clipdepth/<name>.json``. Files that exist are taken as the module
    docstring says (all replaced with ``overwrite``); an image that cannot be read is named in
    the report, the others go on. The loaders run ahead in ``workers`` processes
    (``data.loader.read_ahead``; 0: here)."""
    target = resolve_device(device)  # a device this machine does not have, before the model loads
    processor, model = load_captioner(model_name)
    model.to(target)
    settings = {"model": weights_fingerprint(model), "prompt": prompt, "lines": lines, "max_new_tokens": max_new_tokens, "seed": seed}
    report = CaptionReport()
    states = []
    for job in jobs:  # names are distinct (collect_inputs; a dataset's), so this holds while files are written
        try:
            states.append(
                _earlier(
                    job.name,
                    out / f"{job.name}.txt",
                    out / RECORD_FOLDER / f"{job.name}.json",
                    lambda: Made(job.source, {"image": job.digest()}, settings),
                    overwrite,
                )
            )
        except DataError as exc:
            states.append(str(exc))
    images = read_ahead([job.load for job, state in zip(jobs, states) if state in ("write", "again")], workers)
    for job, state in zip(tqdm(jobs, desc="caption", unit="image", dynamic_ncols=True, disable=not progress), states):
        if state not in ("write", "again"):
            report.kept += state == "kept"
            report.edited += state == "edited"
            if state not in ("kept", "edited"):
                report.failed.append(state)
            continue
        image = next(images)
        if isinstance(image, str):
            report.failed.append(image)
            continue
        found = caption_image(processor, model, image, prompt, lines, max_new_tokens, seed)
        if not found:
            report.failed.append(f"{job.name}: the model wrote only an empty caption")
            continue
        try:
            digest = job.digest()
        except DataError as exc:
            report.failed.append(str(exc))
            continue
        report.short += len(found) < lines
        text = ("\n".join(found) + "\n").encode("utf-8")
        path = out / f"{job.name}.txt"
        # The old file goes first and the record before the new one: a run killed between them leaves
        # no file whose record says other text, which would read as edited by hand and be kept for good.
        path.unlink(missing_ok=True)
        made = Made(job.source, {"image": digest}, settings, bytes_digest(text))
        write_record(out / RECORD_FOLDER / f"{job.name}.json", made)
        with atomic_path(path) as tmp:
            tmp.write_bytes(text)
        report.written += 1
        report.again += state == "again"
    return report
