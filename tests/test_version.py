"""One version number: pyproject.toml's, read from the installed metadata by `clipdepth --version`,
``clipdepth.__version__`` and what checkpoints record."""

from __future__ import annotations

import json
import re
from importlib.metadata import version

import pytest

import clipdepth
from clipdepth.cli.main import main
from clipdepth.models import PureCLIPDepth


def test_version_flag_prints_the_package_metadata(capsys):
    with pytest.raises(SystemExit) as done:
        main(["--version"])
    assert done.value.code == 0
    assert capsys.readouterr().out.strip() == f"clipdepth {version('clipdepth')}"
    assert clipdepth.__version__ == version("clipdepth")


def test_a_checkpoint_records_the_version_that_wrote_it(tiny_cfg, tmp_path):
    folder = PureCLIPDepth.build(tiny_cfg).save_pretrained(tmp_path / "ckpt")
    meta = json.loads((folder / "config.json").read_text())
    assert meta["clipdepth_version"] == version("clipdepth")
    assert PureCLIPDepth.from_pretrained(folder) is not None  # the new field does not disturb loading


def test_the_number_is_written_only_in_pyproject():
    from pathlib import Path

    root = Path(__file__).resolve().parents[1]
    number = version("clipdepth")
    hits = [p for p in (root / "src").rglob("*.py") if f'"{number}"' in p.read_text()]
    assert hits == [], hits
    assert not re.search(r"^version:", (root / "CITATION.cff").read_text(), re.M)  # clipdepth --version says which one was used


def test_an_evaluation_records_the_version_in_its_metrics_json(tiny_cfg, tmp_path):
    from clipdepth.evaluation.checkpoint import evaluate_checkpoint

    folder = PureCLIPDepth.build(tiny_cfg).save_pretrained(tmp_path / "ckpt")
    summary, _ = evaluate_checkpoint(folder, out=tmp_path / "eval", batch_size=2, workers=0)
    written = json.loads((tmp_path / "eval" / "metrics.json").read_text())
    assert written["clipdepth_version"] == summary["clipdepth_version"] == version("clipdepth")
