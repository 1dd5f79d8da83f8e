"""The CLIP baselines' sections (``depthclip``, ``prompts``): fields and rules."""

from __future__ import annotations

from dataclasses import dataclass, field

from .rules import Section, FRACTION_CLOSED, FRACTION_OPEN, NON_NEGATIVE, POSITIVE, POSITIVE_INT, Precision, Rules, choices, rule

BIN_SCHEMES = ("even", "log")  # prompts.bin_scheme
TEXT_NORMS = ("matrix", "row")  # prompts.text_norm
DEPTHCLIP_BACKBONES = ("resnet", "vit")  # depthclip.backbone, prompts.backbone
DEPTHCLIP_NORMALIZATIONS = ("imagenet", "clip")  # depthclip.normalization
DEPTHCLIP_REDUCTIONS = ("nearest", "linear")  # depthclip.channel_reduction
BinScheme = choices("BinScheme", BIN_SCHEMES, __name__)
TextNorm = choices("TextNorm", TEXT_NORMS, __name__)
Backbone = choices("Backbone", DEPTHCLIP_BACKBONES, __name__)
Normalization = choices("Normalization", DEPTHCLIP_NORMALIZATIONS, __name__)
ChannelReduction = choices("ChannelReduction", DEPTHCLIP_REDUCTIONS, __name__)


@dataclass
class DepthCLIPConfig(Section):
    """DepthCLIP (Zhang et al., ACM MM 2022; docs/baselines.md): zero-shot depth from a frozen CLIP,
    no training. Defaults follow the released code (``monoclip.py``, ``datasets_list.py``)."""

    # "resnet": CLIP RN50's layer-4 map, attention pool skipped (the release); "vit": the same
    # zero-shot head on the projected patch tokens of the `clip` section's ViT (the variant).
    backbone: Backbone = Backbone.resnet
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
    normalization: Normalization = Normalization.imagenet
    # Prompts: every template.format(object, word) per depth word, text embeddings L2-normalised,
    # averaged over templates and objects, normalised again (``zeroshot_classifier``).
    templates: list[str] = field(default_factory=lambda: ["This {} is {}"])
    objects: list[str] = field(default_factory=lambda: ["object"])
    depth_words: list[str] = field(
        default_factory=lambda: ["giant", "extremely close", "close", "not in distance", "a little remote", "far", "unseen"]
    )
    bins: list[float] = field(default_factory=lambda: [1.00, 1.50, 2.00, 2.25, 2.50, 2.75, 3.00])  # metres per word
    # logits = logit_scale * <f, t> / temperature (release: 100 and 0.1, so x1000), softmax over words.
    logit_scale: float = 100.0
    temperature: float = 0.1
    # The 2048-channel map to the text width: F.interpolate along channels with the release's default
    # "nearest" (keeps channels 0, 2, 4, ...), or "linear" (the mean of each channel pair).
    channel_reduction: ChannelReduction = ChannelReduction.nearest
    # Image features L2-normalised over all channels BEFORE the reduction (the release), or not at all.
    normalize_image: bool = True
    # Autocast of the frozen RN50 on CUDA ("auto" and "released": fp16, as OpenAI's clip.load gives
    # it); the ViT variant uses clip.precision.
    precision: Precision = Precision.auto


@dataclass
class PromptsConfig(Section):
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
    backbone: Backbone = Backbone.vit
    # -- bins and prompts --
    # Depth bins = learned depth tokens: the release's learned-static-N, N in 7, 20, 128, 256.
    num_bins: int = 7
    # Bin centres: "even" (dset-even-N: equal bins over [min_depth, max_depth]) or "log" (dset-log-N:
    # equal in log depth; its const80-log-N is "log" with min_depth 0.001, max_depth 80).
    bin_scheme: BinScheme = BinScheme.even
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
    text_norm: TextNorm = TextNorm.matrix
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


RULES = Rules(
    values={
        "prompts.num_bins": rule(lambda v: isinstance(v, int) and v >= 2, "an integer >= 2"),
        "prompts.template": rule(lambda v: v.count("{depth}") == 1, "a prompt with {depth} exactly once"),
        "prompts.tokens_per_bin": POSITIVE_INT,
        "prompts.init_std": POSITIVE,
        "prompts.logit_scale": POSITIVE,
        "prompts.temperature": POSITIVE,
        "prompts.input_height": POSITIVE_INT,
        "prompts.input_width": POSITIVE_INT,
        "prompts.silog_variance_focus": FRACTION_CLOSED,
        "prompts.silog_scale": POSITIVE,
        "prompts.lr": NON_NEGATIVE,
        "prompts.weight_decay": NON_NEGATIVE,
        "prompts.div_factor": POSITIVE,
        "prompts.final_div_factor": POSITIVE,
        "prompts.pct_start": FRACTION_OPEN,
        "prompts.grad_clip": NON_NEGATIVE,
        "depthclip.weights": rule(lambda v: bool(str(v).strip()), "a file path or 'open_clip'"),
        "depthclip.layers": rule(lambda v: len(v) == 4 and all(isinstance(n, int) and n >= 1 for n in v), "four positive integers"),
        **{f"depthclip.{name}": POSITIVE_INT for name in ("embed_dim", "text_width", "text_layers", "text_heads")},
        "depthclip.width": rule(lambda v: isinstance(v, int) and v >= 2 and v % 2 == 0, "an even integer >= 2"),
        **{
            f"depthclip.{name}": rule(
                lambda v: isinstance(v, int) and v >= 32 and v % 32 == 0, "a positive multiple of 32 (the ResNet's stride)"
            )
            for name in ("input_height", "input_width")
        },
        "depthclip.logit_scale": POSITIVE,
        "depthclip.temperature": POSITIVE,
        "depthclip.templates": rule(
            lambda v: len(v) >= 1 and all(str(t).count("{}") == 2 for t in v), "templates with two {} each (object, depth word)"
        ),
        "depthclip.objects": rule(lambda v: len(v) >= 1, "at least one object word"),
        "depthclip.depth_words": rule(lambda v: len(v) >= 2, "at least two depth words"),
        "depthclip.bins": rule(lambda v: len(v) >= 2 and all(0 < b < float("inf") for b in v), "at least two positive depths (metres)"),
    },
    ranges=(("prompts.min_depth", "prompts.max_depth", 0.0, ">"),),
    divisible=(("depthclip.text_width", "depthclip.text_heads"),),
)
# Each section checks its own values when it is made (rules.Section).
DepthCLIPConfig.section, DepthCLIPConfig.rules = "depthclip", RULES
PromptsConfig.section, PromptsConfig.rules = "prompts", RULES
