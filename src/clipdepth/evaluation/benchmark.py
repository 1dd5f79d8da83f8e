"""Benchmark suites: several evaluations of one or more checkpoints, and one table per suite with
the papers' published rows beside ours (docs/benchmark.md).

A suite is a list of entries, each a dataset label with the recipe, dataset and protocol it is
scored with; the checkpoint is given for the whole suite or per entry (suite files). Every
evaluation is one ``evaluate_checkpoint`` call into its own folder
``<out>/<suite>/<row>/<label>/`` (``metrics.json``, ``per_image.csv``, ``results.md``); one that
is finished there, of the same checkpoint, settings and frames, is reused, not redone, so an
interrupted benchmark resumes. Then
``<out>/<suite>/table.md`` and ``table.csv`` are written: the published rows (shipped as data in
``evaluation/published/*.yaml``, each table with its paper, arXiv id and table number), our rows
in the same columns, the average rank where the paper ranks methods, and for each of our rows
whether its weights are real or random and whether flip TTA was on.

Rows of other models sit beside ours (``rows``, ``evaluation.rows.ExternalRow``): a transformers
depth model, evaluated like a checkpoint (``evaluate_hf``, reused when finished), and a folder of
saved predictions, scored again on every run (``score_saved``, against the suite's ground truth
written once under ``<out>/<suite>/.ground_truth/``). Every row's settings on a dataset come from
the one rule (``evaluation_settings``), each table row says its alignment.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import os
import re
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable, Mapping, Sequence

import yaml

from ..config import DataConfig, first_difference
from ..registry import clip_frozen_parts, find_spec
from ..errors import ClipdepthError, ConfigError, DataError
from ..io.atomic import atomic_path, write_text_atomic
from ..models import model_class
from .checkpoint import OUTPUTS, checkpoint_digest, evaluate_checkpoint, evaluation_settings, frames_digest
from .hf_models import alignment_text, evaluate_hf
from .metrics import LOWER_IS_BETTER, METRIC_NAMES
from .protocol import get_protocol
from .published import LENGTH_METRICS, RANK_DECIMALS, PublishedTable, average_ranks, published_tables
from .report import HEADERS
from .rows import ExternalRow, ground_truth_folder, score_prediction_folder

__all__ = ["SUITES", "BenchmarkResult", "Suite", "SuiteEntry", "load_suite", "run_benchmark", "weights_summary"]

DATASET_TITLES = {
    "nyu": "NYU",
    "kitti": "KITTI",
    "void": "VOID",
    "c3vd": "C3VD",
    "sun_rgbd": "SUN RGB-D",
    "ibims": "iBims-1",
    "hypersim": "HyperSim",
    "diode": "DIODE",
    "simcol": "SimCol",
}
# Where TR2M's released evaluation scores a set differently from the standard (docs/protocol.md,
# "Released variants"): the protocol ``released=True`` picks.
RELEASED_PROTOCOLS = {
    "kitti": "kitti_kb_released",
    "sun_rgbd": "sun_rgbd_released",
    "ibims": "ibims_released",
    "hypersim": "hypersim_released",
    "diode": "diode_released",
}
# A transformers row whose every normalisation layer is at its initial value (``at_initialisation``).
RANDOM_TRANSFORMERS = "RANDOM weights (normalisation layers at their initial values): these numbers measure the pipeline, not the model"
# Where a suite's ground truth is written for predictions rows: a dot name, which no row's folder
# (``_folder_name``) has.
GROUND_TRUTH = ".ground_truth"
# --------------------------------------------------------------------------- suites


@dataclass(frozen=True)
class SuiteEntry:
    """One evaluation of a suite: a dataset ``label`` (a table column group) scored with ``recipe``
    / ``dataset`` / ``protocol`` (each optional, as for ``evaluate_checkpoint``); a suite file may
    give the entry its own ``checkpoint``, row ``name`` and ``data`` settings."""

    label: str
    recipe: str | None = None
    dataset: str | None = None
    protocol: str | None = None
    checkpoint: str | None = None
    name: str | None = None
    data: tuple[tuple[str, str], ...] = ()


@dataclass(frozen=True)
class Suite:
    name: str
    entries: tuple[SuiteEntry, ...]
    metrics: tuple[str, ...]  # the columns shown for each dataset label, in this order
    published: str | None = None  # id of the published table shown beside ours
    avg_rank: bool = False  # rank the rows (the paper's table does)
    description: str = ""

    @property
    def labels(self) -> list[str]:
        return list(dict.fromkeys(e.label for e in self.entries))


SUITES: dict[str, Suite] = {
    s.name: s
    for s in (
        Suite(
            "tr2m-indomain",
            tuple(SuiteEntry(n, dataset=n) for n in ("nyu", "kitti", "void", "c3vd")),
            ("d1", "abs_rel", "rmse"),
            published="tr2m-nyu",
            description="TR2M on its four training sets' test splits (NYU, KITTI, VOID, C3VD)",
        ),
        Suite(
            "tr2m-zeroshot",
            tuple(SuiteEntry(n, dataset=n) for n in ("sun_rgbd", "ibims", "hypersim", "diode", "simcol")),
            ("d1",),
            published="tr2m-zeroshot",
            avg_rank=True,
            description="TR2M zero-shot on SUN RGB-D, iBims-1, HyperSim, DIODE and SimCol",
        ),
        Suite(
            "pureclip-nyu",
            (SuiteEntry("nyu", dataset="nyu"),),
            ("abs_rel", "rmse", "log10", "d1", "d2", "d3"),
            published="pureclip-nyu",
            description="PureCLIP-Depth on NYU Depth V2 (Eigen crop)",
        ),
        Suite(
            "pureclip-kitti",
            (SuiteEntry("kitti", dataset="kitti"),),
            ("abs_rel", "rmse", "log10", "d1", "d2", "d3"),
            published="pureclip-kitti",
            description="PureCLIP-Depth on KITTI (Garg crop)",
        ),
    )
}

_SUITE_KEYS = {"name", "description", "published", "metrics", "avg_rank", "entries"}
_ENTRY_KEYS = {"label", "recipe", "dataset", "protocol", "checkpoint", "name", "data"}


def _suite_file(path: Path) -> Suite:
    where = str(path)
    try:
        spec = yaml.safe_load(path.read_text())
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as exc:
        raise ConfigError(
            f"{where}: cannot read suite file ({type(exc).__name__}: {' '.join(str(exc).split())[:160]})", setting="suite"
        ) from None
    if not isinstance(spec, dict) or not isinstance(spec.get("entries"), list) or not spec["entries"]:
        raise ConfigError(f"{where}: a suite file is a mapping with a non-empty 'entries' list", setting="suite")
    unknown = set(spec) - _SUITE_KEYS
    if unknown:
        raise ConfigError(
            f"{where}: unknown key {sorted(unknown)[0]!r}; a suite file has {', '.join(sorted(_SUITE_KEYS))}", setting="suite"
        )
    published = spec.get("published")
    if published is not None and published not in published_tables():
        raise ConfigError(f"{where}: published table {published!r} unknown; shipped: {', '.join(published_tables())}", setting="suite")
    entries = []
    for number, item in enumerate(spec["entries"], start=1):
        if not isinstance(item, dict) or not item.get("label"):
            raise ConfigError(f"{where}: entry {number} is not a mapping with a 'label'", setting="suite")
        bad = set(item) - _ENTRY_KEYS
        if bad:
            raise ConfigError(
                f"{where}: entry {number}: unknown key {sorted(bad)[0]!r}; an entry has {', '.join(sorted(_ENTRY_KEYS))}", setting="suite"
            )
        data = item.get("data") or {}
        if not isinstance(data, dict):
            raise ConfigError(f"{where}: entry {number}: 'data' must map data fields to values", setting="suite")
        entries.append(
            SuiteEntry(
                str(item["label"]),
                *(None if item.get(k) is None else str(item[k]) for k in ("recipe", "dataset", "protocol", "checkpoint", "name")),
                tuple((str(k), str(v)) for k, v in data.items()),
            )
        )
    table = published_tables()[published] if published else None
    metrics = spec.get("metrics") or (_metrics_of(table) if table else ("abs_rel", "rmse", "d1"))
    if isinstance(metrics, str) or any(m not in METRIC_NAMES for m in metrics):
        raise ConfigError(f"{where}: metrics must be a list of {', '.join(METRIC_NAMES)}", setting="suite")
    avg_rank = spec.get("avg_rank", table.avg_rank if table else False)
    return Suite(
        str(spec.get("name") or path.stem), tuple(entries), tuple(metrics), published, bool(avg_rank), str(spec.get("description", ""))
    )


def _metrics_of(table: PublishedTable) -> tuple[str, ...]:
    return tuple(dict.fromkeys(c.partition(".")[2] for c in table.columns))


def load_suite(suite: str | Path | Suite) -> Suite:
    """A built-in suite by name, or a suite YAML file (docs/benchmark.md); ConfigError otherwise."""
    if isinstance(suite, Suite):
        return suite
    text = str(suite)
    if text in SUITES:
        return SUITES[text]
    path = Path(text)
    if path.suffix in (".yaml", ".yml") or path.is_file():
        if not path.is_file():
            raise ConfigError(f"{path}: suite file not found", setting="suite")
        return _suite_file(path)
    raise ConfigError(f"unknown suite {text!r}: choose one of {', '.join(SUITES)}, or give a suite YAML file", setting="suite")


# --------------------------------------------------------------------------- checkpoints


def _checkpoint_meta(checkpoint: str) -> tuple[dict, Any]:
    """(config.json, the checkpoint's Config) without loading its frozen parts."""
    from ..models import read_checkpoint

    _, meta, cfg = read_checkpoint(checkpoint)
    return meta, cfg


def weights_summary(meta: Mapping[str, Any], cfg: Any, summaries: Iterable[Mapping[str, Any]] = ()) -> tuple[bool, str]:
    """(real, one line): whether a checkpoint's weights are real — every frozen part pretrained,
    relative depth from a model (not the ground-truth oracle), and a head with a training record
    (``epoch`` in config.json) or converted from a released checkpoint — and a line saying which
    parts are not.

    A frozen part is random when its config section says ``random_init``, or when a record made
    from the weights themselves names it: ``untrained_frozen_parts`` (``encoders.frozen.untrained_parts``:
    normalisation layers at their initial values) in the checkpoint's config.json, written at save,
    or in ``summaries`` (the metrics.json of its evaluations). So a folder of random weights named
    by path (``clip.name=/some/folder``) is random too; checkpoints and results written before the
    record have only the config to go by."""
    # what the config says of the frozen parts is the model's own (``ModelSpec.frozen_parts``)
    spec = find_spec(cfg.model)
    random_parts, oracle = (spec.frozen_parts if spec else clip_frozen_parts)(cfg)
    for record in (meta, *summaries):
        random_parts += record.get("untrained_frozen_parts") or []
    random_parts = list(dict.fromkeys(random_parts))
    if meta.get("converted_from"):
        head, trained = "converted from a released checkpoint", True
    elif meta.get("zero_shot"):
        head, trained = "none: zero-shot, nothing trained", True
    elif meta.get("epoch") is not None:
        head, trained = f"trained (saved at epoch {meta['epoch']})", True
    else:
        head, trained = "untrained, no training record in config.json", False
    problems = [f"random frozen parts: {', '.join(random_parts)}"] if random_parts else []
    problems += ["relative depth made from the ground truth (oracle)"] if oracle else []
    if not problems and trained:
        return True, f"real weights (pretrained frozen parts; head {head})"
    if not trained:
        problems.append(f"head {head}")
    return False, f"RANDOM weights ({'; '.join(problems)}): these numbers measure the pipeline, not the method"


# --------------------------------------------------------------------------- running


@dataclass
class Evaluation:
    """One planned or finished evaluation of a benchmark."""

    entry: SuiteEntry
    row: str
    checkpoint: str  # the checkpoint; for another model's row, its model id or predictions folder
    folder: Path
    data: DataConfig
    data_overrides: list[str]
    protocol: str
    tta: bool
    status: str = "pending"  # "reused" (finished earlier), "ran" (this call)
    summary: dict = field(default_factory=dict)
    uses_captions: bool = False  # the checkpoint's model reads a caption per frame (TR2M)
    external: ExternalRow | None = None  # another model's row; None: a clipdepth checkpoint's
    predictions: Path | None = None  # a predictions row's folder for this dataset


@dataclass
class OurRow:
    name: str
    checkpoint: str
    real_weights: bool
    weights: str
    evaluations: list[Evaluation]
    external: ExternalRow | None = None  # another model's row; None: a clipdepth checkpoint's

    @property
    def method(self) -> str:
        return f"**ours: {self.name}**" if self.external is None else self.external.method


@dataclass
class BenchmarkResult:
    suite: Suite
    folder: Path
    evaluations: list[Evaluation]
    rows: list[OurRow]
    markdown: str
    csv_text: str


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "_", text).strip("_.") or "checkpoint"


def _folder_name(name: str) -> str:
    """The folder of a row or dataset label: the name itself where it is a plain one (its own
    ``_slug``, so folders of earlier runs stay where they are), else its slug, ``+`` and a hash of
    the exact name. A plain name has no ``+``, so distinct names never share a folder: "ours (A)"
    and "ours [A]", both ``ours_A`` as slugs, go to ``ours_A+<hash>`` with two hashes."""
    slug = _slug(name)
    return name if slug == name else f"{slug}+{hashlib.sha256(name.encode()).hexdigest()[:8]}"


def _same_checkpoint(a: str, b: str) -> bool:
    if a == b:
        return True
    pa, pb = Path(a), Path(b)
    return pa.exists() and pb.exists() and pa.resolve() == pb.resolve()


def _finished(evaluation: Evaluation) -> bool:
    """Whether ``evaluation`` has all its results in its folder from an earlier run of the same
    evaluation (checkpoint or transformers model, dataset, protocol, TTA, alignment, and
    ``_changed_since``: data settings, checkpoint files, frames); DataError when they are another's."""
    paths = [evaluation.folder / name for name in OUTPUTS]
    if not all(p.is_file() for p in paths):
        return False  # none, or what a killed run left: done again
    metrics = paths[0]
    try:
        summary = json.loads(metrics.read_text())
        model = ("checkpoint", summary["checkpoint"]) if "checkpoint" in summary else ("transformers model", summary["model"])
        scored = (summary["dataset"], summary["protocol"], bool(summary["flip_tta"]))
        done = (*model, *scored, summary.get("align", "none"), summary.get("pred_kind", "depth"))
    except (OSError, ValueError, KeyError, TypeError):
        raise DataError(
            f"{metrics}: not a readable clipdepth metrics.json; remove its folder or allow overwriting it", setting="overwrite"
        ) from None
    external = evaluation.external
    wanted = (
        "checkpoint" if external is None else "transformers model",
        evaluation.checkpoint,
        evaluation.data.dataset,
        evaluation.protocol,
        evaluation.tta,
        *(("none", "depth") if external is None else (external.align, external.pred_kind)),
    )
    if done[0] != wanted[0] or not _same_checkpoint(done[1], wanted[1]) or done[2:] != wanted[2:]:

        def say(v: tuple) -> str:
            aligned = f", {alignment_text(v[5], v[6])}" if v[0] != "checkpoint" else ""
            return f"{v[0]} {v[1]}, dataset {v[2]}, protocol {v[3]}, flip TTA {'on' if v[4] else 'off'}{aligned}"

        raise DataError(
            f"{metrics}: an earlier evaluation with {say(done)}; this run asks for {say(wanted)}; write elsewhere, or allow overwriting it",
            setting="overwrite",
        )
    changed = _changed_since(summary, evaluation)
    if changed:
        raise DataError(f"{metrics}: {changed} since that evaluation; write elsewhere, or allow overwriting it", setting="overwrite")
    evaluation.summary = summary
    return True


def _changed_since(summary: dict, evaluation: Evaluation) -> str | None:
    """What differs between a finished evaluation and this one beyond its name: the data settings,
    the checkpoint's files (a run trained again into the same folder) or the files the test frames
    are read from (``frames_digest``). Results written before these were recorded cannot tell, and
    count as the same. The frames are listed again (not decoded): data that cannot be is an error."""
    if "data" in summary:
        diff = first_difference(summary["data"], json.loads(json.dumps(asdict(evaluation.data))))
        if diff is not None:
            return f"data.{diff[0]} changed ({diff[1]!r} then, {diff[2]!r} now)"
    if "checkpoint_digest" in summary and summary["checkpoint_digest"] != checkpoint_digest(evaluation.checkpoint):
        return f"the checkpoint {evaluation.checkpoint} changed (its files differ)"
    if "frames_digest" in summary:
        from ..data import get_dataset

        frames = get_dataset(evaluation.data, "test")
        if summary["frames_digest"] != frames_digest(frames, evaluation.data, evaluation.uses_captions):
            what = "a frame added to or removed from the list, or a file such as the ground truth rewritten in place"
            what += ", or a caption file edited" if evaluation.uses_captions else ""
            return f"the test frames' files changed ({what})"
    return None


def _entry_error(exc: ClipdepthError, where: str) -> ClipdepthError:
    setting = exc.setting
    if setting and setting.startswith("data."):
        setting = "data"
    return type(exc)(f"{where}: {exc}", setting=setting)


def _data_fields(items: Mapping[str, Any] | Iterable[str] | None) -> dict[str, dict[str, str]]:
    """``{label: {field: value}}`` from a mapping of that shape or ``label.field=value`` strings."""
    if items is None:
        return {}
    if isinstance(items, Mapping):
        return {str(k): {str(f): str(v) for f, v in dict(fields).items()} for k, fields in items.items()}
    result: dict[str, dict[str, str]] = {}
    for item in items:
        key, sep, value = item.partition("=")
        label, dot, name = key.strip().partition(".")
        if not sep or not dot or not label or not name:
            raise ConfigError(f"data setting {item!r} is not of the form <label>.<field>=<value>", setting="data")
        result.setdefault(label, {})[name.removeprefix("data.")] = value
    return result


def _check_data(evaluation: Evaluation, uses_captions: bool) -> None:
    """What can be checked before any evaluation runs: the data root, the test split's files and,
    for a model that reads captions, the first frame's caption."""
    from ..data import get_dataset
    from ..data.captions import caption_lookup

    data = evaluation.data
    if not data.dataset.startswith("synthetic") and not data.root:
        raise ConfigError(f"no data root for dataset {data.dataset!r}; set {evaluation.entry.label}.root=<folder>", setting="data")
    frames = get_dataset(data, "test")
    if uses_captions and len(frames):
        caption_lookup(data)(frames[0])


def plan_benchmark(
    suite: str | Path | Suite,
    checkpoint: str | Path | None = None,
    *,
    name: str | None = None,
    data: Mapping[str, Any] | Iterable[str] | None = None,
    rows: Sequence[ExternalRow] = (),
    released: bool = False,
    tta: bool | None = None,
    out: str | Path = "outputs/benchmark",
    overwrite: bool = False,
) -> tuple[Suite, list[Evaluation], dict[str, tuple[dict, Any]]]:
    """The evaluations ``run_benchmark`` makes (its arguments), with each one's status: "reused"
    when finished in its folder, else "pending" (a predictions row's always); DataError for results
    there of another evaluation, or of other frames (``_finished``). Nothing is evaluated or written."""
    suite = load_suite(suite)
    fields = _data_fields(data)
    unknown = sorted(set(fields) - set(suite.labels))
    if unknown:
        raise ConfigError(
            f"data for {unknown[0]!r}, which suite {suite.name} does not have; its labels: {', '.join(suite.labels)}", setting="data"
        )
    others = {r.name: r for r in rows}
    if len(others) < len(rows):
        twice = next(r.name for i, r in enumerate(rows) if r.name in [o.name for o in rows[:i]])
        raise ConfigError(f"{suite.name}: row {twice!r} is given twice; name the rows apart", setting="rows")
    metas: dict[str, tuple[dict, Any]] = {}
    evaluations = []
    row_checkpoints: dict[str, str] = {}
    for entry in suite.entries:
        where = f"{suite.name}/{entry.label}"
        overrides = [f"{k}={v}" for k, v in (*entry.data, *fields.get(entry.label, {}).items())]
        ckpt = entry.checkpoint or (None if checkpoint is None else str(checkpoint))
        if ckpt is None and not rows:
            raise ConfigError(f"{where}: no checkpoint (give one for the whole suite, or per entry in a suite file)", setting="checkpoint")
        if ckpt is not None:
            # By default the checkpoint as given (``_folder_name`` keeps distinct paths apart, where
            # their slugs may agree: /x/a_b/model and /x/a/b/model); a row of two checkpoints would
            # put both evaluations of a label into one folder, so it is refused before any runs.
            row = entry.name or name or os.path.normpath(ckpt)
            if not _same_checkpoint(row_checkpoints.setdefault(row, ckpt), ckpt):
                raise ConfigError(
                    f"{suite.name}: row {row!r} has two checkpoints ({row_checkpoints[row]}, {ckpt}); name them apart", setting="suite"
                )
            if row in others:
                raise ConfigError(
                    f"{suite.name}: row {row!r} names a checkpoint and {others[row].source}; name them apart", setting="suite"
                )
            if ckpt not in metas:
                metas[ckpt] = _checkpoint_meta(ckpt)
            cfg = metas[ckpt][1]
            settings, protocol = _entry_settings(cfg, entry, overrides, released, where)
            uses_captions = model_class(metas[ckpt][0].get("architecture", "")).uses_captions
            evaluations.append(
                Evaluation(
                    entry,
                    row,
                    ckpt,
                    _evaluation_folder(out, suite, row, entry),
                    settings,
                    overrides,
                    protocol,
                    cfg.eval.tta if tta is None else tta,
                    uses_captions=uses_captions,
                )
            )
        for other in rows:
            predictions = other.predictions_for(entry.label, len(suite.labels)) if other.kind == "predictions" else None
            if other.kind == "predictions" and predictions is None:
                continue  # no predictions for this dataset: the row's cells stay empty
            settings, protocol = _entry_settings(None, entry, overrides, released, where)
            folder = _evaluation_folder(out, suite, other.name, entry)
            evaluations.append(
                Evaluation(
                    entry, other.name, other.source, folder, settings, overrides, protocol, False, external=other, predictions=predictions
                )
            )
    missing = [r for r in rows if not any(e.row == r.name for e in evaluations)]
    if missing:
        labels = ", ".join(suite.labels)
        raise ConfigError(
            f"--pred {missing[0].name}: {missing[0].source} holds no folder of a dataset label of suite {suite.name} ({labels})"
            + (", nor is it one" if len(suite.labels) == 1 else ""),
            setting="rows",
        )
    for evaluation in evaluations:
        try:
            if evaluation.external is not None and evaluation.external.kind == "predictions":
                # scored again on every run (reading files is cheap, and they may have changed),
                # over its own earlier results only
                _refuse_others(evaluation.folder / "metrics.json", overwrite)
            elif not overwrite and _finished(evaluation):
                evaluation.status = "reused"
        except ClipdepthError as exc:
            raise _entry_error(exc, f"{suite.name}/{evaluation.row}/{evaluation.entry.label}") from None
    return suite, evaluations, metas


def _refuse_others(metrics: Path, overwrite: bool) -> None:
    """DataError (setting ``overwrite``) for a predictions row's ``metrics.json`` that holds another
    kind of evaluation's results (a checkpoint or transformers row of the same name), unless
    ``overwrite``."""
    if overwrite or not metrics.is_file():
        return
    try:
        mine = "predictions" in json.loads(metrics.read_text())
    except (OSError, ValueError, TypeError):
        mine = False
    if not mine:
        raise DataError(
            f"{metrics}: the results of another evaluation than a prediction folder's; write elsewhere, or allow overwriting it",
            setting="overwrite",
        )


def _evaluation_folder(out: str | Path, suite: Suite, row: str, entry: SuiteEntry) -> Path:
    return Path(out) / suite.name / _folder_name(row) / _folder_name(entry.label)


def _entry_settings(cfg: Any, entry: SuiteEntry, overrides: list[str], released: bool, where: str) -> tuple[DataConfig, str]:
    """(data settings, protocol) of a checkpoint of config ``cfg`` (None: another model) on a suite
    entry: the one rule (``evaluation_settings``), with ``released`` picking TR2M's released
    protocol where the entry names none (``RELEASED_PROTOCOLS``)."""
    try:
        chosen = evaluation_settings(cfg, entry.dataset, entry.recipe, entry.protocol, overrides)
    except ClipdepthError as exc:
        raise _entry_error(exc, where) from None
    protocol = entry.protocol
    if protocol is None and released:
        protocol = RELEASED_PROTOCOLS.get(chosen.data.dataset)
    protocol = protocol or chosen.protocol
    get_protocol(protocol)
    return chosen.data, protocol


def run_benchmark(
    suite: str | Path | Suite,
    checkpoint: str | Path | None = None,
    *,
    name: str | None = None,
    data: Mapping[str, Any] | Iterable[str] | None = None,
    rows: Sequence[ExternalRow] = (),
    released: bool = False,
    tta: bool | None = None,
    batch_size: int = 8,
    workers: int | None = None,
    out: str | Path = "outputs/benchmark",
    overwrite: bool = False,
    progress: Callable[[str], None] | None = None,
) -> BenchmarkResult:
    """Run ``suite`` (a name in ``SUITES`` or a suite YAML file) and write its table.

    ``checkpoint``: for every entry without its own; ``name``: the row's name (default: the
    checkpoint path as given, ``os.path.normpath``; ConfigError before anything runs for one row
    name given to two checkpoints). ``data``: each dataset label's data settings, ``{label: {field: value}}`` or
    ``["label.field=value", ...]`` (``root``, ``test_list``, ``caption_dir``, ... of
    ``DataConfig``). ``rows``: rows of other models beside the checkpoint's (``ExternalRow``: a
    transformers model on every dataset label; a predictions folder on the labels it has a folder
    for), each with its own name; with ``rows``, ``checkpoint`` may be None (no checkpoint row).
    ``released``: score each set with the protocol of TR2M's released evaluation
    where it differs from the standard (``RELEASED_PROTOCOLS``). ``tta``: flip TTA (default: each
    checkpoint's ``eval.tta``; never for other models). Evaluations go to ``<out>/<suite>/<row>/<label>/`` (``_folder_name``
    of each); a finished one of the same checkpoint, settings and frames is reused unless
    ``overwrite``. Every pending evaluation's data is checked before the first runs. Writes
    ``<out>/<suite>/table.md`` and ``table.csv``. Errors are one line naming the suite and label
    (ConfigError, DataError, CheckpointError).
    """
    say = progress or (lambda message: None)
    suite, evaluations, metas = plan_benchmark(
        suite, checkpoint, name=name, data=data, rows=rows, released=released, tta=tta, out=out, overwrite=overwrite
    )
    pending = [e for e in evaluations if e.status != "reused"]
    for evaluation in pending:
        try:
            _check_data(evaluation, evaluation.uses_captions)
        except ClipdepthError as exc:
            raise _entry_error(exc, f"{suite.name}/{evaluation.row}/{evaluation.entry.label}") from None
    for evaluation in evaluations:
        where = f"{suite.name}/{evaluation.row}/{evaluation.entry.label}"
        if evaluation.status == "reused":
            say(f"{where}: finished earlier, reused ({evaluation.folder}/metrics.json)")
            continue
        external = evaluation.external
        how = f"flip TTA {'on' if evaluation.tta else 'off'}" if external is None else alignment_text(external.align, external.pred_kind)
        say(f"{where}: evaluating {evaluation.data.dataset} (protocol {evaluation.protocol}, {how})")
        # what a checkpoint and a transformers model are both evaluated with: the suite's settings for the dataset
        where_and_how = dict(
            dataset=evaluation.data.dataset,
            recipe=evaluation.entry.recipe,
            protocol=evaluation.protocol,
            data_overrides=evaluation.data_overrides,
            batch_size=batch_size,
            out=evaluation.folder,
            overwrite=True,
            workers=workers,
        )
        try:
            if external is None:
                evaluation.summary, _ = evaluate_checkpoint(evaluation.checkpoint, tta=evaluation.tta, **where_and_how)
            elif external.kind == "transformers":
                evaluation.summary, _ = evaluate_hf(external.source, align=external.align, pred_kind=external.pred_kind, **where_and_how)
            else:
                gt_root = Path(out) / suite.name / GROUND_TRUTH
                evaluation.summary = _score_predictions(evaluation, gt_root, batch_size, workers, lambda line: say(f"{where}: {line}"))
        except ClipdepthError as exc:
            raise _entry_error(exc, where) from None
        evaluation.status = "ran"

    ours: dict[str, OurRow] = {}
    for evaluation in evaluations:
        row = ours.setdefault(evaluation.row, OurRow(evaluation.row, evaluation.checkpoint, False, "", [], evaluation.external))
        row.evaluations.append(evaluation)
    for row in ours.values():  # what every evaluation of the row recorded of the weights, too
        if row.external is None:
            row.real_weights, row.weights = weights_summary(*metas[row.checkpoint], [e.summary for e in row.evaluations])
        else:
            row.real_weights = not any(e.summary.get("untrained_weights") for e in row.evaluations)
            random = "" if row.real_weights else f"; {RANDOM_TRANSFORMERS}"
            row.weights = row.external.describe() + random
    folder = Path(out) / suite.name
    markdown, csv_text = benchmark_table(suite, list(ours.values()))
    write_text_atomic(folder / "table.md", markdown)
    with atomic_path(folder / "table.csv") as tmp:
        tmp.write_text(csv_text, newline="")  # csv's own \r\n line ends, unchanged
    return BenchmarkResult(suite, folder, evaluations, list(ours.values()), markdown, csv_text)


def _score_predictions(evaluation: Evaluation, gt_root: Path, batch_size: int, workers: int | None, say: Callable[[str], None]) -> dict:
    """A predictions row on one dataset: its folder scored against the suite's ground truth of that
    dataset (``ground_truth_folder``, written once), the summary written to the evaluation's
    folder as metrics.json and returned; warnings (clamped values, GT beyond the cap) said."""
    from ..data import get_dataset

    data, protocol = evaluation.data, get_protocol(evaluation.protocol)
    gt = ground_truth_folder(get_dataset(data, "test"), data, gt_root, batch_size, workers)
    metrics, warnings = score_prediction_folder(evaluation.external, evaluation.predictions, gt, protocol, data.kb_crop)
    for warning in warnings:
        say(warning)
    summary = {
        **metrics,
        "dataset": data.dataset,
        "protocol": protocol.name,
        "flip_tta": None,  # not known: the predictions were made elsewhere
        "predictions": str(evaluation.predictions),
        "ground_truth": str(gt),
        "align": evaluation.external.align,
        "pred_kind": evaluation.external.pred_kind,
        "data": json.loads(json.dumps(asdict(data))),
        "input": "saved predictions",
        "warnings": warnings,
    }
    write_text_atomic(evaluation.folder / "metrics.json", json.dumps(summary, indent=2))
    return summary


# --------------------------------------------------------------------------- the table


def _title(label: str) -> str:
    return DATASET_TITLES.get(label, label)


def _header(column: str) -> str:
    label, _, metric = column.partition(".")
    return f"{_title(label)} {HEADERS[metric]} {'↓' if LOWER_IS_BETTER[metric] else '↑'}"


def _cell(value: float | None, digits: int = 3, metric: str = "") -> str:
    """A printed value: ``digits`` decimals, as the papers print them; a length below 0.1 (a
    colonoscopy RMSE in metres) with ``digits`` significant digits instead."""
    if value is None:
        return "—"
    if metric in LENGTH_METRICS and abs(value) < 0.1:
        return f"{value:.{digits}g}"
    return f"{value:.{digits}f}"


def _tta_text(row: OurRow) -> str:
    states = {e.entry.label: bool(e.summary.get("flip_tta", e.tta)) for e in row.evaluations}
    if len(set(states.values())) == 1:
        return f"flip TTA {'on' if next(iter(states.values())) else 'off'}"
    return "flip TTA " + ", ".join(f"{_title(k)} {'on' if v else 'off'}" for k, v in states.items())


def _tta_cell(flip_tta: bool | None) -> str:
    """The Flip TTA cell: "—" where it is not known (saved predictions)."""
    return "—" if flip_tta is None else "on" if flip_tta else "off"


def benchmark_table(suite: Suite, rows: list[OurRow]) -> tuple[str, str]:
    """(markdown, CSV) of ``suite``: the published rows, then ours, in the same columns."""
    table = published_tables()[suite.published] if suite.published else None
    columns = [f"{label}.{metric}" for label in suite.labels for metric in suite.metrics]
    if table is not None:  # the paper's own columns first, in its order, then any others of the suite
        columns = [*table.columns, *(c for c in columns if c not in table.columns)]
    info = list(table.info) if table else []
    published = list(table.rows) if table else []
    ours = []
    for row in rows:
        values: dict[str, float | None] = {c: None for c in columns}
        for evaluation in row.evaluations:
            for metric in suite.metrics:
                values[f"{evaluation.entry.label}.{metric}"] = float(evaluation.summary[metric])
        ours.append(values)
    all_values = [dict(r.values) for r in published] + ours
    rank_columns = [c for c in columns if any(v.get(c) is not None for v in all_values)]
    ranks = average_ranks(all_values, rank_columns) if suite.avg_rank else [None] * len(all_values)
    paper_rank = suite.avg_rank and any(r.avg_rank is not None for r in published)

    headers = ["Method", *(i.replace("_", " ").capitalize() for i in info), *map(_header, columns)]
    headers += ["Avg rank (paper) ↓"] if paper_rank else []
    headers += ["Avg rank (here) ↓"] if suite.avg_rank else []
    lines = ["| " + " | ".join(headers) + " |", "|" + "---|" * len(headers)]
    for index, values in enumerate(all_values):
        is_ours = index >= len(published)
        method = rows[index - len(published)].method if is_ours else published[index].method
        cells = [method, *("" if is_ours else published[index].info.get(i, "") for i in info)]
        cells += [_cell(values.get(c), metric=c.partition(".")[2]) for c in columns]
        if paper_rank:
            cells.append("" if is_ours else _cell(published[index].avg_rank, 2))
        if suite.avg_rank:
            cells.append(_cell(ranks[index], 2))
        lines.append("| " + " | ".join(cells) + " |")

    notes = []
    if table is not None:
        notes.append(
            f"Published rows: {table.source}: {table.caption}; values as printed. "
            + ("" if table.units == "m" else f"Converted from millimetres: {', '.join(LENGTH_METRICS)} ÷ 1000. ")
            + (f"{table.note} " if table.note else "")
            + "'—': not reported."
        )
        missing = [c for c in columns if c not in table.columns]
        if missing:
            labels = sorted({c.partition(".")[0] for c in missing}, key=suite.labels.index)
            notes.append(f"No published numbers are shipped for {', '.join(map(_title, labels))}: only our rows fill those columns.")
    else:
        notes.append("No published table is shown beside these rows.")
    for row in rows:
        if row.external is None:
            notes.append(f"{row.method}: checkpoint `{row.checkpoint}`; {row.weights}; {_tta_text(row)}.")
        else:
            notes.append(f"{row.method}: {row.weights}.")
    if suite.avg_rank:
        notes.append(
            f"Avg rank (here): per column, the rows that have a value are ranked 1 (best) to n on the values as printed "
            f"({RANK_DECIMALS} decimals; lower first for errors, higher first for d1-d3), tied rows sharing the mean of "
            "their ranks; each row's average is over the columns where it has a value. It ranks every row of this table, ours "
            "included." + (" Avg rank (paper) is the paper's own figure, as printed." if paper_rank else "")
        )
    labels_present = {e.data.dataset for r in rows for e in r.evaluations}
    if labels_present & {"c3vd", "simcol"}:
        notes.append(
            "Units: depth errors (RMSE, SqRel) in metres. C3VD and SimCol ground truth is read in metres (their files hold "
            "millimetres: × 1000 to compare with millimetre tables); AbsRel, log errors and d1-d3 do not depend on the unit."
        )
    else:
        notes.append("Units: depth errors (RMSE, SqRel) in metres; the other metrics have no unit.")

    runs = [
        "| Row | Dataset | Protocol | Model input | Flip TTA | Images scored | Results | This run |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for row in rows:
        for e in row.evaluations:
            p = get_protocol(e.protocol)
            where = f"`{e.protocol}` ({p.min_depth:g} < gt < {p.max_depth:g} m, crop {p.crop or 'none'})"
            runs.append(
                f"| {row.name} | {_title(e.entry.label)} ({e.data.dataset}) | {where} | {e.summary.get('input', '—')} "
                f"| {_tta_cell(e.summary.get('flip_tta'))} | {int(e.summary.get('n_images', 0))} | `{e.folder}` "
                f"| {'reused' if e.status == 'reused' else 'evaluated'} |"
            )

    heading = f"# Benchmark `{suite.name}`" + (f": {suite.description}" if suite.description else "")
    markdown = "\n".join([heading, "", *lines, "", *(f"- {n}" for n in notes), "", "## Evaluations", "", *runs]) + "\n"

    buffer = io.StringIO()
    writer = csv.writer(buffer)
    writer.writerow(
        [
            "kind",
            "method",
            *info,
            *columns,
            *(["avg_rank_paper"] if paper_rank else []),
            *(["avg_rank_here"] if suite.avg_rank else []),
            "source",
        ]
    )
    for index, values in enumerate(all_values):
        is_ours = index >= len(published)
        if is_ours:
            row = rows[index - len(published)]
            head = ["ours" if row.external is None else row.external.kind, row.name, *("" for _ in info)]
            source = f"clipdepth; checkpoint {row.checkpoint}; {row.weights}; {_tta_text(row)}"
            source = source if row.external is None else row.weights.replace("`", "")
        else:
            head = ["published", published[index].method, *(published[index].info.get(i, "") for i in info)]
            source = table.source if table else ""
        # Ours in full; published values as the paper prints them (3 decimals), unless converted.
        digits = "{:.6g}" if is_ours or (table is not None and table.units != "m") else "{:.3f}"
        cells = ["" if values.get(c) is None else digits.format(values[c]) for c in columns]
        if paper_rank:
            cells.append("" if is_ours or published[index].avg_rank is None else f"{published[index].avg_rank:.2f}")
        if suite.avg_rank:
            cells.append("" if ranks[index] is None else f"{ranks[index]:.4f}")
        writer.writerow([*head, *cells, source])
    return markdown, buffer.getvalue()
