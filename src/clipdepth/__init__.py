"""clipdepth: monocular metric depth with language-aligned (CLIP) features."""

from importlib.metadata import PackageNotFoundError, version

try:
    # pyproject.toml is the only place the number is written; the installed metadata carries it.
    __version__ = version("clipdepth")
except PackageNotFoundError:  # a source tree on the path that was never installed
    __version__ = "0+unknown"
