"""`clipdepth export onnx`: both graphs run in onnxruntime and match PyTorch."""

from __future__ import annotations

import argparse
import errno
import json
import shutil
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

pytest.importorskip("onnx")
pytest.importorskip("onnxruntime")
pytest.importorskip("onnxscript")

import onnx
import onnxruntime as ort
from onnx.external_data_helper import ExternalDataInfo, uses_external_data

from clipdepth.cli import export as export_cli
from clipdepth.cli.main import main
from clipdepth.errors import ConfigError
from clipdepth.models import load_model, onnx as model_onnx
from clipdepth.models.pureclip_depth import PureCLIPDepth
from clipdepth.models.onnx import require_onnx
from clipdepth.models.pureclip_depth_onnx import check_onnx


def _parse(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="clipdepth")
    export_cli.register(parser.add_subparsers(dest="command", required=True))
    return parser.parse_args(argv)


@pytest.fixture
def checkpoint(tiny_cfg, tmp_path: Path) -> Path:
    return PureCLIPDepth.build(tiny_cfg).save_pretrained(tmp_path / "ckpt")


def test_export_onnx_cli_matches_pytorch(checkpoint: Path, tmp_path: Path, capsys) -> None:
    out = tmp_path / "onnx"
    (out / "notes").mkdir(parents=True)  # the user's, beside the export
    args = _parse(["export", "onnx", "--checkpoint", str(checkpoint), "--out", str(out), "--opset", "20"])
    assert args.func(args) == 0
    printed = capsys.readouterr().out
    assert "max abs difference" in printed
    files = ["model.onnx.data", "model.onnx", "head.onnx.data", "head.onnx", "export.json"]
    assert f"wrote {', '.join(files)} to {out} (opset 20)" in printed
    report = json.loads((out / "export.json").read_text())
    # export.json lists every file written, and nothing else is there (no temporary left)
    assert report["files"] == files and sorted(p.name for p in out.iterdir()) == sorted([*files, "notes"])
    for graph, name in (("model", "model.onnx"), ("head", "head.onnx")):
        proto = onnx.load(str(out / name), load_external_data=False)
        assert [o.version for o in proto.opset_import if o.domain in ("", "ai.onnx")] == [report["opset"]] == [20]
        locations = {ExternalDataInfo(t).location for t in proto.graph.initializer if uses_external_data(t)}
        assert locations == {f"{name}.data"} and report[graph]["external_data"] == [f"{name}.data"]
        assert report[graph]["path"] == str(out / name)
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
    diff = check_onnx(
        out / "head.onnx",
        {"patch_tokens": feats.patch_tokens.detach().numpy(), "cls": feats.cls.detach().numpy()},
        [head_out.depth.numpy(), head_out.probs.numpy()],
    )
    assert diff < 1e-4


def test_missing_onnxruntime_is_one_line_error(monkeypatch) -> None:
    monkeypatch.setitem(sys.modules, "onnxruntime", None)  # import onnxruntime -> ImportError
    with pytest.raises(ConfigError, match=r'pip install -e "\.\[onnx\]" in the clipdepth repository') as info:
        require_onnx()
    assert "\n" not in str(info.value)


@pytest.mark.parametrize("opset", ["13", "17", "99"])
def test_an_opset_the_exporter_or_onnxruntime_cannot_do_is_one_line_before_any_work(checkpoint, tmp_path, capsys, opset):
    # torch's exporter writes opset 18 and converts from there (not below), up to what onnxscript,
    # onnx and onnxruntime know
    out = tmp_path / "onnx"
    assert main(["export", "onnx", "--checkpoint", str(checkpoint), "--out", str(out), "--opset", opset]) == 2
    opsets = model_onnx.supported_opsets()
    assert opsets.start == 18 and opsets.stop - 1 >= 20
    assert capsys.readouterr().err.strip().splitlines() == [
        f"clipdepth export: error: opset {opset} cannot be exported and checked here: torch's exporter and onnxruntime "
        f"support opsets 18 to {opsets.stop - 1} (--opset)"
    ]
    assert not out.exists()


def test_a_graph_that_fails_its_check_leaves_nothing_under_the_real_names(checkpoint, tmp_path, capsys, monkeypatch):
    out = tmp_path / "onnx"
    out.mkdir()
    (out / "model.onnx").write_text("an earlier export's")  # kept: --overwrite replaces only what passed
    # as if opset 17 were allowed: torch's exporter writes opset 18 for it, which the read-back catches
    monkeypatch.setattr(model_onnx, "supported_opsets", lambda: range(13, 26))
    args = ["export", "onnx", "--checkpoint", str(checkpoint), "--out", str(out), "--opset", "17", "--overwrite"]
    assert main(args) == 2
    assert capsys.readouterr().err.strip().splitlines() == [
        "clipdepth export: error: model.onnx: torch's exporter wrote opset 18, not the 17 asked for; nothing was written "
        "(opset 18 is the one it writes itself) (--opset)"
    ]
    assert [p.name for p in out.iterdir()] == ["model.onnx"] and (out / "model.onnx").read_text() == "an earlier export's"


def test_every_file_an_export_writes_is_covered_by_the_refusal_to_replace(checkpoint, tmp_path, capsys):
    for name in ("model.onnx.data", "head.onnx.data", "export.json"):
        out = tmp_path / name / "onnx"
        out.mkdir(parents=True)
        (out / name).write_text("someone's")
        assert main(["export", "onnx", "--checkpoint", str(checkpoint), "--out", str(out)]) == 2
        assert capsys.readouterr().err.strip().splitlines() == [
            f"clipdepth export: error: {out / name}: exists (an earlier run's); write elsewhere, or allow overwriting it (--overwrite)"
        ]
        assert [p.name for p in out.iterdir()] == [name] and (out / name).read_text() == "someone's"


NUMPY_SHORT_WRITE = "problem writing element 2048 to file"  # numpy's tofile on a full disk (the dynamo exporter's)


@pytest.mark.parametrize(
    "dynamo, torchscript, free",
    [
        (OSError(NUMPY_SHORT_WRITE), OSError(errno.ENOSPC, "No space left on device"), 0),  # no errno: no room left there
        (RuntimeError("an operator it cannot export"), OSError(errno.ENOSPC, "No space left on device"), 2**30),
    ],
)
def test_an_export_onto_a_full_disk_is_one_line_naming_the_folder(checkpoint, tmp_path, capsys, monkeypatch, dynamo, torchscript, free):
    def export(module, args, path, dynamo, **kwargs):
        Path(path).write_bytes(b"\0" * 64)  # what it wrote before the disk filled up
        raise failures[dynamo]

    failures = {True: dynamo, False: torchscript}
    monkeypatch.setattr(torch.onnx, "export", export)
    monkeypatch.setattr(shutil, "disk_usage", lambda path: shutil._ntuple_diskusage(2**40, 2**40 - free, free))
    out = tmp_path / "onnx"
    assert main(["export", "onnx", "--checkpoint", str(checkpoint), "--out", str(out)]) == 2
    assert capsys.readouterr().err.strip().splitlines() == [
        f"clipdepth export: error: {out}: cannot export model.onnx there: no space left on device; free some space "
        "there, or export elsewhere"
    ]
    assert list(out.iterdir()) == []  # what was staged is gone
