"""Typed configuration: dataclasses are the schema, YAML recipes name only what differs.

A recipe may start with ``base: other.yaml`` (resolved beside it, or a built-in recipe name);
any field can then be overridden from the command line as ``section.field=value``. OmegaConf
checks every key and type against the dataclasses, so a typo is an error, not a silent default.

Where the PureCLIP-Depth paper and its released code disagree, the field defaults to the
released code (it produced the published numbers) and the docstring names the paper's value;
``configs/variants/paper.yaml`` switches all of them at once.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any, NamedTuple, Optional

import yaml
from omegaconf import OmegaConf
from omegaconf.errors import OmegaConfBaseException

from .errors import ConfigError
from .registry import DEFAULT_MODEL

# The allowed values of the fields that name a choice; modules that act on them import these.
RESIZE_MODES = ("linear", "align_corners", "antialias")  # data.resize (besides "auto")
DEPTH_RESIZE_MODES = ("masked", "nearest")  # data.depth_resize
PRECISION_NAMES = ("bf16", "fp16", "fp32")  # *.precision (besides "auto" and "released")
FUSIONS = ("concat", "film")  # pureclip.fusion
PATCH_RULES = ("released", "paper")  # pureclip.patch_rule
PHRASE_STYLES = ("released", "paper")  # pureclip.phrase_style
RESIDENCIES = ("auto", "device", "stream")  # train.residency
HEAD_PRECISIONS = ("auto", "fp32", "bf16")  # train.head_precision
IMAGE_STORAGE = ("jpeg", "png", "raw")  # tr2m.cache_image
RELATIVE_STORAGE = ("png", "fp16")  # tr2m.cache_relative
TOKEN_STORAGE = ("fp16", "int8")  # tr2m.cache_tokens
TR2M_HEAD_INITS = ("released", "zero")  # tr2m.head_init
MIXTURE_ORDERS = ("weighted", "round_robin")  # train.mixture_order
PUBLISHED_EPOCHS = ("best", "last")  # train.publish
VAL_SOURCES = ("held_out", "test_list")  # data.val_source
COLOUR_AUGMENTATIONS = ("gamma_brightness", "jitter")  # data.augment_colour
BIN_SCHEMES = ("even", "log")  # prompts.bin_scheme
TEXT_NORMS = ("matrix", "row")  # prompts.text_norm
DEPTHCLIP_BACKBONES = ("resnet", "vit")  # depthclip.backbone, prompts.backbone
DEPTHCLIP_NORMALIZATIONS = ("imagenet", "clip")  # depthclip.normalization
DEPTHCLIP_REDUCTIONS = ("nearest", "linear")  # depthclip.channel_reduction


@dataclass
class CLIPEncoderConfig:
    """The frozen CLIP: PureCLIP-Depth's image encoder (and the text encoder of its depth table),
    TR2M's text encoder."""

    name: str = "openai/clip-vit-large-patch14-336"  # hub id or local folder
    # random_init builds the architecture below with random weights (tests, demo, benchmarks);
    # it is never a trained model.
    random_init: bool = False
    seed: int = 0  # weights of a random_init encoder are a function of this seed
    image_size: int = 336
    patch_size: int = 14
    hidden_size: int = 1024
    num_layers: int = 24
    num_heads: int = 16
    intermediate_size: int = 4096
    projection_dim: int = 768
    text_hidden_size: int = 768
    text_num_layers: int = 12
    text_num_heads: int = 12
    # Autocast of the frozen encoder on CUDA (on a CPU it runs in fp32): bf16, fp16, fp32, "auto"
    # (bf16 for PureCLIP-Depth and TR2M, the release's for the baselines) or "released" for the
    # precision the model's released code ran it in (PureCLIP-Depth fp16, TR2M fp32; models/base.py).
    precision: str = "auto"


@dataclass
class PureCLIPConfig:
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
    phrase_style: str = "released"
    use_cls: bool = True  # False: the "without CLS" ablation, psi takes width d
    # How CLS joins the rotated patch token. "concat": psi on [phi(patch); CLS] (the paper, and the
    # released runs); "film": CLS -> Linear(d, 2d) -> GELU -> Linear(2d, 2d) gives a scale g and a
    # shift b, fused = g * phi(patch) + b (the released code's alternative).
    fusion: str = "concat"
    mlp_ratio: int = 4
    dropout: float = 0.2
    # psi's Linear layers are bias-free in the released code; only checkpoints written by clipdepth
    # 0.1 (whose psi had biases) load with True.
    psi_bias: bool = False
    # -- per-patch targets and losses --
    # "released": a patch counts when any pixel is valid (> 0.1 m, no upper limit: a patch whose
    # mean lies beyond max_depth takes the last bin); "paper": a pixel is valid in
    # [min_depth, max_depth] and a patch is ignored when more than half of its pixels are not.
    patch_rule: str = "released"
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


@dataclass
class DepthCLIPConfig:
    """DepthCLIP (Zhang et al., ACM MM 2022; docs/baselines.md): zero-shot depth from a frozen CLIP,
    no training. Defaults follow the released code (``monoclip.py``, ``datasets_list.py``)."""

    # "resnet": CLIP RN50's layer-4 map, attention pool skipped (the release); "vit": the same
    # zero-shot head on the projected patch tokens of the `clip` section's ViT (the variant).
    backbone: str = "resnet"
    # OpenAI's RN50 weights: the path of the released RN50.pt (a TorchScript archive; any ModifiedResNet
    # CLIP file works, its sizes are read from it), or "open_clip" to take them from the optional
    # open_clip package (the openclip extra; downloaded once into its cache).
    weights: str = "RN50.pt"
    # CLIP's BPE tokenizer for a weights file (all OpenAI CLIP models share it): a hub id or a folder
    # saved by CLIPTokenizer.save_pretrained. With weights=open_clip, open_clip's own is used.
    tokenizer: str = "openai/clip-vit-base-patch32"
    # random_init builds a ModifiedResNet CLIP of the sizes below with random weights (tests, demo);
    # never a trained model. Defaults are RN50's.
    random_init: bool = False
    seed: int = 0
    layers: list[int] = field(default_factory=lambda: [3, 4, 6, 3])  # bottlenecks per stage
    width: int = 64  # stem width; the layer-4 map has 32 * width channels (RN50: 2048)
    embed_dim: int = 1024  # joint embedding (text) width
    text_width: int = 512
    text_layers: int = 12
    text_heads: int = 8
    # The release's input: NYU test frames cropped to 416 x 544 (PIL box (60, 56, 604, 472), i.e.
    # rows 56..472, cols 60..604; data.input_crop [56, 472, 60, 604]) and fed without resizing.
    input_height: int = 416
    input_width: int = 544
    # Input normalisation of the RN50 tower. "imagenet": the release's loader (ImageNet mean/std);
    # "clip": CLIP's own statistics. The ViT variant always uses CLIP's (as the rest of clipdepth).
    normalization: str = "imagenet"
    # Prompts: every template.format(object, word) per depth word, text embeddings L2-normalised,
    # averaged over templates and objects, normalised again (``zeroshot_classifier``).
    templates: list[str] = field(default_factory=lambda: ["This {} is {}"])
    objects: list[str] = field(default_factory=lambda: ["object"])
    depth_words: list[str] = field(default_factory=lambda: [
        "giant", "extremely close", "close", "not in distance", "a little remote", "far", "unseen"])
    bins: list[float] = field(default_factory=lambda: [1.00, 1.50, 2.00, 2.25, 2.50, 2.75, 3.00])  # metres per word
    # logits = logit_scale * <f, t> / temperature (release: 100 and 0.1, so x1000), softmax over words.
    logit_scale: float = 100.0
    temperature: float = 0.1
    # The 2048-channel map to the text width: F.interpolate along channels with the release's default
    # "nearest" (keeps channels 0, 2, 4, ...), or "linear" (the mean of each channel pair).
    channel_reduction: str = "nearest"
    # Image features L2-normalised over all channels BEFORE the reduction (the release), or not at all.
    normalize_image: bool = True
    # Autocast of the frozen RN50 on CUDA ("auto" and "released": fp16, as OpenAI's clip.load gives
    # it); the ViT variant uses clip.precision.
    precision: str = "auto"


@dataclass
class PromptsConfig:
    """Learned depth prompts (Auty & Mikolajczyk, ICCV 2023; docs/baselines.md): one learnable token
    embedding per depth bin through CLIP's frozen text transformer. Defaults follow the authors'
    release (PromptLearningCLIP-MDE: ``modules/DepthCLIP.py``, ``modules/MainRunnerLM.py``,
    ``params/depthclip_nyu_rn50_pv1_ls7_p_dset-even-7.yaml``); the frozen CLIP is named by ``backbone``."""

    # -- the frozen CLIP --
    # "resnet": CLIP RN50 (the release's reported runs: `clip: RN50` in its params files), its raw
    # layer-4 map as DepthCLIP's; the weights, tokenizer, random_init sizes, input normalisation and
    # precision are the `depthclip` section's (weights, tokenizer, random_init, seed, layers, width,
    # embed_dim, text_width, text_layers, text_heads, normalization, precision; its "auto" precision
    # is this model's: fp32, as released). "vit": the `clip` section's ViT (transformers CLIPModel).
    # The default stays "vit" (checkpoints written before this field, and the demo's shared ViT); the
    # prompts_nyu / prompts_kitti recipes set "resnet".
    backbone: str = "vit"
    # -- bins and prompts --
    # Depth bins = learned depth tokens: the release's learned-static-N, N in 7, 20, 128, 256.
    num_bins: int = 7
    # Bin centres: "even" (dset-even-N: equal bins over [min_depth, max_depth]) or "log" (dset-log-N:
    # equal in log depth; its const80-log-N is "log" with min_depth 0.001, max_depth 80).
    bin_scheme: str = "even"
    # The dataset's range (the release: NYU 0.001-10 m, KITTI 0.001-80 m).
    min_depth: float = 1e-3
    max_depth: float = 10.0
    # The prompt: "{depth}" is where each bin's learned token(s) go, every "{ctx}" one more learned
    # token shared by all bins. Release default ("paper-v1"): "This object appears to be {depth}";
    # its learned-static-1o1d template: "{ctx} object {ctx} {depth}".
    template: str = "This object appears to be {depth}"
    tokens_per_bin: int = 1  # learned tokens per bin in the "{depth}" slot (the release: 1)
    init_std: float = 0.02  # learned tokens drawn from N(0, init_std^2), as CLIP's token embedding
    # logits = logit_scale * <image, text> / temperature (the release: 100 and 0.1), softmax over bins.
    logit_scale: float = 100.0
    temperature: float = 0.1
    # Text features: "matrix" (the release) L2-normalises each row, then divides the N x D matrix by its
    # norm (each row ends at 1/sqrt(N)); "row" keeps unit rows (DepthCLIP's zeroshot_classifier).
    text_norm: str = "matrix"
    # Frames are encoded whole at this size (multiples of clip.patch_size; resnet: of its stride, 32).
    # The release tests on full frames (NYU 480 x 640, KITTI's KB crop 352 x 1216) and trains on random
    # crops of them at the same scale (416 x 544, 352 x 704), which a cache of frozen features cannot
    # draw (docs/baselines.md).
    input_height: int = 480
    input_width: int = 640
    # -- loss: "silog" with coefficient 1 (AdaBins' SILogLoss: 10 * sqrt(var(g) + 0.15 mean(g)^2),
    # g = log pred - log gt on GT > min_depth, the prediction upsampled to the GT) --
    silog_variance_focus: float = 0.85
    silog_scale: float = 10.0
    # -- optimiser: AdamW on the learned tokens only, the one-cycle schedule over the whole run
    # (train.max_epochs; cosine, momentum cycled 0.85-0.95), gradient norm clipped --
    lr: float = 3.57e-4  # the one-cycle peak
    weight_decay: float = 0.1
    div_factor: float = 25.0  # start lr = lr / div_factor
    final_div_factor: float = 100.0  # end lr = start lr / final_div_factor
    pct_start: float = 0.3  # share of the steps spent rising (torch's OneCycleLR default)
    grad_clip: float = 0.1  # max gradient norm; 0: no clipping


@dataclass
class TrainConfig:
    """The training loop every model shares (a model's own optimisation is in its section)."""

    batch_size: int = 8
    max_epochs: int = 200
    # Training stops after this many epochs without improvement (PureCLIP-Depth's released code:
    # 200, so never within 200 epochs; its paper: 50).
    patience: int = 200
    # The metric whose best epoch is kept as checkpoints/best_<metric> (one per metric of
    # improve_metrics is kept too) and, with publish "best", is the run's result `model/`.
    select_metric: str = "abs_rel"
    # Which epoch a run publishes as `model/`: "best" (the epoch of the best select_metric) or
    # "last" (the final epoch, checkpoints/last: the learned-prompts release evaluates last.ckpt).
    publish: str = "best"
    # The validation metrics whose improvement resets early stopping and keeps a best_<metric>
    # checkpoint ("improved" = any of them improved). Released code: d1 d2 d3 abs_diff abs_rel log10
    # rmse (abs_diff = mean |g - p|, reported beside the nine protocol metrics).
    improve_metrics: list[str] = field(
        default_factory=lambda: ["d1", "d2", "d3", "abs_diff", "abs_rel", "log10", "rmse"]
    )
    # Drop the last partial training batch of each epoch, as PureCLIP-Depth's released loaders do (it
    # also fixes where each phase boundary falls within an epoch); the learned-prompts release keeps it.
    drop_last: bool = True
    # Folder of the on-disk encoder feature cache (built on first use, reused after); unset keeps
    # the features in memory for this run only, where they fit in memory_share of the RAM
    # available (else they are streamed to <output folder>/feature_cache, reused by reruns).
    feature_cache: Optional[str] = None
    # Share of the RAM available at the start that a run's splits encoded into memory may take,
    # all together (a mixture's datasets, training and validation); the rest is left to the run
    # and the system (features/memory.py, plan_memory).
    memory_share: float = 0.5
    cache_shard_size: int = 256  # frames per cache shard
    # Run the encoder on the training images at every step instead of once (slower; for
    # comparison, or with augmentation). Validation still encodes its frames once.
    encode_on_the_fly: bool = False
    # Processes that decode and preprocess frames (cache build, on-the-fly training, evaluation);
    # unset: the CPUs this process may use, at most 8 (data/loader.py); 0: in the main process.
    num_workers: Optional[int] = None
    # Steps between loss records (train_steps.jsonl, progress bar): the only times a step waits
    # for the device to hand its loss back.
    log_every: int = 10
    # Where the training arrays go: "auto" loads them once into the device's memory when they fit
    # (an H100 holds NYU's ~21 GB of tokens) and else reads batches from the cache's shards one
    # batch ahead; "device" always loads, "stream" never does.
    residency: str = "auto"
    # Autocast of the head's training step and validation: "auto" (bf16 on CUDA, fp32 on a CPU),
    # "bf16" or "fp32" (none: what the released code of PureCLIP-Depth trains in; models/base.py).
    head_precision: str = "auto"
    compile_head: bool = False  # torch.compile the head's forward (CUDA; first steps pay compilation)
    # Replay the head's forward and backward as CUDA graphs (torch.compile "reduce-overhead"): one
    # launch for their kernels. CUDA only, and only where every batch has one shape (drop_last, one
    # input size); refused otherwise.
    cuda_graph: bool = False
    # How a `mixture` recipe draws its batches (each batch is one dataset's): "weighted": each step
    # draws a dataset with probability proportional to its weight, an epoch being as many steps as
    # the datasets' batches together; "round_robin": whole batches of each dataset in turn
    # (NYU, KITTI, C3VD, NYU, ...), each cycling until the largest is through once (TR2M's
    # released RepetitiveRoundRobinDataLoader).
    mixture_order: str = "weighted"


@dataclass
class DataConfig:
    dataset: str = "synthetic_indoor"  # a name in clipdepth.data.DATASETS
    root: Optional[str] = None  # dataset folder (real datasets)
    # Split lists in the BTS format ("rgb depth|None focal" per line). A relative list path is read
    # from `root`, as the paths inside it are; an absolute one as given.
    train_list: Optional[str] = None
    test_list: Optional[str] = None
    # Where validation frames come from. "held_out": a fixed, seeded val_fraction of train_list,
    # written once to val_split_dir (default: beside train_list; relative: under root) and reused,
    # the rest training; "test_list": test_list (the built-in scenes: their test split), the whole
    # train_list training (the learned-prompts release validates on its test list).
    val_source: str = "held_out"
    val_fraction: float = 0.1
    val_split_dir: Optional[str] = None
    depth_scale: float = 1000.0  # "folder" dataset: PNG depth = value / depth_scale metres
    # Built-in synthetic scenes: how many per split and at which resolution.
    train_size: int = 320
    val_size: int = 32
    test_size: int = 32
    height: int = 240
    width: int = 320
    seed: int = 0
    # How frames are resized to the model input (RGB, and depth mask-aware with the same kernel):
    # "linear": bilinear with half-pixel centres and no antialiasing, as OpenCV's INTER_LINEAR
    # (the PureCLIP-Depth release); "align_corners": bilinear with align_corners=True (the TR2M
    # release); "antialias": antialiased bilinear, as PIL (clipdepth 0.1); "auto": the model's
    # released choice.
    resize: str = "auto"
    # GT depth to the input size: "masked" (mask-aware bilinear with the kernel above, as
    # released) or "nearest" (the paper's text for KITTI).
    depth_resize: str = "masked"
    # Crop (top, bottom, left, right) applied before resizing to the encoder's input size;
    # the released code uses (40, 470, 38, 603) for NYU to drop the white border.
    input_crop: Optional[list[int]] = None
    # KITTI's KB crop instead: the bottom 352 rows and central 1216 columns of each frame (frames
    # differ in size by drive); the prediction is pasted back into the full frame.
    kb_crop: bool = False
    # The frame is resized to S x (tiles * S) and cut into square tiles (KITTI released: 4).
    tiles: int = 1
    # Captions (TR2M): one for every frame, or a folder of <frame name>.txt files (one caption
    # per line: a random line in training, line 0 in evaluation). Unset: the dataset's own
    # captions (the synthetic scenes describe themselves).
    caption: Optional[str] = None
    caption_dir: Optional[str] = None
    # Training augmentation (data/augment.py), applied when `augment` is true. TR2M's recipes name
    # the released loaders' (flip 0.5, and with p 0.5 "gamma_brightness" on NYU (brightness
    # [0.75, 1.25]), KITTI and VOID, "jitter" on C3VD), off by default: a flip alone is served from
    # mirrored copies the feature cache then also holds, but a colour change needs the encoder at
    # every step, so such a dataset is decoded and encoded on the fly (the run's train_log.txt says
    # which), at the cost the cache exists to avoid.
    augment: bool = False
    augment_flip: float = 0.0  # probability of mirroring a training frame and its GT
    augment_colour: Optional[str] = None
    augment_colour_prob: float = 0.5
    augment_brightness: list[float] = field(default_factory=lambda: [0.9, 1.1])


@dataclass
class EvalConfig:
    protocol: str = "nyu"  # cap and crop preset, see evaluation/protocol.py
    tta: bool = True  # flip test-time augmentation (released code: at validation and test)
    batch_size: int = 8


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
    precision: str = "auto"


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
    precision: str = "auto"
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
class TR2MConfig:
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
    head_init: str = "released"
    # The RSA-style ablation: one scale and one shift per image instead of per-pixel maps.
    global_factor: bool = False
    max_caption_lines: int = 16  # caption lines kept per frame (the released data has about 15)
    # How a split's arrays are kept in memory and in the feature cache (docs/tr2m.md, "The feature
    # cache"): the input image of training frames, read only by the edge-aware smoothness loss, as
    # "jpeg" (at cache_image_quality), "png" (lossless) or "raw" uint8; the relative depth as "png"
    # (its fp16 values, losslessly) or "fp16"; the DINOv2 tokens as "fp16" or "int8" (a scale per token).
    cache_image: str = "jpeg"
    cache_image_quality: int = 90
    cache_relative: str = "png"
    cache_tokens: str = "fp16"
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


@dataclass
class MixtureSource:
    """One dataset of a training mixture (``mixture`` in a recipe; docs/tr2m.md, "Mixture training")."""

    # Fields of the `data` section for this dataset (dataset, root, train_list, test_list,
    # caption_dir, kb_crop, ...), applied over the recipe's own `data` section.
    data: dict[str, Any] = field(default_factory=dict)
    name: Optional[str] = None  # label of its metrics, logs and cache folder; unset: data.dataset
    # Share of the batches under train.mixture_order=weighted; unset: its number of training frames.
    weight: Optional[float] = None
    protocol: Optional[str] = None  # its validation protocol; unset: the dataset's own
    # [height, width] of its frames at the model input, for models whose input size is free
    # (TR2M: NYU, VOID, C3VD 434 x 560; KITTI 350 x 1204); unset: the model's.
    input_size: Optional[list[int]] = None


@dataclass
class Config:
    """A whole setting. Shared sections (``clip``, ``data``, ``eval``, ``train``) serve every model;
    each model has its own section (``pureclip``, ``tr2m``) for everything only it reads."""

    model: str = DEFAULT_MODEL  # a registered model's name (clipdepth.registry)
    clip: CLIPEncoderConfig = field(default_factory=CLIPEncoderConfig)
    pureclip: PureCLIPConfig = field(default_factory=PureCLIPConfig)
    tr2m: TR2MConfig = field(default_factory=TR2MConfig)
    depthclip: DepthCLIPConfig = field(default_factory=DepthCLIPConfig)
    prompts: PromptsConfig = field(default_factory=PromptsConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    data: DataConfig = field(default_factory=DataConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)
    # Several training datasets instead of `data` alone: each batch comes from one of them, and
    # validation reports each one's metrics and their mean (training/mixture.py).
    mixture: list[MixtureSource] = field(default_factory=list)
    seed: int = 0
    device: str = "auto"  # "auto" picks CUDA when present
    output_dir: str = "outputs/run"


# The dataclass sections of Config, by name.
CONFIG_SECTIONS = tuple(f.name for f in dataclasses.fields(Config) if dataclasses.is_dataclass(getattr(Config(), f.name)))


# -- the first layout (clipdepth 0.1), still read: recipes, overrides, checkpoints, resume states --
# Old section or dotted field -> its place now. PureCLIP-Depth's settings were spread over
# `head`, `loss` and `train`; CLIP was the `encoder` section.
LEGACY_SECTIONS = {"encoder": "clip", "head": "pureclip", "loss": "pureclip"}
LEGACY_TRAIN_FIELDS = (
    "phase_steps", "embed_lr", "embed_weight_decay", "depth_lr", "depth_weight_decay",
    "freeze_table_in_depth_phase", "freeze_mlps", "decay_start", "final_lr_factor",
)


# Old values -> today's, by dotted field: the released code was once called "reference".
LEGACY_VALUES = {"pureclip.patch_rule": {"reference": "released"}, "pureclip.phrase_style": {"reference": "released"}}


def legacy_name(dotted: str) -> str:
    """A dotted field name of the first layout in today's layout (others unchanged)."""
    section, _, rest = dotted.partition(".")
    if section in LEGACY_SECTIONS:
        return f"{LEGACY_SECTIONS[section]}.{rest}" if rest else LEGACY_SECTIONS[section]
    if section == "train" and rest.split(".")[0] in LEGACY_TRAIN_FIELDS:
        return f"pureclip.{rest}"
    return dotted


def upgrade_layout(data: dict[str, Any]) -> dict[str, Any]:
    """A config mapping (a recipe layer, a saved config) with first-layout sections and fields
    moved to today's places; today's layout passes unchanged. When both appear, today's wins."""
    data = dict(data)
    for old, new in LEGACY_SECTIONS.items():
        if isinstance(data.get(old), dict):
            moved = data.pop(old)
            data[new] = {**moved, **data.get(new, {})} if isinstance(data.get(new), dict) else moved
    train = data.get("train")
    if isinstance(train, dict) and any(k in train for k in LEGACY_TRAIN_FIELDS):
        train = dict(train)
        moved = {k: train.pop(k) for k in LEGACY_TRAIN_FIELDS if k in train}
        pureclip = data.get("pureclip") if isinstance(data.get("pureclip"), dict) else {}
        data["train"], data["pureclip"] = train, {**moved, **pureclip}
    for dotted, renamed in LEGACY_VALUES.items():
        section, _, name = dotted.partition(".")
        fields = data.get(section)
        if isinstance(fields, dict) and isinstance(fields.get(name), str) and fields[name] in renamed:
            data[section] = {**fields, name: renamed[fields[name]]}
    return data


def _upgrade_override(override: str) -> str:
    key, sep, value = override.partition("=")
    key = legacy_name(key.strip())
    return f"{key}{sep}{LEGACY_VALUES.get(key, {}).get(value.strip(), value)}"


ABSENT = "<absent>"  # how first_difference reports a field one side lacks


def first_difference(
    a: Any, b: Any, ignore: tuple[str, ...] = (), prefix: str = ""
) -> tuple[str, Any, Any] | None:
    """The first field in sorted order (dotted name, its value in ``a``, in ``b``) where two nested
    mappings differ, fields in ``ignore`` (dotted names) skipped; None when they agree. A field only one
    side has differs, with ``ABSENT`` as the other's value. Saved configs, resume states and
    feature-cache keys are compared with it."""
    if not (isinstance(a, dict) and isinstance(b, dict)):
        return None if a == b else (prefix, a, b)
    for key in sorted({*a, *b}, key=str):
        name = f"{prefix}.{key}" if prefix else str(key)
        if name in ignore:
            continue
        if key not in a or key not in b:
            return name, a.get(key, ABSENT), b.get(key, ABSENT)
        diff = first_difference(a[key], b[key], ignore, name)
        if diff is not None:
            return diff
    return None


# -- value checks: every config is checked once, when it is made, with the rule in the message --------
def _rule(test, text):
    return test, text


_POSITIVE_INT = _rule(lambda v: isinstance(v, int) and v >= 1, "a positive integer")
_NON_NEGATIVE_INT = _rule(lambda v: isinstance(v, int) and v >= 0, "an integer >= 0")
_POSITIVE = _rule(lambda v: v > 0 and v != float("inf"), "a positive finite number")
_NON_NEGATIVE = _rule(lambda v: 0 <= v < float("inf"), "a finite number >= 0")
_FRACTION_OPEN = _rule(lambda v: 0 < v < 1, "strictly between 0 and 1")
_FRACTION_CLOSED = _rule(lambda v: 0 <= v <= 1, "between 0 and 1")
_UNIT_LEFT_OPEN = _rule(lambda v: 0 < v <= 1, "in (0, 1]")
_UNIT_RIGHT_OPEN = _rule(lambda v: 0 <= v < 1, "in [0, 1)")


def _one_of(values: tuple[str, ...]):
    return _rule(lambda v: v in values, f"one of {list(values)}")


_PRECISION = _one_of(("auto", "released", *PRECISION_NAMES))
VALUE_RULES: dict[str, tuple] = {
    "clip.precision": _PRECISION,
    **{f"clip.{name}": _POSITIVE_INT for name in (
        "image_size", "patch_size", "hidden_size", "num_layers", "num_heads", "intermediate_size", "projection_dim",
        "text_hidden_size", "text_num_layers", "text_num_heads")},
    **{f"tr2m.image_encoder.{name}": _POSITIVE_INT for name in ("patch_size", "hidden_size", "num_layers", "num_heads")},
    **{f"tr2m.relative.{name}": _POSITIVE_INT for name in ("hidden_size", "num_layers", "num_heads", "fusion_hidden_size")},
    "pureclip.num_bins": _rule(lambda v: isinstance(v, int) and v >= 2, "an integer >= 2"),
    "pureclip.tau": _POSITIVE, "pureclip.mlp_ratio": _POSITIVE_INT, "pureclip.dropout": _UNIT_RIGHT_OPEN,
    "pureclip.phrase_style": _one_of(PHRASE_STYLES), "pureclip.fusion": _one_of(FUSIONS),
    "pureclip.patch_rule": _one_of(PATCH_RULES), "pureclip.infonce_weight": _NON_NEGATIVE,
    "pureclip.phase_steps": _POSITIVE_INT, "pureclip.embed_lr": _NON_NEGATIVE,
    "pureclip.embed_weight_decay": _NON_NEGATIVE, "pureclip.depth_lr": _NON_NEGATIVE,
    "pureclip.depth_weight_decay": _NON_NEGATIVE, "pureclip.decay_start": _NON_NEGATIVE_INT,
    "pureclip.final_lr_factor": _UNIT_LEFT_OPEN,
    "train.batch_size": _POSITIVE_INT, "train.max_epochs": _POSITIVE_INT, "train.patience": _POSITIVE_INT,
    "train.cache_shard_size": _POSITIVE_INT, "train.log_every": _POSITIVE_INT,
    "train.memory_share": _UNIT_LEFT_OPEN,
    "train.num_workers": _rule(lambda v: v is None or (isinstance(v, int) and v >= 0), "null (automatic) or an integer >= 0"),
    "train.residency": _one_of(RESIDENCIES), "train.head_precision": _one_of(HEAD_PRECISIONS),
    "train.mixture_order": _one_of(MIXTURE_ORDERS), "train.publish": _one_of(PUBLISHED_EPOCHS),
    "data.val_source": _one_of(VAL_SOURCES),
    "data.val_fraction": _FRACTION_OPEN, "data.depth_scale": _POSITIVE,
    "data.train_size": _NON_NEGATIVE_INT, "data.val_size": _NON_NEGATIVE_INT, "data.test_size": _NON_NEGATIVE_INT,
    "data.height": _POSITIVE_INT, "data.width": _POSITIVE_INT, "data.tiles": _POSITIVE_INT,
    "data.resize": _one_of(("auto", *RESIZE_MODES)), "data.depth_resize": _one_of(DEPTH_RESIZE_MODES),
    "data.input_crop": _rule(
        lambda v: v is None or (len(v) == 4 and 0 <= v[0] < v[1] and 0 <= v[2] < v[3]),
        "null or [top, bottom, left, right] with 0 <= top < bottom and 0 <= left < right",
    ),
    "data.augment_flip": _FRACTION_CLOSED, "data.augment_colour_prob": _FRACTION_CLOSED,
    "data.augment_colour": _rule(lambda v: v is None or v in COLOUR_AUGMENTATIONS, f"null or one of {list(COLOUR_AUGMENTATIONS)}"),
    "data.augment_brightness": _rule(lambda v: len(v) == 2 and 0 < v[0] <= v[1] < float("inf"), "[low, high] with 0 < low <= high"),
    "eval.batch_size": _POSITIVE_INT,
    "output_dir": _rule(lambda v: bool(str(v).strip()), "a folder (not empty)"),
    "tr2m.image_encoder.precision": _PRECISION, "tr2m.relative.precision": _PRECISION,
    "tr2m.cache_image": _one_of(IMAGE_STORAGE), "tr2m.cache_relative": _one_of(RELATIVE_STORAGE),
    "tr2m.cache_tokens": _one_of(TOKEN_STORAGE),
    # Pillow's JPEG quality: above 95 only grows the file
    "tr2m.cache_image_quality": _rule(lambda v: isinstance(v, int) and 1 <= v <= 95, "an integer in [1, 95]"),
    "tr2m.input_height": _POSITIVE_INT, "tr2m.input_width": _POSITIVE_INT, "tr2m.num_heads": _POSITIVE_INT,
    "tr2m.mlp_ratio": _POSITIVE_INT, "tr2m.neck_channels": _POSITIVE_INT, "tr2m.decoder_channels": _POSITIVE_INT,
    "tr2m.head_channels": _POSITIVE_INT, "tr2m.head_hidden": _POSITIVE_INT, "tr2m.max_caption_lines": _POSITIVE_INT,
    "tr2m.si_weight": _NON_NEGATIVE, "tr2m.pseudo_weight": _NON_NEGATIVE, "tr2m.contrast_weight": _NON_NEGATIVE,
    "tr2m.smooth_weight": _NON_NEGATIVE, "tr2m.si_variance_focus": _FRACTION_CLOSED, "tr2m.pseudo_rho": _FRACTION_CLOSED,
    "tr2m.contrast_temperature": _POSITIVE, "tr2m.contrast_rank_threshold": _NON_NEGATIVE_INT,
    "tr2m.contrast_classes": _rule(lambda v: isinstance(v, int) and v >= 2, "an integer >= 2"),
    "tr2m.contrast_pixels": _POSITIVE_INT, "tr2m.ema_momentum": _UNIT_RIGHT_OPEN,
    "tr2m.lr": _NON_NEGATIVE, "tr2m.weight_decay": _NON_NEGATIVE, "tr2m.eps": _POSITIVE,
    "tr2m.warmup_steps": _NON_NEGATIVE_INT, "tr2m.lr_decay": _UNIT_LEFT_OPEN,
    "tr2m.head_init": _one_of(TR2M_HEAD_INITS),
    "prompts.backbone": _one_of(DEPTHCLIP_BACKBONES),
    "prompts.num_bins": _rule(lambda v: isinstance(v, int) and v >= 2, "an integer >= 2"),
    "prompts.bin_scheme": _one_of(BIN_SCHEMES), "prompts.text_norm": _one_of(TEXT_NORMS),
    "prompts.template": _rule(lambda v: v.count("{depth}") == 1, "a prompt with {depth} exactly once"),
    "prompts.tokens_per_bin": _POSITIVE_INT, "prompts.init_std": _POSITIVE, "prompts.logit_scale": _POSITIVE,
    "prompts.temperature": _POSITIVE, "prompts.input_height": _POSITIVE_INT, "prompts.input_width": _POSITIVE_INT,
    "prompts.silog_variance_focus": _FRACTION_CLOSED, "prompts.silog_scale": _POSITIVE,
    "prompts.lr": _NON_NEGATIVE, "prompts.weight_decay": _NON_NEGATIVE, "prompts.div_factor": _POSITIVE,
    "prompts.final_div_factor": _POSITIVE, "prompts.pct_start": _FRACTION_OPEN, "prompts.grad_clip": _NON_NEGATIVE,
    "depthclip.backbone": _one_of(DEPTHCLIP_BACKBONES), "depthclip.normalization": _one_of(DEPTHCLIP_NORMALIZATIONS),
    "depthclip.channel_reduction": _one_of(DEPTHCLIP_REDUCTIONS), "depthclip.precision": _PRECISION,
    "depthclip.weights": _rule(lambda v: bool(str(v).strip()), "a file path or 'open_clip'"),
    "depthclip.layers": _rule(lambda v: len(v) == 4 and all(isinstance(n, int) and n >= 1 for n in v), "four positive integers"),
    **{f"depthclip.{name}": _POSITIVE_INT for name in ("embed_dim", "text_width", "text_layers", "text_heads")},
    "depthclip.width": _rule(lambda v: isinstance(v, int) and v >= 2 and v % 2 == 0, "an even integer >= 2"),
    **{f"depthclip.{name}": _rule(lambda v: isinstance(v, int) and v >= 32 and v % 32 == 0,
                                  "a positive multiple of 32 (the ResNet's stride)")
       for name in ("input_height", "input_width")},
    "depthclip.logit_scale": _POSITIVE, "depthclip.temperature": _POSITIVE,
    "depthclip.templates": _rule(lambda v: len(v) >= 1 and all(str(t).count("{}") == 2 for t in v),
                                 "templates with two {} each (object, depth word)"),
    "depthclip.objects": _rule(lambda v: len(v) >= 1, "at least one object word"),
    "depthclip.depth_words": _rule(lambda v: len(v) >= 2, "at least two depth words"),
    "depthclip.bins": _rule(lambda v: len(v) >= 2 and all(0 < b < float("inf") for b in v), "at least two positive depths (metres)"),
}
# Pairs that must satisfy low < high (a depth range), with the lower bound's own rule.
RANGE_RULES = (
    ("pureclip.min_depth", "pureclip.max_depth", 0.0, ">="), ("tr2m.min_depth", "tr2m.max_depth", 0.0, ">"),
    ("prompts.min_depth", "prompts.max_depth", 0.0, ">"),
)
# (a, b): a must be a multiple of b (patch grids, attention heads).
DIVISIBLE_RULES = (
    ("clip.image_size", "clip.patch_size"), ("clip.hidden_size", "clip.num_heads"),
    ("clip.text_hidden_size", "clip.text_num_heads"),
    ("tr2m.image_encoder.hidden_size", "tr2m.image_encoder.num_heads"),
    ("tr2m.image_encoder.hidden_size", "tr2m.num_heads"), ("tr2m.relative.hidden_size", "tr2m.relative.num_heads"),
    ("tr2m.input_height", "tr2m.image_encoder.patch_size"), ("tr2m.input_width", "tr2m.image_encoder.patch_size"),
    ("depthclip.text_width", "depthclip.text_heads"),
)
# section dataclass -> its name in Config (``with_overrides`` checks a lone section by it)
_SECTIONS: dict[type, str] = {type(getattr(Config(), name)): name for name in CONFIG_SECTIONS}


def section_name(section_type: type) -> str:
    """The name in Config of a section's dataclass (``DepthCLIPConfig`` -> its field's name)."""
    return _SECTIONS[section_type]


def check_values(cfg: Any, section: str = "") -> Any:
    """Raise ConfigError naming the first field whose value breaks its rule (``VALUE_RULES``,
    ``RANGE_RULES``, ``DIVISIBLE_RULES``); ``cfg`` is a Config, or its section ``section``. Returns cfg."""

    def lookup(dotted: str):
        value = cfg
        for part in (dotted[len(section) + 1:] if section else dotted).split("."):
            value = getattr(value, part)
        return value

    prefix = f"{section}." if section else ""
    for name, (test, text) in VALUE_RULES.items():
        if not name.startswith(prefix):
            continue
        value = lookup(name)
        try:
            good = bool(test(value))
        except TypeError:
            good = False
        if not good:
            raise ConfigError(f"{name}={value!r}: must be {text}")
    for low_name, high_name, floor, relation in RANGE_RULES:
        if not low_name.startswith(prefix):
            continue
        low, high = lookup(low_name), lookup(high_name)
        low_ok = low >= floor if relation == ">=" else low > floor
        if not (low_ok and low < high and high < float("inf")):
            raise ConfigError(
                f"{low_name}={low!r}, {high_name}={high!r}: need {floor:g} {'<=' if relation == '>=' else '<'} "
                f"{low_name.split('.')[-1]} < {high_name.split('.')[-1]}"
            )
    for multiple_name, base_name in DIVISIBLE_RULES:
        if multiple_name.startswith(prefix) and base_name.startswith(prefix):
            multiple, base = lookup(multiple_name), lookup(base_name)
            if multiple % base:
                raise ConfigError(f"{multiple_name}={multiple!r}: must be a multiple of {base_name}={base!r}")
    return cfg


def builtin_recipe(name: str) -> Path:
    """Path of a recipe shipped with the package, e.g. ``demo`` or ``variants/paper``."""
    root = Path(str(resources.files("clipdepth") / "configs"))
    path = root / (name if name.endswith(".yaml") else f"{name}.yaml")
    if not path.is_file():
        available = sorted(str(p.relative_to(root).with_suffix("")) for p in root.rglob("*.yaml"))
        raise ConfigError(f"no recipe {name!r}: give a YAML path or one of {available}")
    return path


def _resolve_recipe(ref: str, relative_to: Path | None = None) -> Path:
    candidate = Path(ref)
    if relative_to is not None and not candidate.is_absolute():
        candidate = relative_to / candidate
    if candidate.is_file():
        return candidate
    if Path(ref).is_file():
        return Path(ref)
    return builtin_recipe(ref)


def _recipe_layers(path: Path, seen: tuple[Path, ...] = ()) -> list[dict[str, Any]]:
    """The recipe and its chain of ``base:`` recipes, base first."""
    if path.resolve() in seen:
        raise ConfigError(f"{path}: recipe includes itself through 'base'")
    try:
        data = yaml.safe_load(path.read_text()) or {}
    except (OSError, yaml.YAMLError) as exc:
        raise ConfigError(f"{path}: cannot read recipe ({exc.__class__.__name__}: {exc})") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: a recipe must be a mapping of sections, got {type(data).__name__}")
    base = data.pop("base", None)
    layers = _recipe_layers(_resolve_recipe(base, path.parent), seen + (path.resolve(),)) if base else []
    return layers + [upgrade_layout(data)]


def _merged(schema: Any, layers: list[Any], overrides: list[str] | tuple[str, ...], upgrade: bool = True) -> Any:
    """``schema`` (a dataclass or its type) merged with ``layers`` (mappings) and ``field=value``
    ``overrides``, as the checked dataclass. The one place OmegaConf's errors (several lines) become
    one ConfigError line naming the key."""
    bad = [o for o in overrides if "=" not in o]
    if bad:
        raise ConfigError(f"override {bad[0]!r} is not of the form section.field=value")
    overrides = [_upgrade_override(o) for o in overrides] if upgrade else list(overrides)
    try:
        merged = OmegaConf.structured(schema)
        for layer in layers:
            merged = OmegaConf.merge(merged, layer)
        # An item of a list (`mixture.0.data.root=...`) is set in place: merging a dotlist would
        # make the list a mapping {0: ...}.
        in_lists = [o for o in overrides if any(part.isdigit() for part in o.partition("=")[0].split("."))]
        plain = [o for o in overrides if o not in in_lists]
        if plain:
            merged = OmegaConf.merge(merged, OmegaConf.from_dotlist(plain))
        for override in in_lists:
            key, _, value = override.partition("=")
            _check_index(merged, key.strip())
            OmegaConf.update(merged, key.strip(), OmegaConf.from_dotlist([f"value={value}"])["value"], merge=True)
        result = OmegaConf.to_object(merged)
    except OmegaConfBaseException as exc:
        key = getattr(exc, "full_key", None)
        raise ConfigError(f"config {key + ': ' if key else ''}{str(exc).splitlines()[0]}") from None
    return check_values(result, _SECTIONS.get(type(result), ""))


def _check_index(merged: Any, key: str) -> None:
    """ConfigError naming a list item an override addresses beyond the list (``mixture.5.data.root``
    where the recipe has two datasets)."""
    node, parts = merged, key.split(".")
    for i, part in enumerate(parts):
        if OmegaConf.is_list(node):
            if not part.isdigit() or int(part) >= len(node):
                listed = ".".join(parts[:i])
                raise ConfigError(f"override {key}: {listed} has {len(node)} entries ({listed}.0 .. {listed}.{len(node) - 1})")
            node = node[int(part)]
        elif OmegaConf.is_dict(node) and part in node:
            node = node[part]
        else:
            return  # a key that does not exist: the merge names it


def load_config(
    recipes: str | Path | list[str | Path] | None = None, overrides: list[str] | tuple[str, ...] = ()
) -> Config:
    """Defaults, then each recipe's chain in order (e.g. ``["demo", "variants/paper"]``), then
    ``section.field=value`` overrides. First-layout names (``head.use_cls``) are read too."""
    if recipes is None:
        recipes = []
    elif isinstance(recipes, (str, Path)):
        recipes = [recipes]
    layers = [layer for recipe in recipes for layer in _recipe_layers(_resolve_recipe(str(recipe)))]
    return check_override_sections(_merged(Config, layers, overrides), overrides)


def check_override_sections(cfg: Config, overrides: list[str] | tuple[str, ...]) -> Config:
    """ConfigError, in one line, for an override of a model section that ``cfg.model`` does not
    read (``pureclip.max_depth=20`` on a TR2M run): it would change nothing. Returns cfg."""
    sections = {legacy_name(o.partition("=")[0].strip()).partition(".")[0] for o in overrides}
    if not sections & set(CONFIG_SECTIONS):
        return cfg
    from .registry import find_spec, model_sections  # imports the models: only where a section is overridden

    spec = find_spec(cfg.model)
    if spec is None:  # an unknown model is its own error, where it is built
        return cfg
    for override in overrides:
        key = legacy_name(override.partition("=")[0].strip())
        section = key.partition(".")[0]
        if section in model_sections() and section not in spec.sections:
            raise ConfigError(
                f"{key}: the {cfg.model} model does not read the {section} section; it reads "
                f"{', '.join(spec.sections)} besides the shared ones (drop the override, or set model= to a model that reads it)"
            )
    return cfg


def with_overrides(section: Any, overrides: list[str]) -> Any:
    """A copy of a config section (dataclass) with ``field=value`` overrides, type-checked like recipes."""
    return _merged(section, [], overrides, upgrade=False)


def merged_section(section: Any, fields: dict[str, Any]) -> Any:
    """A copy of a config section (dataclass) with ``fields`` (a mapping, nested as in YAML) merged
    over it, type-checked like recipes."""
    return _merged(section, [fields], [], upgrade=False)


class TrainedSetting(NamedTuple):
    """How a run trained one dataset: its data settings, input size (None: the model's) and
    validation protocol (None: the dataset's own)."""

    data: DataConfig
    input_size: tuple[int, int] | None
    protocol: str | None


def trained_setting(cfg: Config, dataset: str) -> TrainedSetting | None:
    """How a run trained ``dataset`` (a mixture entry's fields over the `data` section, or that
    section with ``eval.protocol``); None when it did not train on it. Scoring the dataset again
    uses the same geometry and protocol (training/mixture.py ``training_sources`` reads runs alike)."""
    for entry in cfg.mixture:
        data = merged_section(cfg.data, entry.data)
        if data.dataset == dataset:
            return TrainedSetting(data, tuple(entry.input_size) if entry.input_size else None, entry.protocol)
    if cfg.data.dataset == dataset and not cfg.mixture:
        return TrainedSetting(cfg.data, None, cfg.eval.protocol)
    return None


def config_to_dict(cfg: Config) -> dict[str, Any]:
    return dataclasses.asdict(cfg)


def load_config_dict(data: dict[str, Any], overrides: list[str] | tuple[str, ...] = ()) -> Config:
    """A saved config (checkpoints, resume states; either layout) with ``section.field=value``
    overrides, checked like recipes (``check_override_sections`` too)."""
    cfg = _merged(Config, [upgrade_layout(data)], overrides)
    return check_override_sections(cfg, overrides) if overrides else cfg


config_from_dict = load_config_dict  # a saved config without overrides


def config_to_yaml(cfg: Config) -> str:
    return OmegaConf.to_yaml(OmegaConf.structured(cfg))
