"""The papers' published numbers, shipped as data (``evaluation/published/*.yaml``: each table with
its paper, arXiv id and table number, its rows and units), and the average rank of rows over a
table's columns, as the papers rank methods (docs/benchmark.md)."""

from __future__ import annotations

import functools
from dataclasses import dataclass
from importlib import resources
from typing import Any, Iterable, Mapping

import yaml

from ..errors import ConfigError
from .metrics import LOWER_IS_BETTER, METRIC_NAMES

# Metrics with a unit (the others are ratios or logs of ratios): a published millimetre value is
# divided by 1000 to sit beside ours, in metres.
LENGTH_METRICS = ("rmse", "sq_rel", "abs_diff")
# Values are ranked as the table shows them (3 decimals, as the papers print them), so that equal
# printed numbers share a rank and a reader can check every rank from the table.
RANK_DECIMALS = 3
UNITS = {"m": 1.0, "mm": 1000.0}  # published table units -> per metre


@dataclass(frozen=True)
class PublishedRow:
    method: str
    info: dict[str, str]  # descriptive columns (backbone, parameters, ...)
    values: dict[str, float | None]  # "<label>.<metric>" -> value in metres / unit-free; None: not reported
    avg_rank: float | None = None  # the paper's own average rank, as printed


@dataclass(frozen=True)
class PublishedTable:
    id: str
    paper: str
    arxiv: str
    venue: str
    table: str
    caption: str
    units: str
    note: str
    info: tuple[str, ...]
    columns: tuple[str, ...]
    avg_rank: bool
    rows: tuple[PublishedRow, ...]

    @property
    def source(self) -> str:
        short = self.paper.split(":")[0]
        return f"{short} (arXiv {self.arxiv}, {self.venue}), {self.table}"


def _check_column(column: str, where: str) -> None:
    label, _, metric = column.partition(".")
    if not label or metric not in METRIC_NAMES:
        raise ConfigError(f"{where}: column {column!r} is not <dataset label>.<metric>, metric one of {', '.join(METRIC_NAMES)}")


def parse_published(data: Mapping[str, Any], where: str) -> list[PublishedTable]:
    """The tables of one published-numbers mapping (the format of ``evaluation/published/*.yaml``);
    millimetre values of length metrics converted to metres. ConfigError naming ``where``."""
    try:
        tables = []
        for spec in data["tables"]:
            units = spec.get("units", "m")
            if units not in UNITS:
                raise ConfigError(f"{where}: table {spec['id']}: units {units!r}, expected one of {sorted(UNITS)}")
            columns = tuple(spec["columns"])
            for column in columns:
                _check_column(column, f"{where}: table {spec['id']}")
            rows = []
            for row in spec["rows"]:
                values = dict(row["values"])
                unknown = set(values) - set(columns)
                if unknown:
                    raise ConfigError(f"{where}: table {spec['id']}, {row['method']}: values for undeclared columns {sorted(unknown)}")
                for column, value in values.items():
                    if value is not None and column.partition(".")[2] in LENGTH_METRICS:
                        values[column] = float(value) / UNITS[units]
                rows.append(
                    PublishedRow(
                        str(row["method"]),
                        {k: str(row.get(k, "")) for k in spec.get("info", [])},
                        {c: (None if values.get(c) is None else float(values[c])) for c in columns},
                        None if row.get("avg_rank") is None else float(row["avg_rank"]),
                    )
                )
            tables.append(
                PublishedTable(
                    str(spec["id"]),
                    str(data["paper"]),
                    str(data["arxiv"]),
                    str(data.get("venue", "")),
                    str(spec["table"]),
                    str(spec.get("caption", "")),
                    units,
                    " ".join(str(spec.get("note", "")).split()),
                    tuple(spec.get("info", [])),
                    columns,
                    bool(spec.get("avg_rank", False)),
                    tuple(rows),
                )
            )
        return tables
    except ConfigError:  # a column said wrong, already one line
        raise
    except (KeyError, TypeError, ValueError) as exc:
        raise ConfigError(f"{where}: not a published-numbers file ({type(exc).__name__}: {exc})") from None


@functools.lru_cache(maxsize=1)
def published_tables() -> dict[str, PublishedTable]:
    """Every published table shipped with clipdepth, by id (e.g. ``tr2m-zeroshot``)."""
    tables: dict[str, PublishedTable] = {}
    folder = resources.files("clipdepth") / "evaluation" / "published"
    for item in sorted(folder.iterdir(), key=lambda p: p.name):
        if item.name.endswith(".yaml"):
            for table in parse_published(yaml.safe_load(item.read_text()), f"published/{item.name}"):
                tables[table.id] = table
    return tables


def average_ranks(
    rows: list[Mapping[str, float | None]], columns: Iterable[str], decimals: int | None = RANK_DECIMALS
) -> list[float | None]:
    """Each row's average rank over ``columns`` (``<label>.<metric>`` keys).

    Per column the rows that have a value are ranked 1 (best) to n: ascending for lower-is-better
    metrics, descending otherwise; rows with equal values (after rounding to ``decimals``, the
    printed precision) share the mean of the ranks they span. A row's average is over the columns
    where it has a value; None where it has none.
    """
    from scipy.stats import rankdata  # about 1 s to import: only where a table is ranked

    columns = list(columns)
    ranks: list[list[float]] = [[] for _ in rows]
    for column in columns:
        lower = LOWER_IS_BETTER[column.partition(".")[2]]
        present = [(i, float(r[column])) for i, r in enumerate(rows) if r.get(column) is not None]
        if decimals is not None:
            present = [(i, round(v, decimals)) for i, v in present]
        values = [v if lower else -v for _, v in present]
        for (i, _), rank in zip(present, rankdata(values, method="average") if values else ()):
            ranks[i].append(float(rank))
    return [sum(r) / len(r) if r else None for r in ranks]
