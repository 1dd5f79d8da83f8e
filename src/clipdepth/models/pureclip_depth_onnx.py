"""ONNX export of a PureCLIP-Depth model (``PureCLIPDepth.export_onnx``): the whole network and the head alone.

``model.onnx``: ``images`` (B, 3, S, S) float in [0, 1] (CLIP normalisation is inside the graph)
-> ``depth`` (B, S, S) metres at the input size and ``bin_probs`` (B, h, w, K): the model's
``infer`` at its input size, without flip TTA and with one tile.
``head.onnx``: ``patch_tokens`` (B, h, w, D) and ``cls`` (B, D) -> ``depth_patches`` (B, h, w)
metres and ``bin_probs`` (B, h, w, K), for features computed elsewhere (e.g. the feature cache).
The batch axis is dynamic in both. Needs the ``onnx`` extra: ``pip install -e ".[onnx]"`` in the repository.
"""
from __future__ import annotations

import json
import logging
import warnings
from pathlib import Path

import numpy as np
import torch
from torch import nn

from ..errors import ConfigError
from .base import FEATURE_DTYPE

MODEL_FILE, HEAD_FILE, REPORT_FILE = "model.onnx", "head.onnx", "export.json"  # PureCLIPDepth.onnx_files
INSTALL_HINT = 'pip install -e ".[onnx]" in the clipdepth repository'


def require_onnx() -> None:
    """Raise a one-line ConfigError when onnx or onnxruntime (or onnxscript) is missing."""
    missing = []
    for name in ("onnx", "onnxruntime", "onnxscript"):
        try:
            __import__(name)
        except ImportError:
            missing.append(name)
    if missing:
        raise ConfigError(f"ONNX export needs {', '.join(missing)}, which is not installed: {INSTALL_HINT}")


class DepthGraph(nn.Module):
    """images (B, 3, S, S) in [0, 1] -> (depth (B, S, S) metres, bin_probs (B, h, w, K))."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        encoder = self.model.encoder
        out = encoder(encoder.normalize(images))
        # The features rounded to their stored half precision and back, as infer runs the head on them.
        tokens, cls = (x.to(FEATURE_DTYPE).float() for x in (out.patch_tokens, out.cls))
        head = self.model.head(tokens, cls)
        return self.model.depth_at_input(head), head.probs


class HeadGraph(nn.Module):
    """patch_tokens (B, h, w, D), cls (B, D) -> (depth_patches (B, h, w), bin_probs (B, h, w, K))."""

    def __init__(self, head: nn.Module) -> None:
        super().__init__()
        self.head = head

    def forward(self, patch_tokens: torch.Tensor, cls: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        out = self.head(patch_tokens, cls)
        return out.depth, out.probs


class _quiet_logger:
    """Hide the exporter's log lines (e.g. 'torchvision is not installed') while it runs."""

    def __init__(self, name: str) -> None:
        self.logger = logging.getLogger(name)

    def __enter__(self) -> None:
        self.level = self.logger.level
        self.logger.setLevel(logging.ERROR)

    def __exit__(self, *exc: object) -> None:
        self.logger.setLevel(self.level)


def _export(module: nn.Module, args: tuple, path: Path, input_names: list[str], output_names: list[str],
            opset: int) -> str:
    """Export with the dynamo exporter, falling back to the TorchScript one; returns which was used."""
    batch = {name: {0: "batch"} for name in input_names + output_names}
    errors = []
    for dynamo in (True, False):
        try:
            with warnings.catch_warnings(), torch.no_grad(), _quiet_logger("torch.onnx"):
                warnings.simplefilter("ignore")
                kwargs: dict = {"input_names": input_names, "output_names": output_names,
                                "opset_version": opset, "dynamo": dynamo}
                if dynamo:
                    kwargs["dynamic_shapes"] = {
                        name: {0: torch.export.Dim("batch", min=1, max=1024)} for name in input_names
                    }
                    kwargs["verbose"] = False
                else:
                    kwargs["dynamic_axes"] = batch
                torch.onnx.export(module, args, str(path), **kwargs)
            return "dynamo" if dynamo else "torchscript"
        except Exception as exc:  # noqa: BLE001 - try the other exporter, report both if neither works
            errors.append(f"{'dynamo' if dynamo else 'torchscript'}: {str(exc).splitlines()[0] if str(exc) else type(exc).__name__}")
    raise ConfigError(f"cannot export {path.name} to ONNX ({'; '.join(errors)})")


def check_onnx(path: str | Path, inputs: dict[str, np.ndarray], reference: list[np.ndarray] | tuple) -> float:
    """Run ``path`` with onnxruntime on ``inputs`` and return the max abs difference to ``reference``
    (the PyTorch outputs, in the graph's output order)."""
    import onnxruntime as ort

    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    outputs = session.run(None, {k: np.ascontiguousarray(v, dtype=np.float32) for k, v in inputs.items()})
    if len(outputs) != len(reference):
        raise ValueError(f"{path}: {len(outputs)} outputs, expected {len(reference)}")
    diff = 0.0
    for got, want in zip(outputs, reference):
        want = np.asarray(want)
        if got.shape != want.shape:
            raise ValueError(f"{path}: output shape {got.shape}, expected {want.shape}")
        diff = max(diff, float(np.max(np.abs(got.astype(np.float64) - want.astype(np.float64)))))
    return diff


def export_onnx(model: nn.Module, out_dir: str | Path, opset: int = 18, batch: int = 2, seed: int = 0) -> dict:
    """Write ``model.onnx`` and ``head.onnx`` into ``out_dir``, check both with onnxruntime on random
    inputs (batch ``batch``, a different size than the export's, to exercise the dynamic axis) and
    write ``export.json``. Returns that report: paths, shapes and max abs differences."""
    require_onnx()
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    model = model.cpu().float().eval()
    size, grid = model.encoder.image_size, model.encoder.grid_size
    dim, bins = model.encoder.embed_dim, model.head.cfg.num_bins

    gen = torch.Generator().manual_seed(seed)
    full, head = DepthGraph(model).eval(), HeadGraph(model.head).eval()
    # Export with batch 2 (a batch of 1 can get specialised away), check with another batch size.
    images = torch.rand(2, 3, size, size, generator=gen)
    tokens = torch.randn(2, *grid, dim, generator=gen)
    cls = torch.nn.functional.normalize(torch.randn(2, dim, generator=gen), dim=-1)
    model_path, head_path = out_dir / MODEL_FILE, out_dir / HEAD_FILE
    exporter = {
        MODEL_FILE: _export(full, (images,), model_path, ["images"], ["depth", "bin_probs"], opset),
        HEAD_FILE: _export(head, (tokens, cls), head_path, ["patch_tokens", "cls"], ["depth_patches", "bin_probs"], opset),
    }

    check_batch = batch + 1 if batch == 2 else batch
    images = torch.rand(check_batch, 3, size, size, generator=gen)
    tokens = torch.randn(check_batch, *grid, dim, generator=gen)
    cls = torch.nn.functional.normalize(torch.randn(check_batch, dim, generator=gen), dim=-1)
    with torch.no_grad():
        ref_full = [t.numpy() for t in full(images)]
        # The graph must match the model's own infer (no TTA, one tile).
        result = model.infer(images, tiles=1)
        depth, probs = result["depth"], result["bin_probs"]
        predict_diff = max(float((depth - torch.from_numpy(ref_full[0])).abs().max()),
                           float((probs - torch.from_numpy(ref_full[1])).abs().max()))
        ref_head = [t.numpy() for t in head(tokens, cls)]
    report = {
        "opset": opset,
        "exporter": exporter,
        "check_batch": check_batch,
        "model": {
            "path": str(model_path),
            "inputs": {"images": ["batch", 3, size, size]},
            "outputs": {"depth": ["batch", size, size], "bin_probs": ["batch", *grid, bins]},
            "max_abs_diff": check_onnx(model_path, {"images": images.numpy()}, ref_full),
            "max_abs_diff_vs_predict": predict_diff,
        },
        "head": {
            "path": str(head_path),
            "inputs": {"patch_tokens": ["batch", *grid, dim], "cls": ["batch", dim]},
            "outputs": {"depth_patches": ["batch", *grid], "bin_probs": ["batch", *grid, bins]},
            "max_abs_diff": check_onnx(head_path, {"patch_tokens": tokens.numpy(), "cls": cls.numpy()}, ref_head),
        },
    }
    (out_dir / REPORT_FILE).write_text(json.dumps(report, indent=2))
    return report
