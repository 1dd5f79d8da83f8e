"""Comparing two configs field by field (saved configs, resume states, feature-cache keys)."""

from __future__ import annotations

from typing import Any

ABSENT = "<absent>"  # how first_difference reports a field one side lacks


def first_difference(a: Any, b: Any, ignore: tuple[str, ...] = (), prefix: str = "") -> tuple[str, Any, Any] | None:
    """The first field in sorted order (dotted name, its value in ``a``, in ``b``) where two nested
    mappings differ, fields in ``ignore`` (dotted names) skipped; None when they agree. A field only one
    side has differs, with ``ABSENT`` as the other's value. Saved configs, resume states and
    feature-cache keys are compared with it."""
    if not (isinstance(a, dict) and isinstance(b, dict)):
        return None if a == b else (prefix, a, b)
    for key in sorted({*a, *b}, key=str):
        name = f"{prefix}.{key}" if prefix else str(key)
        if name in ignore:
            continue
        if key not in a or key not in b:
            return name, a.get(key, ABSENT), b.get(key, ABSENT)
        diff = first_difference(a[key], b[key], ignore, name)
        if diff is not None:
            return diff
    return None
