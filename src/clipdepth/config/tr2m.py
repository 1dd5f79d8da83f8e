"""TR2M's section (``tr2m``, with its frozen image encoder and relative-depth model): fields and rules."""

from __future__ import annotations

from dataclasses import dataclass, field

from .rules import (
    Section,
    FRACTION_CLOSED,
    NON_NEGATIVE,
    NON_NEGATIVE_INT,
    POSITIVE,
    POSITIVE_INT,
    Precision,
    UNIT_LEFT_OPEN,
    UNIT_RIGHT_OPEN,
    Rules,
    choices,
    rule,
)

IMAGE_STORAGE = ("jpeg", "png", "raw")  # tr2m.cache_image
RELATIVE_STORAGE = ("png", "fp16")  # tr2m.cache_relative
TOKEN_STORAGE = ("fp16", "int8")  # tr2m.cache_tokens
ImageStorage = choices("ImageStorage", IMAGE_STORAGE, __name__)
RelativeStorage = choices("RelativeStorage", RELATIVE_STORAGE, __name__)
TokenStorage = choices("TokenStorage", TOKEN_STORAGE, __name__)
TR2M_HEAD_INITS = ("released", "zero")  # tr2m.head_init
HeadInit = choices("HeadInit", TR2M_HEAD_INITS, __name__)


@dataclass
class DINOv2Config:
    """Frozen DINOv2 image features for TR2M: last-layer patch tokens after the final norm."""

    name: str = "facebook/dinov2-large"  # hub id or local folder (Dinov2Model.save_pretrained)
    random_init: bool = False  # random weights at the sizes below (tests, demo); never a trained model
    seed: int = 0
    patch_size: int = 14
    hidden_size: int = 1024
    num_layers: int = 24
    num_heads: int = 16
    # autocast on CUDA: bf16, fp16, fp32, auto (TR2M: bf16) or released (fp32)
    precision: Precision = Precision.auto


@dataclass
class RelativeDepthConfig:
    """The frozen relative-depth source whose output TR2M rescales (docs/tr2m.md, "Components")."""

    # "depth_anything": a transformers DepthAnythingForDepthEstimation (hub id or folder);
    # "oracle": relative depth MADE FROM THE GROUND TRUTH (tests, the synthetic demo, ablations
    # only; it needs GT, so it cannot run on your own images).
    source: str = "depth_anything"
    name: str = "LiheYoung/depth-anything-small-hf"
    random_init: bool = False
    seed: int = 0
    # random_init architecture: a DINOv2 backbone and the DPT neck (Depth Anything small's sizes)
    hidden_size: int = 384
    num_layers: int = 12
    num_heads: int = 6
    fusion_hidden_size: int = 64
    neck_hidden_sizes: list[int] = field(default_factory=lambda: [48, 96, 192, 384])
    precision: Precision = Precision.auto
    # Oracle: inverse depth, raised to a power drawn from oracle_gamma, times exp(smooth field of
    # amplitude oracle_distortion on an oracle_distortion_cells grid), then a random affine map
    # (scale log-uniform in oracle_scale, shift up to oracle_shift of the frame's maximum).
    # Drawn per frame from (oracle_seed, frame name): the same frame always gets the same map.
    oracle_seed: int = 0
    oracle_scale: list[float] = field(default_factory=lambda: [0.5, 2.0])
    oracle_shift: float = 0.1
    oracle_gamma: list[float] = field(default_factory=lambda: [1.0, 1.0])
    oracle_distortion: float = 0.1
    oracle_distortion_cells: int = 4


@dataclass
class TR2MConfig(Section):
    """TR2M (arXiv 2506.13387; docs/tr2m.md): its frozen image and relative-depth parts, model
    sizes, loss weights and optimiser. Its text encoder is the shared ``clip`` section (the text
    tower only)."""

    image_encoder: DINOv2Config = field(default_factory=DINOv2Config)
    relative: RelativeDepthConfig = field(default_factory=RelativeDepthConfig)
    # Input size (multiples of the patch size): NYU 434 x 560, KITTI 350 x 1204.
    input_height: int = 434
    input_width: int = 560
    num_heads: int = 8  # attention heads of the cross-modal block (released options: 8)
    mlp_ratio: int = 4
    neck_channels: int = 192  # 1x1 conv 1024 -> 192, transposed conv x2
    # 3x3 conv 192 -> 128 (bias-free, as released), two [residual unit, 1x1 conv, bilinear x2]
    decoder_channels: int = 128
    decoder_conv_bias: bool = False  # True only for checkpoints of clipdepth 0.1 (that conv had a bias)
    head_channels: int = 64  # scale/shift heads: 3x3 conv 128 -> 64, bilinear, 3x3 conv 64 -> 32, 1x1 -> 1
    head_hidden: int = 32
    # How the head starts: "released" = PyTorch's default init of every layer (the release's
    # ScaleMapModel.init_weights initialises nothing); "zero" = the scale and shift heads' last layers
    # at zero weight and bias, so A = B = 0.01 everywhere at step 0 (checkpoints saved before this
    # field existed were trained so, and load as "zero").
    head_init: HeadInit = HeadInit.released
    # The RSA-style ablation: one scale and one shift per image instead of per-pixel maps.
    global_factor: bool = False
    max_caption_lines: int = 16  # caption lines kept per frame (the released data has about 15)
    # How a split's arrays are kept in memory and in the feature cache (docs/tr2m.md, "The feature
    # cache"): the input image of training frames, read only by the edge-aware smoothness loss, as
    # "jpeg" (at cache_image_quality), "png" (lossless) or "raw" uint8; the relative depth as "png"
    # (its fp16 values, losslessly) or "fp16"; the DINOv2 tokens as "fp16" or "int8" (a scale per token).
    cache_image: ImageStorage = ImageStorage.jpeg
    cache_image_quality: int = 90
    cache_relative: RelativeStorage = RelativeStorage.png
    cache_tokens: TokenStorage = TokenStorage.fp16
    min_depth: float = 1e-3  # predictions are clamped to [min_depth, max_depth]
    max_depth: float = 10.0
    # Loss weights; paper: 1, 0.5, 0.1, 0.01 (the released options: 10, 2, 0.2, 0.1).
    si_weight: float = 1.0
    pseudo_weight: float = 0.5
    contrast_weight: float = 0.1
    smooth_weight: float = 0.01
    si_variance_focus: float = 0.85  # lambda of the scale-invariant log loss
    pseudo_rho: float = 0.9  # the pseudo-metric loss applies when d1 of the LS fit exceeds rho
    contrast_temperature: float = 0.1
    contrast_rank_threshold: int = 1  # image level: batch ranks closer than this are positives
    contrast_classes: int = 16  # pixel level: |C| depth classes over [min_depth, max_depth]
    contrast_pixels: int = 256  # query pixels sampled per image
    ema_momentum: float = 0.99  # key network of the pixel-level contrast
    # Optimiser (released options): AdamW, lr decayed x lr_decay per epoch after a linear warm-up.
    lr: float = 1e-5
    weight_decay: float = 1e-2
    eps: float = 1e-6
    warmup_steps: int = 1000
    lr_decay: float = 0.9


def relative_rules(section: str) -> dict:
    """The value rules of a ``RelativeDepthConfig`` at ``section`` (``tr2m.relative``, ``rsa.relative``)."""
    sizes = {f"{section}.{name}": POSITIVE_INT for name in ("hidden_size", "num_layers", "num_heads", "fusion_hidden_size")}
    return sizes  # its precision is a Choice, checked as the section is made


RULES = Rules(
    values={
        **{f"tr2m.image_encoder.{name}": POSITIVE_INT for name in ("patch_size", "hidden_size", "num_layers", "num_heads")},
        **relative_rules("tr2m.relative"),
        # Pillow's JPEG quality: above 95 only grows the file
        "tr2m.cache_image_quality": rule(lambda v: isinstance(v, int) and 1 <= v <= 95, "an integer in [1, 95]"),
        "tr2m.input_height": POSITIVE_INT,
        "tr2m.input_width": POSITIVE_INT,
        "tr2m.num_heads": POSITIVE_INT,
        "tr2m.mlp_ratio": POSITIVE_INT,
        "tr2m.neck_channels": POSITIVE_INT,
        "tr2m.decoder_channels": POSITIVE_INT,
        "tr2m.head_channels": POSITIVE_INT,
        "tr2m.head_hidden": POSITIVE_INT,
        "tr2m.max_caption_lines": POSITIVE_INT,
        "tr2m.si_weight": NON_NEGATIVE,
        "tr2m.pseudo_weight": NON_NEGATIVE,
        "tr2m.contrast_weight": NON_NEGATIVE,
        "tr2m.smooth_weight": NON_NEGATIVE,
        "tr2m.si_variance_focus": FRACTION_CLOSED,
        "tr2m.pseudo_rho": FRACTION_CLOSED,
        "tr2m.contrast_temperature": POSITIVE,
        "tr2m.contrast_rank_threshold": NON_NEGATIVE_INT,
        "tr2m.contrast_classes": rule(lambda v: isinstance(v, int) and v >= 2, "an integer >= 2"),
        "tr2m.contrast_pixels": POSITIVE_INT,
        "tr2m.ema_momentum": UNIT_RIGHT_OPEN,
        "tr2m.lr": NON_NEGATIVE,
        "tr2m.weight_decay": NON_NEGATIVE,
        "tr2m.eps": POSITIVE,
        "tr2m.warmup_steps": NON_NEGATIVE_INT,
        "tr2m.lr_decay": UNIT_LEFT_OPEN,
    },
    ranges=(("tr2m.min_depth", "tr2m.max_depth", 0.0, ">"),),
    divisible=(
        ("tr2m.image_encoder.hidden_size", "tr2m.image_encoder.num_heads"),
        ("tr2m.image_encoder.hidden_size", "tr2m.num_heads"),
        ("tr2m.relative.hidden_size", "tr2m.relative.num_heads"),
        ("tr2m.input_height", "tr2m.image_encoder.patch_size"),
        ("tr2m.input_width", "tr2m.image_encoder.patch_size"),
    ),
)
# Each section checks its own values when it is made (rules.Section).
TR2MConfig.section, TR2MConfig.rules = "tr2m", RULES
