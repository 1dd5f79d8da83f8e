"""The papers' released checkpoints as clipdepth checkpoints (``clipdepth convert``).

PureCLIP-Depth (github ryutaroLF/PureCLIP-Depth, ``utils/final_model.py``): a ``torch.save`` dict
{"epoch", "model_state", "optimizer_state", ...} (or {"epoch", "val_metrics", "model"} for the
per-metric files) whose state is the whole ``PatchAligner``: ``rgb_adapter.{0,1,4,5}`` (phi),
``fusion_mlp.{0,1,4,5}`` (psi) or ``film_gen.{0,2}`` (FiLM), ``depth_table.weight`` (W),
``bin_centers``, ``clip_mean`` / ``clip_std`` and ``clip.*``, the frozen OpenAI CLIP in OpenAI's
own parameter names. The head is copied; the CLIP is only compared, tensor by tensor, with the CLIP
the converted checkpoint will name (its weights are never copied: a checkpoint names its encoder).

TR2M (github BeileiCui/TR2M, ``scalemap_depth.py``): {"state_dict": ScaleMapModel weights}, a
training checkpoint {"model": {"scalemap.*": ...}}, or the bare state dict.

RSA (github Adonis-galaxy/RSA, ``train_3d.py``): {"global_step", "model": LanScaleModel weights,
"best_eval_measures_*"}, as its published ``eval_void/{da,dpt,midas}_lanscale`` files, or the bare
state dict; the MLP's widths are read off its tensors.

Every rejection is one ``CheckpointError`` line naming the file and the key or tensor at fault.
"""

from __future__ import annotations

import pickle
import re
from pathlib import Path
from typing import Any

import torch
from transformers.image_utils import OPENAI_CLIP_MEAN, OPENAI_CLIP_STD

from ..config import load_config
from ..config.legacy import renamed
from ..errors import CheckpointError, DataError
from .base import load_head_state
from .pureclip_depth import PureCLIPDepth, PureCLIPDepthHead, bin_centres
from .rsa import RSA
from .tr2m import TR2M

# Recipes a converted checkpoint's config starts from; the checkpoint's own tensors then set the
# head's sizes and bins.
PURECLIP_RECIPES = {"nyu": "pureclip_nyu", "kitti": "pureclip_kitti"}
TR2M_RECIPES = {"nyu": "tr2m_nyu", "kitti": "tr2m_kitti"}
# The released bins end at 10 m (NYU) and 30 m (KITTI): what tells the dataset when not given.
PURECLIP_MAX_DEPTH = {10.0: "nyu", 30.0: "kitti"}
# OpenAI CLIP entries that are hyper-parameters, not weights (its JIT archive stores them).
CLIP_NON_WEIGHTS = {"input_resolution", "context_length", "vocab_size"}
# Both releases' config.ini: bins start at 1e-3 m (and end at PURECLIP_MAX_DEPTH's 10 or 30 m).
RELEASED_MIN_DEPTH = 1e-3
# Bin centres equal the bins they name to 0.1 mm, or to two units in the last place of their dtype
# where that is coarser (an fp16 copy stores 10 m to 8 mm).
BIN_TOLERANCE_M = 1e-4


# The licences of the releases, as their repositories state them: a converted checkpoint records
# its release's (``released_licence`` in config.json) and its model card states it (``models.card``).
PURECLIP_LICENCE = {
    "id": "mit",
    "name": "MIT",
    "release": "github ryutaroLF/PureCLIP-Depth",
    # the release's LICENSE file (commit 8d0a292), its permission notice as written there
    "notice": (
        "MIT License\n"
        "Copyright (c) 2026 Ryutaro Miya\n\n"
        "Permission is hereby granted, free of charge, to any person obtaining a copy\n"
        'of this software and associated documentation files (the "Software"), to deal\n'
        "in the Software without restriction, including without limitation the rights\n"
        "to use, copy, modify, merge, publish, distribute, sublicense, and/or sell\n"
        "copies of the Software, and to permit persons to whom the Software is\n"
        "furnished to do so, subject to the following conditions:\n\n"
        "The above copyright notice and this permission notice shall be included in all\n"
        "copies or substantial portions of the Software.\n\n"
        'THE SOFTWARE IS PROVIDED "AS IS", WITHOUT WARRANTY OF ANY KIND, EXPRESS OR\n'
        "IMPLIED, INCLUDING BUT NOT LIMITED TO THE WARRANTIES OF MERCHANTABILITY,\n"
        "FITNESS FOR A PARTICULAR PURPOSE AND NONINFRINGEMENT. IN NO EVENT SHALL THE\n"
        "AUTHORS OR COPYRIGHT HOLDERS BE LIABLE FOR ANY CLAIM, DAMAGES OR OTHER\n"
        "LIABILITY, WHETHER IN AN ACTION OF CONTRACT, TORT OR OTHERWISE, ARISING FROM,\n"
        "OUT OF OR IN CONNECTION WITH THE SOFTWARE OR THE USE OR OTHER DEALINGS IN THE\n"
        "SOFTWARE."
    ),
}
# TR2M's repository has no licence file and its README names none.
TR2M_LICENCE = {"id": None, "release": "github BeileiCui/TR2M"}
# RSA's repository has no licence file either (checked at its root, 2026-12).
RSA_LICENCE = {"id": None, "release": "github Adonis-galaxy/RSA"}


# -- reading a released file --------------------------------------------------------------------
def read_released(path: str | Path) -> dict[str, Any]:
    """A ``torch.save`` file as a dict, read without executing code (``weights_only``).

    Raises DataError for a missing file and CheckpointError for anything that is not a
    ``torch.save`` of tensors and plain values."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: no such checkpoint file")
    try:
        data = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        if "Unsupported global" in str(exc):  # a real pickle, with objects we will not execute
            raise CheckpointError(
                f"{path}: holds Python objects besides tensors and plain values, which clipdepth does not unpickle; "
                "re-save its state dict with torch.save(checkpoint['model_state'], ...)"
            ) from None
        raise CheckpointError(f"{path}: not a checkpoint written by torch.save (not a pickle)") from None
    except Exception as exc:  # noqa: BLE001 - torch's unpickler fails on foreign bytes in many ways
        raise CheckpointError(f"{path}: not a checkpoint written by torch.save ({type(exc).__name__})") from None
    if not isinstance(data, dict):
        raise CheckpointError(f"{path}: expected a dict of tensors or a training checkpoint, got {type(data).__name__}")
    return data


def _state_dict(path: Path, data: dict[str, Any], containers: tuple[str, ...], prefixes: tuple[str, ...]) -> dict[str, torch.Tensor]:
    """The model state inside a released file: under one of ``containers`` or the dict itself,
    with the first matching wrapper prefix (DDP's ``module.``, ...) removed."""
    state = next((data[k] for k in containers if isinstance(data.get(k), dict)), data)
    tensors = {k: v for k, v in state.items() if isinstance(v, torch.Tensor)}
    if not tensors:
        raise CheckpointError(f"{path}: holds no tensors under {', '.join(repr(k) for k in containers)} or at its top level")
    for prefix in prefixes:
        if any(k.startswith(prefix) for k in tensors):
            return {k[len(prefix) :]: v for k, v in tensors.items() if k.startswith(prefix)}
    return tensors


def _require(path: Path, state: dict[str, torch.Tensor], keys: list[str], what: str) -> None:
    missing = [k for k in keys if k not in state]
    if missing:
        sample = ", ".join(sorted(state)[:4])
        raise CheckpointError(f"{path}: not a released {what} checkpoint: no {missing[0]!r} (it has {sample}, ...)")


RELEASED_HINT = "is it a released checkpoint of this model?"


def _write(model: torch.nn.Module, out: Path, overwrite: bool, extra: dict[str, Any]) -> Path:
    if out.exists() and not overwrite:
        raise CheckpointError(f"{out}: exists; write elsewhere, or allow overwriting it", setting="overwrite")
    return model.save_pretrained(out, extra=extra)


# -- PureCLIP-Depth -----------------------------------------------------------------------------
_BLOCK = re.compile(r"^(visual\.)?transformer\.resblocks\.(\d+)\.(.+)$")
_BLOCK_PARTS = {
    "ln_1": "layer_norm1",
    "ln_2": "layer_norm2",
    "mlp.c_fc": "mlp.fc1",
    "mlp.c_proj": "mlp.fc2",
    "attn.out_proj": "self_attn.out_proj",
}
_CLIP_NAMES = {
    "visual.class_embedding": "vision_model.embeddings.class_embedding",
    "visual.positional_embedding": "vision_model.embeddings.position_embedding.weight",
    "visual.conv1.weight": "vision_model.embeddings.patch_embedding.weight",
    "visual.ln_pre.weight": "vision_model.pre_layrnorm.weight",
    "visual.ln_pre.bias": "vision_model.pre_layrnorm.bias",
    "visual.ln_post.weight": "vision_model.post_layernorm.weight",
    "visual.ln_post.bias": "vision_model.post_layernorm.bias",
    "token_embedding.weight": "text_model.embeddings.token_embedding.weight",
    "positional_embedding": "text_model.embeddings.position_embedding.weight",
    "ln_final.weight": "text_model.final_layer_norm.weight",
    "ln_final.bias": "text_model.final_layer_norm.bias",
    "logit_scale": "logit_scale",
}
_CLIP_TRANSPOSED = {"visual.proj": "visual_projection.weight", "text_projection": "text_projection.weight"}


def openai_clip_tensor(hf_state: dict[str, torch.Tensor], name: str) -> torch.Tensor | None:
    """The tensor of a ``transformers`` ``CLIPModel`` state dict that OpenAI's CLIP calls ``name``,
    in OpenAI's layout (projections transposed, q/k/v stacked into ``in_proj``), or None when
    ``hf_state`` has no counterpart (e.g. another number of layers)."""
    if name in _CLIP_NAMES:
        return hf_state.get(_CLIP_NAMES[name])
    if name in _CLIP_TRANSPOSED:
        weight = hf_state.get(_CLIP_TRANSPOSED[name])
        return None if weight is None else weight.T
    match = _BLOCK.match(name)
    if not match:
        return None
    tower = "vision_model" if match.group(1) else "text_model"
    layer = f"{tower}.encoder.layers.{match.group(2)}"
    rest = match.group(3)
    if rest in ("attn.in_proj_weight", "attn.in_proj_bias"):
        kind = rest.rsplit("_", 1)[1]
        parts = [hf_state.get(f"{layer}.self_attn.{p}_proj.{kind}") for p in "qkv"]
        return None if any(p is None for p in parts) else torch.cat(parts)
    module, _, kind = rest.rpartition(".")
    return hf_state.get(f"{layer}.{_BLOCK_PARTS[module]}.{kind}") if module in _BLOCK_PARTS else None


def check_clip(path: Path, released: dict[str, torch.Tensor], model: PureCLIPDepth) -> int:
    """Compare the checkpoint's ``clip.*`` tensors with the encoder's CLIP; returns how many were
    compared. A released fp16 tensor is compared with ours cast to fp16 (the release ran CLIP in
    fp16), to a relative 1e-3. Raises CheckpointError naming the first tensor that differs."""
    ours = model.encoder.model.state_dict()
    compared = 0
    for key, theirs in released.items():
        name = key[len("clip.") :]
        if not key.startswith("clip.") or name in CLIP_NON_WEIGHTS:
            continue
        mine = openai_clip_tensor(ours, name)
        where = f"{path}: frozen CLIP tensor {key!r}"
        if mine is None or tuple(mine.shape) != tuple(theirs.shape):
            shape = "none" if mine is None else tuple(mine.shape)
            raise CheckpointError(
                f"{where} {tuple(theirs.shape)} has no counterpart in {model.encoder.description} ({shape}): "
                "convert with the CLIP the checkpoint was trained with",
                setting="encoder",
            )
        a, b = mine.to(theirs.dtype).double(), theirs.double()
        diff = (a - b).abs().max().item() if a.numel() else 0.0
        if diff > 1e-3 * max(b.abs().max().item(), 1e-6):
            raise CheckpointError(
                f"{where} differs from {model.encoder.description} (max |difference| {diff:.3g}): convert with "
                "the CLIP the checkpoint was trained with",
                setting="encoder",
            )
        compared += 1
    return compared


def _pureclip_name(key: str) -> str:
    """Our head name -> the released one (for messages)."""
    for ours, theirs in (("phi.", "rgb_adapter."), ("psi.", "fusion_mlp."), ("film.", "film_gen.")):
        if key.startswith(ours):
            return theirs + key[len(ours) :]
    return "depth_table.weight" if key == "table" else key


def _pureclip_head_state(released: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    renames = {"rgb_adapter.": "phi.", "fusion_mlp.": "psi.", "film_gen.": "film."}
    state = {"table": released["depth_table.weight"]}
    for key, value in released.items():
        for theirs, ours in renames.items():
            if key.startswith(theirs):
                state[ours + key[len(theirs) :]] = value
    return state


def stored_tolerance(stored: torch.Tensor) -> torch.Tensor:
    """How far each value of ``stored`` may be from the number it was saved as: two units in the last
    place of its dtype (a cast rounds by half a unit, float32 arithmetic before it by about one),
    0 for integers. Elementwise, float64."""
    eps = torch.finfo(stored.dtype).eps if stored.is_floating_point() else 0.0
    return 2 * eps * stored.double().abs()


def _bins(path: Path, centres: torch.Tensor) -> tuple[float, float]:
    """(min, max) of the K equal bins whose centres the checkpoint stores: the releases' own
    (``RELEASED_MIN_DEPTH`` to a ``PURECLIP_MAX_DEPTH``) where the centres are those, in the precision
    they are stored in (fp16 cannot tell 0 from 1e-3 m); else the ends the centres give, rounded.
    CheckpointError if they are not equal bins (``BIN_TOLERANCE_M``, ``stored_tolerance``)."""
    centres = centres.flatten()
    if centres.numel() < 2:
        raise CheckpointError(f"{path}: 'bin_centers' has {centres.numel()} value(s); need one per bin, at least 2")
    values, tolerance = centres.double(), stored_tolerance(centres).clamp(min=BIN_TOLERANCE_M)
    width = (values[-1] - values[0]).item() / (values.numel() - 1)
    low, high = values[0].item() - width / 2, values[-1].item() + width / 2
    # float32 centres of 1e-3 .. 10 m read back as 9.99e-4 .. 10.0000002
    candidates = [(RELEASED_MIN_DEPTH, end) for end in PURECLIP_MAX_DEPTH] + [(round(low, 5), round(high, 4))]
    for low, high in candidates:
        if ((bin_centres(low, high, values.numel()) - values).abs() <= tolerance).all():
            return low, high
    raise CheckpointError(f"{path}: 'bin_centers' are not {values.numel()} equal bins ({values[:3].tolist()} ...)")


def convert_pureclip_released(
    checkpoint: str | Path,
    out: str | Path,
    dataset: str | None = None,
    encoder: str | None = None,
    overrides: list[str] | tuple[str, ...] = (),
    overwrite: bool = False,
) -> Path:
    """A released PureCLIP-Depth checkpoint -> a clipdepth head checkpoint folder ``out``.

    ``dataset`` ("nyu" or "kitti") picks the recipe the config starts from (crop, tiles, Garg
    gating, protocol); unset, the bins tell (10 m: NYU, 30 m: KITTI). ``encoder`` is the CLIP to
    name (hub id or folder; default the recipe's ``openai/clip-vit-large-patch14-336``): the
    checkpoint's ``clip.*`` tensors must equal it. ``overrides`` are ``section.field=value``.
    Returns ``out``. Raises CheckpointError / DataError / EncoderLoadError with one line.
    """
    path, out = Path(checkpoint), Path(out)
    data = read_released(path)
    released = _state_dict(path, data, ("model_state", "model", "state_dict"), ("module.",))
    _require(path, released, ["depth_table.weight", "bin_centers", "rgb_adapter.1.weight"], "PureCLIP-Depth")
    fusion = "concat" if "fusion_mlp.1.weight" in released else "film" if "film_gen.0.weight" in released else None
    if fusion is None:
        raise CheckpointError(f"{path}: not a released PureCLIP-Depth checkpoint: neither 'fusion_mlp.*' nor 'film_gen.*'")
    for name, value in (("clip_mean", OPENAI_CLIP_MEAN), ("clip_std", OPENAI_CLIP_STD)):
        stored = released[name].flatten() if name in released else None
        # compared in the precision the file keeps them in: an fp16 copy holds 0.48145466 as 0.48144531
        if stored is not None and not (
            stored.numel() == len(value)
            and ((stored.double() - torch.tensor(value, dtype=torch.float64)).abs() <= stored_tolerance(stored)).all()
        ):
            raise CheckpointError(f"{path}: {name!r} is {stored.tolist()}, not OpenAI CLIP's {list(value)}")
    table = released["depth_table.weight"]
    centres = released["bin_centers"]
    if centres.numel() != table.shape[0]:
        raise CheckpointError(f"{path}: {centres.numel()} 'bin_centers' for a depth table of {table.shape[0]} bins")
    low, high = _bins(path, centres)
    if dataset is None:
        dataset = PURECLIP_MAX_DEPTH.get(high)
        if dataset is None:
            raise CheckpointError(
                f"{path}: bins end at {high:g} m, neither NYU's 10 m nor KITTI's 30 m; name the dataset", setting="dataset"
            )
    if dataset not in PURECLIP_RECIPES:
        raise CheckpointError(f"dataset must be one of {sorted(PURECLIP_RECIPES)}, got {dataset!r}", setting="dataset")
    d = table.shape[1]
    hidden = released["rgb_adapter.1.weight"].shape[0]
    head_fields = [
        f"pureclip.num_bins={table.shape[0]}",
        f"pureclip.min_depth={low}",
        f"pureclip.max_depth={high}",
        f"pureclip.fusion={fusion}",
        f"pureclip.mlp_ratio={hidden // d}",
    ]
    if fusion == "concat":
        head_fields += [
            f"pureclip.use_cls={released['fusion_mlp.0.weight'].shape[0] == 2 * d}",
            f"pureclip.psi_bias={'fusion_mlp.1.bias' in released}",
        ]
    cfg = load_config(PURECLIP_RECIPES[dataset], [*head_fields, *([f"clip.name={encoder}"] if encoder else []), *overrides])
    frozen = PureCLIPDepth.build_encoder(cfg)
    if frozen.embed_dim != d:
        raise CheckpointError(
            f"{path}: depth table is {d}-d but {frozen.description} embeds in {frozen.embed_dim}-d; name the CLIP it was trained with",
            setting="encoder",
        )
    head = PureCLIPDepthHead(cfg.pureclip, d)
    model = PureCLIPDepth(cfg, frozen, head)
    compared = check_clip(path, released, model)
    load_head_state(head, _pureclip_head_state(released), str(path), RELEASED_HINT, _pureclip_name)
    epoch = data.get("epoch")
    return _write(
        model,
        out,
        overwrite,
        {
            "converted_from": str(path),
            "released_format": "PureCLIP-Depth PatchAligner",
            "clip_tensors_checked": compared,
            "clip_checked_against": frozen.description,
            "released_epoch": int(epoch) if isinstance(epoch, (int, torch.Tensor)) and not isinstance(epoch, bool) else None,
            "released_licence": PURECLIP_LICENCE,
        },
    )


# -- TR2M ---------------------------------------------------------------------------------------
# released ScaleMapModel name prefix -> ours (TR2MHead)
TR2M_NAMES = {
    "align_mlp.a_fc.": "text_proj.0.",
    "crossattn.attn_cross.": "block.cross_attn.",
    "crossattn.attn.": "block.self_attn.",
    "crossattn.ln_1.": "block.norm_self.",
    "crossattn.ln_visual.": "block.norm_query.",
    "crossattn.ln_text.": "block.norm_text.",
    "crossattn.ln_2.": "block.norm_mlp.",
    "crossattn.mlp.c_fc.": "block.mlp.0.",
    "crossattn.mlp.c_proj.": "block.mlp.2.",
    "projects.": "decoder.neck.0.",
    "resize_layers.": "decoder.neck.1.",
    "layer1_rn.": "decoder.neck.2.",
    "resConfUnit1.": "decoder.stages.0.unit.",
    "out_conv1.": "decoder.stages.0.proj.",
    "resConfUnit2.": "decoder.stages.1.unit.",
    "out_conv2.": "decoder.stages.1.proj.",
    "output_conv_scale1.": "scale_head.conv_in.",
    "output_conv_scale2.0.": "scale_head.conv_hidden.",
    "output_conv_scale2.2.": "scale_head.conv_out.",
    "output_conv_shift1.": "shift_head.conv_in.",
    "output_conv_shift2.0.": "shift_head.conv_hidden.",
    "output_conv_shift2.2.": "shift_head.conv_out.",
}


def _rename(key: str, table: dict[str, str]) -> str | None:
    prefix = next((p for p in table if key.startswith(p)), None)
    return None if prefix is None else table[prefix] + key[len(prefix) :]


def convert_tr2m_released(
    checkpoint: str | Path, out: str | Path, dataset: str = "nyu", overrides: list[str] | tuple[str, ...] = (), overwrite: bool = False
) -> Path:
    """A released TR2M ``ScaleMapModel`` checkpoint -> a clipdepth TR2M checkpoint folder ``out``.

    ``dataset`` picks the recipe (``tr2m_nyu``: 434 x 560, 10 m; ``tr2m_kitti``: KB crop,
    350 x 1204, 80 m). The frozen parts (DINOv2, CLIP text, Depth Anything) the recipe names are
    loaded to check the head's widths against them and to record their fingerprint; the weights
    do not say the number of attention heads (released: 8, ``tr2m.num_heads``).
    Raises CheckpointError / DataError / EncoderLoadError with one line.
    """
    path, out = Path(checkpoint), Path(out)
    if dataset not in TR2M_RECIPES:
        raise CheckpointError(f"dataset must be one of {sorted(TR2M_RECIPES)}, got {dataset!r}", setting="dataset")
    released = _state_dict(path, read_released(path), ("state_dict", "model"), ("module.scalemap.", "scalemap.", "module."))
    _require(path, released, ["align_mlp.a_fc.weight", "projects.weight", "layer1_rn.weight", "output_conv_scale1.weight"], "TR2M")
    state = {}
    for key, value in released.items():
        ours = _rename(key, TR2M_NAMES)
        if ours is None:
            raise CheckpointError(f"{path}: tensor {key!r} is not part of TR2M's released ScaleMapModel")
        state[ours] = value
    text_dim = released["align_mlp.a_fc.weight"].shape[1]
    sizes = [
        f"tr2m.neck_channels={released['projects.weight'].shape[0]}",
        f"tr2m.decoder_channels={released['layer1_rn.weight'].shape[0]}",
        f"tr2m.head_channels={released['output_conv_scale1.weight'].shape[0]}",
        f"tr2m.head_hidden={released['output_conv_scale2.0.weight'].shape[0]}",
        f"tr2m.decoder_conv_bias={'layer1_rn.bias' in released}",
        f"tr2m.mlp_ratio={released['crossattn.mlp.c_fc.weight'].shape[0] // released['crossattn.mlp.c_fc.weight'].shape[1]}",
    ]
    cfg = load_config(TR2M_RECIPES[dataset], [*sizes, *overrides])
    frozen = TR2M.build_encoder(cfg)
    image_dim = released["align_mlp.a_fc.weight"].shape[0]
    for what, have, want in (("image", frozen.image.embed_dim, image_dim), ("text", frozen.text.embed_dim, text_dim)):
        if have != want:
            raise CheckpointError(f"{path}: the head takes {want}-d {what} features but {getattr(frozen, what).description} gives {have}-d")
    head = TR2M.build_head(cfg, frozen, initialise=False)
    inverse = {v: k for k, v in TR2M_NAMES.items()}
    load_head_state(head, state, str(path), RELEASED_HINT, lambda key: _rename(key, inverse) or key)
    extra = {"converted_from": str(path), "released_format": "TR2M ScaleMapModel", "released_licence": TR2M_LICENCE}
    return _write(TR2M(cfg, frozen, head), out, overwrite, extra)


# The names of clipdepth 0.1, which called the released code "reference": still there, with a warning.
RENAMED = {"convert_pureclip_reference": "convert_pureclip_released", "convert_tr2m_reference": "convert_tr2m_released"}


def __getattr__(name: str) -> Any:
    if name in RENAMED:
        renamed(f"clipdepth.models.released.{name}", f"clipdepth.models.released.{RENAMED[name]}", stacklevel=3)
        return globals()[RENAMED[name]]
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


RSA_RECIPES = {"nyu": "rsa_nyu", "kitti": "rsa_kitti"}  # the file's tensors then set the MLP's widths
RSA_NETS = ("scene_feat_net", "shift_net", "scale_net")  # the released LanScaleModel's parts (lanscale.py)


def _linear_widths(path: Path, state: dict[str, torch.Tensor], net: str) -> list[int]:
    """The output widths of one released ``nn.Sequential`` of linear layers and LeakyReLUs (its
    linear layers at indices 0, 2, 4, ...)."""
    widths, index = [], 0
    while f"{net}.{index}.weight" in state:
        widths.append(int(state[f"{net}.{index}.weight"].shape[0]))
        index += 2
    if not widths:
        raise CheckpointError(f"{path}: not a released RSA checkpoint: no {net}.0.weight (it has {', '.join(sorted(state)[:4])}, ...)")
    return widths


def convert_rsa_released(
    checkpoint: str | Path, out: str | Path, dataset: str = "nyu", overrides: list[str] | tuple[str, ...] = (), overwrite: bool = False
) -> Path:
    """A released RSA checkpoint -> a clipdepth RSA checkpoint folder ``out``.

    The release saves ``{"global_step", "model": LanScaleModel.state_dict(), "best_eval_measures_*"}``
    (``train_3d.py``); the MLP's widths are read off its tensors (the published ``eval_void/*_lanscale``
    files: scene widths [512, 256, 256], head widths [128, 64]). ``dataset`` picks the recipe
    (``rsa_nyu``: 434 x 560, 10 m; ``rsa_kitti``: KB crop, 350 x 1204, 80 m); the released weights were
    trained on NYU, KITTI and VOID at once, so either fits them. Only ``da_lanscale`` was trained on the
    relative depth clipdepth computes (Depth Anything small); the ``dpt_``/``midas_`` files expect DPT or
    MiDaS, which clipdepth does not have. The frozen parts the recipe names are loaded to check the text
    width and to record their fingerprint. Raises CheckpointError / DataError / EncoderLoadError with one line.
    """
    path, out = Path(checkpoint), Path(out)
    if dataset not in RSA_RECIPES:
        raise CheckpointError(f"dataset must be one of {sorted(RSA_RECIPES)}, got {dataset!r}", setting="dataset")
    data = read_released(path)
    state = _state_dict(path, data, ("model",), ("module.",))
    scene, shift, scale = (_linear_widths(path, state, net) for net in RSA_NETS)
    if shift != scale or shift[-1] != 1:
        raise CheckpointError(
            f"{path}: shift_net {shift} and scale_net {scale} should be alike, each ending in one output; {RELEASED_HINT}"
        )
    sizes = [f"rsa.scene_widths=[{','.join(map(str, scene))}]", f"rsa.head_widths=[{','.join(map(str, shift[:-1]))}]"]
    cfg = load_config(RSA_RECIPES[dataset], [*sizes, *overrides])
    frozen = RSA.build_encoder(cfg)
    text_dim = int(state["scene_feat_net.0.weight"].shape[1])
    if frozen.text.embed_dim != text_dim:
        raise CheckpointError(f"{path}: the MLP takes {text_dim}-d text features but {frozen.text.source} gives {frozen.text.embed_dim}-d")
    head = RSA.build_head(cfg, frozen, initialise=False)
    load_head_state(head, state, str(path), RELEASED_HINT)
    step = data.get("global_step")
    extra = {
        "converted_from": str(path),
        "released_format": "RSA LanScaleModel",
        "released_step": step if isinstance(step, int) else None,
        "released_licence": RSA_LICENCE,
    }
    return _write(RSA(cfg, frozen, head), out, overwrite, extra)
