"""A checkpoint's model card (its README.md): the Hub's metadata through ``huggingface_hub.ModelCardData``
and the text from ``card_template.md``, both made from what the checkpoint's ``config.json`` records,
so that a card can be written again from the folder alone (``write_model_card``).

- ``base_model``: the Hub ids of the frozen parts the head needs (``frozen_hub_ids``; none for random
  weights or a local folder);
- ``datasets``: what clipdepth trained the head on;
- ``eval_results``: the run's validation metrics, and any evaluation's ``metrics.json`` given, each
  with its protocol, flip TTA and whether the frozen weights were real or random;
- the licence of where the weights came from: the release's for a head converted from one
  (``released_licence`` in config.json, written by the converters), else Apache-2.0, clipdepth's.
"""

from __future__ import annotations

import json
import math
import re
from pathlib import Path
from typing import Any, Sequence

from huggingface_hub import EvalResult, ModelCard, ModelCardData
from huggingface_hub.utils import HFValidationError, validate_repo_id

from ..config import Config
from ..errors import DataError
from ..io.atomic import write_text_atomic

TEMPLATE = Path(__file__).with_name("card_template.md")
# A checkpoint's model card loads it from the Hub id it is pushed to; a folder saved here may be
# copied or uploaded anywhere, so its card names no local path.
CARD_LOCATION = "<this folder or its Hub id>"
TASK = "depth-estimation"
TAGS = ["depth-estimation", "monocular-depth", "metric-depth", "clip"]
APACHE = "apache-2.0"


def _section(cfg: Config, dotted: str) -> Any:
    node: Any = cfg
    for name in dotted.split("."):
        node = getattr(node, name, None)
    return node


def _is_hub_id(name: Any) -> bool:
    if not isinstance(name, str) or name.count("/") != 1 or name.startswith((".", "/", "~")) or Path(name).exists():
        return False
    try:
        validate_repo_id(name)
    except HFValidationError:
        return False
    return True


def frozen_hub_ids(encoder: Any, cfg: Config) -> list[str]:
    """The Hub ids of ``encoder``'s frozen parts, in module order: each frozen part's config section
    (its ``part``: ``clip``, ``tr2m.image_encoder``, ...) names its weights; random weights and a
    local folder have no id. Checkpoints record them (``base_models`` in config.json)."""
    ids = []
    for module in encoder.modules():
        part = getattr(module, "part", None)
        section = _section(cfg, part) if isinstance(part, str) else None
        if section is None or getattr(module, "untrained", False) or getattr(section, "random_init", False):
            continue
        name = getattr(section, "name", None)
        if _is_hub_id(name) and name not in ids:
            ids.append(name)
    return ids


def _weights(untrained: Sequence[str] | None) -> str:
    if untrained is None:
        return "frozen weights not recorded"
    return f"random frozen weights ({', '.join(untrained)})" if untrained else "real frozen weights"


def _metrics(summary: dict) -> dict[str, float]:
    """The metrics of a validation or an evaluation: numbers other than counts (``n_*``)."""
    return {
        k: float(v)
        for k, v in summary.items()
        if isinstance(v, (int, float)) and not isinstance(v, bool) and not k.startswith("n_") and math.isfinite(v)
    }


class _Result:
    """One set of metrics: the card's table and the metadata's ``eval_results``."""

    def __init__(self, dataset: str, split: str, protocol: str, tta: bool, untrained: Sequence[str] | None, metrics: dict) -> None:
        self.dataset, self.split, self.metrics = dataset, split, metrics
        self.config = f"protocol {protocol}, flip TTA {'on' if tta else 'off'}, {_weights(untrained)}"
        what = "Validation" if split == "validation" else "Evaluation"
        self.heading = f"{what} on `{dataset}` ({self.config}):"
        self.rows = [(k, f"{v:.4g}") for k, v in metrics.items()]

    def eval_results(self) -> list[EvalResult]:
        return [
            EvalResult(
                task_type=TASK,
                dataset_type=self.dataset,
                dataset_name=self.dataset,
                dataset_split=self.split,
                metric_type=name,
                metric_name=f"{name} ({self.config})",
                metric_value=value,
                metric_config=self.config,
            )
            for name, value in self.metrics.items()
        ]


def _results(meta: dict, cfg: Config, evaluations: Sequence[dict]) -> list[_Result]:
    results = []
    validation = _metrics(meta.get("val_metrics") or {})
    if validation:
        names = [m.name or m.data.get("dataset", "") for m in cfg.mixture]
        dataset = f"mean of {', '.join(names)}" if names else cfg.data.dataset
        untrained = meta.get("untrained_frozen_parts")
        protocol = "each dataset's own" if names else cfg.eval.protocol  # a mixture validates each by its own
        results.append(_Result(dataset, "validation", protocol, cfg.eval.tta, untrained, validation))
    for summary in evaluations:
        results.append(
            _Result(
                summary.get("dataset", "?"),
                "test",
                summary.get("protocol", "?"),
                bool(summary.get("flip_tta")),
                summary.get("untrained_frozen_parts"),
                _metrics(summary),
            )
        )
    return [r for r in results if r.metrics]


def _made(meta: dict, cfg: Config) -> str:
    data = ", ".join(f"`{m.name or m.data.get('dataset')}`" for m in cfg.mixture) or f"`{cfg.data.dataset}`"
    if meta.get("zero_shot"):
        return "written without training (a zero-shot model)"
    if "released_format" in meta:
        return f"converted from the authors' released weights ({meta['released_format']})"
    if "epoch" in meta:
        return f"trained by clipdepth on {data}, epoch {meta['epoch']}"
    return f"saved by clipdepth without a training record (its recipe's data: {data})"


def _licence(meta: dict, bases: list[str]) -> tuple[str | None, str]:
    """(the metadata's licence id, the card's Licence section) from where the weights came from."""
    frozen = (
        f"The frozen parts it needs ({', '.join(f'`{b}`' for b in bases)}) are not in this folder and keep their own "
        "licences (see their model cards)."
        if bases
        else "The frozen parts it needs are not in this folder and keep their own licences."
    )
    released = meta.get("released_licence")
    if released is not None:
        where = released.get("release", "the authors' release")
        if released.get("id"):
            return released["id"], (
                f"The head's weights were converted from the authors' release ({where}), published under the "
                f"{released.get('name', released['id'])} licence; keep its notice with every copy:\n\n"
                f"```\n{released['notice']}\n```\n\nclipdepth's code is Apache-2.0. {frozen}"
            )
        return None, (
            f"No licence was published with the release these weights were converted from ({where}): its authors "
            "keep every right to them. Check with the authors before you share this checkpoint or use it beyond "
            f"your own research. clipdepth's code is Apache-2.0. {frozen}"
        )
    if "released_format" in meta:  # converted by a clipdepth that did not record the release's licence
        return None, f"The weights were converted from the authors' release: its licence applies; check it before sharing. {frozen}"
    return APACHE, (
        f"The head's weights were made with clipdepth and are released under Apache-2.0, as clipdepth's code. {frozen} "
        "The datasets it was trained on have their own terms of use."
    )


def model_card(model_class: type, meta: dict, cfg: Config, location: str = CARD_LOCATION, evaluations: Sequence[dict] = ()) -> ModelCard:
    """The model card of a checkpoint of ``model_class`` whose ``config.json`` is ``meta`` (its
    config read as ``cfg``); ``evaluations``: ``metrics.json`` summaries of ``clipdepth evaluate``
    runs of it; ``location``: the Hub id the examples load it from (a placeholder where unknown)."""
    bases = list(meta.get("base_models") or [])
    licence, licence_text = _licence(meta, bases)
    results = _results(meta, cfg, evaluations)
    trained = "epoch" in meta and "released_format" not in meta
    datasets = ([m.name or m.data.get("dataset") for m in cfg.mixture] or [cfg.data.dataset]) if trained else None
    data = ModelCardData(
        library_name="clipdepth",
        pipeline_tag=TASK,
        license=licence,
        tags=[*TAGS, model_class.architecture.replace("_", "-")],
        base_model=bases or None,
        datasets=datasets,
        model_name=f"clipdepth {model_class.display_name} ({cfg.data.dataset})",
        eval_results=[e for r in results for e in r.eval_results()] or None,
    )
    description = meta.get("frozen_parts") or ", ".join(bases) or "the frozen parts named in config.json"
    version = meta.get("clipdepth_version")
    return ModelCard.from_template(
        data,
        template_path=str(TEMPLATE),
        display_name=model_class.display_name,
        paper=model_class.paper,
        version=f" {version}" if version else "",
        fingerprint=meta.get("encoder_fingerprint", "not recorded"),
        # one line per frozen part ("text: ...; image: ..." for models of several)
        parts=re.split(r"; (?=[a-z][a-z ]*: )", description),
        made=_made(meta, cfg),
        results=results,
        oracle=model_class.needs_ground_truth(cfg),
        location=location,
        captions=', captions=["a kitchen with a table"]' if model_class.uses_captions else "",
        caption=', caption="a kitchen with a table"' if model_class.uses_captions else "",
        licence=licence_text,
        citation=model_class.citation.strip(),
    )


def write_model_card(checkpoint: str | Path, evaluations: Sequence[str | Path] = (), location: str = CARD_LOCATION) -> Path:
    """Write a checkpoint folder's ``README.md`` again from its ``config.json``, with the results of
    the ``metrics.json`` files of ``clipdepth evaluate`` runs of it (``evaluations``) beside its
    validation metrics. Returns the card's path. CheckpointError for a folder that is not a
    checkpoint; DataError naming a ``metrics.json`` that cannot be read."""
    from . import model_class as class_of, read_checkpoint_meta

    folder = Path(checkpoint)
    meta = read_checkpoint_meta(folder)
    cls = class_of(meta.get("architecture", ""))
    _, _, cfg = cls.read_folder(folder)
    summaries = []
    for path in map(Path, evaluations):
        try:
            summary = json.loads(path.read_text())
        except (OSError, ValueError) as exc:
            raise DataError(f"{path}: cannot read an evaluation's metrics.json ({type(exc).__name__})") from None
        if not isinstance(summary, dict) or "dataset" not in summary:
            raise DataError(f"{path}: not the metrics.json of a clipdepth evaluation (no dataset)")
        summaries.append(summary)
    card = model_card(cls, meta, cfg, location, summaries)
    write_text_atomic(folder / "README.md", str(card))
    return folder / "README.md"
