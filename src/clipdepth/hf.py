"""clipdepth checkpoints inside transformers: ``pipeline("depth-estimation")`` and the Auto classes.

Importing this module registers, for every registered clipdepth model (``clipdepth.registry``), a
config (``model_type`` ``clipdepth_<architecture>``), a ``PreTrainedModel`` returning
``DepthEstimatorOutput`` and the image processor, with ``AutoConfig``,
``AutoModelForDepthEstimation`` and ``AutoImageProcessor``. After it::

    import clipdepth.hf  # noqa: F401  (the registration)
    from transformers import pipeline

    depth = pipeline("depth-estimation", model="outputs/demo/model")   # a checkpoint folder or Hub id
    out = depth("photo.jpg")
    out["predicted_depth"]  # (H, W) metres at the image's size: clipdepth's ``infer(...)["depth"]``
    out["depth"]            # a PIL image for looking at, min-max scaled per image (not metres)

The wrapped model runs ``DepthModel.infer``: the same resize, tiles and output as clipdepth's own
API, so the two agree to rounding. A TR2M checkpoint reads a caption per image: build the pipeline
with ``pipeline_class=CaptionedDepthEstimationPipeline`` and call it with ``caption="..."``.
Checkpoints are clipdepth's own head-only folders (``save_pretrained``), which carry the
``model_type`` and ``preprocessor_config.json`` transformers looks for.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from transformers import (
    AutoConfig,
    AutoImageProcessor,
    AutoModelForDepthEstimation,
    DepthEstimationPipeline,
    PreTrainedConfig,
    PreTrainedModel,
)
from transformers.image_processing_utils import BaseImageProcessor, BatchFeature
from transformers.image_utils import load_image
from transformers.modeling_outputs import DepthEstimatorOutput
from transformers.pipelines import PIPELINE_REGISTRY

from .errors import ConfigError
from .models import DepthModel, load_model
from .models.base import INFER_CROPS, transformers_model_type
from .registry import specs

# What from_pretrained may pass on to the Hub download (the rest of transformers' loading options,
# device_map among them, do not apply; dtype / torch_dtype become the config's ``precision``).
HUB_KWARGS = ("revision", "token", "cache_dir", "local_files_only", "force_download")
DTYPE_PRECISIONS = {torch.float32: "fp32", torch.float16: "fp16", torch.bfloat16: "bf16"}


def precision_overrides(dtype: Any) -> list[str]:
    """transformers' ``dtype`` / ``torch_dtype`` as the config's ``precision`` override: the whole
    model at that precision (autocast; the weights stay float32). None and "auto" leave each part at
    its own setting. ConfigError for another dtype."""
    if dtype is None or dtype == "auto":
        return []
    resolved = getattr(torch, dtype, None) if isinstance(dtype, str) else dtype
    if resolved not in DTYPE_PRECISIONS:
        raise ConfigError(f"dtype {dtype!r}: a clipdepth model runs at float32, float16 or bfloat16 (or auto)", setting="dtype")
    return [f"precision={DTYPE_PRECISIONS[resolved]}"]


class ClipdepthConfig(PreTrainedConfig):
    """A clipdepth checkpoint's ``config.json`` as transformers reads it: ``architecture``,
    ``config`` (clipdepth's own recipe sections) and ``encoder_fingerprint`` are kept as they are."""

    model_type = "clipdepth"


class ClipdepthImageProcessor(BaseImageProcessor):
    """Images -> ``pixel_values`` (B, 3, H, W) float in [0, 1] at their own size, converted by
    clipdepth's one conversion (``DepthModel.images_to_tensor``: a path or PIL image as a photo,
    EXIF orientation applied and 16-bit scaled to 8 bits, never clipped; uint8/uint16 arrays;
    tensors), so that the pipeline, ``infer`` and ``predict`` feed one image alike; the model
    resizes (and with ``crop="trained"`` crops) them as ``infer`` does.

    Images of one call must share one size (ConfigError otherwise): the pipeline gives them one at
    a time; pass a list of mixed sizes to ``DepthModel.infer`` instead.
    """

    model_input_names = ["pixel_values"]

    def preprocess(self, images: Any, return_tensors: str | None = "pt", **kwargs: Any) -> BatchFeature:
        items = images if isinstance(images, (list, tuple)) else [images]
        tensors = [DepthModel.images_to_tensor(item) for item in items]
        if len({tuple(t.shape[-2:]) for t in tensors}) > 1:
            raise ConfigError("images of one call must share one size (give them one at a time)", setting="images")
        return BatchFeature({"pixel_values": torch.cat(tensors)}, tensor_type=return_tensors)

    def post_process_depth_estimation(
        self, outputs: DepthEstimatorOutput, target_sizes: list[tuple[int, int]] | None = None
    ) -> list[dict[str, torch.Tensor]]:
        """One ``{"predicted_depth": (H, W) metres}`` per image, resized (bilinear, align_corners,
        as ``infer``) where a target size differs from the prediction's (it does not for
        ``pixel_values`` of this processor)."""
        depth = outputs.predicted_depth
        sizes = target_sizes if target_sizes is not None else [None] * len(depth)
        results = []
        for item, size in zip(depth, sizes):
            if size is not None and tuple(item.shape[-2:]) != tuple(size):
                item = F.interpolate(item[None, None], size=tuple(size), mode="bilinear", align_corners=True)[0, 0]
            results.append({"predicted_depth": item})
        return results


class ClipdepthForDepthEstimation(PreTrainedModel):
    """A clipdepth ``DepthModel`` (``self.model``) behind transformers' depth-estimation interface.

    ``from_pretrained`` loads a clipdepth checkpoint folder or Hub id with ``clipdepth.models.load_model``
    (head weights + the frozen parts its config names); ``save_pretrained`` writes it back head-only.
    """

    config_class = ClipdepthConfig
    main_input_name = "pixel_values"

    def __init__(self, config: ClipdepthConfig, model: DepthModel | None = None) -> None:
        super().__init__(config)
        if model is None:
            raise ConfigError("a clipdepth model is built from a checkpoint: use from_pretrained(folder or Hub id)")
        self.model = model

    @classmethod
    def from_pretrained(cls, pretrained_model_name_or_path: str | Path, *args: Any, **kwargs: Any) -> "ClipdepthForDepthEstimation":
        """The checkpoint folder or Hub id loaded by clipdepth; ``overrides=[...]`` points its frozen
        parts elsewhere (as ``load_model``); ``dtype=`` (or ``torch_dtype=``) runs it at that
        precision (``precision_overrides``). Raises CheckpointError for a folder that is not one."""
        from .models import checkpoint_folder

        hub = {k: kwargs[k] for k in HUB_KWARGS if kwargs.get(k) is not None}
        folder = checkpoint_folder(pretrained_model_name_or_path, **hub)
        dtype = kwargs.get("dtype", kwargs.get("torch_dtype"))
        model = load_model(folder, [*kwargs.get("overrides", ()), *precision_overrides(dtype)])
        config = kwargs.get("config")
        if not isinstance(config, ClipdepthConfig):
            config = AutoConfig.from_pretrained(folder)
        return _MODEL_CLASSES[model.architecture](config, model).eval()

    def save_pretrained(self, save_directory: str | Path, **kwargs: Any) -> Path:  # type: ignore[override]
        """The clipdepth checkpoint (head only), as ``DepthModel.save_pretrained``."""
        return self.model.save_pretrained(save_directory, **kwargs)

    def forward(
        self,
        pixel_values: torch.Tensor | list,
        captions: list | None = None,
        return_dict: bool | None = None,
        crop: str = "none",
        dataset: str | None = None,
        tta: bool = False,
        **kwargs: Any,
    ) -> DepthEstimatorOutput | tuple[torch.Tensor]:
        """``pixel_values`` (B, 3, H, W) float in [0, 1] -> ``predicted_depth`` (B, H, W) metres, as
        ``DepthModel.infer`` (``captions``: one per image for TR2M; ``crop``: "none" or "trained",
        with ``dataset``: ``DepthModel.processor_for``; ``tta``: flip test-time augmentation).
        The pipeline passes a (nested) list of single images, which may differ in size;
        ``predicted_depth`` is then a list of (H, W) maps."""
        if self.model.uses_captions and captions is None:
            raise ConfigError(
                f'{self.model.display_name} needs a caption per image: call the pipeline with caption="..."', setting="captions"
            )
        if isinstance(pixel_values, torch.Tensor):
            depth = self.model.infer(pixel_values, captions=captions, crop=crop, dataset=dataset, tta=tta)["depth"]
        else:  # the pipeline's images, one per entry, batched by size inside infer
            images = [image for tensor in _flat(pixel_values) for image in tensor.split(1)]
            depth = [out["depth"] for out in self.model.infer(images, captions=_flat(captions), crop=crop, dataset=dataset, tta=tta)]
        return DepthEstimatorOutput(predicted_depth=depth) if return_dict is not False else (depth,)


def _flat(items: Any) -> Any:
    """Nested lists (the pipeline's collated batches) as one flat list; None stays None."""
    if not isinstance(items, (list, tuple)):
        return items
    return [leaf for item in items for leaf in (_flat(item) if isinstance(item, (list, tuple)) else [item])]


class ClipdepthDepthEstimationPipeline(DepthEstimationPipeline):
    """transformers' depth-estimation pipeline, which ``import clipdepth.hf`` makes the task's
    pipeline. For clipdepth models it decodes images with clipdepth's own conversion
    (``ClipdepthImageProcessor``; transformers' ``load_image`` would clip 16-bit photos), takes
    ``caption="..."`` (TR2M, one for every image), ``crop="none"|"trained"`` and ``dataset=``
    (``DepthModel.processor_for``) and ``tta=True`` call arguments (any other is refused, not ignored), and batches images of mixed sizes
    (``batch_size > 1``); for every other model it is transformers' own, unchanged::

        pipe = pipeline("depth-estimation", model=folder)
        pipe("room.jpg", caption="a kitchen with a table", crop="trained")
    """

    def _clipdepth(self) -> bool:
        return isinstance(self.model, ClipdepthForDepthEstimation)

    def _sanitize_parameters(
        self,
        timeout=None,
        parameters=None,
        caption: str | None = None,
        crop: str | None = None,
        dataset: str | None = None,
        tta: bool | None = None,
        **kwargs,
    ):
        options = (("caption", caption), ("crop", crop), ("dataset", dataset), ("tta", tta))
        given = {name: value for name, value in options if value is not None}
        if given and not self._clipdepth():
            raise ConfigError("caption=, crop=, dataset= and tta= are clipdepth models' options", setting=next(iter(given)))
        if kwargs and self._clipdepth():  # transformers' own pipeline would ignore them without a word
            raise ConfigError(
                f"unknown option {sorted(kwargs)[0]}= for a clipdepth model's pipeline; it takes caption=, "
                "crop=, dataset=, tta=, timeout= and batch_size=",
                setting=sorted(kwargs)[0],
            )
        preprocess, forward, postprocess = super()._sanitize_parameters(timeout=timeout, parameters=parameters, **kwargs)
        if tta is not None:
            forward["tta"] = bool(tta)
        if caption is not None:
            preprocess["caption"] = caption
        if crop is not None:
            if crop not in INFER_CROPS:
                raise ConfigError(f"crop must be one of {', '.join(INFER_CROPS)}, got {crop!r}", setting="crop")
            forward["crop"] = crop
        if dataset is not None:
            forward["dataset"] = dataset
        return preprocess, forward, postprocess

    def preprocess(self, image, timeout=None, caption: str | None = None):
        if not self._clipdepth():
            return super().preprocess(image, timeout=timeout)
        if isinstance(image, str) and image.startswith(("http://", "https://", "data:image/")):
            image = load_image(image, timeout)  # fetched by transformers; files are decoded by clipdepth
        pixels = self.image_processor(images=image)["pixel_values"]
        # A list, not a tensor: the pipeline's collation concatenates tensors, which fails for images
        # of different sizes; ClipdepthForDepthEstimation.forward takes the list.
        inputs = {"pixel_values": [pixels], "target_size": tuple(pixels.shape[-2:])}
        if caption is not None:
            inputs["captions"] = [caption]
        return inputs

    def _forward(self, model_inputs, crop: str | None = None, dataset: str | None = None, tta: bool = False):
        if crop is None and dataset is None and not tta:
            return super()._forward(model_inputs)
        target_size = model_inputs.pop("target_size")
        outputs = self.model(**model_inputs, crop=crop or "none", dataset=dataset, tta=tta)
        outputs["target_size"] = target_size
        return outputs


# The name of clipdepth 0.1, when the caption needed its own pipeline class.
CaptionedDepthEstimationPipeline = ClipdepthDepthEstimationPipeline


def _register() -> dict[str, type[ClipdepthForDepthEstimation]]:
    """A config and model class per clipdepth architecture, registered with the Auto classes."""
    classes = {}
    for architecture, spec in specs().items():
        model_class = spec.model
        stem = f"Clipdepth{model_class.__name__}"
        config_class = type(
            f"{stem}Config",
            (ClipdepthConfig,),
            {
                "model_type": transformers_model_type(architecture),
                "__module__": __name__,
                "__doc__": f"The transformers config of a clipdepth {model_class.display_name} checkpoint.",
            },
        )
        wrapper = type(
            f"{stem}ForDepthEstimation",
            (ClipdepthForDepthEstimation,),
            {
                "config_class": config_class,
                "__module__": __name__,
                "__doc__": f"A clipdepth {model_class.display_name} checkpoint as a transformers depth-estimation model.",
            },
        )
        AutoConfig.register(config_class.model_type, config_class, exist_ok=True)
        AutoModelForDepthEstimation.register(config_class, wrapper, exist_ok=True)
        AutoImageProcessor.register(config_class, image_processor_classes={"pil": ClipdepthImageProcessor}, exist_ok=True)
        classes[architecture] = wrapper
        globals()[config_class.__name__] = config_class
        globals()[wrapper.__name__] = wrapper
    return classes


_MODEL_CLASSES = _register()
# The task's pipeline becomes clipdepth's subclass (transformers' own for every other model), named
# by its dotted path as transformers names its built-in ones: register_pipeline would mark it as
# custom code, which a pipeline's save_pretrained then copies into the checkpoint folder.
PIPELINE_REGISTRY.supported_tasks["depth-estimation"]["impl"] = f"{__name__}.{ClipdepthDepthEstimationPipeline.__name__}"
