"""`pip install clipdepth` is complete and publishable: the sdist and wheel that `python -m build`
makes pass `twine check`, and the wheel holds every recipe and static file, the licence, the
NOTICE and the py.typed marker."""

import subprocess
import sys
import zipfile
from importlib.metadata import version
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "src" / "clipdepth"


def _build_isolation_flags() -> list[str]:
    """Build with this environment's setuptools when it is new enough (no download), else in an
    isolated build environment (setuptools from the package index)."""
    try:
        major = int(version("setuptools").split(".")[0])
    except Exception:  # noqa: BLE001 - not installed
        major = 0
    return ["--no-isolation"] if major >= 77 else []


@pytest.fixture(scope="module")
def dist(tmp_path_factory) -> Path:
    """The folder holding the sdist and the wheel built from it (about 10 s)."""
    pytest.importorskip("build", reason="the build package is not installed (pip install -e '.[dev]')")
    out = tmp_path_factory.mktemp("dist")
    done = subprocess.run(
        [sys.executable, "-m", "build", *_build_isolation_flags(), "--outdir", str(out), str(ROOT)],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    return out


@pytest.fixture(scope="module")
def wheel(dist) -> zipfile.ZipFile:
    (path,) = dist.glob("clipdepth-*.whl")
    return zipfile.ZipFile(path)


def test_twine_check_passes_on_the_sdist_and_the_wheel(dist):
    pytest.importorskip("twine", reason="twine is not installed (pip install -e '.[dev]')")
    files = sorted(str(p) for p in dist.iterdir())
    assert len(files) == 2, files  # one sdist, one wheel
    done = subprocess.run([sys.executable, "-m", "twine", "check", "--strict", *files], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stdout + done.stderr
    assert done.stdout.count("PASSED") == 2, done.stdout


def test_the_wheel_holds_every_recipe_and_static_file(wheel):
    names = set(wheel.namelist())
    shipped = [p for p in PACKAGE.rglob("*") if p.is_file() and p.suffix in (".yaml", ".html")]
    expected = {f"clipdepth/{p.relative_to(PACKAGE).as_posix()}" for p in shipped}
    assert any(n.startswith("clipdepth/configs/zeroshot/") for n in expected)  # the sub-folders count
    assert expected <= names, sorted(expected - names)
    assert "clipdepth/models/card_template.md" in names  # model cards are written from it


def test_the_wheel_holds_the_licence_the_notice_and_py_typed(wheel):
    names = set(wheel.namelist())
    assert "clipdepth/py.typed" in names
    licences = {Path(n).name: n for n in names if ".dist-info/licenses/" in n}
    assert set(licences) == {"LICENSE", "NOTICE"}, sorted(names)
    assert wheel.read(licences["LICENSE"]) == (ROOT / "LICENSE").read_bytes()
    assert b"Apache License" in wheel.read(licences["LICENSE"]) and b"END OF TERMS AND CONDITIONS" in wheel.read(licences["LICENSE"])


def test_the_metadata_says_licence_version_and_classifiers(wheel):
    metadata = next(n for n in wheel.namelist() if n.endswith(".dist-info/METADATA"))
    text = wheel.read(metadata).decode()
    assert "License-Expression: Apache-2.0" in text
    assert "License-File: LICENSE" in text and "License-File: NOTICE" in text
    assert "Classifier: Typing :: Typed" in text
    assert "Project-URL: PureCLIP-Depth paper, https://arxiv.org/abs/2603.16238" in text
    line = next(line for line in (ROOT / "pyproject.toml").read_text().splitlines() if line.startswith("version = "))
    written = line.split('"')[1]
    assert f"Version: {written}\n" in text  # pyproject.toml's number, the only one written


def test_the_sdist_carries_the_citation_and_the_changelog(dist):
    import tarfile

    (path,) = dist.glob("clipdepth-*.tar.gz")
    with tarfile.open(path) as sdist:
        names = {Path(n).name for n in sdist.getnames() if n.count("/") == 1}
    assert {"LICENSE", "NOTICE", "CITATION.cff", "CHANGELOG.md", "README.md", "pyproject.toml"} <= names, sorted(names)
