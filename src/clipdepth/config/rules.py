"""The rules engine: every config value is checked once, when the config is made, with the rule
in the message. Each model family declares its fields' rules beside the fields (``Rules``); the
section checks them as it is made (``Section``)."""

from __future__ import annotations

import dataclasses
import functools
from enum import Enum
from typing import Any, ClassVar, NamedTuple

from ..errors import ConfigError

PRECISION_NAMES = ("bf16", "fp16", "fp32")  # *.precision (besides "auto" and "released")


def rule(test, text):
    return test, text


POSITIVE_INT = rule(lambda v: isinstance(v, int) and v >= 1, "a positive integer")
NON_NEGATIVE_INT = rule(lambda v: isinstance(v, int) and v >= 0, "an integer >= 0")
POSITIVE = rule(lambda v: v > 0 and v != float("inf"), "a positive finite number")
NON_NEGATIVE = rule(lambda v: 0 <= v < float("inf"), "a finite number >= 0")
FRACTION_OPEN = rule(lambda v: 0 < v < 1, "strictly between 0 and 1")
FRACTION_CLOSED = rule(lambda v: 0 <= v <= 1, "between 0 and 1")
UNIT_LEFT_OPEN = rule(lambda v: 0 < v <= 1, "in (0, 1]")
UNIT_RIGHT_OPEN = rule(lambda v: 0 <= v < 1, "in [0, 1)")


class Rules(NamedTuple):
    """A family's rules: ``values`` (dotted field -> (test, what it must be)), ``ranges`` (pairs that
    must satisfy low < high, with the lower bound's own floor and relation), ``divisible`` ((a, b):
    a must be a multiple of b) and ``exclusive`` ((a, b): not both set)."""

    values: dict[str, tuple]
    ranges: tuple = ()
    divisible: tuple = ()
    exclusive: tuple = ()


def check(cfg: Any, rules: Rules, section: str = "") -> Any:
    """Raise ConfigError naming the first field whose value breaks one of ``rules``; ``cfg`` is a
    Config, or its section ``section``. Returns cfg."""

    def lookup(dotted: str):
        value = cfg
        for part in (dotted[len(section) + 1 :] if section else dotted).split("."):
            value = getattr(value, part)
        return value

    prefix = f"{section}." if section else ""
    for name, (test, text) in rules.values.items():
        if not name.startswith(prefix):
            continue
        value = lookup(name)
        try:
            good = bool(test(value))
        except TypeError:
            good = False
        if not good:
            raise ConfigError(f"{name}={value!r}: must be {text}")
    for low_name, high_name, floor, relation in rules.ranges:
        if not low_name.startswith(prefix):
            continue
        low, high = lookup(low_name), lookup(high_name)
        low_ok = low >= floor if relation == ">=" else low > floor
        if not (low_ok and low < high and high < float("inf")):
            raise ConfigError(
                f"{low_name}={low!r}, {high_name}={high!r}: need {floor:g} {'<=' if relation == '>=' else '<'} "
                f"{low_name.split('.')[-1]} < {high_name.split('.')[-1]}"
            )
    for multiple_name, base_name in rules.divisible:
        if multiple_name.startswith(prefix) and base_name.startswith(prefix):
            multiple, base = lookup(multiple_name), lookup(base_name)
            if multiple % base:
                raise ConfigError(f"{multiple_name}={multiple!r}: must be a multiple of {base_name}={base!r}")
    for a_name, b_name in rules.exclusive:
        if a_name.startswith(prefix) and b_name.startswith(prefix) and lookup(a_name) and lookup(b_name):
            raise ConfigError(f"{a_name} and {b_name} exclude each other: set one")
    return cfg


class Choice(str, Enum):
    """A field's choices, as an Enum OmegaConf checks names against as a config is made (a recipe,
    an override, a saved config); its members are their own strings (``Residency.auto == "auto"``,
    formatted, printed and saved as ``auto``), so code and files see plain names."""

    __str__ = str.__str__
    __format__ = str.__format__
    __repr__ = str.__repr__

    @classmethod
    def names(cls) -> list[str]:
        return list(cls.__members__)


def choices(name: str, values: tuple[str, ...], module: str) -> type[Choice]:
    """The Choice type of a field whose values are ``values`` (``module``: where it is declared,
    so that its members pickle into data-loading workers)."""
    return Choice(name, [(value, value) for value in values], module=module)  # type: ignore[return-value]


Precision = choices("Precision", ("auto", "released", *PRECISION_NAMES), __name__)  # *.precision


@functools.cache
def _choice_fields(cls: type) -> tuple[tuple[str, type[Choice]], ...]:
    """A section's fields whose default is a Choice member, with its type."""
    return tuple((f.name, type(f.default)) for f in dataclasses.fields(cls) if isinstance(f.default, Choice))


class Section:
    """A config section that checks its values when it is made, wherever that is (a recipe, an
    override, a saved config, ``dataclasses.replace``, Python): ``rules`` (its family's, set beside
    them) under its name ``section`` ("" for the top-level fields)."""

    section: ClassVar[str] = ""
    rules: ClassVar[Rules | None] = None

    def __post_init__(self) -> None:
        # OmegaConf has checked a choice made through it; one made in Python is checked here alike.
        for name, kind in _choice_fields(type(self)):
            value = getattr(self, name)
            if not isinstance(value, kind):
                if not (isinstance(value, str) and value in kind.__members__):
                    dotted = f"{self.section}.{name}" if self.section else name
                    raise ConfigError(f"{dotted}={value!r}: must be one of {kind.names()}")
                object.__setattr__(self, name, kind[value])
        if self.rules is not None:
            check(self, self.rules, self.section)
