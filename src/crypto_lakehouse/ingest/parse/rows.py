"""The rules every silver row meets, and the lineage it carries: one place for all parsers.

The per-file parser (`file.FileParser`, also the streamed tick parse) and the batch parser
(`batch`) check rows against these rules and add lineage with these helpers; provisional
REST/WS rows (`write.provisional`) take their lineage from here too. Adding a lineage column
or a rule means changing this module (and `datasets.LINEAGE_SCHEMA`), not each parser.

Lineage columns: `_source` (archive, rest, ws), `_bronze_key`, `_revision`, `_ingested_at`,
`_provisional` (true for REST/WS rows not yet confirmed by an archive file).
"""

from __future__ import annotations

import functools
from datetime import UTC, date, datetime, timedelta
from typing import TYPE_CHECKING

import polars as pl

from crypto_lakehouse.datasets import TIMESTAMP
from crypto_lakehouse.exceptions import FormatError
from crypto_lakehouse.sources.binance.archive.formats import required_columns

if TYPE_CHECKING:
    from collections.abc import Sequence

    from crypto_lakehouse.datasets import Dataset
    from crypto_lakehouse.ingest.parse.file import ParseTask

#: The lineage source of archive rows as an enum (see `archive_lineage`).
ARCHIVE_SOURCE = pl.Enum(["archive"])


@functools.lru_cache(maxsize=8192)
def period_bounds(period: str, stamp: str) -> tuple[datetime, datetime]:
    """Return the [start, end] instants a file may cover; `end` is the next period's start.

    Cached: batches ask for the same days of every symbol. Parsed with `date.fromisoformat`,
    not `strptime`, whose first call in a process imports `_strptime` and builds its locale
    tables (7-10 ms, in the first batch, the other batch thread waiting on the import lock).

    The end is inclusive because end-of-period labelled files (UM metrics before 2026-06-25)
    put the next midnight into the day's file (binance-archive.md §2.8).

    Raises:
        ValueError: a stamp not shaped `YYYY-MM-DD` (daily) or `YYYY-MM` (monthly).
    """
    daily = period == "daily"
    shaped = len(stamp) == 10 and stamp[4] == stamp[7] == "-" if daily else (
        len(stamp) == 7 and stamp[4] == "-"
    )  # fmt: skip
    if not shaped:
        raise ValueError(f"{period} stamp {stamp!r} is not {'YYYY-MM-DD' if daily else 'YYYY-MM'}")
    day = date.fromisoformat(stamp if daily else f"{stamp}-01")
    start = datetime(day.year, day.month, day.day, tzinfo=UTC)
    if daily:
        return start, start + timedelta(days=1)
    following = (start.replace(day=28) + timedelta(days=4)).replace(day=1)
    return start, following


def check_period(
    frame: pl.DataFrame, dataset: Dataset, task: ParseTask, first_line: int, *, strict: bool
) -> None:
    """Reject rows whose time lies outside the file's period: a wrong or mixed-up file.

    `strict` excludes the next period's first instant, which only end-labelled files use.

    Raises:
        FormatError: naming the first such row's line and time.
    """
    start, end = period_bounds(task.period, task.stamp)
    times = frame[dataset.time_column]
    late = (times >= end) if strict else (times > end)
    outside = ((times < start) | late).arg_true()
    if outside.len():
        row = int(outside[0])
        raise FormatError(
            f"line {first_line + row}: {dataset.time_column} {times[row]} lies outside "
            f"the file's period {task.stamp}",
            line=first_line + row,
            column=dataset.time_column,
            value=str(times[row]),
        )


def span_within_period(task: ParseTask, low: datetime | None, high: datetime | None) -> bool:
    """Tell whether a file's earliest and latest rows lie in its period (`check_period`)."""
    if low is None or high is None:
        return True
    start, end = period_bounds(task.period, task.stamp)
    return start <= low and high <= end


def batch_problems(frame: pl.DataFrame, dataset: Dataset) -> list[str]:
    """Name what breaks a rule in a batch of files: empty required cells, units mixed in a file.

    The batch has a per-row file index `_file` and a per-row unit flag `_us`; each name is a
    rule the per-file parser would report precisely for that file.
    """
    same_file = pl.col("_file") == pl.col("_file").shift(1)
    problems = frame.select(
        pl.any_horizontal(pl.col(required_columns(dataset)).is_null()).any().alias("nulls"),
        ((pl.col("_us") != pl.col("_us").shift(1)) & same_file).any().alias("mixed"),
    ).row(0, named=True)
    return [name for name, hit in problems.items() if hit]


def archive_lineage(task: ParseTask, *, enum: bool = False) -> list[pl.Expr]:
    """Return the lineage of every row of one archive file, as constant columns.

    Constant lineage text is dictionary-encoded (one value, n indices): materialising the
    archive key on millions of rows cost more than parsing them. Delta stores it as text.
    With `enum` it is an enum of its one value: polars exports a categorical to Arrow row by
    row (3.4 % of a large file's ingest), an enum as its indices and values. Frames that are
    concatenated later keep categoricals: enums of other values do not concatenate.
    """
    source, key = (ARCHIVE_SOURCE, pl.Enum([task.key])) if enum else (
        pl.Categorical(), pl.Categorical())  # fmt: skip
    return [
        pl.lit(task.key, dtype=key).alias("_bronze_key"),
        pl.lit(task.revision, dtype=pl.Int64).alias("_revision"),
        *_constant_lineage("archive", task.ingested_at, provisional=False, source_type=source),
    ]


def batch_lineage(tasks: Sequence[ParseTask], index: pl.Series) -> list[pl.Series]:
    """Return each row's per-file lineage (bronze key, revision), gathered by file index.

    The bronze key is an enum of the batch's keys, not a categorical: Parquet gets it as a
    dictionary column either way, but a categorical's conversion to Arrow went row by row
    (~1 ms per 72,000 rows), an enum's is its indices and its values as they are.
    """
    keys = [t.key for t in tasks]
    columns = [
        pl.Series("_bronze_key", keys, dtype=pl.Enum(list(dict.fromkeys(keys)))),
        pl.Series("_revision", [t.revision for t in tasks], dtype=pl.Int64),
    ]
    return [column.gather(index) for column in columns]


def batch_constant_lineage(task: ParseTask) -> list[pl.Expr]:
    """Return the lineage a batch's rows share (source, ingest instant, not provisional)."""
    return _constant_lineage(
        "archive", task.ingested_at, provisional=False, source_type=ARCHIVE_SOURCE
    )


def provisional_lineage(source: str, bronze_key: str, ingested_at: datetime) -> list[pl.Expr]:
    """Return the lineage of REST or WS rows: revision 1, provisional until the archive's."""
    return [
        pl.lit(bronze_key, dtype=pl.String).alias("_bronze_key"),
        pl.lit(1, dtype=pl.Int64).alias("_revision"),
        *_constant_lineage(source, ingested_at.astimezone(UTC), provisional=True),
    ]


def _constant_lineage(
    source: str,
    ingested_at: datetime,
    *,
    provisional: bool,
    source_type: pl.DataType | type[pl.DataType] = pl.String,
) -> list[pl.Expr]:
    """Return the source, ingest instant and provisional flag columns."""
    return [
        pl.lit(source, dtype=source_type).alias("_source"),
        pl.lit(ingested_at, dtype=TIMESTAMP).alias("_ingested_at"),
        pl.lit(provisional).alias("_provisional"),
    ]
