"""RSA's section (``rsa``, with its frozen relative-depth model): fields and rules.

Defaults follow the authors' release (github Adonis-galaxy/RSA: ``lanscale.py``, ``train_3d.py``,
``loss.py``, ``configs/arguments_train_3d_da.txt``); docs/baselines.md ("RSA") says where each
value comes from and where clipdepth differs. Its text encoder is CLIP RN50's text tower, whose
weights, tokenizer and precision are the ``depthclip`` section's (as the learned prompts' RN50).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from .rules import NON_NEGATIVE, POSITIVE, POSITIVE_INT, Rules, Section, choices, rule
from .tr2m import RelativeDepthConfig, RelativeStorage, relative_rules

RSA_LOSSES = ("huber", "l1", "l2")  # rsa.loss: the release's --loss_type Huber / L1 / L2
RSALoss = choices("RSALoss", RSA_LOSSES, __name__)


@dataclass
class RSAConfig(Section):
    """RSA (Zeng et al., NeurIPS 2024, arXiv 2410.02924; docs/baselines.md "RSA"): a caption's CLIP
    text embedding -> MLP -> one scale and one shift per image, applied to a frozen model's relative
    inverse depth: depth = 1 / (scale * relative + shift)."""

    # The frozen relative-depth model (released "da": Depth Anything ViT-S, depth_anything_vits14,
    # whose transformers port is LiheYoung/depth-anything-small-hf).
    relative: RelativeDepthConfig = field(default_factory=RelativeDepthConfig)
    # Frames at the relative model's input (the release resizes NYU and VOID frames to 434 x 560,
    # KITTI's KB crop to 350 x 1204, for Depth Anything).
    input_height: int = 434
    input_width: int = 560
    # MLP widths after the text embedding (LeakyReLU between layers, none after the last). Release
    # (lanscale.py at HEAD): scene 1024 -> 512 -> 512 -> 512 -> 256 -> 256, then per factor
    # 256 -> 256 -> 128 -> 128 -> 64 -> 1. Its published weights (eval_void/*_lanscale) are of an
    # earlier, shorter MLP: scene_widths [512, 256, 256], head_widths [128, 64] (`clipdepth convert
    # rsa-released` reads the widths off the file).
    scene_widths: list[int] = field(default_factory=lambda: [512, 512, 512, 256, 256])
    head_widths: list[int] = field(default_factory=lambda: [256, 128, 128, 64])
    max_caption_lines: int = 15  # the release draws line random.randint(0, 14) in training, line 0 at test
    cache_relative: RelativeStorage = RelativeStorage.png  # the relative depth in the cache: "png" (its fp16 values, losslessly) or "fp16"
    # Depth range: training loss on GT in (min_depth, max_depth); predictions clamped to it (the
    # release: NYU 10 m, KITTI 80 m, VOID 5 m; GT above 1e-3 m).
    min_depth: float = 1e-3
    max_depth: float = 10.0
    # Loss on metric depth: per image, the sum over valid pixels of rho(pred - gt) divided by the
    # pixel count H * W, summed over the batch (loss.py); rho = "huber" (delta huber_delta; the
    # released configs' --loss_type Huber), "l1" (the argument's default) or "l2".
    loss: RSALoss = RSALoss.huber
    huber_delta: float = 1.0
    # Divide each step's loss by its own detached value (--norm_loss in the released configs): the
    # gradient is d loss / |loss|.
    normalize_loss: bool = True
    # Optimiser (train_3d.py): Adam (torch's defaults: betas 0.9, 0.999, eps 1e-8, no weight decay)
    # on the MLP, lr from lr to end_lr as (lr - end_lr) * (1 - step / total) ** lr_power + end_lr
    # over the run's steps, gradient norm clipped at grad_clip (0: none).
    lr: float = 3e-5
    end_lr: float = 1e-5
    lr_power: float = 0.9
    grad_clip: float = 1.0


RULES = Rules(
    values={
        **relative_rules("rsa.relative"),
        "rsa.input_height": POSITIVE_INT,
        "rsa.input_width": POSITIVE_INT,
        "rsa.scene_widths": rule(lambda v: len(v) >= 1 and all(isinstance(w, int) and w >= 1 for w in v), "one or more positive integers"),
        "rsa.head_widths": rule(lambda v: all(isinstance(w, int) and w >= 1 for w in v), "positive integers (none: one linear layer)"),
        "rsa.max_caption_lines": POSITIVE_INT,
        "rsa.huber_delta": POSITIVE,
        "rsa.lr": NON_NEGATIVE,
        "rsa.end_lr": NON_NEGATIVE,
        "rsa.lr_power": POSITIVE,
        "rsa.grad_clip": NON_NEGATIVE,
    },
    ranges=(("rsa.min_depth", "rsa.max_depth", 0.0, ">"),),
    divisible=(("rsa.relative.hidden_size", "rsa.relative.num_heads"),),
)
# Each section checks its own values when it is made (rules.Section).
RSAConfig.section, RSAConfig.rules = "rsa", RULES
