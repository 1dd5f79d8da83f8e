"""Argument types and checks every command shares: counts, output locations, overrides.

A wrong value is reported before any work, in one line that names the flag and the rule.
"""

from __future__ import annotations

import argparse
import re
import sys
from pathlib import Path

from ..io.paths import output_file, output_folder  # noqa: F401  (the commands take them from here)

# A config override on the command line: section.field=value (also accepted after options).
OVERRIDE = re.compile(r"^[A-Za-z_][\w.]*=")


def positive_float(text: str) -> float:
    """argparse type: a finite number > 0."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive number, got {text!r}") from None
    if not 0 < value < float("inf"):
        raise argparse.ArgumentTypeError(f"expected a positive finite number, got {text}")
    return value


def finite_float(text: str) -> float:
    """argparse type: a finite number."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
    if value != value or value in (float("inf"), float("-inf")):
        raise argparse.ArgumentTypeError(f"expected a finite number, got {text}")
    return value


def path_arg(text: str) -> Path:
    """argparse type: a non-empty path (an empty --out would silently mean the current folder)."""
    if not text.strip():
        raise argparse.ArgumentTypeError("expected a path, got an empty string")
    return Path(text)


def _int_at_least(least: int, meaning: str):
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected {meaning}, got {text!r}") from None
        if value < least:
            raise argparse.ArgumentTypeError(f"expected {meaning}, got {value}")
        return value

    return parse


positive_int = _int_at_least(1, "a positive integer")  # argparse type: an integer >= 1
non_negative_int = _int_at_least(0, "an integer >= 0")  # argparse type: an integer >= 0


def report_failures(command: str, failed: list[str], what: str, helps: list[tuple[str, str]] = (), noun: str = "image(s)") -> int:
    """List the ``noun`` a command skipped (one line each) on stderr, then the flags that help with
    them: of ``helps`` ((a marker in a failure's line, what helps), ...) those whose marker some
    line holds (none for an unreadable file); the exit status: 2 when any, else 0."""
    if not failed:
        return 0
    print(f"clipdepth {command}: {len(failed)} {noun} {what}:", file=sys.stderr)
    for message in failed:
        print(f"  {message}", file=sys.stderr)
    hint = "; ".join(text for marker, text in helps if any(marker in line for line in failed))
    if hint:
        print(f"  ({hint})", file=sys.stderr)
    return 2


def flag_for(args: argparse.Namespace, setting: str | None) -> str | None:
    """The command's flag for a library setting (``ClipdepthError.setting``): its own mapping
    (``set_defaults(flags=...)``), else ``--<setting>`` where the command has that option."""
    if setting is None:
        return None
    flags = getattr(args, "flags", {})
    if setting in flags:
        return flags[setting]
    return f"--{setting.replace('_', '-')}" if hasattr(args, setting) else None


def add_workers(parser: argparse.ArgumentParser, reads: str, setting: str | None = None) -> None:
    """The ``--workers N`` option: processes that read ``reads`` ahead (the config ``setting`` it
    sets, if any); None (automatic) unless given."""
    sets = f"; sets {setting}" if setting else ""
    parser.add_argument(
        "--workers",
        type=non_negative_int,
        metavar="N",
        help=f"processes reading {reads} ahead (default: automatic, from the CPU count; 0: read in the main process{sets})",
    )


def add_frozen_part_overrides(parser: argparse.ArgumentParser, example: str, scope: str = "") -> None:
    """``--set KEY=VALUE`` (repeatable, ``args.overrides``): where a loaded checkpoint's frozen parts
    load from (``registry.inference_overrides``); a trained head's own settings cannot change."""
    parser.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        dest="overrides",
        help=f"point a frozen part elsewhere, e.g. {example} (repeatable){scope}; a trained head's own settings cannot change",
    )
