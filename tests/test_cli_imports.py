"""`clipdepth --help` and the help of commands whose options need no model stay quick: they do not
import the heavy libraries (transformers alone takes seconds)."""
from __future__ import annotations

import subprocess
import sys

import pytest

HEAVY = ("transformers", "matplotlib", "gradio", "h5py")


@pytest.mark.parametrize("command", [[], ["score"], ["analyze"], ["predict"], ["serve"]])
def test_help_imports_no_heavy_library(command):
    # A fresh interpreter: this one has imported whatever other tests needed.
    code = (
        "import contextlib, io, sys\n"
        "from clipdepth.cli.main import main\n"
        "with contextlib.redirect_stdout(io.StringIO()) as shown, contextlib.suppress(SystemExit):\n"
        f"    main({[*command, '--help']!r})\n"
        f"assert 'usage: clipdepth' in shown.getvalue()\n"
        f"print(' '.join(m for m in {HEAVY!r} if m in sys.modules))\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == ""


def test_the_predict_help_names_the_models_tile_limit():
    from clipdepth.cli.args import DEFAULT_MAX_TILES
    from clipdepth.models.base import MAX_TILES

    assert DEFAULT_MAX_TILES == MAX_TILES


def test_the_crop_choices_are_the_models():
    from clipdepth.cli.args import INFER_CROPS as choices
    from clipdepth.models.base import INFER_CROPS

    assert choices == INFER_CROPS
