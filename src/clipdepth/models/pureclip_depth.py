"""PureCLIP-Depth (arXiv 2603.16238): metric depth computed inside the CLIP embedding space.

A frozen CLIP ViT gives patch tokens and CLS in one pass; phi rotates each patch token, psi fuses
it with CLS; the similarity of the fused, L2-normalised token to a learnable depth table W
(initialised from CLIP text embeddings of "<c> meter" phrases) gives soft bin probabilities, and
the expected bin centre is the patch's depth. Shapes follow the released code
(``docs/pureclip-depth.md``); the paper's variants are config fields.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from ..config import Config, PureCLIPConfig
from ..data.transforms import merge_tiles, split_tiles
from ..encoders import CLIPEncoder, EncoderOutput
from ..errors import ConfigError
from ..registry import BASELINE, DemoPlan, DemoVariant, ModelSpec, register
from .base import FEATURE_DTYPE, DepthModel, Features, FrameBatch, set_missing
from .pureclip_depth_onnx import ONNX_FILES


def bin_centres(min_depth: float, max_depth: float, num_bins: int) -> torch.Tensor:
    """Centres (metres) of ``num_bins`` equal bins over [min_depth, max_depth] (fixed, never
    trained): min + (i + 0.5) * (max - min) / K, as the released ``PatchAligner``."""
    width = (max_depth - min_depth) / num_bins
    return min_depth + (torch.arange(num_bins, dtype=torch.float64) + 0.5) * width


def depth_phrases(centres: torch.Tensor, style: str) -> list[str]:
    """One phrase per bin centre, to initialise the depth table from CLIP text embeddings."""
    if style == "released":  # the released code: "0.33 meter", "1.00 meter", ...
        return [f"{c:.2f} meter" for c in centres.tolist()]
    if style == "paper":  # the paper's "1 meter", "2 meters"; non-integer centres keep 2 decimals
        phrases = []
        for c in centres.tolist():
            number = f"{c:.2f}".rstrip("0").rstrip(".")
            phrases.append(f"{number} meter" if number == "1" else f"{number} meters")
        return phrases
    raise ValueError(f"pureclip.phrase_style must be 'released' or 'paper', got {style!r}")


class Dropout(nn.Dropout):
    """``nn.Dropout`` (each value kept with probability 1 - p, scaled by 1 / (1 - p)) whose CPU mask
    comes from uniform numbers, u >= p: the same distribution, drawn in half the time of the CPU
    Bernoulli kernel, which took 15 % of a cached head step. On CUDA, torch's fused kernel."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training or self.p == 0 or x.is_cuda:
            return super().forward(x)
        return x * ((torch.rand_like(x) >= self.p) * (1.0 / (1.0 - self.p)))


def _mlp(in_dim: int, hidden: int, out_dim: int, dropout: float, bias: bool) -> nn.Sequential:
    """LayerNorm -> Linear -> GELU -> Dropout -> Linear -> LayerNorm (the released code's block)."""
    return nn.Sequential(
        nn.LayerNorm(in_dim),
        nn.Linear(in_dim, hidden, bias=bias),
        nn.GELU(),
        Dropout(dropout),
        nn.Linear(hidden, out_dim, bias=bias),
        nn.LayerNorm(out_dim),
    )


@dataclass
class HeadOutput:
    z: torch.Tensor  # (B, h, w, D) fused tokens, L2-normalised
    logits: torch.Tensor  # (B, h, w, K) similarities / tau
    probs: torch.Tensor  # (B, h, w, K) soft bin assignment
    depth: torch.Tensor  # (B, h, w) metres, expected bin centre


class PureCLIPDepthHead(nn.Module):
    """phi, the CLS fusion (psi, or FiLM) and the depth table: the only trained part.

    At D = 768, K = 15 with ``fusion="concat"`` it has 11,815,680 parameters, as the released
    ``PatchAligner`` without its CLIP. Raises ``ConfigError`` for an unknown ``cfg.fusion`` or FiLM
    without CLS.
    """

    def __init__(self, cfg: PureCLIPConfig, embed_dim: int, table_init: torch.Tensor | None = None) -> None:
        super().__init__()
        if cfg.fusion == "film" and not cfg.use_cls:
            raise ConfigError("pureclip.fusion=film is driven by CLS: it cannot be combined with pureclip.use_cls=false")
        self.cfg = cfg
        d, hidden = embed_dim, cfg.mlp_ratio * embed_dim
        self.phi = _mlp(d, hidden, d, cfg.dropout, bias=False)
        self.psi: nn.Sequential | None = None
        self.film: nn.Sequential | None = None
        if cfg.fusion == "concat":
            self.psi = _mlp(2 * d if cfg.use_cls else d, hidden, d, cfg.dropout, bias=cfg.psi_bias)
        else:  # the released FiLM generator: biased Linears, GELU between
            self.film = nn.Sequential(nn.Linear(d, 2 * d), nn.GELU(), nn.Linear(2 * d, 2 * d))
        table = table_init if table_init is not None else torch.randn(cfg.num_bins, d)
        if table.shape != (cfg.num_bins, d):
            raise ValueError(f"depth table init has shape {tuple(table.shape)}, expected {(cfg.num_bins, d)}")
        self.table = nn.Parameter(F.normalize(table.float(), dim=-1))
        self.register_buffer("bin_centres", bin_centres(cfg.min_depth, cfg.max_depth, cfg.num_bins).float(), persistent=False)

    def normalized_table(self) -> torch.Tensor:
        """W re-normalised at every use, as in the released code."""
        return F.normalize(self.table, dim=-1)

    def fusion_parameters(self) -> list[nn.Parameter]:
        """phi's and the fusion's parameters (the MLPs the training phases update besides W)."""
        fusion = self.psi if self.psi is not None else self.film
        return [*self.phi.parameters(), *fusion.parameters()]

    def forward(self, patch_tokens: torch.Tensor, cls: torch.Tensor) -> HeadOutput:
        """``patch_tokens`` (B, h, w, D) projected CLIP tokens, ``cls`` (B, D) unit vectors."""
        z = self.phi(patch_tokens)
        if self.film is not None:
            gain, bias = self.film(cls)[:, None, None, :].chunk(2, dim=-1)
            z = gain * z + bias
        else:
            if self.cfg.use_cls:
                z = torch.cat([z, cls[:, None, None, :].expand_as(z)], dim=-1)
            z = self.psi(z)
        z = F.normalize(z, dim=-1)
        logits = z @ self.normalized_table().T / self.cfg.tau
        probs = logits.softmax(dim=-1)
        return HeadOutput(z=z, logits=logits, probs=probs, depth=probs @ self.bin_centres)


class PureCLIPDepth(DepthModel):
    """Frozen CLIP encoder + trained head. ``infer`` takes images and returns metres.

    ``PureCLIPDepth.from_pretrained(folder_or_hub_id)`` loads a head checkpoint and the encoder
    its config names; ``save_pretrained`` / ``push_to_hub`` write or upload the head only.
    """

    display_name = "PureCLIP-Depth"
    paper = "PureCLIP-Depth ([arXiv 2603.16238](https://arxiv.org/abs/2603.16238))"
    citation = """@article{miya2026pureclipdepth,
  title   = {PureCLIP-Depth: Prompt-Free and Decoder-Free Monocular Depth Estimation within CLIP Embedding Space},
  author  = {Miya, Ryutaro and Fushinobu, Kazuyoshi and Kawaguchi, Tatsuya},
  journal = {arXiv preprint arXiv:2603.16238},
  year    = {2026}
}"""
    gives_uncertainty = True  # the spread of the soft bin distribution
    takes_tiles = True  # KITTI frames as four 336 x 336 tiles, as released
    onnx_files = ONNX_FILES
    released_precision = "fp16"  # OpenAI's clip.load gives fp16 weights on CUDA
    auto_precision = "bf16"  # fp16's range without its overflow risk; the cache stores fp16 either way
    released_resize = "linear"  # cv2.resize(..., INTER_LINEAR)
    dataset_recipes = {"nyu": "pureclip_nyu", "kitti": "pureclip_kitti"}
    encoder: CLIPEncoder
    head: PureCLIPDepthHead

    @classmethod
    def build_encoder(cls, cfg: Config) -> CLIPEncoder:
        return CLIPEncoder.from_config(cfg.clip)

    @classmethod
    def build_head(cls, cfg: Config, encoder: CLIPEncoder, initialise: bool) -> PureCLIPDepthHead:
        """A new head starts with W from the text embeddings of its depth phrases."""
        table = None
        if initialise:
            centres = bin_centres(cfg.pureclip.min_depth, cfg.pureclip.max_depth, cfg.pureclip.num_bins)
            # The text tower at the encoder's precision, as the release encodes the phrases
            with torch.no_grad(), cls.autocast(encoder.model.device, cfg.clip.precision, cfg.precision):
                table = encoder.encode_text(depth_phrases(centres, cfg.pureclip.phrase_style)).float()
        return PureCLIPDepthHead(cfg.pureclip, encoder.embed_dim, table)

    @classmethod
    def upgrade_config(cls, config: dict, state: dict[str, torch.Tensor]) -> dict:
        """clipdepth 0.1 checkpoints had biases in psi (and resized with antialiasing)."""
        return set_missing(super().upgrade_config(config, state), "pureclip.psi_bias", "psi.1.bias" in state)

    @property
    def input_size(self) -> int:
        return self.encoder.image_size

    @property
    def frozen_precisions(self) -> dict[str, str]:
        return {"clip": self.precision_name(self.cfg.clip.precision)}

    @property
    def max_depth(self) -> float:
        return self.cfg.pureclip.max_depth

    def encode(self, images: torch.Tensor) -> EncoderOutput:
        """(B, 3, S, S) float images in [0, 1] at the encoder's input size -> tokens and CLS.

        On CUDA the frozen encoder runs under autocast (``clip.precision``; "auto" is bf16,
        "released" fp16 as the released code ran CLIP); its outputs are returned in float32 for the head.
        """
        with self.autocast(images.device, self.cfg.clip.precision, self.cfg.precision):
            out = self.encoder(self.encoder.normalize(images))
        return EncoderOutput(out.patch_tokens.float(), out.cls.float())

    def encode_frames(self, batch: FrameBatch) -> Features:
        """Tokens and CLS of every square tile, frame-major, in half precision (as cached)."""
        out = self.encode(split_tiles(batch.images, self.input_size))
        return {"tokens": out.patch_tokens.to(FEATURE_DTYPE), "cls": out.cls.to(FEATURE_DTYPE)}

    def upsample_patches(self, per_patch: torch.Tensor) -> torch.Tensor:
        """(B, h, w) per-patch values -> (B, h * p, w * p) at the input size, NEAREST as the released code."""
        size = (per_patch.shape[1] * self.encoder.patch_size, per_patch.shape[2] * self.encoder.patch_size)
        return F.interpolate(per_patch[:, None], size=size, mode="nearest")[:, 0]

    def depth_at_input(self, out: HeadOutput) -> torch.Tensor:
        """Per-patch depth upsampled to the input size (``upsample_patches``)."""
        return self.upsample_patches(out.depth)

    def predict_from_features(self, features: Features, flipped: Features | None = None, tiles: int = 1) -> tuple[torch.Tensor, HeadOutput]:
        """Depth at the input size, (B, S, tiles * S), from the features of B * tiles square
        tiles (frame-major); with ``flipped`` (features of the mirrored frames' tiles) flip TTA,
        which mirrors whole frames, not single tiles."""
        out = self.head(features["tokens"], features["cls"])
        depth = merge_tiles(self.depth_at_input(out), tiles)
        if flipped is not None:
            mirrored = merge_tiles(self.depth_at_input(self.head(flipped["tokens"], flipped["cls"])), tiles)
            depth = 0.5 * (depth + mirrored.flip(-1))
        return depth, out

    def bin_std(self, probs: torch.Tensor) -> torch.Tensor:
        """Per-patch standard deviation (metres) of the soft bin distribution: sqrt(sum_j p_j
        (c_j - d)^2), the spread the model itself assigns to its depth."""
        centres = self.head.bin_centres
        mean = probs @ centres
        return (probs @ centres**2 - mean**2).clamp_min(0).sqrt()

    def auto_tiles(self, height: int, width: int) -> int:
        """Tiles for a frame: the checkpoint's own when it was trained on tiles, else one square
        tile per image height across (a KITTI-shaped frame gets 3)."""
        return self.cfg.data.tiles if self.cfg.data.tiles > 1 else max(1, round(width / height))

    def infer_outputs(self, features: Features, head_output: HeadOutput, tiles: int, to_image) -> dict[str, torch.Tensor]:
        """``uncertainty`` (B, H, W) metres, the spread of each patch's bin distribution (``bin_std``),
        and ``bin_probs`` (B, h, tiles * w, K), the soft bin assignment of each patch."""
        probs = merge_tiles(head_output.probs.movedim(-1, 1), tiles).movedim(1, -1)
        return {"uncertainty": to_image(self.upsample_patches(self.bin_std(probs))), "bin_probs": probs}

    def export_onnx(self, out_dir, opset: int = 18) -> dict:
        """``model.onnx`` (images -> depth, bin probabilities), ``head.onnx`` (tokens and CLS ->
        per-patch depth) and the ``export.json`` report; see ``pureclip_depth_onnx``. Needs the
        ``onnx`` extra (ConfigError naming it otherwise)."""
        from .pureclip_depth_onnx import export_onnx

        return export_onnx(self, out_dir, opset)


def demo_plan(cfg: Config) -> DemoPlan:
    """The demo (``clipdepth demo``): one head on a random-weight CLIP, beside the mean-depth predictor."""
    return DemoPlan(
        [DemoVariant("head", "PureCLIP-Depth head (random-weight CLIP)", cfg)],
        lambda model: (
            f"NOTE: the demo's encoder is a small CLIP ViT with RANDOM weights ({model.encoder.description}).\n"
            "It is not a trained model and its numbers say nothing about PureCLIP-Depth's accuracy. For real\n"
            "CLIP features, train with the OpenAI weights (downloaded once from the Hugging Face Hub, or a local folder):\n"
            "  clipdepth train --config <recipe> clip.random_init=false clip.name=openai/clip-vit-large-patch14-336"
        ),
        BASELINE,
        "{metric}: {gain:.1f}% {direction} than the mean-depth predictor;",
    )


SPEC = register(
    ModelSpec(
        "pureclip_depth",
        PureCLIPDepth,
        "pureclip",
        PureCLIPConfig,
        reads=("clip",),
        objective="clipdepth.training.objectives.pureclip:PureCLIPObjective",
        inference_overrides=("clip.name", "clip.precision"),
        converters=(("pureclip-released", "clipdepth.models.released:convert_pureclip_released"),),
        demo=demo_plan,
    )
)
