"""What every clipdepth model shares: the frames it is given, and head-only checkpoints.

A model is a set of FROZEN parts (``model.encoder``: CLIP for PureCLIP-Depth; CLIP text,
DINOv2 and a relative-depth source for TR2M) and a trained ``model.head``. The split lets every
model use the same feature cache, trainer, evaluation and commands:

- ``encode_frames(FrameBatch)`` runs the frozen parts once per frame and returns named arrays in
  the dtype they are stored in (the feature cache keeps them; half precision for features);
- ``predict_from_features(features, flipped, tiles)`` runs the head on them;
- a checkpoint holds the head's weights and the config that names the frozen parts, plus their
  fingerprint, so that a head is never run on other weights than it was trained on.
"""

from __future__ import annotations

import dataclasses

import json
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Callable, ClassVar

import numpy as np
import torch
from huggingface_hub import ModelCard, ModelHubMixin, snapshot_download
from PIL import Image
from huggingface_hub.errors import HFValidationError, HfHubHTTPError
from safetensors.torch import load_file, save_file
from torch import nn

from .. import __version__
from ..config import (
    CONFIG_SECTIONS,
    LEGACY_SECTIONS,
    PRECISION_NAMES,
    Config,
    DataConfig,
    config_from_dict,
    config_to_dict,
    load_config_dict,
    upgrade_layout,
)
from ..data.transforms import Preprocessor
from ..errors import CheckpointError, ConfigError, DataError
from ..io.atomic import META, atomic_dir, recover
from ..io.depth_io import eight_bit, read_rgb, rgb_array
from ..io.pointcloud import as_intrinsics, points_from_depth
from ..registry import inference_overrides, model_sections, model_spec
from .card import CARD_LOCATION, frozen_hub_ids, model_card
from .settings import dataset_settings

WEIGHTS_NAME = "model.safetensors"
CONFIG_NAME = "config.json"
# What transformers reads to load a checkpoint folder (clipdepth.hf registers the classes these name).
PREPROCESSOR_NAME = "preprocessor_config.json"
IMAGE_PROCESSOR_TYPE = "ClipdepthImageProcessor"


def transformers_model_type(architecture: str) -> str:
    """The ``model_type`` of an architecture's checkpoints in transformers' Auto classes."""
    return f"clipdepth_{architecture}"


# Square tiles one image may be cut into (memory grows with them); infer(max_tiles=...) raises it.
MAX_TILES = 8
# What ``infer`` feeds the model (``DepthModel.processor_for``): "none", the whole image; "trained",
# the checkpoint's trained input geometry (input crop or KB crop, tiles), as ``evaluate`` does.
INFER_CROPS = ("none", "trained")
# A trained crop that would keep less of an image than this was made for another size of frame (NYU's
# [40, 470, 38, 603] keeps 79 % of its 480 x 640 frames and 2 % of a 12 MP photo): refused, not applied.
MIN_CROP_SHARE = 0.5
# The only settings a loaded checkpoint may take from overrides: where its frozen parts are loaded
# from, at which precision, on which device (each model's spec names its own: ``registry.inference_overrides``).
# A trained head's own settings are part of its weights.


def check_inference_overrides(overrides: list[str] | tuple[str, ...]) -> None:
    """ConfigError unless every override is ``KEY=VALUE`` with a key some model's checkpoints may
    take (``registry.inference_overrides``): a trained checkpoint's own settings are part of its weights."""
    allowed = inference_overrides()
    for override in overrides:
        key, sep, _ = override.partition("=")
        if not sep:
            raise ConfigError(f"override {override!r}: expected KEY=VALUE, e.g. clip.name=/models/clip-vit-l14-336", setting="overrides")
        if key.strip() not in allowed:
            raise ConfigError(
                f"override {override!r}: a trained checkpoint's settings are part of its weights; only where its "
                f"frozen parts are loaded from, their precision and the device can change ({', '.join(allowed)})",
                setting="overrides",
            )


def checkpoint_config(cfg: Config, architecture: str | None = None) -> dict[str, Any]:
    """The config a checkpoint's config.json keeps: the shared sections and fields, and only the
    model sections its model (``architecture``, default ``cfg.model``) reads (``ModelSpec.sections``);
    a loaded checkpoint's other sections take their defaults, which it never reads."""
    spec = model_spec(architecture or cfg.model)
    unread = model_sections() - set(spec.sections)
    return {k: v for k, v in config_to_dict(cfg).items() if k not in unread}


Features = dict[str, torch.Tensor]
FEATURE_DTYPE = torch.float16  # frozen features as kept in memory and in the feature cache
# Autocast dtypes of the frozen parts on CUDA; "fp32" runs them without autocast. In a config,
# "auto" means the model's ``auto_precision`` and "released" its ``released_precision``.
PRECISIONS: dict[str, torch.dtype | None] = dict(zip(PRECISION_NAMES, (torch.bfloat16, torch.float16, None)))


def head_precision(setting: str, device: torch.device | str, run: str = "auto") -> str:
    """``train.head_precision`` resolved for ``device``: "auto" is bf16 on CUDA and fp32 elsewhere
    (a CPU run gives fp32's results); "bf16" and "fp32" are taken as they are. ``run``: the config's
    ``precision``, which, unless "auto", is the head's on any device."""
    if run != "auto":
        return run
    if setting == "auto":
        return "bf16" if torch.device(device).type == "cuda" else "fp32"
    return setting


def head_autocast(setting: str, device: torch.device | str, run: str = "auto"):
    """Autocast context of the head's forward passes for ``train.head_precision`` on ``device``
    (``run``: the config's ``precision``)."""
    dtype = PRECISIONS[head_precision(setting, device, run)]
    return torch.autocast(torch.device(device).type, dtype or torch.float32, enabled=dtype is not None)


@dataclass
class FrameBatch:
    """Frames as a model's frozen parts see them, at the model's input size."""

    images: torch.Tensor  # (B, 3, H, W) float in [0, 1]
    names: list[str]
    # (B, H, W) metres, 0 = invalid: only the GT-derived oracle relative source reads it
    depth: torch.Tensor | None = None
    captions: list[list[str]] | None = None  # caption lines per frame (TR2M)

    def flipped(self) -> "FrameBatch":
        """The mirrored frames (flip test-time augmentation); captions stay as they are."""
        return replace(self, images=self.images.flip(-1), depth=None if self.depth is None else self.depth.flip(-1))


def caption_embeddings(
    encode_text: Callable[[list[str]], torch.Tensor], captions: list[list[str]], limit: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """Caption lines per frame -> (B, limit, D) float32 embeddings of each frame's first ``limit``
    lines, zero-padded, and (B,) line counts; ``encode_text`` maps N phrases to (N, D) (one call for
    the whole batch). DataError for a frame without lines."""
    kept = [lines[:limit] for lines in captions]
    if any(not lines for lines in kept):
        raise DataError("a frame has an empty caption list")
    flat = encode_text([line for lines in kept for line in lines]).float()
    out = flat.new_zeros(len(kept), limit, flat.shape[-1])
    start = 0
    for i, lines in enumerate(kept):
        out[i, : len(lines)] = flat[start : start + len(lines)]
        start += len(lines)
    return out, torch.tensor([len(lines) for lines in kept], device=flat.device)


def as_float(features: Features | None, device: torch.device | str | None = None) -> Features | None:
    """Stored features -> what a head computes with: half precision to float32, others unchanged."""
    if features is None:
        return None
    return {k: (v.to(device).float() if v.dtype in (torch.float16, torch.bfloat16) else v.to(device)) for k, v in features.items()}


def _float32(output: Any) -> Any:
    """A head's output (a tensor, or tuples, lists and dicts of them) with reduced-precision floats
    as float32: what comes out of autocast goes on as the fp32 road's would."""
    if isinstance(output, torch.Tensor):
        return output.float() if output.dtype in (torch.float16, torch.bfloat16) else output
    if isinstance(output, tuple) and hasattr(output, "_fields"):  # a NamedTuple
        return type(output)(*(_float32(item) for item in output))
    if isinstance(output, (tuple, list)):
        return type(output)(_float32(item) for item in output)
    if isinstance(output, dict):
        return {key: _float32(value) for key, value in output.items()}
    if dataclasses.is_dataclass(output) and not isinstance(output, type):
        return dataclasses.replace(output, **{f.name: _float32(getattr(output, f.name)) for f in dataclasses.fields(output) if f.init})
    return output


def checkpoint_folder(name_or_path: str | Path, **hub_kwargs: Any) -> Path:
    """A local checkpoint folder as is; a Hub id downloaded (and cached) by huggingface_hub.
    CheckpointError for a file (one of a checkpoint's, say: its folder is named), a missing local
    path, or a Hub id that cannot be downloaded."""
    name = str(name_or_path)
    if Path(name).is_dir():
        return Path(name)
    if Path(name).exists():
        folder = Path(name).parent
        hint = f" (the checkpoint is likely its folder {folder})" if (folder / WEIGHTS_NAME).is_file() else ""
        raise CheckpointError(f"{name}: is a file, not a checkpoint folder; give the folder holding {WEIGHTS_NAME} and {CONFIG_NAME}{hint}")
    # a path whose first folder exists here is a local path, not a Hub id ("runs/model")
    if name.count("/") != 1 or name.startswith((".", "/", "~")) or Path(Path(name).parts[0]).is_dir():
        raise CheckpointError(f"{name}: checkpoint folder not found")
    try:
        return Path(snapshot_download(repo_id=name, **hub_kwargs))
    except (HfHubHTTPError, HFValidationError, OSError) as exc:  # offline, unknown repo, no access
        raise CheckpointError(
            f"cannot download checkpoint {name!r} from the Hugging Face Hub ({type(exc).__name__}); "
            "connect once so it is cached, or pass a local checkpoint folder instead"
        ) from None


DAMAGED_HINT = "the checkpoint is damaged: download or copy it again, or train it again"


def load_head_state(
    head: nn.Module, state: dict[str, torch.Tensor], where: str, hint: str, name_of: Callable[[str], str] = lambda key: key
) -> None:
    """Copy ``state`` into ``head``, checking every name and shape first, so that a mismatch is one
    CheckpointError line naming ``where``, the first tensor at fault (``name_of`` gives its name in
    the file) and ``hint`` (what to do)."""
    expected = head.state_dict()
    for key, value in state.items():
        if key not in expected:
            raise CheckpointError(f"{where}: tensor {name_of(key)!r} has no place in this head (another architecture?); {hint}")
        if tuple(value.shape) != tuple(expected[key].shape):
            raise CheckpointError(
                f"{where}: tensor {name_of(key)!r} has shape {tuple(value.shape)}, this head expects {tuple(expected[key].shape)}; {hint}"
            )
    absent = [k for k in expected if k not in state]
    if absent:
        raise CheckpointError(f"{where}: lacks {name_of(absent[0])!r} ({len(absent)} tensors missing); {hint}")
    head.load_state_dict({k: v.to(expected[k].dtype) for k, v in state.items()})


def set_missing(config: dict, dotted: str, value: Any) -> dict:
    """A saved config dict with ``section.field`` set to ``value`` when it lacks that field."""
    section, name = dotted.split(".")
    part = dict(config.get(section, {}))
    part.setdefault(name, value)
    return {**config, section: part}


def read_checkpoint_meta(directory: str | Path) -> dict:
    """A checkpoint folder's ``config.json``; CheckpointError naming the file when it is missing,
    not JSON, or not of a checkpoint's shape (an object with a ``config`` object)."""
    directory = Path(directory)
    recover(directory)  # a save that a kill cut short is finished first
    for name in (CONFIG_NAME, WEIGHTS_NAME):
        if not (directory / name).is_file():
            raise CheckpointError(f"{directory}: not a clipdepth checkpoint folder (no {name})")
    try:
        meta = json.loads((directory / CONFIG_NAME).read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise CheckpointError(f"{directory / CONFIG_NAME}: invalid JSON ({exc}); {DAMAGED_HINT}") from None
    if not isinstance(meta, dict) or not isinstance(meta.get("config"), dict):
        raise CheckpointError(f'{directory / CONFIG_NAME}: not a clipdepth checkpoint config (no "config" object); {DAMAGED_HINT}')
    bad = next((k for k, v in meta["config"].items() if k in (*CONFIG_SECTIONS, *LEGACY_SECTIONS) and not isinstance(v, dict)), None)
    if bad is not None:
        raise CheckpointError(f"{directory / CONFIG_NAME}: its config section {bad!r} is not an object; {DAMAGED_HINT}")
    return meta


def _reads_as_checkpoint(directory: Path) -> bool:
    """Whether a folder reads as a clipdepth checkpoint: one saved before checkpoint folders kept
    their list of what clipdepth wrote (``io.atomic``) is replaced like one that keeps it."""
    try:
        read_checkpoint_meta(directory)
    except CheckpointError:
        return False
    return True


def _is_camera(value: Any) -> bool:
    """Whether a list is one camera's intrinsics (four numbers or a 3x3 matrix), not one per image."""
    if isinstance(value, torch.Tensor):
        return tuple(value.shape) in ((4,), (3, 3))
    try:
        return np.shape(value) in ((4,), (3, 3))
    except ValueError:  # ragged: one entry per image (some None)
        return False


class DepthModel(nn.Module, ModelHubMixin, library_name="clipdepth", tags=["depth-estimation", "monocular-depth"]):
    """Frozen parts (``encoder``) + trained ``head``; subclasses define the architecture.

    ``from_pretrained(folder_or_hub_id)`` loads a head checkpoint and the frozen parts its config
    names; ``save_pretrained`` / ``push_to_hub`` write or upload the head only.
    """

    architecture: ClassVar[str]  # the name in the model registry and in checkpoints
    uses_captions: ClassVar[bool] = False  # its frozen parts read a caption per frame (TR2M)
    gives_uncertainty: ClassVar[bool] = False  # infer() returns an "uncertainty" map
    takes_tiles: ClassVar[bool] = False  # wide frames are cut into square tiles (else: whole frames)
    zero_shot: ClassVar[bool] = False  # nothing to train: its checkpoint is written without training (DepthCLIP)
    onnx_files: ClassVar[tuple[str, ...]] = ()  # what export_onnx writes; none: it cannot be exported
    display_name: ClassVar[str]  # the model's name in messages
    paper: ClassVar[str]  # the publication, in Markdown with its link (the model card cites it)
    citation: ClassVar[str] = ""  # its BibTeX (the model card's Citation section)
    # The released code's encoder precision on CUDA ("released" in a config) and its input resize
    # ("auto" for data.resize: data/transforms.py RESIZE_MODES).
    released_precision: ClassVar[str]
    # What "auto" means for the frozen parts' precision on CUDA: bf16 for the models clipdepth
    # trains at scale (PureCLIP-Depth, TR2M), the released precision for the baselines.
    auto_precision: ClassVar[str]
    released_resize: ClassVar[str]
    # The recipe whose data settings (input crop, KB crop, tiles) and protocol score a dataset the
    # checkpoint did not train on (evaluate, benchmark: ``evaluation.checkpoint.evaluation_settings``).
    dataset_recipes: ClassVar[dict[str, str]] = {}

    def __init__(self, cfg: Config, encoder: nn.Module, head: nn.Module) -> None:
        super().__init__()
        self.cfg = cfg
        self.encoder = encoder
        self.head = head
        # What save_pretrained's caller adds to config.json (epoch, metrics): the mixin's
        # save_pretrained does not pass extra arguments on to _save_pretrained.
        self._checkpoint_extra: dict = {}

    # -- what a subclass defines ---------------------------------------------------------------
    @classmethod
    def needs_ground_truth(cls, cfg: Config) -> bool:
        """Whether a model of this config reads each frame's ground truth (TR2M's oracle relative
        depth, for the synthetic demo and tests), so that it cannot predict on images alone."""
        return False

    @classmethod
    def build_encoder(cls, cfg: Config) -> nn.Module:
        """The frozen parts a config names."""
        raise NotImplementedError

    @classmethod
    def build_head(cls, cfg: Config, encoder: nn.Module, initialise: bool) -> nn.Module:
        """A head for these frozen parts; ``initialise`` when training starts (not when loading)."""
        raise NotImplementedError

    @property
    def input_size(self) -> int | tuple[int, int]:
        """The input of one tile: S (square) or (H, W)."""
        raise NotImplementedError

    @property
    def max_depth(self) -> float:
        """The largest depth the model predicts (colour scales)."""
        raise NotImplementedError

    def encode_frames(self, batch: FrameBatch) -> Features:
        raise NotImplementedError

    def storage(self, purpose: str) -> dict[str, Any]:
        """How ``stored`` keeps the arrays of a split encoded for ``purpose`` ("train" or "score"),
        part of the feature cache's key; empty: as ``encode_frames`` returns them."""
        return {}

    def stored(self, features: Features, purpose: str) -> dict[str, Any]:
        """``encode_frames``' arrays as a split keeps them (``io.stored``: compressed or
        quantised forms whose rows read back as features); by default unchanged."""
        return features

    def predict_from_features(self, features: Features, flipped: Features | None = None, tiles: int = 1) -> tuple[torch.Tensor, Any]:
        """Depth (B, H, tiles * W) at the input size, and the head's own output."""
        raise NotImplementedError

    # -- shared ----------------------------------------------------------------------------------
    @classmethod
    def precision_name(cls, precision: str) -> str:
        """A ``precision`` setting resolved for CUDA ("auto": ``auto_precision``, "released": the
        release's). Raises ConfigError for an unknown value."""
        name = {"auto": cls.auto_precision, "released": cls.released_precision}.get(precision, precision)
        if name not in PRECISIONS:
            raise ConfigError(f"encoder precision must be one of {[*PRECISIONS, 'auto', 'released']}, got {precision!r}")
        return name

    @classmethod
    def device_precision(cls, precision: str, device: torch.device | str, run: str = "auto") -> str:
        """The precision a frozen part set to ``precision`` runs at on ``device``: autocast applies
        on CUDA only, so elsewhere fp32; unless the config's ``precision`` (``run``) names one,
        which every part runs at on any device."""
        if run != "auto":
            return run
        name = cls.precision_name(precision)
        return name if torch.device(device).type == "cuda" else "fp32"

    @property
    def frozen_precisions(self) -> dict[str, str]:
        """The resolved precision of each frozen part (the feature cache keys on it)."""
        raise NotImplementedError

    @property
    def frozen_run_precisions(self) -> dict[str, str]:
        """The precision each frozen part runs at on the model's device (``device_precision``): what
        the feature cache and predict's records key on."""
        return {part: self.device_precision(name, self.device, self.cfg.precision) for part, name in self.frozen_precisions.items()}

    def run_precisions(self, head_setting: str) -> dict[str, str]:
        """What ran at which precision on the model's device: each frozen part (``frozen_run_precisions``)
        and the head (``train.head_precision`` ``head_setting``). Checkpoints record it."""
        return {**self.frozen_run_precisions, "head": head_precision(head_setting, self.device, self.cfg.precision)}

    @classmethod
    def autocast(cls, device: torch.device, precision: str, run: str = "auto"):
        """Autocast context for a frozen part set to ``precision`` running on ``device`` (``run``: the
        config's ``precision``; ``device_precision``), never for fp32."""
        dtype = PRECISIONS[cls.device_precision(precision, device, run)]
        return torch.autocast(torch.device(device).type, dtype=dtype or torch.float32, enabled=dtype is not None)

    @property
    def resize_mode(self) -> str:
        """How frames are resized to the input: ``data.resize`` of the model's config ("auto": the release's)."""
        mode = self.cfg.data.resize
        return self.released_resize if mode == "auto" else mode

    def preprocessor(self, data: DataConfig | None = None, input_size: tuple[int, int] | None = None) -> Preprocessor:
        """The model's preprocessing of frames of ``data`` (crop, KB crop, tiles; default the
        model's own data config), with the resize the model was trained with, to ``input_size``
        (height, width; default the model's: a mixture's dataset may have its own)."""
        return Preprocessor.for_data(input_size or self.input_size, data or self.cfg.data, self.resize_mode)

    def trained_preprocessor(self, dataset: str | None = None) -> Preprocessor:
        """The preprocessing of ``dataset``'s frames (default: the checkpoint's own dataset, as
        trained; of a mixture, that dataset's entry, input size included) by the one rule
        ``evaluate`` and ``benchmark`` score with (``models.settings.dataset_settings``): what
        ``infer(crop="trained")`` feeds images with. ConfigError for an unknown dataset."""
        settings = dataset_settings(self.cfg, self.dataset_recipes, dataset)
        return self.preprocessor(settings.data, settings.input_size)

    def processor_for(
        self, height: int, width: int, crop: str = "none", tiles: int | None = None, max_tiles: int = MAX_TILES, dataset: str | None = None
    ) -> Preprocessor:
        """How an image of ``height`` x ``width`` pixels is fed to the model: ``crop`` "none", whole
        (square tiles where the model takes them: ``tiles``, default ``auto_tiles``), or "trained",
        as ``evaluate`` feeds the frames of ``dataset`` (default: the checkpoint's own):
        ``trained_preprocessor``'s input crop or KB crop and tiles (``tiles`` overrides the latter).
        The prediction comes back on the whole image through ``restore``.

        Raises ConfigError for an unknown ``crop`` or dataset, tiles for a model of whole frames, or
        a ``dataset`` without crop "trained"; DataError (without a file name, which the caller adds)
        for an image the trained crop does not fit or that it would mostly cut away (it keeps less
        than ``MIN_CROP_SHARE`` of the image: a crop made for another camera's frames), or that
        needs more than ``max_tiles`` tiles.
        """
        if crop not in INFER_CROPS:
            raise ConfigError(f"crop must be one of {', '.join(INFER_CROPS)}, got {crop!r}", setting="crop")
        if tiles not in (None, 1) and not self.takes_tiles:
            raise ConfigError(f"{self.display_name} takes whole frames: tiles does not apply", setting="tiles")
        if crop == "none":
            if dataset is not None:
                raise ConfigError(f"dataset {dataset!r} says how a dataset's frames are fed: it goes with crop trained", setting="dataset")
            count = self.tiles_for(height, width, tiles, max_tiles) if self.takes_tiles else 1
            return Preprocessor.create(self.input_size, None, count, resize=self.resize_mode)
        processor = self.trained_preprocessor(dataset)
        try:
            box = processor.crop_box((height, width)) or (0, height, 0, width)
        except ValueError as exc:  # the KB crop of a frame smaller than it
            raise DataError(f"{exc} (crop trained); feed it whole (crop none)") from None
        if box[1] > height or box[3] > width:
            raise DataError(
                f"a {width}x{height} image is smaller than the trained input crop (rows {box[0]}:{box[1]}, "
                f"columns {box[2]}:{box[3]}, data.input_crop); feed it whole (crop none)"
            )
        kept = (box[1] - box[0]) * (box[3] - box[2]) / (height * width)
        if kept < MIN_CROP_SHARE:
            raise DataError(
                f"the trained input crop ({processor.part()}) keeps {kept:.0%} of a {width}x{height} "
                "image: it was made for the frames of a dataset, not this image's size; feed it whole (crop none)"
            )
        if tiles is not None:
            processor = replace(processor, tiles=tiles)
        if self.takes_tiles:
            self.tiles_for(box[1] - box[0], box[3] - box[2], processor.tiles, max_tiles)
        return processor

    def auto_tiles(self, height: int, width: int) -> int:
        """Square tiles an image of this size is cut into; models that take whole frames: 1."""
        return 1

    def tiles_for(self, height: int, width: int, tiles: int | None = None, max_tiles: int = MAX_TILES) -> int:
        """``tiles`` or ``auto_tiles``, checked against ``max_tiles``: DataError (without a file
        name, which the caller adds) for an image that would need more."""
        if height > max_tiles * width:  # a tall image is squashed into one tile: the same limit on its aspect
            raise DataError(
                f"a {width}x{height} image is more than {max_tiles} times taller than wide (crop it, or raise the max_tiles limit)"
            )
        count = tiles or self.auto_tiles(height, width)
        if count > max_tiles:
            raise DataError(
                f"a {width}x{height} image needs {count} tiles, more than the limit of {max_tiles} (crop it, or raise the max_tiles limit)"
            )
        return count

    @classmethod
    def upgrade_config(cls, config: dict, state: dict[str, torch.Tensor]) -> dict:
        """A checkpoint's saved config made loadable by this version (fields it predates get the
        value the checkpoint was made with). Checkpoints of clipdepth 0.1 resized with antialiasing."""
        return set_missing(config, "data.resize", "antialias")

    @classmethod
    def build(cls, cfg: Config, encoder: nn.Module | None = None) -> "DepthModel":
        """A new model to train: the frozen parts from the config (or the ones given)."""
        encoder = encoder or cls.build_encoder(cfg)
        return cls(cfg, encoder, cls.build_head(cfg, encoder, initialise=True))

    @property
    def device(self) -> torch.device:
        return next(self.head.parameters()).device

    def predict_frames(self, batch: FrameBatch, tta: bool = False) -> torch.Tensor:
        """Frames at the input size -> depth at the input size from the features as stored (what
        evaluation, ``infer`` and the feature cache see alike); flip TTA mirrors whole frames."""
        return self._predict(batch, tta)[0]

    def _predict(self, batch: FrameBatch, tta: bool) -> tuple[torch.Tensor, Features, Any]:
        """(depth at the input size, the features, the head's output) of frames at the input size."""
        # a model of whole frames may take another size than its own (a mixture's dataset)
        tiles = batch.images.shape[-1] // self._tile_width if self.takes_tiles else 1
        # The features rounded to their stored dtype on every road (the cache stores them so), so that
        # infer, evaluate and training's validation give one number for one frame.
        features = as_float(self.encode_frames(batch))
        flipped = as_float(self.encode_frames(batch.flipped())) if tta else None
        with head_autocast("fp32", self.device, self.cfg.precision):  # the head in fp32 unless `precision` names another
            depth, head_output = self.predict_from_features(features, flipped, tiles)
        return _float32(depth), features, _float32(head_output)

    @property
    def _tile_width(self) -> int:
        size = self.input_size
        return size if isinstance(size, int) else size[1]

    @staticmethod
    def images_to_tensor(images: Any) -> torch.Tensor:
        """One image or a batch of one size -> (B, 3, H, W) float in [0, 1]: a path or a PIL image
        (converted by ``io.depth_io.rgb_array`` as a photo: EXIF orientation applied, 16-bit grey
        scaled to 8 bits), an (H, W, 3) or (B, H, W, 3) uint8 array, or uint16 scaled to 8 bits as a
        16-bit file is, a (3, H, W) or (B, 3, H, W) tensor (float in [0, 1], or uint8). Every entry
        point (infer, predict, serve, the transformers pipeline) converts through here, so a file
        and the same pixels given any other way give one input. DataError naming a file that cannot
        be read; ConfigError for another kind or shape."""
        if isinstance(images, (str, Path)):
            images = read_rgb(images, photo=True)
        elif isinstance(images, Image.Image):
            images = rgb_array(images, photo=True)
        if isinstance(images, np.ndarray):
            if images.dtype not in (np.uint8, np.uint16) or images.ndim not in (3, 4) or images.shape[-1] != 3:
                raise ConfigError(
                    f"an image array must be (H, W, 3) or (B, H, W, 3), uint16 or uint8, got {images.shape} {images.dtype}",
                    setting="images",
                )
            arr = eight_bit(images) if images.dtype == np.uint16 else images
            arr = arr[None] if arr.ndim == 3 else arr
            return torch.tensor(arr).permute(0, 3, 1, 2).float() / 255.0  # a copy: inputs may be read-only
        if isinstance(images, torch.Tensor):
            if images.ndim not in (3, 4) or images.shape[-3] != 3:
                raise ConfigError(f"an image tensor must be (3, H, W) or (B, 3, H, W), got {tuple(images.shape)}", setting="images")
            images = images[None] if images.ndim == 3 else images
            return images.float() / 255.0 if images.dtype == torch.uint8 else images
        raise ConfigError(
            f"cannot read an image from a {type(images).__name__}: give a path, a PIL image, an array or a tensor", setting="images"
        )

    def check_captions(self, captions: list[str] | None, count: int) -> list[list[str]] | None:
        """``captions`` for ``count`` images as caption lines per frame. ConfigError when a model that
        reads captions lacks one per image, or one that does not is given any (never silently ignored)."""
        if not self.uses_captions:
            if captions is not None:
                raise ConfigError(f"{self.display_name} takes no caption (captions are for TR2M checkpoints)", setting="captions")
            return None
        if captions is None or len(captions) != count:
            raise ConfigError(
                f"{self.display_name} needs one caption per image ({count} images, {'no' if captions is None else len(captions)} captions)",
                setting="captions",
            )
        return [[c] for c in captions]

    def infer_outputs(
        self, features: Features, head_output: Any, tiles: int, to_image: Callable[[torch.Tensor], torch.Tensor]
    ) -> dict[str, torch.Tensor]:
        """The model's own outputs of ``infer`` besides depth (``to_image`` resizes a (B, h, w)
        map at the input size to the image's size); none by default."""
        return {}

    def infer(
        self,
        images: Any,
        tta: bool = False,
        tiles: int | None = None,
        captions: list[str] | None = None,
        max_tiles: int = MAX_TILES,
        intrinsics: Any = None,
        crop: str = "none",
        dataset: str | None = None,
    ) -> dict[str, torch.Tensor] | list[dict[str, torch.Tensor]]:
        """Metric depth for RGB images at their own resolution.

        ``images``: one image or a batch of one size (``images_to_tensor``: a path, a PIL image, an
        (H, W, 3) / (B, H, W, 3) uint8 or uint16 array, a (3, H, W) / (B, 3, H, W) tensor), or a
        LIST of any of these at any sizes (run in batches of equal size). ``captions``: one per image
        for models that read them (TR2M), else None. ``crop`` (``processor_for``): "none" feeds the
        whole image; "trained" applies the checkpoint's trained input geometry (e.g. NYU's input crop
        [40, 470, 38, 603], KITTI's KB crop, its tiles) as ``evaluate`` does, so that the depth of a
        dataset frame equals evaluate's; ``dataset`` names the dataset whose frames these are, for a
        checkpoint trained on another (default: its own). Models that take square tiles cut wide images into ``tiles``
        of them (default ``auto_tiles``, or the trained ones; more than ``max_tiles`` is a DataError,
        which bounds the memory one image can take); the others take whole frames. ``tta`` averages
        in the prediction of the mirrored images. ``intrinsics`` (fx fy cx cy, or a 3x3 matrix K, in
        pixels of the image; for a list, one for all or one per image) add ``points``.

        Returns, for one image or batch, ``depth`` (B, H, W) metres on the whole image (resized
        bilinearly, align_corners, to the image or, with a crop, to the crop, the border outside it
        filled from its edge: ``Preprocessor.restore``), the model's own outputs (``infer_outputs``)
        and with intrinsics ``points`` (B, H, W, 3) metres in the camera frame (x right, y down, z
        forward); for a list, one such dict per image, each without the batch dimension. Raises
        ConfigError for missing or unexpected captions, tiles, intrinsics or an unknown crop,
        DataError for an image that cannot be read, is over the tile limit or smaller than the crop.
        """
        if not isinstance(images, (list, tuple)):
            return self._infer_batch(images, tta, tiles, captions, max_tiles, intrinsics, crop, dataset)
        tensors = [self.images_to_tensor(image) for image in images]
        if any(len(t) != 1 for t in tensors):
            raise ConfigError("a list of images takes one image per entry (give a batch without the list)", setting="images")
        one_each = isinstance(intrinsics, (list, tuple)) and len(intrinsics) == len(images) and not _is_camera(intrinsics)
        per_image = intrinsics if one_each else [intrinsics] * len(images)
        if captions is not None and len(captions) != len(images):
            self.check_captions(captions, len(images))  # the one-line count error
        sizes: dict[tuple[int, int], list[int]] = {}
        for i, t in enumerate(tensors):
            sizes.setdefault(tuple(t.shape[-2:]), []).append(i)
        results: list[dict[str, torch.Tensor]] = [{} for _ in images]
        for group in sizes.values():  # images of one size in one batch; each its own intrinsics
            out = self._infer_batch(
                torch.cat([tensors[i] for i in group]),
                tta,
                tiles,
                None if captions is None else [captions[i] for i in group],
                max_tiles,
                crop=crop,
                dataset=dataset,
            )
            for row, i in enumerate(group):
                results[i] = {k: v[row] for k, v in out.items()}
                if per_image[i] is not None:
                    results[i]["points"] = points_from_depth(results[i]["depth"], as_intrinsics(per_image[i]))
        return results

    @torch.inference_mode()
    def _infer_batch(
        self,
        images: Any,
        tta: bool,
        tiles: int | None,
        captions: list[str] | None,
        max_tiles: int,
        intrinsics: Any = None,
        crop: str = "none",
        dataset: str | None = None,
    ) -> dict[str, torch.Tensor]:
        self.eval()
        images = self.images_to_tensor(images).to(self.device)
        lines = self.check_captions(captions, len(images))
        height, width = images.shape[-2:]
        processor = self.processor_for(height, width, crop, tiles, max_tiles, dataset)
        batch = FrameBatch(processor.frames(images), [f"image{i}" for i in range(len(images))], captions=lines)
        depth, features, head_output = self._predict(batch, tta)

        def to_image(x: torch.Tensor) -> torch.Tensor:
            return processor.restore(x.float(), (height, width))

        out = {"depth": to_image(depth), **self.infer_outputs(features, head_output, processor.tiles, to_image)}
        if intrinsics is not None:
            out["points"] = points_from_depth(out["depth"], as_intrinsics(intrinsics))
        return out

    def export_onnx(self, out_dir: str | Path, opset: int = 18) -> dict:
        """Write the model as ONNX graphs (``onnx_files``) into ``out_dir``, checked against PyTorch
        with onnxruntime; returns the report. ConfigError for a model that cannot be exported."""
        raise ConfigError(f"{self.display_name} cannot be exported to ONNX (PureCLIP-Depth can)")

    # -- head-only checkpoints: the frozen parts are named in the config, never saved --------
    # huggingface_hub's ModelHubMixin supplies push_to_hub and the Hub download in from_pretrained;
    # the hooks below define what a checkpoint folder holds.
    def checkpoint_meta(self) -> dict[str, Any]:
        """What a checkpoint's ``config.json`` holds: the model type, the config, the frozen parts
        (fingerprint, description, Hub ids, which are untrained), the clipdepth version that wrote it,
        and what ``save_pretrained``'s caller adds (epoch and metrics, a release's provenance)."""
        from ..encoders.frozen import untrained_parts  # transformers: not at import (quick --help)

        return {
            "model_type": transformers_model_type(self.architecture),
            "architecture": self.architecture,
            "clipdepth_version": __version__,
            "config": checkpoint_config(self.cfg, self.architecture),
            "encoder_fingerprint": self.encoder.fingerprint(),
            "frozen_parts": self.encoder.description,
            "base_models": frozen_hub_ids(self.encoder, self.cfg),
            # what the frozen weights are, not where they load from (benchmark's real/random label)
            "untrained_frozen_parts": untrained_parts(self.encoder),
            **self._checkpoint_extra,
        }

    def _save_pretrained(self, save_directory: Path) -> None:
        state = {k: v.detach().cpu().contiguous() for k, v in self.head.state_dict().items()}
        save_file(state, str(save_directory / WEIGHTS_NAME))
        (save_directory / CONFIG_NAME).write_text(json.dumps(self.checkpoint_meta(), indent=2))
        (save_directory / PREPROCESSOR_NAME).write_text(json.dumps({"image_processor_type": IMAGE_PROCESSOR_TYPE}, indent=2))

    def generate_model_card(self, *args, location: str = CARD_LOCATION, **kwargs) -> ModelCard:
        """The checkpoint's README.md (``models.card.model_card``: the Hub's metadata, the paper and
        its BibTeX, the frozen parts it needs, how it was made, its validation metrics, how to load it
        from ``location``, a placeholder where the Hub id is unknown, and the licence of its weights)."""
        return model_card(type(self), self.checkpoint_meta(), self.cfg, location)

    def save_pretrained(  # type: ignore[override]
        self, save_directory: str | Path, *, extra: dict | None = None, push_to_hub: bool = False, repo_id: str | None = None, **kwargs
    ) -> Path:
        """Write ``model.safetensors`` (head only), ``config.json`` (with the ``model_type`` and
        ``preprocessor_config.json`` transformers reads: see ``clipdepth.hf``) and a model card
        (``generate_model_card``) into ``save_directory`` (``io.atomic.atomic_dir``: never
        half-written; into an existing folder, only the files an earlier save wrote are replaced,
        and the user's own files there are kept); ``push_to_hub`` uploads it too. DataError for a
        file there of the same name that clipdepth did not write, or a write that fails (naming
        the file and the cause)."""
        directory = Path(save_directory)
        self._checkpoint_extra = extra or {}
        if kwargs.get("model_card_kwargs") is None and repo_id:
            kwargs["model_card_kwargs"] = {"location": repo_id}
        with atomic_dir(directory, legacy=_reads_as_checkpoint) as tmp:
            super().save_pretrained(tmp, **kwargs)
        if push_to_hub:
            self.push_to_hub(repo_id or directory.name)
        return directory

    def push_to_hub(self, repo_id: str, **kwargs) -> str:  # type: ignore[override]
        """Upload the checkpoint (``save_pretrained``'s files) to the Hub repository ``repo_id``,
        its model card showing how to load it from there."""
        kwargs.setdefault("model_card_kwargs", {"location": repo_id})
        ignore = kwargs.get("ignore_patterns") or []
        # what io.atomic keeps about the folder is not part of the checkpoint
        kwargs["ignore_patterns"] = [*([ignore] if isinstance(ignore, str) else ignore), f"{META}/*"]
        return super().push_to_hub(repo_id, **kwargs)

    @classmethod
    def from_pretrained(  # type: ignore[override]
        cls,
        pretrained_model_name_or_path: str | Path,
        *,
        encoder: nn.Module | None = None,
        overrides: list[str] | tuple[str, ...] = (),
        **hub_kwargs,
    ) -> "DepthModel":
        """A checkpoint folder, or a Hugging Face Hub id (downloaded and cached by huggingface_hub).

        ``overrides`` (``section.field=value``) may point the frozen parts elsewhere, e.g. to
        local folders of the same weights; the fingerprint check still applies. Only the fields
        some model's checkpoints may take may be overridden (``check_inference_overrides``: ConfigError
        otherwise); those of a frozen part this model does not have change nothing. The model is returned
        in eval mode, as transformers does.
        """
        check_inference_overrides(overrides)
        return cls._load_folder(checkpoint_folder(pretrained_model_name_or_path, **hub_kwargs), encoder, overrides).eval()

    @classmethod
    def read_folder(
        cls, directory: Path, overrides: list[str] | tuple[str, ...] = ()
    ) -> tuple[dict[str, Any], dict[str, torch.Tensor], Config]:
        """(config.json, the head weights, the Config) of a checkpoint folder of this class, without
        building the model or loading its frozen parts: the one reader of a checkpoint's config (its
        saved config made loadable by ``upgrade_config``, with ``overrides`` of its own frozen parts).
        CheckpointError for another model's folder or unreadable head weights."""
        meta = read_checkpoint_meta(directory)
        if meta.get("architecture", cls.architecture) != cls.architecture:
            raise CheckpointError(f"{directory}: a {meta['architecture']} checkpoint, not {cls.architecture}")
        try:
            state = load_file(str(Path(directory) / WEIGHTS_NAME))
        except Exception as exc:  # noqa: BLE001 - safetensors reports a truncated or foreign file in several ways
            reason = (str(exc).splitlines() or [type(exc).__name__])[0]
            raise CheckpointError(f"{directory}/{WEIGHTS_NAME}: cannot load head weights ({reason}); {DAMAGED_HINT}") from None
        config = cls.upgrade_config(upgrade_layout(meta["config"]), state)
        # only the overrides of its own frozen parts apply (another model's change nothing)
        overrides = [o for o in overrides if o.partition("=")[0].strip() in model_spec(cls.architecture).overridable]
        return meta, state, load_config_dict(config, overrides) if overrides else config_from_dict(config)

    @classmethod
    def _load_folder(cls, directory: Path, encoder: nn.Module | None, overrides: list[str] | tuple[str, ...] = ()) -> "DepthModel":
        """Load a head checkpoint folder and the frozen parts its config names (or the ones given)."""
        meta, state, cfg = cls.read_folder(directory, overrides)
        encoder = encoder or cls.build_encoder(cfg)
        expected = meta.get("encoder_fingerprint")
        if expected and encoder.fingerprint() != expected:
            raise CheckpointError(
                f"{directory}: head was trained on frozen weights {expected}, but {encoder.description} "
                f"has {encoder.fingerprint()}; load it with the weights it was trained with"
            )
        head = cls.build_head(cfg, encoder, initialise=False)
        load_head_state(head, state, f"{directory}/{WEIGHTS_NAME}", DAMAGED_HINT)
        return cls(cfg, encoder, head)
