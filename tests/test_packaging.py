"""`pip install clipdepth` is complete: the wheel holds every recipe and static file."""

import subprocess
import sys
import zipfile
from importlib.metadata import version
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "src" / "clipdepth"


def _build_isolation_flags() -> list[str]:
    """Build with this environment's setuptools when it is new enough (no download), else in pip's
    isolated build environment (setuptools from the package index)."""
    try:
        major = int(version("setuptools").split(".")[0])
    except Exception:  # noqa: BLE001 - not installed
        major = 0
    return ["--no-build-isolation"] if major >= 77 else []


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> zipfile.ZipFile:
    out = tmp_path_factory.mktemp("wheel")
    done = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", *_build_isolation_flags(), "-w", str(out), str(ROOT)],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    (path,) = out.glob("clipdepth-*.whl")
    return zipfile.ZipFile(path)


def test_the_wheel_holds_every_recipe_and_static_file(wheel):
    names = set(wheel.namelist())
    shipped = [p for p in PACKAGE.rglob("*") if p.is_file() and p.suffix in (".yaml", ".html")]
    expected = {f"clipdepth/{p.relative_to(PACKAGE).as_posix()}" for p in shipped}
    assert any(n.startswith("clipdepth/configs/zeroshot/") for n in expected)  # the sub-folders count
    assert expected <= names, sorted(expected - names)


def test_the_licence_is_an_spdx_expression(wheel):
    metadata = next(n for n in wheel.namelist() if n.endswith(".dist-info/METADATA"))
    text = wheel.read(metadata).decode()
    assert "License-Expression: Apache-2.0" in text
