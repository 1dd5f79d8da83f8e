"""PureCLIP-Depth (arXiv 2603.16238): metric depth computed inside the CLIP embedding space.

A frozen CLIP ViT gives patch tokens and CLS in one pass; phi rotates each patch token, psi fuses
it with CLS; the similarity of the fused, L2-normalised token to a learnable depth table W
(initialised from CLIP text embeddings of "<c> meter" phrases) gives soft bin probabilities, and
the expected bin centre is the patch's depth. Shapes follow the reference code
(``../shared/reference/pureclip-depth.md``); the paper's variants are config fields.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from huggingface_hub import ModelHubMixin, snapshot_download
from huggingface_hub.errors import HFValidationError, HfHubHTTPError
from safetensors.torch import load_file, save_file
from torch import nn

from ..config import Config, HeadConfig, config_from_dict, config_to_dict
from ..data.transforms import merge_tiles, resize_bilinear, split_tiles
from ..encoders import CLIPEncoder, EncoderOutput, build_encoder
from ..errors import CheckpointError
from ..io.atomic import atomic_dir

WEIGHTS_NAME = "model.safetensors"
CONFIG_NAME = "config.json"


def bin_centres(min_depth: float, max_depth: float, num_bins: int) -> torch.Tensor:
    """Centres of ``num_bins`` equal bins over [min_depth, max_depth] (fixed, never trained)."""
    width = (max_depth - min_depth) / num_bins
    return min_depth + (torch.arange(num_bins, dtype=torch.float64) + 0.5) * width


def depth_phrases(centres: torch.Tensor, style: str) -> list[str]:
    """One phrase per bin centre, to initialise the depth table from CLIP text embeddings."""
    if style == "reference":  # the reference code: "0.33 meter", "1.00 meter", ...
        return [f"{c:.2f} meter" for c in centres.tolist()]
    if style == "paper":  # the paper's "1 meter", "2 meters"; non-integer centres keep 2 decimals
        phrases = []
        for c in centres.tolist():
            number = f"{c:.2f}".rstrip("0").rstrip(".")
            phrases.append(f"{number} meter" if number == "1" else f"{number} meters")
        return phrases
    raise ValueError(f"head.phrase_style must be 'reference' or 'paper', got {style!r}")


def _mlp(in_dim: int, hidden: int, out_dim: int, dropout: float, bias: bool) -> nn.Sequential:
    """LayerNorm -> Linear -> GELU -> Dropout -> Linear -> LayerNorm (the reference code's block)."""
    return nn.Sequential(
        nn.LayerNorm(in_dim),
        nn.Linear(in_dim, hidden, bias=bias),
        nn.GELU(),
        nn.Dropout(dropout),
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
    """phi, psi and the depth table: the only trained part (~12M parameters at D = 768)."""

    def __init__(self, cfg: HeadConfig, embed_dim: int, table_init: torch.Tensor | None = None) -> None:
        super().__init__()
        self.cfg = cfg
        d, hidden = embed_dim, cfg.mlp_ratio * embed_dim
        # Bias-free Linears in phi, biased in psi: as in the reference code.
        self.phi = _mlp(d, hidden, d, cfg.dropout, bias=False)
        self.psi = _mlp(2 * d if cfg.use_cls else d, hidden, d, cfg.dropout, bias=True)
        table = table_init if table_init is not None else torch.randn(cfg.num_bins, d)
        if table.shape != (cfg.num_bins, d):
            raise ValueError(f"depth table init has shape {tuple(table.shape)}, expected {(cfg.num_bins, d)}")
        self.table = nn.Parameter(F.normalize(table.float(), dim=-1))
        self.register_buffer(
            "bin_centres", bin_centres(cfg.min_depth, cfg.max_depth, cfg.num_bins).float(), persistent=False
        )

    def normalized_table(self) -> torch.Tensor:
        """W re-normalised at every use, as in the reference code."""
        return F.normalize(self.table, dim=-1)

    def forward(self, patch_tokens: torch.Tensor, cls: torch.Tensor) -> HeadOutput:
        z = self.phi(patch_tokens)
        if self.cfg.use_cls:
            z = torch.cat([z, cls[:, None, None, :].expand_as(z)], dim=-1)
        z = F.normalize(self.psi(z), dim=-1)
        logits = z @ self.normalized_table().T / self.cfg.tau
        probs = logits.softmax(dim=-1)
        return HeadOutput(z=z, logits=logits, probs=probs, depth=probs @ self.bin_centres)


class PureCLIPDepth(
    nn.Module,
    ModelHubMixin,
    library_name="clipdepth",
    tags=["depth-estimation", "monocular-depth", "clip"],
):
    """Frozen CLIP encoder + trained head. ``infer`` takes images and returns metres.

    ``PureCLIPDepth.from_pretrained(folder_or_hub_id)`` loads a head checkpoint and the encoder
    its config names; ``save_pretrained`` / ``push_to_hub`` write or upload the head only.
    """

    def __init__(self, cfg: Config, encoder: CLIPEncoder, head: PureCLIPDepthHead) -> None:
        super().__init__()
        self.cfg = cfg
        self.encoder = encoder
        self.head = head
        # What save_pretrained's caller adds to config.json (epoch, metrics): the mixin's
        # save_pretrained does not pass extra arguments on to _save_pretrained.
        self._checkpoint_extra: dict = {}

    @classmethod
    def build(cls, cfg: Config, encoder: CLIPEncoder | None = None) -> "PureCLIPDepth":
        """A new model: the encoder from ``cfg.encoder`` and W from its text embeddings."""
        encoder = encoder or build_encoder(cfg.encoder)
        centres = bin_centres(cfg.head.min_depth, cfg.head.max_depth, cfg.head.num_bins)
        with torch.no_grad():
            table = encoder.encode_text(depth_phrases(centres, cfg.head.phrase_style))
        return cls(cfg, encoder, PureCLIPDepthHead(cfg.head, encoder.embed_dim, table))

    @property
    def input_size(self) -> int:
        return self.encoder.image_size

    def encode(self, images: torch.Tensor) -> EncoderOutput:
        """(B, 3, S, S) float images in [0, 1] at the encoder's input size -> tokens and CLS.

        On CUDA the frozen encoder runs under autocast (``encoder.precision``: bf16 by default,
        fp16 or fp32); its outputs are returned in float32 for the head.
        """
        dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(self.cfg.encoder.precision)
        with torch.autocast("cuda", dtype=dtype or torch.float32, enabled=images.is_cuda and dtype is not None):
            out = self.encoder(self.encoder.normalize(images))
        return EncoderOutput(out.patch_tokens.float(), out.cls.float())

    def depth_at_input(self, out: HeadOutput) -> torch.Tensor:
        """Per-patch depth upsampled to the input size with NEAREST, as the reference code."""
        size = (out.depth.shape[1] * self.encoder.patch_size, out.depth.shape[2] * self.encoder.patch_size)
        return F.interpolate(out.depth[:, None], size=size, mode="nearest")[:, 0]

    def predict_from_features(
        self, features: EncoderOutput, flipped: EncoderOutput | None = None, tiles: int = 1
    ) -> tuple[torch.Tensor, HeadOutput]:
        """Depth at the input size, (B, S, tiles * S), from the features of B * tiles square
        tiles (frame-major); with ``flipped`` (features of the mirrored frames' tiles) flip TTA,
        which mirrors whole frames, not single tiles."""
        out = self.head(features.patch_tokens, features.cls)
        depth = merge_tiles(self.depth_at_input(out), tiles)
        if flipped is not None:
            mirrored = merge_tiles(self.depth_at_input(self.head(flipped.patch_tokens, flipped.cls)), tiles)
            depth = 0.5 * (depth + mirrored.flip(-1))
        return depth, out

    def predict(self, images: torch.Tensor, tta: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
        """(B, 3, S, k * S) images in [0, 1] -> depth (B, S, k * S) and bin probabilities
        (B, h, k * w, K). A wide input is cut into k square tiles (KITTI: 4) and merged back."""
        size = self.input_size
        k = images.shape[-1] // size
        flipped = self.encode(split_tiles(images.flip(-1), size)) if tta else None
        depth, out = self.predict_from_features(self.encode(split_tiles(images, size)), flipped, k)
        return depth, merge_tiles(out.probs.movedim(-1, 1), k).movedim(1, -1)

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

    @torch.inference_mode()
    def infer(
        self, images: torch.Tensor | np.ndarray, tta: bool = False, tiles: int | None = None
    ) -> dict[str, torch.Tensor]:
        """Metric depth for RGB images at their own resolution.

        ``images``: (H, W, 3) or (B, H, W, 3) uint8 array, or a (B, 3, H, W) float tensor in
        [0, 1]. Wide images are cut into square tiles (``tiles``, default ``auto_tiles``).
        Returns ``depth`` and ``uncertainty`` (B, H, W) in metres and ``bin_probs`` (B, h, w, K).
        """
        self.eval()
        if isinstance(images, np.ndarray):
            arr = images[None] if images.ndim == 3 else images
            images = torch.tensor(arr).permute(0, 3, 1, 2).float() / 255.0  # a copy: inputs may be read-only
        images = images.to(next(self.head.parameters()).device)
        height, width = images.shape[-2:]
        tiles = tiles or self.auto_tiles(height, width)
        depth, probs = self.predict(resize_bilinear(images, (self.input_size, tiles * self.input_size)), tta)

        def to_image(x: torch.Tensor) -> torch.Tensor:
            return F.interpolate(x[:, None], size=(height, width), mode="bilinear", align_corners=True)[:, 0]

        std = F.interpolate(self.bin_std(probs)[:, None], size=depth.shape[-2:], mode="nearest")[:, 0]
        return {"depth": to_image(depth), "uncertainty": to_image(std), "bin_probs": probs}

    # -- head-only checkpoints: the frozen encoder is named in the config, never saved --------
    # huggingface_hub's ModelHubMixin supplies push_to_hub and the Hub download in from_pretrained;
    # the two hooks below define what a checkpoint folder holds.
    def _save_pretrained(self, save_directory: Path) -> None:
        meta = {
            "architecture": "pureclip_depth",
            "config": config_to_dict(self.cfg),
            "encoder_fingerprint": self.encoder.fingerprint(),
            **self._checkpoint_extra,
        }
        state = {k: v.detach().cpu().contiguous() for k, v in self.head.state_dict().items()}
        save_file(state, str(save_directory / WEIGHTS_NAME))
        (save_directory / CONFIG_NAME).write_text(json.dumps(meta, indent=2))

    def save_pretrained(  # type: ignore[override]
        self, save_directory: str | Path, *, extra: dict | None = None, push_to_hub: bool = False,
        repo_id: str | None = None, **kwargs,
    ) -> Path:
        """Write ``model.safetensors`` (head only), ``config.json`` and a model card, the folder
        replaced as a whole (never half-written); ``push_to_hub`` uploads it too."""
        directory = Path(save_directory)
        self._checkpoint_extra = extra or {}
        with atomic_dir(directory) as tmp:
            super().save_pretrained(tmp, **kwargs)
        if push_to_hub:
            self.push_to_hub(repo_id or directory.name)
        return directory

    @classmethod
    def from_pretrained(  # type: ignore[override]
        cls, pretrained_model_name_or_path: str | Path, *, encoder: CLIPEncoder | None = None, **hub_kwargs
    ) -> "PureCLIPDepth":
        """A checkpoint folder, or a Hugging Face Hub id (downloaded and cached by huggingface_hub)."""
        name = str(pretrained_model_name_or_path)
        if Path(name).is_dir():
            return cls._load_folder(Path(name), encoder)
        if name.count("/") != 1 or name.startswith((".", "/", "~")):
            raise CheckpointError(f"{name}: checkpoint folder not found")
        try:
            return super().from_pretrained(name, encoder=encoder, **hub_kwargs)
        except (HfHubHTTPError, HFValidationError, OSError) as exc:  # offline, unknown repo, no access
            raise CheckpointError(
                f"cannot download checkpoint {name!r} from the Hugging Face Hub ({type(exc).__name__}); "
                "connect once so it is cached, or pass a local checkpoint folder instead"
            ) from None

    @classmethod
    def _from_pretrained(
        cls, *, model_id: str, revision: str | None, cache_dir: str | Path | None, force_download: bool,
        local_files_only: bool, token: str | bool | None, encoder: CLIPEncoder | None = None, **_: object,
    ) -> "PureCLIPDepth":
        directory = snapshot_download(
            repo_id=model_id, revision=revision, cache_dir=cache_dir, force_download=force_download,
            local_files_only=local_files_only, token=token,
        )
        return cls._load_folder(Path(directory), encoder)

    @classmethod
    def _load_folder(cls, directory: Path, encoder: CLIPEncoder | None) -> "PureCLIPDepth":
        """Load a head checkpoint folder and the encoder its config names (or the one given)."""
        meta = read_checkpoint_meta(directory)
        cfg = config_from_dict(meta["config"])
        encoder = encoder or build_encoder(cfg.encoder)
        expected = meta.get("encoder_fingerprint")
        if expected and encoder.fingerprint() != expected:
            raise CheckpointError(
                f"{directory}: head was trained on encoder weights {expected}, but {encoder.description} "
                f"has {encoder.fingerprint()}; load it with the encoder it was trained with"
            )
        head = PureCLIPDepthHead(cfg.head, encoder.embed_dim)
        try:
            head.load_state_dict(load_file(str(Path(directory) / WEIGHTS_NAME)))
        except (RuntimeError, OSError) as exc:
            raise CheckpointError(f"{directory}/{WEIGHTS_NAME}: cannot load head weights ({str(exc).splitlines()[0]})") from None
        return cls(cfg, encoder, head)


def read_checkpoint_meta(directory: str | Path) -> dict:
    directory = Path(directory)
    for name in (CONFIG_NAME, WEIGHTS_NAME):
        if not (directory / name).is_file():
            raise CheckpointError(f"{directory}: not a clipdepth checkpoint folder (no {name})")
    try:
        return json.loads((directory / CONFIG_NAME).read_text())
    except json.JSONDecodeError as exc:
        raise CheckpointError(f"{directory / CONFIG_NAME}: invalid JSON ({exc})") from None
