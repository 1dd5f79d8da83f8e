"""The schema: the shared sections (``clip``, ``train``, ``data``, ``eval``, ``mixture``) and
``Config``, which holds them and each model family's section, and the shared sections' rules."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any, Optional

from ..registry import DEFAULT_MODEL
from .baselines import DepthCLIPConfig, PromptsConfig
from .pureclip import PureCLIPConfig
from .rsa import RSAConfig
from .tr2m import TR2MConfig
from .rules import (
    Section,
    FRACTION_CLOSED,
    FRACTION_OPEN,
    NON_NEGATIVE_INT,
    POSITIVE,
    POSITIVE_INT,
    PRECISION_NAMES,
    Precision,
    UNIT_LEFT_OPEN,
    Rules,
    choices,
    rule,
)

RESIZE_MODES = ("linear", "align_corners", "antialias")  # data.resize (besides "auto")
DEPTH_RESIZE_MODES = ("masked", "nearest")  # data.depth_resize
RESIDENCIES = ("auto", "device", "stream")  # train.residency
HEAD_PRECISIONS = ("auto", "fp32", "bf16")  # train.head_precision
MIXTURE_ORDERS = ("weighted", "round_robin")  # train.mixture_order
PUBLISHED_EPOCHS = ("best", "last")  # train.publish
VAL_SOURCES = ("held_out", "test_list")  # data.val_source
TRACKERS = ("csv", "tensorboard", "wandb", "mlflow")  # train.log_to
WANDB_MODES = ("offline", "online")  # train.wandb_mode
Resize = choices("Resize", ("auto", *RESIZE_MODES), __name__)
DepthResize = choices("DepthResize", DEPTH_RESIZE_MODES, __name__)
Residency = choices("Residency", RESIDENCIES, __name__)
HeadPrecision = choices("HeadPrecision", HEAD_PRECISIONS, __name__)
MixtureOrder = choices("MixtureOrder", MIXTURE_ORDERS, __name__)
WandbMode = choices("WandbMode", WANDB_MODES, __name__)
PublishedEpoch = choices("PublishedEpoch", PUBLISHED_EPOCHS, __name__)
ValSource = choices("ValSource", VAL_SOURCES, __name__)
RunPrecision = choices("RunPrecision", ("auto", *PRECISION_NAMES), __name__)
COLOUR_AUGMENTATIONS = ("gamma_brightness", "jitter")  # data.augment_colour


@dataclass
class CLIPEncoderConfig(Section):
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
    precision: Precision = Precision.auto


@dataclass
class TrainConfig(Section):
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
    publish: PublishedEpoch = PublishedEpoch.best
    # The validation metrics whose improvement resets early stopping and keeps a best_<metric>
    # checkpoint ("improved" = any of them improved). Released code: d1 d2 d3 abs_diff abs_rel log10
    # rmse (abs_diff = mean |g - p|, reported beside the nine protocol metrics).
    improve_metrics: list[str] = field(default_factory=lambda: ["d1", "d2", "d3", "abs_diff", "abs_rel", "log10", "rmse"])
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
    # Where a run's step losses (every log_every steps), learning rates, epoch metrics and one
    # validation panel per epoch (RGB | GT | prediction | error) go (training/tracking.py): "csv"
    # (train_epochs.csv and train_steps.jsonl, written always) and any of "tensorboard"
    # (<output_dir>/tensorboard), "wandb" and "mlflow", each an optional extra (pip install 'clipdepth[wandb]').
    log_to: list[str] = field(default_factory=lambda: ["csv"])
    run_name: Optional[str] = None  # the run's name in the trackers; unset: the output folder's name
    wandb_project: str = "clipdepth"
    # "offline" keeps the run under <output_dir>/wandb (`wandb sync` uploads it later); "online"
    # streams it to the W&B server (after `wandb login`).
    wandb_mode: WandbMode = WandbMode.offline
    # MLflow tracking URI; unset: a file store in <output_dir>/mlruns (file: URI, no server needed)
    mlflow_uri: Optional[str] = None
    mlflow_experiment: str = "clipdepth"
    # Where the training arrays go: "auto" loads them once into the device's memory when they fit
    # (an H100 holds NYU's ~21 GB of tokens) and else reads batches from the cache's shards one
    # batch ahead; "device" always loads, "stream" never does.
    residency: Residency = Residency.auto
    # Autocast of the head's training step and validation: "auto" (bf16 on CUDA, fp32 on a CPU),
    # "bf16" or "fp32" (none: what the released code of PureCLIP-Depth trains in; models/base.py).
    head_precision: HeadPrecision = HeadPrecision.auto
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
    mixture_order: MixtureOrder = MixtureOrder.weighted


@dataclass
class DataConfig(Section):
    dataset: str = "synthetic_indoor"  # a name in clipdepth.data.DATASETS
    root: Optional[str] = None  # dataset folder (real datasets)
    # Split lists in the BTS format ("rgb depth|None focal" per line). A relative list path is read
    # from `root`, as the paths inside it are; an absolute one as given.
    train_list: Optional[str] = None
    test_list: Optional[str] = None
    # Where validation frames come from. "held_out": a fixed, seeded val_fraction of train_list,
    # written once to val_split_dir (default: beside train_list; relative: under root; a shipped
    # list, or a folder without train_list: the training run's split/ folder) and reused,
    # the rest training; "test_list": test_list (the built-in scenes: their test split), the whole
    # train_list training (the learned-prompts release validates on its test list).
    val_source: ValSource = ValSource.held_out
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
    resize: Resize = Resize.auto
    # GT depth to the input size: "masked" (mask-aware bilinear with the kernel above, as
    # released) or "nearest" (the paper's text for KITTI).
    depth_resize: DepthResize = DepthResize.masked
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
class EvalConfig(Section):
    protocol: str = "nyu"  # cap and crop preset, see evaluation/protocol.py
    tta: bool = True  # flip test-time augmentation (released code: at validation and test)
    batch_size: int = 8


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
class Config(Section):
    """A whole setting. Shared sections (``clip``, ``data``, ``eval``, ``train``) serve every model;
    each model has its own section (``pureclip``, ``tr2m``) for everything only it reads."""

    model: str = DEFAULT_MODEL  # a registered model's name (clipdepth.registry)
    clip: CLIPEncoderConfig = field(default_factory=CLIPEncoderConfig)
    pureclip: PureCLIPConfig = field(default_factory=PureCLIPConfig)
    tr2m: TR2MConfig = field(default_factory=TR2MConfig)
    depthclip: DepthCLIPConfig = field(default_factory=DepthCLIPConfig)
    prompts: PromptsConfig = field(default_factory=PromptsConfig)
    rsa: RSAConfig = field(default_factory=RSAConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    data: DataConfig = field(default_factory=DataConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)
    # Several training datasets instead of `data` alone: each batch comes from one of them, and
    # validation reports each one's metrics and their mean (training/mixture.py).
    mixture: list[MixtureSource] = field(default_factory=list)
    seed: int = 0
    device: str = "auto"  # "auto": the best device present (device.resolve_device)
    # The whole model's precision on any device ("auto": each part's own setting, reduced precision
    # on CUDA only; device.check_precision refuses one a device cannot run).
    precision: RunPrecision = RunPrecision.auto
    output_dir: str = "outputs/run"


# The dataclass sections of Config, by name.
CONFIG_SECTIONS = tuple(f.name for f in dataclasses.fields(Config) if dataclasses.is_dataclass(getattr(Config(), f.name)))


SHARED_RULES = Rules(
    values={
        **{
            f"clip.{name}": POSITIVE_INT
            for name in (
                "image_size",
                "patch_size",
                "hidden_size",
                "num_layers",
                "num_heads",
                "intermediate_size",
                "projection_dim",
                "text_hidden_size",
                "text_num_layers",
                "text_num_heads",
            )
        },
        "train.batch_size": POSITIVE_INT,
        "train.max_epochs": POSITIVE_INT,
        "train.patience": POSITIVE_INT,
        "train.cache_shard_size": POSITIVE_INT,
        "train.log_every": POSITIVE_INT,
        "train.log_to": rule(lambda v: all(x in TRACKERS for x in v), f"a list of {list(TRACKERS)}"),
        "train.memory_share": UNIT_LEFT_OPEN,
        "train.num_workers": rule(lambda v: v is None or (isinstance(v, int) and v >= 0), "null (automatic) or an integer >= 0"),
        "data.val_fraction": FRACTION_OPEN,
        "data.depth_scale": POSITIVE,
        "data.train_size": NON_NEGATIVE_INT,
        "data.val_size": NON_NEGATIVE_INT,
        "data.test_size": NON_NEGATIVE_INT,
        "data.height": POSITIVE_INT,
        "data.width": POSITIVE_INT,
        "data.tiles": POSITIVE_INT,
        "data.input_crop": rule(
            lambda v: v is None or (len(v) == 4 and 0 <= v[0] < v[1] and 0 <= v[2] < v[3]),
            "null or [top, bottom, left, right] with 0 <= top < bottom and 0 <= left < right",
        ),
        "data.augment_flip": FRACTION_CLOSED,
        "data.augment_colour_prob": FRACTION_CLOSED,
        "data.augment_colour": rule(lambda v: v is None or v in COLOUR_AUGMENTATIONS, f"null or one of {list(COLOUR_AUGMENTATIONS)}"),
        "data.augment_brightness": rule(lambda v: len(v) == 2 and 0 < v[0] <= v[1] < float("inf"), "[low, high] with 0 < low <= high"),
        "eval.batch_size": POSITIVE_INT,
        "output_dir": rule(lambda v: bool(str(v).strip()), "a folder (not empty)"),
    },
    divisible=(
        ("clip.image_size", "clip.patch_size"),
        ("clip.hidden_size", "clip.num_heads"),
        ("clip.text_hidden_size", "clip.text_num_heads"),
    ),
    exclusive=(("data.kb_crop", "data.input_crop"),),
)
# Each section checks its own values when made (rules.Section); Config its top-level fields.
CLIPEncoderConfig.section, CLIPEncoderConfig.rules = "clip", SHARED_RULES
TrainConfig.section, TrainConfig.rules = "train", SHARED_RULES
DataConfig.section, DataConfig.rules = "data", SHARED_RULES
EvalConfig.section, EvalConfig.rules = "eval", SHARED_RULES
Config.rules = Rules({name: test for name, test in SHARED_RULES.values.items() if "." not in name})
# section dataclass -> its name in Config (``with_overrides`` checks a lone section by it)
_SECTIONS: dict[type, str] = {type(getattr(Config(), name)): name for name in CONFIG_SECTIONS}


def section_name(section_type: type) -> str:
    """The name in Config of a section's dataclass (``DepthCLIPConfig`` -> its field's name)."""
    return _SECTIONS[section_type]
