"""`clipdepth caption`: caption files for TR2M, written by any transformers image-to-text model
(``clipdepth.data.captioning``): ``<out>/<name>.txt`` per image or dataset frame, line 1 greedy,
the others sampled. A rerun keeps the files made from the same image content with the same settings
(an interrupted run resumes) and those edited since, and captions again the images rewritten in place.
With ``--dataset`` the frames' ``data`` settings are ``data.<field>=<value>`` overrides, as for
``train`` and ``evaluate`` (a bare ``<field>=<value>`` is read the same).
"""

from __future__ import annotations

import argparse

from .args import OVERRIDE, add_workers, output_folder, path_arg, positive_int, report_failures
from .image_options import add_max_pixels

HELP = "caption images or a dataset's frames with an image-to-text model (TR2M's text input)"
# What helps with a skipped item, by a marker in its line (cli.args.report_failures).
HELPS = [
    ("limit of", "where an image is over the limit: --max-pixels"),
    ("overwrite it", "where a file holds the captions of another image or made with other settings: another --out, or --overwrite"),
]


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "caption",
        help=HELP,
        description="Examples: clipdepth caption photos/ --model Salesforce/blip-image-captioning-large --out captions/ ; "
        "clipdepth caption --dataset nyu --split train data.root=/data/nyu data.train_list=nyu_train.txt "
        "--model Salesforce/blip-image-captioning-large --out captions/nyu (then set data.caption_dir=captions/nyu)",
    )
    p.add_argument(
        "inputs",
        nargs="*",
        metavar="INPUT",
        help="image, folder (recursive), glob, or .txt list of paths; with --dataset: data.FIELD=VALUE overrides",
    )
    p.add_argument("--dataset", help="caption a dataset's frames instead (a name in clipdepth.data.DATASETS)")
    p.add_argument("--split", default="train", choices=["train", "val", "test"], help="dataset split (default: train)")
    p.add_argument("--model", required=True, help="hub id or folder of an image-to-text model and its processor")
    p.add_argument("--out", required=True, type=path_arg, help="output folder: <name>.txt per image (use it as data.caption_dir)")
    p.add_argument("--prompt", help="text the model continues, passed to its processor as is (default: none)")
    p.add_argument("--lines", type=positive_int, default=5, help="captions per image: line 1 greedy, the others sampled (default: 5)")
    p.add_argument("--max-new-tokens", type=positive_int, default=40)
    p.add_argument("--seed", type=int, default=0, help="seed of the sampled lines (default: 0)")
    p.add_argument("--device", default="auto", help="auto (CUDA if available), cpu, cuda, cuda:1, ...")
    p.add_argument(
        "--overwrite",
        action="store_true",
        help="replace caption files that exist, also those edited since (default: keep those made from the "
        "same image content and settings, and edited ones; caption again images rewritten since)",
    )
    add_max_pixels(p)
    add_workers(p, "the images")
    # overrides: KEY=VALUE words after the options (the parser collects them there)
    p.set_defaults(func=run, overrides=[], flags={"inputs": "INPUT or --dataset"})


def data_overrides(words: list[str]) -> list[str]:
    """``data.<field>=<value>`` (or ``<field>=<value>``) words -> the ``<field>=<value>`` overrides of
    the ``data`` section; ConfigError naming the first word that is not one."""
    from ..errors import ConfigError

    fields = []
    for word in words:
        key = word.partition("=")[0]
        field = key.removeprefix("data.")
        if not OVERRIDE.match(word) or "." in field:
            raise ConfigError(
                f"{word!r}: with --dataset, give the frames' data settings as data.<field>=<value> "
                "(e.g. data.root=/data/nyu), not images or other sections"
            )
        fields.append(f"{field}={word.partition('=')[2]}")
    return fields


def run(args: argparse.Namespace) -> int:
    from ..data.captioning import caption_to_folder, frames_to_caption, images_to_caption

    output_folder(args.out)
    words = [*args.inputs, *args.overrides]
    if args.dataset is None:
        jobs = images_to_caption(words, max_pixels=int(args.max_pixels * 1e6))
    else:
        jobs = frames_to_caption(args.dataset, args.split, data_overrides(words))
    report = caption_to_folder(
        jobs,
        args.out,
        args.model,
        device=args.device,
        prompt=args.prompt,
        lines=args.lines,
        max_new_tokens=args.max_new_tokens,
        seed=args.seed,
        overwrite=args.overwrite,
        workers=args.workers,
    )
    print(
        f"wrote captions for {report.written} image(s) to {args.out} ({args.lines} line(s) each)"
        + (f"; {report.short} with fewer (the model repeated itself)" if report.short else "")
        + (f"; {report.again} of them replace those of an image since rewritten" if report.again else "")
        + (f"; kept {report.kept} existing (--overwrite to replace)" if report.kept else "")
        + (f"; kept {report.edited} edited since (--overwrite replaces them too)" if report.edited else "")
    )
    return report_failures("caption", report.failed, "got no caption", HELPS)
