"""`clipdepth caption`: caption files for TR2M, written by any transformers image-to-text model.

Per image or dataset frame, ``<out>/<name>.txt`` holds ``--lines`` captions, one per line: the
first is greedy (what evaluation reads), the others are sampled with a fixed seed, so that
training can draw among several wordings as TR2M's released data allows. Existing files are
kept, so an interrupted run resumes.
"""
from __future__ import annotations

import argparse
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .args import path_arg, output_folder, positive_int

if TYPE_CHECKING:
    import numpy as np

SAMPLING_ROUNDS = 3  # tries to find the sampled lines that differ from those already written


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "caption", help="caption images or a dataset's frames with an image-to-text model (TR2M's text input)",
        description="Examples: clipdepth caption photos/ --model Salesforce/blip-image-captioning-large --out captions/ ; "
        "clipdepth caption --dataset nyu --split train root=/data/nyu train_list=nyu_train.txt "
        "--model Salesforce/blip-image-captioning-large --out captions/nyu (then set data.caption_dir=captions/nyu)",
    )
    p.add_argument("inputs", nargs="*", metavar="INPUT",
                   help="image, folder (recursive), glob, or .txt list of paths; with --dataset: data overrides KEY=VALUE")
    p.add_argument("--dataset", help="caption a dataset's frames instead (a name in clipdepth.data.DATASETS)")
    p.add_argument("--split", default="train", choices=["train", "val", "test"], help="dataset split (default: train)")
    p.add_argument("--model", required=True, help="hub id or folder of an image-to-text model and its processor")
    p.add_argument("--out", required=True, type=path_arg, help="output folder: <name>.txt per image (use it as data.caption_dir)")
    p.add_argument("--prompt", help="text the model continues, passed to its processor as is (default: none)")
    p.add_argument("--lines", type=positive_int, default=5, help="captions per image: line 1 greedy, the others sampled (default: 5)")
    p.add_argument("--max-new-tokens", type=positive_int, default=40)
    p.add_argument("--seed", type=int, default=0, help="seed of the sampled lines (default: 0)")
    p.add_argument("--device", default="auto", help="auto (CUDA if available), cpu, cuda, cuda:1, ...")
    p.add_argument("--overwrite", action="store_true", help="replace caption files that exist (default: keep them)")
    p.set_defaults(func=run)


def load_captioner(name_or_path: str) -> tuple[Any, Any]:
    """(processor, model) from a hub id or a save_pretrained folder, or one EncoderLoadError line."""
    from huggingface_hub.utils import HFValidationError, validate_repo_id
    from transformers import AutoModelForImageTextToText, AutoProcessor

    from ..encoders.loading import first_line, quiet_transformers
    from ..errors import EncoderLoadError

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
    """Up to `lines` distinct non-empty captions: greedy first, then sampled (seeded per image, so
    a file does not depend on which images were captioned before it)."""
    import torch

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


def _jobs(args: argparse.Namespace) -> list[tuple[str, Callable[[], np.ndarray]]]:
    """(name, image loader) per image or dataset frame; images load only when captioned."""
    from ..config import DataConfig, with_overrides
    from ..data import get_dataset
    from ..errors import ConfigError
    from ..io.depth_io import MAX_PHOTO_PIXELS, read_rgb
    from .predict import collect_inputs

    if args.dataset is None:
        if not args.inputs:
            raise ConfigError("nothing to caption: give images, folders, globs or lists, or --dataset NAME")
        return [(stem.as_posix(), lambda path=path: read_rgb(path, photo=True, max_pixels=MAX_PHOTO_PIXELS))
                for path, stem in collect_inputs(args.inputs)]
    dataset = get_dataset(with_overrides(DataConfig(), [f"dataset={args.dataset}", *args.inputs]), args.split)
    # Datasets that list their names skip existing files without decoding a frame.
    names = getattr(dataset, "names", None) or [dataset[i].name for i in range(len(dataset))]
    return [(name, lambda i=i: dataset[i].image) for i, name in enumerate(names)]


def run(args: argparse.Namespace) -> int:
    import torch
    from tqdm.auto import tqdm

    from ..errors import ConfigError, DataError
    from ..io.atomic import write_text_atomic
    from .predict import report_failures

    output_folder(args.out)
    jobs = _jobs(args)
    processor, model = load_captioner(args.model)
    model.to(torch.device(("cuda" if torch.cuda.is_available() else "cpu") if args.device == "auto" else args.device))
    failed: list[str] = []
    kept = short = 0
    for name, load in tqdm(jobs, desc="caption", unit="image", dynamic_ncols=True):
        path = args.out / f"{name}.txt"
        if path.exists() and not args.overwrite:
            kept += 1  # a rerun after an interruption continues; nothing written is replaced
            continue
        try:
            image = load()
        except DataError as exc:  # one bad file must not lose the others' captions
            failed.append(str(exc))
            continue
        lines = caption_image(processor, model, image, args.prompt, args.lines, args.max_new_tokens, args.seed)
        if not lines:
            failed.append(f"{name}: the model wrote only an empty caption")
            continue
        short += len(lines) < args.lines
        write_text_atomic(path, "\n".join(lines) + "\n")
    written = len(jobs) - len(failed) - kept
    print(f"wrote captions for {written} image(s) to {args.out} ({args.lines} line(s) each)"
          + (f"; {short} with fewer (the model repeated itself)" if short else "")
          + (f"; kept {kept} existing (--overwrite to replace)" if kept else ""))
    return report_failures("caption", failed, "got no caption")
