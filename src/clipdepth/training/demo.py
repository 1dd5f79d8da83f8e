"""The demo: the whole pipeline on built-in synthetic scenes, on a CPU, in minutes.

Each model's demo is a list of variants (``DEMO_VARIANTS``) trained from one recipe on RANDOM-WEIGHT
frozen parts (no pretrained weights can be assumed), each checkpoint scored on the held-out test
scenes with the protocol beside a predictor that outputs the training-set mean depth. PureCLIP-Depth:
one head. TR2M: per-pixel maps and the global-factor variant on the same cached features and the
ORACLE relative depth, the paper's main ablation in kind, and RSA on the same relative depth. Learned depth prompts (``demo_baselines``):
the learned prompts and a PureCLIP-Depth head trained, and DepthCLIP run zero-shot, all three on the
same random-weight CLIP ViT. Writes ``metrics.json``, ``results.md``, one panel per test image (of
the first variant) and the checkpoints.

A rerun into the same folder completes what an earlier one left (``plan_rerun``): a variant whose
run finished with the same config is kept, one that stopped part-way resumes from its resume state,
one whose config changed is trained again. ``demo.json`` lists the run folders the demo wrote;
a run folder it did not write is reused when it can be and refused otherwise, never replaced.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .. import __version__
from ..config import Config, first_difference, load_config_dict, upgrade_layout
from ..data import get_dataset
from ..data.loader import prepared_batches
from ..errors import CheckpointError, ClipdepthError, ConfigError
from ..evaluation.evaluate import evaluate_constant, evaluate_encoded, predict_encoded
from ..evaluation.protocol import postprocess, valid_mask
from ..evaluation.report import markdown_table
from ..io.atomic import write_text_atomic
from ..io.panels import save_panel
from ..device import run_device
from ..evaluation.protocol import get_protocol
from ..models import build_model, model_class
from ..registry import BASELINE, DemoPlan, DemoVariant, model_sections, model_spec, specs
from .distributed import from_environment
from .mixture import training_sources
from .resume import RESUME_IGNORED_FIELDS, RESUME_META, config_json, find_resume_state, read_resume_meta, read_resume_tensors
from .run import Experiment
from .run_folder import RUN_OUTPUTS
from .zero_shot import write_zero_shot_run

DEMO_RECORD = "demo.json"  # the run folders (relative to the demo's folder) that demos wrote there


def demo_plans() -> dict[str, Callable[[Config], DemoPlan]]:
    """A model's demo: its name -> the plan for a recipe of it (``ModelSpec.demo``)."""
    return {name: spec.demo for name, spec in specs().items() if spec.demo is not None}


# The models with a demo, as at import (``demo_plans``). The learned prompts' demo is the baselines
# comparison (``demo_baselines``).
DEMO_VARIANTS: dict[str, Callable[[Config], DemoPlan]] = demo_plans()


def _experiment(cfg: Config) -> Experiment:
    """``Experiment.create``; a zero-shot model (DepthCLIP), which that refuses (there is nothing to
    train), is built the same way without the training checks."""
    if not model_class(cfg.model).zero_shot:
        return Experiment.create(cfg)
    dist = from_environment()
    model = build_model(cfg).to(run_device(cfg, dist.local_rank))
    return Experiment(cfg, model, model.preprocessor(), get_protocol(cfg.eval.protocol), dist, training_sources(cfg))


@dataclass
class RerunStep:
    """What the demo does with one variant's run folder."""

    action: str  # "train" (nothing there), "keep", "resume" or "redo"
    why: str = ""  # resume: how far the run got; redo: what differs or cannot be read


def _difference(saved: Config, cfg: Config) -> str | None:
    """The first config field where a run's ``saved`` config and ``cfg`` differ, said; where the run
    is kept, its cache and its length (``train.max_epochs``) do not count, as for ``--resume``, nor
    the model sections its model does not read (a checkpoint's config.json keeps none)."""
    unread = model_sections() - set(model_spec(cfg.model).sections)

    def read(c: Config) -> dict:
        return {k: v for k, v in config_json(c).items() if k not in unread}

    diff = first_difference(read(saved), read(cfg), RESUME_IGNORED_FIELDS)
    return None if diff is None else f"{diff[0]} was {diff[1]!r}, is {diff[2]!r} now"


def rerun_step(exp: Experiment, cfg: Config, run: Path) -> RerunStep:
    """What to do with the run folder ``run`` of a variant (config ``cfg``, built as ``exp``), decided
    from what it holds: no run -> train; a run of this config that finished -> keep it; one that
    stopped before -> resume it from its resume state; a config that differs, or a run that cannot
    be read, -> train it again. A saved config is read as the model reads a checkpoint of its time
    (``upgrade_config``): a field added since gets the value the run was made with."""
    if not any((run / name).exists() for name in RUN_OUTPUTS):
        return RerunStep("train")
    model = type(exp.model)
    try:
        if model.zero_shot:  # nothing trained: its checkpoint is the whole run
            diff = _difference(model.from_pretrained(run / "model", encoder=exp.model.encoder).cfg, cfg)
            return RerunStep("redo", diff) if diff else RerunStep("keep")
        try:
            directory, meta = read_resume_meta(run, cfg)
        except ConfigError:  # a readable state of another config (read here to name the field)
            directory = find_resume_state(run)
            meta = json.loads((directory / RESUME_META).read_text())
        saved = load_config_dict(model.upgrade_config(upgrade_layout(meta["config"]), read_resume_tensors(directory)[0]))
    except ClipdepthError as exc:  # nothing that can be continued
        return RerunStep("redo", str(exc))
    diff = _difference(saved, cfg)
    epochs, limit = meta["epoch"], cfg.train.max_epochs
    if diff or epochs > limit:
        return RerunStep("redo", diff or f"it ran {epochs} epochs, train.max_epochs is {limit} now")
    if (epochs == limit or meta["since_improvement"] >= cfg.train.patience) and (run / "model").is_dir():
        return RerunStep("keep")
    return RerunStep("resume", f"after epoch {epochs} of {limit}")


def _read_json(path: Path) -> dict:
    """A JSON object file, or {} where there is none that reads as one."""
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def plan_rerun(variants: list[DemoVariant], exps: list[Experiment], out: Path) -> tuple[list[RerunStep], str]:
    """Each variant's step (``rerun_step``) and one line saying what an earlier demo in ``out`` left
    that is kept, resumed or trained again ("" where nothing was there). A run folder to train again
    must be one a demo wrote (``demo.json``, or a finished demo's ``metrics.json`` from before it):
    another is refused with CheckpointError before anything is written. Records in ``demo.json`` the run
    folders the demo trains from the start (with those it recorded before)."""
    steps = [rerun_step(exp, v.cfg, out / v.folder) for v, exp in zip(variants, exps)]
    if (out / DEMO_RECORD).exists():
        runs = _read_json(out / DEMO_RECORD).get("runs")
        ours = set(runs) if isinstance(runs, list) else set()
    else:  # a demo from before demo.json: the runs its metrics.json names
        finished = _read_json(out / "metrics.json").get("checkpoints")
        ours = {v.folder or "." for v in variants if isinstance(finished, dict) and v.key in finished}
    for v, step in zip(variants, steps):
        if step.action == "redo" and (v.folder or ".") not in ours:
            raise CheckpointError(
                f"{out / v.folder}: holds a training run that no demo wrote, and the demo cannot "
                f"reuse it ({step.why}); give the demo another output folder",
                setting="output_dir",
            )
    # A run the demo keeps or resumes in place stays whoever's it was: only what the demo trains from the start is its own.
    ours |= {v.folder or "." for v, step in zip(variants, steps) if step.action in ("train", "redo")}
    out.mkdir(parents=True, exist_ok=True)
    write_text_atomic(out / DEMO_RECORD, json.dumps({"runs": sorted(ours)}, indent=2))
    kept = [v.key for v, step in zip(variants, steps) if step.action == "keep"]
    said = ([f"kept {', '.join(kept)} (finished with this config)"] if kept else []) + [
        f"{'resuming' if step.action == 'resume' else 'training again'} {v.key} ({step.why})"
        for v, step in zip(variants, steps)
        if step.action in ("resume", "redo")
    ]
    return steps, f"{out} holds earlier runs: {'; '.join(said)}" if said else ""


@dataclass
class DemoResult:
    report: dict  # what metrics.json holds
    table: str  # the results table (markdown)
    summary: str  # the first variant's gains, one line


def run_demo(cfg: Config, log: Callable[[str], None] = print) -> DemoResult:
    """Train and score the demo variants of ``cfg.model`` under ``cfg.output_dir``, completing what
    an earlier demo there left (``plan_rerun``; its one line is logged). ConfigError for a model
    without a demo; CheckpointError for a run folder there that no demo wrote and that cannot be reused."""
    demo = model_spec(cfg.model).demo  # an unknown model is its own error
    if demo is None:
        raise ConfigError(f"model {cfg.model!r} has no demo; demos: {sorted(demo_plans())}")
    plan, out = demo(cfg), Path(cfg.output_dir)
    exps = [_experiment(variant.cfg) for variant in plan.variants]
    log(plan.note(exps[0].model))
    steps, said = plan_rerun(plan.variants, exps, out)
    if said:
        log(said)
    metrics, models, checkpoints, encoded = {}, {}, {}, {}
    for variant, exp, step in zip(plan.variants, exps, steps):
        run = out / variant.folder
        if step.action == "keep":
            model_dir = run / "model"
        elif type(exp.model).zero_shot:  # nothing to train (DepthCLIP): its checkpoint is written as `train` does
            log(f"writing {variant.key} (zero-shot) ...")
            model_dir = write_zero_shot_run(dataclasses.replace(variant.cfg, output_dir=str(run)), overwrite=step.action == "redo")
        else:
            log(f"{'resuming' if step.action == 'resume' else 'training'} {variant.key} ...")
            model_dir = exp.train(run, resume=step.action == "resume", overwrite=step.action == "redo")[0].model_dir
        # Score the checkpoint as a later command would load it, not the in-memory head.
        model = type(exp.model).from_pretrained(model_dir, encoder=exp.model.encoder).to(exp.model.device)
        test = exp.encode("test", flip=variant.cfg.eval.tta)
        metrics[variant.key] = evaluate_encoded(
            model, test, exp.preprocessor, exp.protocol, variant.cfg.eval.tta, variant.cfg.eval.batch_size
        ).mean()
        models[variant.key], checkpoints[variant.key], encoded[variant.key] = model, str(model_dir), (exp, test)

    # The training split keeps only input-size depth: its full-resolution GT is read again.
    train_gt = (
        f.sample.depth
        for frames in prepared_batches(get_dataset(exp.cfg.data, "train"), None, 32, exp.cfg.train.num_workers)
        for f in frames
    )
    train_pixels = np.concatenate([gt[valid_mask(gt, exp.protocol)] for gt in train_gt])
    mean_depth = float(train_pixels.mean())
    metrics[BASELINE] = evaluate_constant(mean_depth, test.gt, exp.protocol).mean()
    first = plan.variants[0].key
    gain = {m: 1.0 - metrics[first][m] / metrics[plan.reference][m] for m in ("abs_rel", "rmse")}
    report = {
        **metrics,
        "mean_baseline_depth_m": mean_depth,
        "relative_improvement": gain,
        "relative_improvement_of": f"{first} over {plan.reference}",
        "test_set": f"{cfg.data.dataset} ({len(test)} held-out scenes)",
        "protocol": exp.protocol.name,
        "flip_tta": cfg.eval.tta,
        "checkpoints": checkpoints,
        "frozen_parts": exps[0].model.encoder.description,  # the first variant's (the variants may be other models)
        "note": "random-weight frozen parts: a pipeline demonstration, not a trained model's accuracy",
        "clipdepth_version": __version__,
    }
    write_text_atomic(out / "metrics.json", json.dumps(report, indent=2))
    table = markdown_table({**{v.label: metrics[v.key] for v in plan.variants}, f"mean depth ({mean_depth:.2f} m)": metrics[BASELINE]})
    write_text_atomic(
        out / "results.md",
        f"# Demo results: {report['test_set']}\n\nProtocol `{exp.protocol.name}`, flip TTA "
        f"{'on' if cfg.eval.tta else 'off'}, metrics per image then averaged.\n\n{table}\n"
        f"Frozen parts: {report['frozen_parts']}. {report['note']}.\n",
    )
    dataset = get_dataset(cfg.data, "test")
    model, (exp, test) = models[first], encoded[first]  # the variants may be different models, on their own inputs
    preds = predict_encoded(model, test, exp.preprocessor, cfg.eval.tta, cfg.eval.batch_size)
    for i, (pred, gt) in enumerate(zip(preds, test.gt)):
        sample = dataset[i]
        save_panel(
            out / "panels" / f"{sample.name}.png", sample.image, gt, postprocess(pred, gt.shape, exp.protocol), model.max_depth, sample.name
        )
    summary = " ".join(
        plan.gain_phrase.format(metric=m, gain=abs(100 * g), direction="better" if g >= 0 else "worse") for m, g in gain.items()
    )
    return DemoResult(report, table, summary)
