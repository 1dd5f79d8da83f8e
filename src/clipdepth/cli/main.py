"""`clipdepth` command line: one module per subcommand, each with ``HELP`` (its line in
`clipdepth --help`) and ``register(subparsers)``; a module imports the libraries its command
needs inside its functions, so that listing or parsing commands stays quick."""

from __future__ import annotations

import argparse
import importlib
import os
import sys
import warnings

from .. import __version__
from ..errors import ClipdepthError
from .args import OVERRIDE, flag_for
from .report import report_unexpected, worker_failure

# Imported lazily so that `clipdepth score` does not pay for importing transformers.
SUBCOMMANDS = {
    "analyze": "clipdepth.cli.analyze",
    "benchmark": "clipdepth.cli.benchmark",
    "cache": "clipdepth.cli.cache",
    "caption": "clipdepth.cli.caption",
    "convert": "clipdepth.cli.convert",
    "data": "clipdepth.cli.data",
    "demo": "clipdepth.cli.demo",
    "train": "clipdepth.cli.train",
    "evaluate": "clipdepth.cli.evaluate",
    "export": "clipdepth.cli.export",
    "predict": "clipdepth.cli.predict",
    "score": "clipdepth.cli.score",
    "serve": "clipdepth.cli.serve",
}


def build_parser(argv: list[str]) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="clipdepth", description="Monocular metric depth with CLIP features (PureCLIP-Depth, TR2M).")
    parser.add_argument("--version", action="version", version=f"clipdepth {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    wanted = argv[0] if argv and argv[0] in SUBCOMMANDS else None
    for name, module in SUBCOMMANDS.items():
        if name == wanted:
            importlib.import_module(module).register(sub)
        elif wanted is None:  # `clipdepth --help`: each command's line, without what its options need
            sub.add_parser(name, help=importlib.import_module(module).HELP)
        else:
            sub.add_parser(name, help=f"see `clipdepth {name} --help`")
    return parser


def parse(argv: list[str]) -> argparse.Namespace:
    """Parse ``argv``; ``section.field=value`` overrides are accepted anywhere after the command,
    also after options (`train a=1 --out X b=2`), for commands that take overrides."""
    parser = build_parser(argv)
    args, unknown = parser.parse_known_args(argv)
    overrides = [u for u in unknown if OVERRIDE.match(u)]
    others = [u for u in unknown if not OVERRIDE.match(u)]
    if others:
        parser.error(f"unrecognized arguments: {' '.join(others)}")
    if overrides:
        if not isinstance(getattr(args, "overrides", None), list):
            parser.error(f"{argv[0]} takes no KEY=VALUE overrides: {' '.join(overrides)}")
        args.overrides = [*args.overrides, *overrides]
    return args


def main(argv: list[str] | None = None) -> int:
    """Run ``clipdepth`` with ``argv``; the exit status: 0, 2 for an error the user can act on (one
    line), 130 for Ctrl+C, 1 for anything else (one line, the traceback saved: ``report_unexpected``)."""
    argv = list(sys.argv[1:] if argv is None else argv)
    command = argv[0] if argv and argv[0] in SUBCOMMANDS else None
    name = f"clipdepth {command}" if command else "clipdepth"
    args = None
    # a warning (a deprecated name, say) is one line too, without the file and line it came from
    shown, warnings.formatwarning = warnings.formatwarning, lambda message, *_, **__: f"{name}: warning: {message}\n"
    try:
        args = parse(argv)
        return int(args.func(args) or 0)
    except ClipdepthError as exc:
        return _user_error(name, args, exc)
    except KeyboardInterrupt:
        # what a rerun does with what was done
        then = {
            "train": "; `--resume` continues from the last finished epoch",
            "benchmark": "; run it again to finish (finished evaluations are kept)",
        }.get(command, "")
        print(f"{name}: interrupted{then}", file=sys.stderr)
        return 130
    except BrokenPipeError:
        # stdout was closed early (`clipdepth score ... | head -1`): results are already written;
        # point stdout at /dev/null so the interpreter's final flush does not fail again.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
    except OSError as exc:  # a disk that filled up, a folder that vanished, a file system that refuses
        where = f"{exc.filename}: " if exc.filename else ""
        print(f"{name}: error: {where}{exc.strerror or exc}", file=sys.stderr)
        return 2
    except Exception as exc:  # noqa: BLE001 - the last resort: anything else is one line too
        if (known := worker_failure(exc)) is not None:
            return _user_error(name, args, known)
        print(report_unexpected(exc, name, argv), file=sys.stderr)
        return 1
    finally:
        warnings.formatwarning = shown


def _user_error(name: str, args: argparse.Namespace | None, exc: ClipdepthError) -> int:
    """Print ``exc`` as the one line of an error the user can act on, with the flag of its setting; 2."""
    flag = flag_for(args, exc.setting) if args is not None else None
    print(f"{name}: error: {exc}{f' ({flag})' if flag else ''}", file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main())
