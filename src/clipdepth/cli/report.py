"""How `clipdepth` reports what it did not expect: a DataLoader worker's death in its own words, and
any other error as one line with its traceback saved to a file, to report."""

from __future__ import annotations

import os
import platform
import shlex
import sys
import tempfile
import time
import traceback
from pathlib import Path

from .. import __version__
from ..errors import ClipdepthError


def worker_failure(exc: Exception) -> ClipdepthError | None:
    """A DataLoader worker that died, or shared memory that ran out, as ``data.loader`` words it
    (``loader_failure``): torch's SIGCHLD handler raises a worker's death wherever this process is
    then (writing outputs, running the model), outside the loop over the loader that translates it.
    None for anything else; torch is not imported for an error that cannot be one of its."""
    if not isinstance(exc, RuntimeError) or "torch" not in sys.modules:
        return None
    from ..data.loader import loader_failure

    return loader_failure(exc)


TRACEBACK_DIR = "CLIPDEPTH_TRACEBACK_DIR"  # where report_unexpected saves tracebacks (default: the system's temp folder)


def report_unexpected(exc: Exception, name: str, argv: list[str]) -> str:
    """The line for an error clipdepth did not expect in ``name`` (``clipdepth predict``): its type
    and first line, and the file its full traceback (and ``argv``) was saved in, under
    ``$CLIPDEPTH_TRACEBACK_DIR``, else the system's temp folder, to report."""
    from ..io.atomic import write_text_atomic

    first = (str(exc).strip().splitlines() or [""])[0]
    line = f"{name}: error: {type(exc).__name__}{f': {first}' if first else ''}"
    folder = Path(os.environ.get(TRACEBACK_DIR) or tempfile.gettempdir())
    path = folder / f"{name.replace(' ', '-')}-{time.strftime('%Y%m%d-%H%M%S')}-{os.getpid()}.txt"
    text = (
        f"clipdepth {__version__}, Python {sys.version.split()[0]}, {platform.platform()}\n"
        f"command: clipdepth {shlex.join(argv)}\n\n" + "".join(traceback.format_exception(exc))
    )
    try:
        write_text_atomic(path, text)
    except (ClipdepthError, OSError) as error:
        return f"{line} (an unexpected error; its traceback could not be saved: {error}; set {TRACEBACK_DIR} to a writable folder)"
    return f"{line} (an unexpected error: please report it with its traceback, saved in {path})"
