"""ONNX export of a PureCLIP-Depth model (``PureCLIPDepth.export_onnx``): the whole network and the head alone.

``model.onnx``: ``images`` (B, 3, S, S) float in [0, 1] (CLIP normalisation is inside the graph)
-> ``depth`` (B, S, S) metres at the input size and ``bin_probs`` (B, h, w, K): the model's
``infer`` at its input size, without flip TTA and with one tile.
``head.onnx``: ``patch_tokens`` (B, h, w, D) and ``cls`` (B, D) -> ``depth_patches`` (B, h, w)
metres and ``bin_probs`` (B, h, w, K), for features computed elsewhere (e.g. the feature cache).
The batch axis is dynamic in both. Each graph's weights are in ``<graph>.data`` beside it (ONNX
external data, as torch's exporter writes them). Needs the ``onnx`` extra: ``pip install -e ".[onnx]"``
in the repository.

Nothing appears under these names until it is verified: the graphs are written into a temporary
folder inside the output folder, each read back (its opset is the one asked for, every weights file
it references was written and is listed) and run with onnxruntime against PyTorch, and only then
are the files renamed into place, ``export.json`` last.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import tempfile
import warnings
from pathlib import Path

import numpy as np
import torch
from torch import nn

from ..errors import ConfigError, DataError
from ..io.atomic import clean_stale, disk_full, temporary_prefix
from .base import FEATURE_DTYPE
from .onnx import MIN_OPSET, check_opset, require_onnx

MODEL_FILE, HEAD_FILE, REPORT_FILE = "model.onnx", "head.onnx", "export.json"
DATA_SUFFIX = ".data"  # torch's exporter writes a graph's weights beside it as <graph>.data
# Every file an export may write (PureCLIPDepth.onnx_files), in the order they are moved into place:
# each graph's weights before it, the report last.
ONNX_FILES = (MODEL_FILE + DATA_SUFFIX, MODEL_FILE, HEAD_FILE + DATA_SUFFIX, HEAD_FILE, REPORT_FILE)
# onnxruntime's outputs may differ from PyTorch's by this much, relative to the largest output value
# (at least 1): float32 rounding is about 1e-6; a graph that computes something else is far over.
CHECK_TOLERANCE = 1e-3


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


def _no_room(out_dir: Path, name: str, cause: str) -> DataError:
    return DataError(f"{out_dir}: cannot export {name} there: {cause}; free some space there, or export elsewhere")


def _export(module: nn.Module, args: tuple, path: Path, input_names: list[str], output_names: list[str], opset: int, out_dir: Path) -> str:
    """Export with the dynamo exporter, falling back to the TorchScript one; returns which was used.
    A full disk (``io.atomic.disk_full``) is a DataError naming ``out_dir``, the folder ``path`` is staged in."""
    batch = {name: {0: "batch"} for name in input_names + output_names}
    errors = []
    for dynamo in (True, False):
        try:
            with warnings.catch_warnings(), torch.no_grad(), _quiet_logger("torch.onnx"):
                warnings.simplefilter("ignore")
                kwargs: dict = {"input_names": input_names, "output_names": output_names, "opset_version": opset, "dynamo": dynamo}
                if dynamo:
                    kwargs["dynamic_shapes"] = {name: {0: torch.export.Dim("batch", min=1, max=1024)} for name in input_names}
                    kwargs["verbose"] = False
                else:
                    kwargs["dynamic_axes"] = batch
                torch.onnx.export(module, args, str(path), **kwargs)
            return "dynamo" if dynamo else "torchscript"
        except Exception as exc:  # noqa: BLE001 - try the other exporter, report both if neither works
            if (cause := disk_full(exc, path.parent)) is not None:  # the other would fail alike
                raise _no_room(out_dir, path.name, cause) from None
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


def _tensors(graph) -> list:
    """Every tensor a graph holds: initialisers and node attributes, in subgraphs too."""
    found = [*graph.initializer]
    for node in graph.node:
        for attr in node.attribute:
            found += [attr.t] if attr.HasField("t") else []
            found += [*attr.tensors]
            for sub in ([attr.g] if attr.HasField("g") else []) + [*attr.graphs]:
                found += _tensors(sub)
    return found


def _verify_graph(path: Path, opset: int) -> list[str]:
    """Read the graph file ``path`` back: ConfigError unless its ai.onnx opset is ``opset`` and
    every external-data file it references lies beside it. Returns those files' names."""
    import onnx
    from onnx.external_data_helper import ExternalDataInfo, uses_external_data

    proto = onnx.load(str(path), load_external_data=False)
    written = next((o.version for o in proto.opset_import if o.domain in ("", "ai.onnx")), None)
    if written != opset:
        raise ConfigError(
            f"{path.name}: torch's exporter wrote opset {written}, not the {opset} asked for; "
            f"nothing was written (opset {MIN_OPSET} is the one it writes itself)",
            setting="opset",
        )
    files = sorted({ExternalDataInfo(t).location for t in _tensors(proto.graph) if uses_external_data(t)})
    for name in files:
        if Path(name).name != name or not (path.parent / name).is_file():
            raise ConfigError(
                f"{path.name}: references the weights file {name!r}, which the export did not write beside it; nothing was written"
            )
    return files


def _checked(path: Path, inputs: dict[str, np.ndarray], reference: list[np.ndarray]) -> float:
    """``check_onnx``, as a ConfigError naming the graph when onnxruntime cannot run it or its
    outputs are over ``CHECK_TOLERANCE``."""
    try:
        diff = check_onnx(path, inputs, reference)
    except Exception as exc:  # noqa: BLE001 - onnxruntime's errors are not one class
        reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise ConfigError(f"{path.name}: onnxruntime cannot run the exported graph ({reason}); nothing was written") from None
    scale = max([1.0] + [float(np.abs(r).max()) for r in reference if np.size(r)])
    if not diff <= CHECK_TOLERANCE * scale:  # NaN included
        raise ConfigError(
            f"{path.name}: onnxruntime's outputs differ from PyTorch's by {diff:.3g} (more than "
            f"{CHECK_TOLERANCE:g} x {scale:.3g}); nothing was written"
        )
    return diff


def _move_into_place(staging: Path, out_dir: Path) -> None:
    """Rename each of ``ONNX_FILES`` that ``staging`` holds onto ``out_dir``; one it does not hold
    is removed from ``out_dir`` (an earlier export's, which this one replaces)."""
    for name in ONNX_FILES:
        if (staging / name).exists():
            os.replace(staging / name, out_dir / name)
        else:
            (out_dir / name).unlink(missing_ok=True)


def export_onnx(model: nn.Module, out_dir: str | Path, opset: int = 18, batch: int = 2, seed: int = 0) -> dict:
    """Write ``model.onnx`` and ``head.onnx`` (and their ``.data`` weights) into ``out_dir``, each
    verified first (``_verify_graph``; onnxruntime on random inputs of batch ``batch``, a different size
    than the export's, to exercise the dynamic axis, within ``CHECK_TOLERANCE`` of PyTorch), then
    ``export.json``. Returns that report: opset, paths, shapes, max abs differences and ``files``,
    every file written. ConfigError (one line) for an opset outside ``supported_opsets``, before any
    work, and for a graph that fails a check; DataError naming ``out_dir`` for a full disk; nothing
    is written under ``ONNX_FILES``' names then."""
    require_onnx()
    check_opset(opset)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    clean_stale(out_dir)  # what a killed export left
    staging = Path(tempfile.mkdtemp(prefix=temporary_prefix(REPORT_FILE), suffix=".tmp", dir=out_dir))
    try:
        report = _export_verified(model, staging, out_dir, opset, batch, seed)
        report["files"] = [name for name in ONNX_FILES if (staging / name).exists()] + [REPORT_FILE]
        (staging / REPORT_FILE).write_text(json.dumps(report, indent=2))
        _move_into_place(staging, out_dir)
    except OSError as exc:
        if (cause := disk_full(exc, staging)) is None:
            raise
        raise _no_room(out_dir, REPORT_FILE, cause) from None
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return report


def _export_verified(model: nn.Module, folder: Path, out_dir: Path, opset: int, batch: int, seed: int) -> dict:
    """Export both graphs into ``folder`` and verify them (``export_onnx``); returns the report,
    its paths in ``out_dir``."""
    model = model.cpu().float().eval()
    size, grid = model.encoder.image_size, model.encoder.grid_size
    dim, bins = model.encoder.embed_dim, model.head.cfg.num_bins

    gen = torch.Generator().manual_seed(seed)
    full, head = DepthGraph(model).eval(), HeadGraph(model.head).eval()
    # Export with batch 2 (a batch of 1 can get specialised away), check with another batch size.
    images = torch.rand(2, 3, size, size, generator=gen)
    tokens = torch.randn(2, *grid, dim, generator=gen)
    cls = torch.nn.functional.normalize(torch.randn(2, dim, generator=gen), dim=-1)
    model_path, head_path = folder / MODEL_FILE, folder / HEAD_FILE
    exporter = {
        MODEL_FILE: _export(full, (images,), model_path, ["images"], ["depth", "bin_probs"], opset, out_dir),
        HEAD_FILE: _export(head, (tokens, cls), head_path, ["patch_tokens", "cls"], ["depth_patches", "bin_probs"], opset, out_dir),
    }
    data = {name: _verify_graph(folder / name, opset) for name in (MODEL_FILE, HEAD_FILE)}
    stray = sorted({p.name for p in folder.iterdir()} - set(ONNX_FILES))
    if stray:  # a file not in ONNX_FILES would escape the check for an earlier export's files
        raise ConfigError(f"torch's exporter also wrote {', '.join(stray)}, which clipdepth does not know; nothing was written")

    check_batch = batch + 1 if batch == 2 else batch
    images = torch.rand(check_batch, 3, size, size, generator=gen)
    tokens = torch.randn(check_batch, *grid, dim, generator=gen)
    cls = torch.nn.functional.normalize(torch.randn(check_batch, dim, generator=gen), dim=-1)
    with torch.no_grad():
        ref_full = [t.numpy() for t in full(images)]
        # The graph must match the model's own infer (no TTA, one tile).
        result = model.infer(images, tiles=1)
        depth, probs = result["depth"], result["bin_probs"]
        predict_diff = max(
            float((depth - torch.from_numpy(ref_full[0])).abs().max()), float((probs - torch.from_numpy(ref_full[1])).abs().max())
        )
        ref_head = [t.numpy() for t in head(tokens, cls)]
    return {
        "opset": opset,
        "exporter": exporter,
        "check_batch": check_batch,
        "model": {
            "path": str(out_dir / MODEL_FILE),
            "external_data": data[MODEL_FILE],
            "inputs": {"images": ["batch", 3, size, size]},
            "outputs": {"depth": ["batch", size, size], "bin_probs": ["batch", *grid, bins]},
            "max_abs_diff": _checked(model_path, {"images": images.numpy()}, ref_full),
            "max_abs_diff_vs_predict": predict_diff,
        },
        "head": {
            "path": str(out_dir / HEAD_FILE),
            "external_data": data[HEAD_FILE],
            "inputs": {"patch_tokens": ["batch", *grid, dim], "cls": ["batch", dim]},
            "outputs": {"depth_patches": ["batch", *grid], "bin_probs": ["batch", *grid, bins]},
            "max_abs_diff": _checked(head_path, {"patch_tokens": tokens.numpy(), "cls": cls.numpy()}, ref_head),
        },
    }
