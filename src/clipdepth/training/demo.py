"""The demo: the whole pipeline on built-in synthetic scenes, on a CPU, in minutes.

Each model's demo is a list of variants (``DEMO_VARIANTS``) trained from one recipe on RANDOM-WEIGHT
frozen parts (no pretrained weights can be assumed), each checkpoint scored on the held-out test
scenes with the protocol beside a predictor that outputs the training-set mean depth. PureCLIP-Depth:
one head. TR2M: per-pixel maps and the global-factor variant on the same cached features and the
ORACLE relative depth, the paper's main ablation in kind. Learned depth prompts (``demo_baselines``):
the learned prompts and a PureCLIP-Depth head trained, and DepthCLIP run zero-shot, all three on the
same random-weight CLIP ViT. Writes ``metrics.json``, ``results.md``, one panel per test image (of
the first variant) and the checkpoints.
"""
from __future__ import annotations

import dataclasses
import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..config import Config
from ..data import get_dataset
from ..data.loader import prepared_batches
from ..errors import ConfigError
from ..evaluation.evaluate import evaluate_constant, evaluate_encoded, predict_encoded
from ..evaluation.protocol import postprocess, valid_mask
from ..evaluation.report import markdown_table
from ..io.atomic import write_text_atomic
from ..io.panels import save_panel
from ..device import resolve_device
from ..evaluation.protocol import get_protocol
from ..models import DepthModel, build_model, model_class
from .distributed import from_environment
from .mixture import training_sources
from .run import Experiment
from .zero_shot import write_zero_shot_run

BASELINE = "mean_baseline"


@dataclass
class DemoVariant:
    key: str  # its metrics' key in metrics.json
    label: str  # its row in the results table
    cfg: Config
    folder: str = ""  # its run folder under the demo's ("": the demo's own)


@dataclass
class DemoPlan:
    variants: list[DemoVariant]
    note: Callable[[DepthModel], str]  # printed first: what the random-weight frozen parts are
    reference: str  # the first variant's gains are measured against this key (a variant or BASELINE)
    gain_phrase: str  # "{metric}: ... {gain} ..." per metric


def _pureclip(cfg: Config) -> DemoPlan:
    return DemoPlan(
        [DemoVariant("head", "PureCLIP-Depth head (random-weight CLIP)", cfg)],
        lambda model: (
            f"NOTE: the demo's encoder is a small CLIP ViT with RANDOM weights ({model.encoder.description}).\n"
            "It is not a trained model and its numbers say nothing about PureCLIP-Depth's accuracy. For real\n"
            "CLIP features, train with the OpenAI weights (downloaded once from the Hugging Face Hub, or a local folder):\n"
            "  clipdepth train --config <recipe> clip.random_init=false clip.name=openai/clip-vit-large-patch14-336"
        ),
        BASELINE, "{metric}: {gain:.1f}% better than the mean-depth predictor;",
    )


def _tr2m(cfg: Config) -> DemoPlan:
    # Both variants read the frozen parts' outputs from one cache: they differ only in the head.
    train = dataclasses.replace(cfg.train, feature_cache=cfg.train.feature_cache or str(Path(cfg.output_dir) / "feature_cache"))

    def variant(global_factor: bool) -> Config:
        return dataclasses.replace(cfg, train=train, tr2m=dataclasses.replace(cfg.tr2m, global_factor=global_factor))

    return DemoPlan(
        [DemoVariant("tr2m", "TR2M, per-pixel scale and shift maps", variant(False), "tr2m"),
         DemoVariant("global_factor", "TR2M, one global scale and shift per image", variant(True), "global_factor")],
        lambda model: (
            "NOTE: the TR2M demo uses small RANDOM-WEIGHT DINOv2 and CLIP text encoders and the ORACLE\n"
            f"relative-depth source ({model.encoder.relative.description}).\nIt shows the pipeline and the "
            "per-pixel vs global-factor ablation in kind; its numbers say nothing about TR2M with Depth Anything, "
            "DINOv2 and CLIP weights."
        ),
        "global_factor", "{metric}: per-pixel maps {gain:.1f}% better than global factors;",
    )


def _baselines(cfg: Config) -> DemoPlan:
    """The CLIP baselines side by side on one random-weight CLIP ViT (the `clip` section): the learned
    depth prompts (the recipe) and a PureCLIP-Depth head trained, DepthCLIP (its ViT variant, the
    release's words and bins) run zero-shot."""
    depthclip = dataclasses.replace(cfg, model="depthclip", depthclip=dataclasses.replace(cfg.depthclip, backbone="vit"))
    return DemoPlan(
        [DemoVariant("learned_prompts", f"Learned depth prompts ({cfg.prompts.num_bins} bins)", cfg, "learned_prompts"),
         DemoVariant("pureclip", "PureCLIP-Depth head", dataclasses.replace(cfg, model="pureclip_depth"), "pureclip"),
         DemoVariant("depthclip", "DepthCLIP (zero-shot)", depthclip, "depthclip")],
        lambda model: (
            f"NOTE: all three models share one small CLIP ViT with RANDOM weights ({model.encoder.description}).\n"
            "It is not a trained model: the numbers show the pipeline, and say nothing about the accuracy of the\n"
            "learned prompts, PureCLIP-Depth or DepthCLIP with OpenAI's CLIP (DepthCLIP, zero-shot, has nothing to\n"
            "learn from random features)."
        ),
        BASELINE, "{metric}: learned prompts {gain:.1f}% better than the mean-depth predictor;",
    )


# A model's demo: its architecture -> the plan for a recipe of it. The learned prompts' demo is the
# baselines comparison (``demo_baselines``).
DEMO_VARIANTS: dict[str, Callable[[Config], DemoPlan]] = {
    "pureclip_depth": _pureclip, "tr2m": _tr2m, "learned_prompts": _baselines,
}


def _experiment(cfg: Config) -> Experiment:
    """``Experiment.create``; a zero-shot model (DepthCLIP), which that refuses (there is nothing to
    train), is built the same way without the training checks."""
    if not model_class(cfg.model).zero_shot:
        return Experiment.create(cfg)
    dist = from_environment()
    model = build_model(cfg).to(resolve_device(cfg.device, dist.local_rank))
    return Experiment(cfg, model, model.preprocessor(), get_protocol(cfg.eval.protocol), dist, training_sources(cfg))


@dataclass
class DemoResult:
    report: dict  # what metrics.json holds
    table: str  # the results table (markdown)
    summary: str  # the first variant's gains, one line


def run_demo(cfg: Config, log: Callable[[str], None] = print) -> DemoResult:
    """Train and score the demo variants of ``cfg.model`` under ``cfg.output_dir`` (replaced: the
    demo's folder is regenerated by every run). ConfigError for a model without a demo."""
    model_class(cfg.model)  # an unknown model is its own error
    if cfg.model not in DEMO_VARIANTS:
        raise ConfigError(f"model {cfg.model!r} has no demo; demos: {sorted(DEMO_VARIANTS)}")
    plan, out = DEMO_VARIANTS[cfg.model](cfg), Path(cfg.output_dir)
    metrics, models, checkpoints, encoded = {}, {}, {}, {}
    for i, variant in enumerate(plan.variants):
        exp = _experiment(variant.cfg)
        if i == 0:
            log(plan.note(exp.model))
        if type(exp.model).zero_shot:  # nothing to train (DepthCLIP): its checkpoint is written as `train` does
            log(f"writing {variant.key} (zero-shot) ...")
            model_dir = write_zero_shot_run(dataclasses.replace(variant.cfg, output_dir=str(out / variant.folder)), overwrite=True)
        else:
            log(f"training {variant.key} ...")
            model_dir = exp.train(out / variant.folder, overwrite=True)[0].model_dir
        # Score the checkpoint as a later command would load it, not the in-memory head.
        model = type(exp.model).from_pretrained(model_dir, encoder=exp.model.encoder).to(exp.model.device)
        test = exp.encode("test", flip=variant.cfg.eval.tta)
        metrics[variant.key] = evaluate_encoded(
            model, test, exp.preprocessor, exp.protocol, variant.cfg.eval.tta, variant.cfg.eval.batch_size
        ).mean()
        models[variant.key], checkpoints[variant.key], encoded[variant.key] = model, str(model_dir), (exp, test)

    # The training split keeps only input-size depth: its full-resolution GT is read again.
    train_gt = (f.sample.depth for frames in prepared_batches(get_dataset(exp.cfg.data, "train"), None, 32,
                                                              exp.cfg.train.num_workers) for f in frames)
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
        "frozen_parts": exp.model.encoder.description,
        "note": "random-weight frozen parts: a pipeline demonstration, not a trained model's accuracy",
    }
    write_text_atomic(out / "metrics.json", json.dumps(report, indent=2))
    table = markdown_table({
        **{v.label: metrics[v.key] for v in plan.variants}, f"mean depth ({mean_depth:.2f} m)": metrics[BASELINE],
    })
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
        save_panel(out / "panels" / f"{sample.name}.png", sample.image, gt, postprocess(pred, gt.shape, exp.protocol),
                   model.max_depth, sample.name)
    summary = " ".join(plan.gain_phrase.format(metric=m, gain=100 * g) for m, g in gain.items())
    return DemoResult(report, table, summary)
