"""The fenced code blocks of README.md and docs/*.md are checked, so that the docs cannot drift from
the command line and the library.

What is checked, per block:

- ```bash / ```shell / ```sh: every command line that runs clipdepth (``clipdepth ...``, also after
  ``VAR=value`` words, and ``torchrun ... -m clipdepth.cli.main ...``) names a subcommand that exists
  (nested ones too: ``cache build``, ``data prepare nyu``, ``convert pureclip-released``), and every
  ``--flag`` on it appears in that subcommand's ``--help``; ``--config NAME`` names a built-in recipe
  (``src/clipdepth/configs/NAME.yaml``) unless NAME is a placeholder or a file. ``make TARGET`` names
  a Makefile target, and ``python benchmarks/X.py`` / ``python -m pytest tests/...`` a file that
  exists. The parsers are built in-process (``clipdepth.cli.main.build_parser``): no process is
  spawned, nothing is downloaded, no model is loaded. Synopsis lines (``[--vmin M]``, ``a|b``) are
  checked like commands: each alternative of ``a|b`` that is a subcommand is walked into.
- ```python: every block is compiled; blocks marked ``run`` are executed (each in a fresh namespace,
  in a temporary working folder).

Markers: an HTML comment on the line just before a block's opening fence (blank lines between are
allowed):

    <!-- docs-test: skip (why) -->   the block is not checked at all (say why: needs weights, ...)
    <!-- docs-test: run -->          a python block is executed, not only compiled: it must run
                                     offline, without weights or a GPU, in a few seconds

Relative links between these files (``[text](path)``) must point at files that exist.

Unmarked python blocks are compiled only; unmarked shell blocks are checked as above. Blocks of
other languages (text, yaml, json, none) are not checked.
"""

from __future__ import annotations

import argparse
import os
import re
import shlex
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
SHELL = {"bash", "shell", "sh", "console"}
FENCE = re.compile(r"^(\s*)(```+|~~~+)\s*([\w+-]*)\s*$")
MARKER = re.compile(r"<!--\s*docs-test:\s*(skip|run)\b[^>]*-->")
FLAG = re.compile(r"(?<![\w-])(--[A-Za-z][\w-]*)")
RECIPES = ROOT / "src" / "clipdepth" / "configs"


@dataclass
class Block:
    path: Path
    line: int  # 1-based line of the opening fence
    lang: str
    text: str
    marker: str | None  # "skip", "run" or None

    @property
    def name(self) -> str:
        return f"{self.path.relative_to(ROOT)}:{self.line}"


def blocks_of(text: str, path: Path = ROOT / "synthetic.md") -> list[Block]:
    """The fenced blocks of a markdown text, each with the marker comment just before it."""
    lines = text.splitlines()
    found, i = [], 0
    while i < len(lines):
        m = FENCE.match(lines[i])
        if not m:
            i += 1
            continue
        indent, fence, lang = m.groups()
        marker = None
        j = i - 1
        while j >= 0 and not lines[j].strip():
            j -= 1
        if j >= 0 and (mk := MARKER.search(lines[j])):
            marker = mk.group(1)
        body, k = [], i + 1
        while k < len(lines) and not (lines[k].strip().startswith(fence[0] * len(fence)) and lines[k].strip().strip(fence[0]) == ""):
            body.append(lines[k][len(indent) :] if lines[k].startswith(indent) else lines[k].lstrip())
            k += 1
        found.append(Block(path, i + 1, lang.lower(), "\n".join(body), marker))
        i = k + 1
    return found


def all_blocks() -> list[Block]:
    return [b for path in DOCS for b in blocks_of(path.read_text(encoding="utf-8"), path)]


# --- shell blocks -----------------------------------------------------------------------------


def command_lines(text: str) -> list[str]:
    """The block's commands, one string each: ``\\`` continuations joined, and synopsis lines that
    go on indented with ``[`` or ``--`` joined to the line before."""
    out: list[str] = []
    joining = False
    for raw in text.splitlines():
        line = raw.rstrip()
        if not line.strip():
            joining = False
            continue
        stripped = line.strip()
        if out and (joining or (raw[:1].isspace() and stripped[:1] in "[-" and not stripped.startswith("#"))):
            out[-1] += " " + stripped
        else:
            out.append(stripped)
        joining = out[-1].endswith("\\")
        if joining:
            out[-1] = out[-1][:-1]
    return out


def _words(line: str) -> list[str]:
    """The words of a command line without its comment; a line shlex cannot split (an unbalanced
    quote in a synopsis) is split on blanks."""
    try:
        lexer = shlex.shlex(line, posix=True, punctuation_chars=False)
        lexer.whitespace_split = True
        lexer.commenters = "#"
        return list(lexer)
    except ValueError:
        return line.split("#", 1)[0].split()


def clipdepth_args(words: list[str]) -> list[str] | None:
    """The arguments after ``clipdepth`` (or ``-m clipdepth.cli.main``) when this line runs it."""
    i = 0
    while i < len(words) and re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*=.*", words[i]):
        i += 1  # VAR=value before the command
    rest = words[i:]
    if not rest:
        return None
    if rest[0] == "clipdepth" or rest[0].endswith("/clipdepth"):
        return rest[1:]
    if rest[0] in {"torchrun", "python", "python3"} or rest[0].endswith("/python"):
        for k, w in enumerate(rest[:-1]):
            if w == "-m" and rest[k + 1] == "clipdepth.cli.main":
                return rest[k + 2 :]
    return None


def _subparsers(parser: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            return dict(action.choices)
    return {}


def _help(parser: argparse.ArgumentParser) -> str:
    return parser.format_help()


def _in_help(flag: str, helps: list[str]) -> bool:
    pattern = re.compile(re.escape(flag) + r"(?![\w-])")
    return any(pattern.search(h) for h in helps)


def check_clipdepth(args: list[str]) -> list[str]:
    """What is wrong with one ``clipdepth ARGS`` line: an unknown subcommand, a flag its ``--help``
    does not show, a ``--config`` that names no recipe. Empty when it is right."""
    from clipdepth.cli.main import SUBCOMMANDS, build_parser

    problems: list[str] = []
    if not args:
        return problems
    first = args[0].strip("[]()")
    if first.startswith("-"):  # `clipdepth --help`
        helps = [_help(build_parser([]))]
        paths: list[list[argparse.ArgumentParser]] = [[]]
    else:
        names = [n for n in first.split("|") if n]
        unknown = [n for n in names if n not in SUBCOMMANDS]
        if unknown:
            return [f"no subcommand {'/'.join(unknown)!r} (clipdepth has {', '.join(sorted(SUBCOMMANDS))})"]
        paths = []
        for name in names:
            top = _subparsers(build_parser([name]))[name]
            # walk into nested subcommands named by the following words (each alternative of a|b)
            frontier = [[top]]
            for word in args[1:]:
                if word.startswith("-") or word.startswith("["):
                    break
                grown = []
                for chain in frontier:
                    subs = _subparsers(chain[-1])
                    if not subs:
                        continue
                    alts = [a for a in word.strip("[]()").split("|") if a]
                    hits = [a for a in alts if a in subs]
                    if not hits and alts and all(re.fullmatch(r"[a-z][a-z0-9-]*", a) for a in alts):
                        problems.append(
                            f"`clipdepth {' '.join(c.prog.split()[-1] for c in chain)}` has no {word!r} (it has {', '.join(subs)})"
                        )
                    grown += [[*chain, subs[a]] for a in hits]
                if not grown:
                    break
                frontier = grown
            paths += frontier
        helps = [_help(p) for chain in paths for p in chain]
    for word in args:
        for flag in FLAG.findall(word.split("=", 1)[0] if word.startswith("--") else word):
            if flag in {"--help"}:
                continue
            if not _in_help(flag, helps):
                where = " / ".join(chain[-1].prog for chain in paths if chain) or "clipdepth"
                problems.append(f"{flag} is not in `{where} --help`")
    for k, word in enumerate(args[:-1]):
        if word in {"--config", "[--config"}:
            problems += _recipe_problems(args[k + 1])
    return problems


def _recipe_problems(value: str) -> list[str]:
    out = []
    for name in value.strip("[]()").split("|"):
        if not re.fullmatch(r"[a-z0-9_]+(/[a-z0-9_]+)?", name):
            continue  # a placeholder (RECIPE, zeroshot/NAME), a file (x.yaml) or a path
        if not (RECIPES / f"{name}.yaml").is_file():
            out.append(f"--config {name}: no recipe src/clipdepth/configs/{name}.yaml")
    return out


def _make_targets() -> set[str]:
    text = (ROOT / "Makefile").read_text()
    return set(re.findall(r"^([A-Za-z0-9_.-]+)\s*:(?!=)", text, flags=re.M))


def check_shell(text: str) -> list[str]:
    problems: list[str] = []
    for line in command_lines(text):
        words = _words(line)
        if not words:
            continue
        args = clipdepth_args(words)
        if args is not None:
            problems += [f"{line[:90]!r}: {p}" for p in check_clipdepth(args)]
        elif words[0] == "make":
            targets = [w for w in words[1:] if "=" not in w and not w.startswith("-")]
            problems += [f"{line[:90]!r}: no Makefile target {t!r}" for t in targets if t not in _make_targets()]
        elif words[0] in {"python", "python3"}:
            files = [w for w in words[1:] if re.fullmatch(r"(benchmarks|tests)/[\w/.-]+\.(py|sh)", w)]
            problems += [f"{line[:90]!r}: no file {f}" for f in files if not (ROOT / f).is_file()]
    return problems


# --- the tests --------------------------------------------------------------------------------

BLOCKS = all_blocks()
SHELL_BLOCKS = [b for b in BLOCKS if b.lang in SHELL and b.marker != "skip"]
PYTHON_BLOCKS = [b for b in BLOCKS if b.lang in {"python", "py"} and b.marker != "skip"]


def test_the_docs_have_blocks_to_check():
    assert len(SHELL_BLOCKS) > 20 and len(PYTHON_BLOCKS) > 3
    assert any(b.marker == "run" for b in PYTHON_BLOCKS)


def test_shell_blocks_match_the_command_line():
    problems = [f"{b.name}: {p}" for b in SHELL_BLOCKS for p in check_shell(b.text)]
    assert not problems, "\n".join(problems)


@pytest.mark.parametrize("block", PYTHON_BLOCKS, ids=lambda b: b.name)
def test_python_block(block, tmp_path, monkeypatch):
    code = compile(block.text, block.name, "exec")
    if block.marker == "run":
        monkeypatch.chdir(tmp_path)
        monkeypatch.setenv("HF_HUB_OFFLINE", "1")
        exec(code, {"__name__": "__docs__"})


LINK = re.compile(r"\]\(([^)\s]+)\)")


def broken_links(path: Path) -> list[str]:
    """Relative links of a markdown file whose target does not exist (URLs and anchors aside)."""
    bad = []
    for target in LINK.findall(path.read_text(encoding="utf-8")):
        if re.match(r"[a-z]+:", target) or target.startswith("#"):
            continue
        if not (path.parent / target.split("#", 1)[0]).exists():
            bad.append(f"{path.relative_to(ROOT)}: {target}")
    return bad


def test_relative_links_point_at_files():
    pages = [*DOCS, ROOT / "benchmarks" / "README.md"]
    bad = [b for page in pages for b in broken_links(page)]
    assert not bad, "\n".join(bad)


# --- the checker can fail ---------------------------------------------------------------------

SYNTHETIC = """
Text.

```bash
clipdepth predict photo.jpg --checkpoint ckpt/ --out depth/ --no-such-flag
clipdepth evaluate --checkpoint c --dataset nyu --data-root d --split s --tta
clipdepth frobnicate --out x
clipdepth cache build --cache c --bogus 1
clipdepth train --config no_such_recipe --out runs/x
clipdepth train --config pureclip_nyu data.root=/data/nyu \\
    --not-a-train-flag
make no-such-target
```

<!-- docs-test: skip (a synthetic block) -->
```bash
clipdepth predict x --made-up
```

<!-- docs-test: run -->
```python
x = 1
```
"""


def test_the_checker_finds_made_up_flags_commands_and_recipes():
    blocks = blocks_of(SYNTHETIC)
    assert [(b.lang, b.marker) for b in blocks] == [("bash", None), ("bash", "skip"), ("python", "run")]
    problems = check_shell(blocks[0].text)
    joined = "\n".join(problems)
    assert "--no-such-flag is not in" in joined
    assert "no subcommand 'frobnicate'" in joined
    assert "--bogus is not in" in joined
    assert "no recipe src/clipdepth/configs/no_such_recipe.yaml" in joined
    assert "--not-a-train-flag is not in" in joined
    assert "no Makefile target 'no-such-target'" in joined
    assert not any(p.startswith("'clipdepth evaluate") for p in problems)  # the correct line passes
    assert len(problems) == 6, joined


def test_synopsis_lines_are_checked():
    synopsis = (
        "clipdepth predict INPUT... --checkpoint DIR --out DIR [--npy] [--ply]\n"
        "                  [--vmin M] [--made-up-option M]\n"
        "clipdepth convert pureclip-released|tr2m-released CKPT.pth --out DIR [--dataset nyu|kitti]\n"
        "clipdepth data prepare nyu --mat FILE --splits FILE --out DIR\n"
    )
    problems = check_shell(synopsis)
    assert len(problems) == 1 and "--made-up-option" in problems[0], problems


def test_environment_words_and_torchrun_are_commands():
    assert clipdepth_args(_words("HF_HUB_OFFLINE=1 clipdepth predict a --out b")) == ["predict", "a", "--out", "b"]
    assert clipdepth_args(_words("torchrun --standalone -m clipdepth.cli.main train --config demo"))[0] == "train"
    assert clipdepth_args(_words("echo clipdepth")) is None
    assert os.path.basename(__file__).startswith("test_")


def test_the_link_check_finds_a_missing_page(tmp_path, monkeypatch):
    monkeypatch.setattr(sys.modules[__name__], "ROOT", tmp_path)
    (tmp_path / "there.md").write_text("x")
    page = tmp_path / "page.md"
    page.write_text("[ok](there.md#a) [web](https://example.org) [gone](docs/missing.md) [anchor](#top)")
    assert broken_links(page) == ["page.md: docs/missing.md"]
