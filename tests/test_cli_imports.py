"""`clipdepth --help` and the help of commands whose options need no model stay quick: they do not
import the heavy libraries (transformers alone takes seconds); `clipdepth --help` and the help of the
commands that run a model (predict, serve, caption) import neither torch nor numpy nor Pillow: the
command's own module and argparse, its heavy imports after parsing."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

import clipdepth

HEAVY = ("transformers", "matplotlib", "gradio", "h5py")
# What `clipdepth predict --help` needs none of: torch alone takes a second or two to import.
LIBRARIES = (*HEAVY, "torch", "numpy", "PIL", "yaml", "tokenizers")


@pytest.mark.parametrize(
    "command, unwanted",
    [([], LIBRARIES), (["predict"], LIBRARIES), (["serve"], LIBRARIES), (["caption"], LIBRARIES), (["score"], HEAVY), (["analyze"], HEAVY)],
)
def test_help_imports_no_heavy_library(command, unwanted):
    # A fresh interpreter: this one has imported whatever other tests needed.
    code = (
        "import contextlib, io, sys\n"
        "from clipdepth.cli.main import main\n"
        "with contextlib.redirect_stdout(io.StringIO()) as shown, contextlib.suppress(SystemExit):\n"
        f"    main({[*command, '--help']!r})\n"
        f"assert 'usage: clipdepth' in shown.getvalue()\n"
        f"print(' '.join(m for m in {unwanted!r} if m in sys.modules))\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == ""


def test_the_predict_help_names_the_models_tile_limit():
    from clipdepth.cli.image_options import DEFAULT_MAX_TILES
    from clipdepth.models.base import MAX_TILES

    assert DEFAULT_MAX_TILES == MAX_TILES


def test_the_pixel_limit_of_the_help_is_the_readers():
    from clipdepth.cli.image_options import DEFAULT_MAX_PIXELS
    from clipdepth.io.depth_io import MAX_PHOTO_PIXELS

    assert DEFAULT_MAX_PIXELS == MAX_PHOTO_PIXELS


def test_the_crop_choices_are_the_models():
    from clipdepth.cli.image_options import INFER_CROPS as choices
    from clipdepth.models.base import INFER_CROPS

    assert choices == INFER_CROPS


def test_the_depth_formats_are_the_writers():
    from clipdepth.cli.predict_outputs import DEPTH_FORMATS as choices
    from clipdepth.io.predictions import DEPTH_FORMATS

    assert choices == tuple(DEPTH_FORMATS)


def test_the_precision_choices_are_the_devices():
    from clipdepth.cli.image_options import RUN_PRECISIONS as choices
    from clipdepth.config.schema import RunPrecision
    from clipdepth.device import RUN_PRECISIONS

    assert choices == RUN_PRECISIONS and list(choices) == RunPrecision.names()


def test_predict_refuses_a_missing_input_before_importing_torch(tmp_path):
    # A wrong path is told at once, not after the seconds that importing torch and transformers takes.
    code = (
        "import sys\n"
        "from clipdepth.cli.main import main\n"
        f"status = main(['predict', {str(tmp_path / 'nope.jpg')!r}, '--checkpoint', 'x', '--out', {str(tmp_path / 'out')!r}])\n"
        "print(status, ' '.join(m for m in ('torch', 'transformers') if m in sys.modules))\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "2"
    assert done.stderr.strip() == f"clipdepth predict: error: {tmp_path / 'nope.jpg'}: no such image, folder, glob match or list"


def test_cli_modules_only_parse_and_call():
    """Each cli module stays a short parser (at most 120 lines) that imports no model module."""
    cli = Path(clipdepth.__file__).parent / "cli"
    models = {path.stem for path in (cli.parent / "models").glob("*.py")} - {"__init__", "base", "settings", "onnx"}  # the shared ones
    for path in sorted(cli.glob("*.py")):
        text = path.read_text()
        assert len(text.splitlines()) <= 120, f"{path.name}: {len(text.splitlines())} lines"
        for model in models:
            assert f"models.{model} import" not in text and f"models import {model}" not in text, (path.name, model)
