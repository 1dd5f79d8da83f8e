"""`clipdepth benchmark`: run a suite of evaluations and write its table beside the papers' published
rows (``clipdepth.evaluation.benchmark.run_benchmark``; docs/benchmark.md)."""

from __future__ import annotations

import argparse

from .args import add_workers, output_folder, path_arg, positive_int

HELP = "run a suite of evaluations and tabulate them beside the published numbers"
SUITE_NAMES = ("tr2m-indomain", "tr2m-zeroshot", "pureclip-nyu", "pureclip-kitti")  # evaluation.benchmark.SUITES


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "benchmark",
        help=HELP,
        description="Example: clipdepth benchmark --suite tr2m-zeroshot --checkpoint outputs/tr2m_nyu/model "
        "--data sun_rgbd.root=/data/sun_rgbd --data sun_rgbd.test_list=/data/sun_rgbd/test.txt "
        "--data sun_rgbd.caption_dir=/data/captions/sun_rgbd ... (or --data datasets.yaml). "
        "Each evaluation goes to OUT/SUITE/ROW/LABEL/ and is reused when finished; the table to "
        "OUT/SUITE/table.md and table.csv.",
    )
    p.add_argument(
        "--suite", required=True, help=f"a built-in suite ({', '.join(SUITE_NAMES)}) or a suite YAML file of checkpoint x dataset entries"
    )
    p.add_argument("--checkpoint", help="checkpoint folder (or Hub id) for every entry that names none")
    p.add_argument("--name", help="name of this checkpoint's row (default: from the checkpoint path)")
    rows = "a row of another model beside the published rows and the checkpoint's (docs/compare-rows.md); repeatable"
    p.add_argument("--hf", action="append", default=[], metavar="LABEL=MODEL[:ALIGN[:KIND]]", help=f"transformers depth model: {rows}")
    p.add_argument(
        "--pred", action="append", default=[], metavar="LABEL=DIR[:ALIGN[:KIND]]", help=f"predictions in DIR/<dataset label>/: {rows}"
    )
    p.add_argument(
        "--data",
        action="append",
        default=[],
        metavar="LABEL.FIELD=VALUE|FILE.yaml",
        help="a dataset's data setting, e.g. sun_rgbd.root=/data/sun_rgbd (fields of the data section: root, "
        "test_list, caption_dir, caption, ...), or a YAML file mapping each label to its fields; repeatable",
    )
    p.add_argument(
        "--released",
        action="store_true",
        help="score each set as TR2M's released evaluation does where that differs (the *_released protocols)",
    )
    tta = p.add_mutually_exclusive_group()
    tta.add_argument("--tta", dest="tta", action="store_true", default=None, help="flip test-time augmentation")
    tta.add_argument("--no-tta", dest="tta", action="store_false", help="no flip TTA (default: each checkpoint's eval.tta)")
    p.add_argument("--batch-size", type=positive_int, default=8)
    add_workers(p, "the frames")
    p.add_argument("--out", type=path_arg, default="outputs/benchmark", help="output folder (default: outputs/benchmark)")
    p.add_argument("--overwrite", action="store_true", help="evaluate again what an earlier run finished (default: reuse it)")
    p.set_defaults(
        func=run, flags={"data": "--data LABEL.FIELD=VALUE", "suite": "--suite", "checkpoint": "--checkpoint", "rows": "--hf/--pred"}
    )


def _data_settings(items: list[str]) -> dict[str, dict[str, str]]:
    """``--data`` values: ``label.field=value`` strings and YAML files of ``{label: {field: value}}``."""
    from pathlib import Path

    import yaml

    from ..errors import ConfigError

    settings: dict[str, dict[str, str]] = {}
    for item in items:
        if "=" not in item:
            try:
                loaded = yaml.safe_load(Path(item).read_text())
            except (OSError, UnicodeDecodeError, yaml.YAMLError) as exc:
                raise ConfigError(
                    f"--data {item}: not a label.field=value setting nor a readable YAML file ({type(exc).__name__})"
                ) from None
            if not isinstance(loaded, dict) or not all(isinstance(v, dict) for v in loaded.values()):
                raise ConfigError(f"{item}: expected a mapping of dataset labels to their data fields")
            pairs = [(str(label), str(k), str(v)) for label, fields in loaded.items() for k, v in fields.items()]
        else:
            key, _, value = item.partition("=")
            label, dot, field = key.partition(".")
            if not dot or not label or not field:
                raise ConfigError(f"--data {item}: expected LABEL.FIELD=VALUE, e.g. sun_rgbd.root=/data/sun_rgbd")
            pairs = [(label, field, value)]
        for label, field, value in pairs:
            settings.setdefault(label, {})[field] = value
    return settings


def run(args: argparse.Namespace) -> int:
    from ..evaluation.benchmark import run_benchmark
    from ..evaluation.rows import ExternalRow

    output_folder(args.out)
    result = run_benchmark(
        args.suite,
        args.checkpoint,
        name=args.name,
        data=_data_settings(args.data),
        rows=[ExternalRow.parse(t, "transformers") for t in args.hf] + [ExternalRow.parse(t, "predictions") for t in args.pred],
        released=args.released,
        tta=args.tta,
        batch_size=args.batch_size,
        workers=args.workers,
        out=args.out,
        overwrite=args.overwrite,
        progress=print,
    )
    print(result.markdown)
    ran = sum(e.status == "ran" for e in result.evaluations)
    print(f"{ran} evaluated, {len(result.evaluations) - ran} reused; wrote {result.folder}/table.md and table.csv")
    return 0
