"""`clipdepth export onnx`: both graphs run in onnxruntime and match PyTorch."""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

pytest.importorskip("onnx")
pytest.importorskip("onnxruntime")
pytest.importorskip("onnxscript")

import onnxruntime as ort

from clipdepth.cli import export as export_cli
from clipdepth.errors import ConfigError
from clipdepth.models.pureclip_depth_onnx import check_onnx, require_onnx
from clipdepth.models import load_model
from clipdepth.models.pureclip_depth import PureCLIPDepth


def _parse(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="clipdepth")
    export_cli.register(parser.add_subparsers(dest="command", required=True))
    return parser.parse_args(argv)


@pytest.fixture
def checkpoint(tiny_cfg, tmp_path: Path) -> Path:
    return PureCLIPDepth.build(tiny_cfg).save_pretrained(tmp_path / "ckpt")


def test_export_onnx_cli_matches_pytorch(checkpoint: Path, tmp_path: Path, capsys) -> None:
    out = tmp_path / "onnx"
    args = _parse(["export", "onnx", "--checkpoint", str(checkpoint), "--out", str(out), "--opset", "18"])
    assert args.func(args) == 0
    assert "max abs difference" in capsys.readouterr().out
    report = json.loads((out / "export.json").read_text())
    assert report["model"]["max_abs_diff"] < 1e-4
    assert report["head"]["max_abs_diff"] < 1e-4
    assert report["model"]["max_abs_diff_vs_predict"] < 1e-6

    # Independently of export.json: another batch size than the export's, against predict itself.
    model = load_model(checkpoint).eval()
    size = model.input_size
    images = torch.rand(4, 3, size, size, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        result = model.infer(images)
        depth, probs = result["depth"], result["bin_probs"]
        head_out = model.head(model.encode(images).patch_tokens, model.encode(images).cls)
    session = ort.InferenceSession(str(out / "model.onnx"), providers=["CPUExecutionProvider"])
    assert [o.name for o in session.get_outputs()] == ["depth", "bin_probs"]
    got_depth, got_probs = session.run(None, {"images": images.numpy()})
    assert got_depth.shape == (4, size, size)
    assert np.abs(got_depth - depth.numpy()).max() < 1e-4
    assert np.abs(got_probs - probs.numpy()).max() < 1e-4

    feats = model.encode(images)
    diff = check_onnx(out / "head.onnx", {"patch_tokens": feats.patch_tokens.detach().numpy(),
                                          "cls": feats.cls.detach().numpy()},
                      [head_out.depth.numpy(), head_out.probs.numpy()])
    assert diff < 1e-4


def test_missing_onnxruntime_is_one_line_error(monkeypatch) -> None:
    monkeypatch.setitem(sys.modules, "onnxruntime", None)  # import onnxruntime -> ImportError
    with pytest.raises(ConfigError, match=r'pip install -e "\.\[onnx\]" in the clipdepth repository') as info:
        require_onnx()
    assert "\n" not in str(info.value)
