"""Parse Binance archive CSV text into typed polars frames, following the dataset registry.

Handles the drift of binance-archive.md §2: header rows detected per file, ms/µs epochs
detected per file by magnitude, `True`/`true` booleans, text datetimes, and columns mapped by
position. Errors name the line, the column and the offending value.
"""

from __future__ import annotations

import io
from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal

import polars as pl

from crypto_lakehouse.datasets import TIMESTAMP
from crypto_lakehouse.exceptions import FormatError

if TYPE_CHECKING:
    from crypto_lakehouse.datasets import Column, Dataset

TimeUnit = Literal["ms", "us"]
MICROS_THRESHOLD = 10**15  # epochs at or above this are µs (binance-archive.md §2.12)

_READ_DTYPES: dict[str, pl.DataType] = {
    "int": pl.Int64(),
    "float": pl.Float64(),
    "ts": pl.Int64(),
    "bool": pl.Boolean(),  # polars accepts True/true/TRUE: spot and futures spellings alike
}
_TEXT_FORMATS = {"ts_text": "%Y-%m-%d %H:%M:%S", "date_text": "%Y-%m-%d"}


@dataclass(frozen=True, slots=True)
class ChunkInfo:
    """What the first chunk of a file revealed: its header line and its timestamp unit."""

    header: str | None
    time_unit: TimeUnit | None


def read_schema(dataset: Dataset) -> dict[str, pl.DataType]:
    """Return the explicit polars schema for reading the CSV (inference halves speed)."""
    return {col.name: _READ_DTYPES.get(col.kind, pl.String()) for col in dataset.csv_columns}


def split_header(chunk: bytes) -> tuple[str | None, bytes]:
    """Split a header line off the first chunk when its first field is not a number or date.

    Binance added header rows to futures files over time and never to spot (§2.1).
    """
    first = chunk[:1]
    if not first or first.isdigit() or first == b"-":
        return None, chunk
    end = chunk.find(b"\n")
    header = chunk[: end if end >= 0 else len(chunk)].decode("utf-8", "replace").strip()
    return header, chunk[end + 1 :] if end >= 0 else b""


def detect_time_unit(frame: pl.DataFrame, dataset: Dataset) -> TimeUnit | None:
    """Return `us` when the file's epochs are microseconds, `ms` otherwise (None: no epochs)."""
    epoch_columns = [c.name for c in dataset.csv_columns if c.kind == "ts"]
    if not epoch_columns or frame.height == 0:
        return None
    peak = frame.select(pl.max_horizontal(pl.col(epoch_columns).max())).item()
    return "us" if peak is not None and peak >= MICROS_THRESHOLD else "ms"


def parse_chunk(
    chunk: bytes,
    dataset: Dataset,
    *,
    time_unit: TimeUnit | None,
    first_line: int,
) -> tuple[pl.DataFrame, TimeUnit | None]:
    """Parse one line-aligned CSV chunk into the dataset's typed data columns.

    Args:
        chunk: CSV bytes without a header line.
        dataset: the registry entry that says what each position holds.
        time_unit: the file's epoch unit if an earlier chunk decided it, else None.
        first_line: 1-based line number of the chunk's first line in the file (for errors).

    Returns:
        The typed frame (ignored columns dropped) and the file's epoch unit.

    Raises:
        FormatError: naming the line, column and value of the first bad cell.
    """
    schema = read_schema(dataset)
    try:
        raw = pl.read_csv(io.BytesIO(chunk), has_header=False, schema=schema, quote_char='"')
    except (
        pl.exceptions.ComputeError,
        pl.exceptions.NoDataError,
        pl.exceptions.SchemaError,
    ) as exc:
        raise locate_bad_cell(chunk, dataset, first_line) from exc
    unit = time_unit or detect_time_unit(raw, dataset)
    if time_unit is not None and raw.height:
        seen = detect_time_unit(raw, dataset)
        if seen is not None and seen != time_unit:
            raise FormatError(
                f"timestamps switch from {time_unit} to {seen} inside the file "
                f"(lines {first_line}..{first_line + raw.height - 1})"
            )
    typed = _convert(raw, dataset, unit, first_line)
    _check_required(typed, dataset, first_line)
    return typed, unit


def _convert(
    raw: pl.DataFrame, dataset: Dataset, unit: TimeUnit | None, first_line: int
) -> pl.DataFrame:
    """Turn read columns into silver dtypes: epochs to UTC µs, booleans, text datetimes."""
    exprs = [_convert_expr(col, unit) for col in dataset.csv_columns if col.kind != "ignore"]
    try:
        return raw.select(exprs)
    except pl.exceptions.InvalidOperationError as exc:
        bad = _first_bad_converted(raw, dataset)
        if bad is None:
            raise FormatError(f"could not convert rows: {exc}") from exc
        row, col, value = bad
        raise FormatError(
            f"line {first_line + row}: column {col} has invalid value {value!r}",
            line=first_line + row,
            column=col,
            value=value,
        ) from exc


def _convert_expr(col: Column, unit: TimeUnit | None) -> pl.Expr:
    """Return the expression converting one read column to its silver dtype."""
    source = pl.col(col.name)
    if col.kind == "ts":
        micros = source * 1000 if unit != "us" else source
        return micros.cast(TIMESTAMP).alias(col.name)
    if col.kind == "ts_text":
        return source.str.to_datetime(
            _TEXT_FORMATS["ts_text"], time_unit="us", time_zone="UTC", strict=True
        ).alias(col.name)
    if col.kind == "date_text":
        return source.str.to_date(_TEXT_FORMATS["date_text"], strict=True).alias(col.name)
    return source


def _first_bad_converted(raw: pl.DataFrame, dataset: Dataset) -> tuple[int, str, str] | None:
    """Find the first cell that a strict conversion rejects (text datetimes)."""
    for col in dataset.csv_columns:
        if col.kind in _TEXT_FORMATS:
            parsed = raw[col.name].str.strptime(pl.Datetime, _TEXT_FORMATS[col.kind], strict=False)
            bad = parsed.is_null() & raw[col.name].is_not_null()
        else:
            continue
        hits = bad.fill_null(False).arg_true()
        if hits.len():
            row = int(hits[0])
            return row, col.name, str(raw[col.name][row])
    return None


def required_columns(dataset: Dataset) -> list[str]:
    """Return columns that must never be empty: the key, the time, and every bar value."""
    names = {c for c in dataset.primary_key if c not in ("symbol", "interval")}
    names.add(dataset.time_column)
    if dataset.has_interval:
        names.update(c.name for c in dataset.csv_columns if c.kind != "ignore")
    present = {c.name for c in dataset.csv_columns}
    return sorted(names & present)


def _check_required(frame: pl.DataFrame, dataset: Dataset, first_line: int) -> None:
    """Raise FormatError at the first empty required cell (a short or blank line)."""
    for name in required_columns(dataset):
        nulls = frame[name].is_null().arg_true()
        if nulls.len():
            row = int(nulls[0])
            line = first_line + row
            raise FormatError(
                f"line {line}: required column {name} is empty (short line?)",
                line=line,
                column=name,
                value="",
            )


def locate_bad_cell(chunk: bytes, dataset: Dataset, first_line: int) -> FormatError:
    """Return a FormatError naming the first line whose fields do not fit the dataset."""
    expected = len(dataset.csv_columns)
    lines = chunk.split(b"\n")
    for offset, line in enumerate(lines):
        if not line.strip():
            continue
        fields = line.decode("utf-8", "replace").rstrip("\r").split(",")
        if len(fields) != expected:
            return FormatError(
                f"line {first_line + offset}: expected {expected} fields, found {len(fields)}",
                line=first_line + offset,
                value=line.decode("utf-8", "replace")[:200],
            )
        for col, value in zip(dataset.csv_columns, fields, strict=True):
            if not _fits(col.kind, value):
                return FormatError(
                    f"line {first_line + offset}: column {col.name} has invalid value {value!r}",
                    line=first_line + offset,
                    column=col.name,
                    value=value,
                )
    return FormatError(f"unparseable CSV starting at line {first_line}")


def _fits(kind: str, value: str) -> bool:
    """Tell whether one text cell parses as the column kind (used only to locate errors)."""
    if kind in ("int", "ts"):
        return value.lstrip("-").isdigit()
    if kind == "bool":
        return value.lower() in ("true", "false")
    if kind == "float":
        if value == "":
            return True
        try:
            float(value)
        except ValueError:
            return False
        return True
    return True
