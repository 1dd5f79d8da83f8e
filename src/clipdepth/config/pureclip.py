"""PureCLIP-Depth's section (``pureclip``): its fields, the released code's defaults, and their rules."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

from .rules import Section, NON_NEGATIVE, NON_NEGATIVE_INT, POSITIVE, POSITIVE_INT, UNIT_LEFT_OPEN, UNIT_RIGHT_OPEN, Rules, choices, rule

FUSIONS = ("concat", "film")  # pureclip.fusion
PATCH_RULES = ("released", "paper")  # pureclip.patch_rule
PHRASE_STYLES = ("released", "paper")  # pureclip.phrase_style
Fusion = choices("Fusion", FUSIONS, __name__)
PatchRule = choices("PatchRule", PATCH_RULES, __name__)
PhraseStyle = choices("PhraseStyle", PHRASE_STYLES, __name__)


@dataclass
class PureCLIPConfig(Section):
    """PureCLIP-Depth (arXiv 2603.16238; docs/pureclip-depth.md): its head, targets, losses and
    alternating optimisation. Defaults follow the released code; ``variants/paper`` the paper."""

    # -- head: phi, psi (or FiLM) and the depth table --
    num_bins: int = 15
    # Bins are K equal parts of [min_depth, max_depth]. Released config: 1e-3 (NYU 10 m, KITTI 30 m);
    # the paper's bins start at 0 (variants/paper).
    min_depth: float = 1e-3
    max_depth: float = 10.0
    tau: float = 0.07
    # "released": f"{c:.2f} meter" per bin centre; "paper": "1 meter", "2.33 meters", ...
    phrase_style: PhraseStyle = PhraseStyle.released
    use_cls: bool = True  # False: the "without CLS" ablation, psi takes width d
    # How CLS joins the rotated patch token. "concat": psi on [phi(patch); CLS] (the paper, and the
    # released runs); "film": CLS -> Linear(d, 2d) -> GELU -> Linear(2d, 2d) gives a scale g and a
    # shift b, fused = g * phi(patch) + b (the released code's alternative).
    fusion: Fusion = Fusion.concat
    mlp_ratio: int = 4
    dropout: float = 0.2
    # psi's Linear layers are bias-free in the released code; only checkpoints written by clipdepth
    # 0.1 (whose psi had biases) load with True.
    psi_bias: bool = False
    # -- per-patch targets and losses --
    # "released": a patch counts when any pixel is valid (> 0.1 m, no upper limit: a patch whose
    # mean lies beyond max_depth takes the last bin); "paper": a pixel is valid in
    # [min_depth, max_depth] and a patch is ignored when more than half of its pixels are not.
    patch_rule: PatchRule = PatchRule.released
    # An evaluation crop (protocol.py: "garg", "eigen_kitti", "eigen_nyu") that also gates the
    # patch targets: a patch supervises only when more than half of it lies inside the crop, built
    # on the full frame and carried through the input crop, resize (nearest) and tiles. The released
    # KITTI runs use "garg"; unset: no gating.
    patch_region: Optional[str] = None
    infonce_weight: float = 1.0  # lambda in L_emb = L_align + lambda * L_InfoNCE
    # -- alternating optimisation --
    phase_steps: int = 100  # Embedding and Depth phases alternate every this many global steps
    embed_lr: float = 3e-4
    embed_weight_decay: float = 1e-2
    depth_lr: float = 1e-3
    depth_weight_decay: float = 0.0
    # Released code: W trains in both phases. Paper: W frozen in the Depth phase.
    freeze_table_in_depth_phase: bool = False
    freeze_mlps: bool = False  # ablation: phi and psi stay at their random init, only W trains
    # LR constant until no validation metric improved for decay_start epochs, then linear decay
    # to final_lr_factor at train.patience epochs without improvement (where training stops).
    # Released code: 10 (with patience 200: never stops within 200 epochs); paper: 20 (patience 50).
    decay_start: int = 10
    final_lr_factor: float = 0.1


RULES = Rules(
    values={
        "pureclip.num_bins": rule(lambda v: isinstance(v, int) and v >= 2, "an integer >= 2"),
        "pureclip.tau": POSITIVE,
        "pureclip.mlp_ratio": POSITIVE_INT,
        "pureclip.dropout": UNIT_RIGHT_OPEN,
        "pureclip.infonce_weight": NON_NEGATIVE,
        "pureclip.phase_steps": POSITIVE_INT,
        "pureclip.embed_lr": NON_NEGATIVE,
        "pureclip.embed_weight_decay": NON_NEGATIVE,
        "pureclip.depth_lr": NON_NEGATIVE,
        "pureclip.depth_weight_decay": NON_NEGATIVE,
        "pureclip.decay_start": NON_NEGATIVE_INT,
        "pureclip.final_lr_factor": UNIT_LEFT_OPEN,
    },
    ranges=(("pureclip.min_depth", "pureclip.max_depth", 0.0, ">="),),
)
# Each section checks its own values when it is made (rules.Section).
PureCLIPConfig.section, PureCLIPConfig.rules = "pureclip", RULES
