"""Fingerprint the format of every archive file of a dataset and flag formats never seen before.

A loaded file's format comes from what the manifest recorded when it was parsed: its header
line ('' when none) and epoch unit; its column count and dtypes are the registry's (the
parse succeeded, so the file matched them). A file quarantined for its format has no such
record, so its first lines are sniffed from the kept bronze object: header, column count
and epoch unit as found, dtypes as the registry says for known positions and `unknown`
beyond. An extra column, a new or renamed header or a new epoch unit thus changes the
fingerprint, while a bad value in a file of the known layout does not.

Files are ordered by when they were first seen (the manifest's first event of the key),
then by stamp; a fingerprint is new when no earlier file of the dataset had it. The first
file of a dataset sets the baseline and is not flagged.
"""

from __future__ import annotations

import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Final

import polars as pl
import structlog

from crypto_lakehouse.exceptions import LakehouseError
from crypto_lakehouse.quality.checks.run import fingerprint
from crypto_lakehouse.quality.checks.tables import TIME_DTYPE
from crypto_lakehouse.sources.binance.archive.formats import MICROS_THRESHOLD, split_header
from crypto_lakehouse.sources.binance.archive.zipstream import iter_csv_chunks

if TYPE_CHECKING:
    from collections.abc import Mapping
    from datetime import datetime

    from crypto_lakehouse.datasets import Dataset
    from crypto_lakehouse.storage.root import LakeRoot

log = structlog.get_logger(__name__)

FINGERPRINTS_SCHEMA: Final = pl.Schema(
    {
        "table": pl.Utf8(),
        "key": pl.Utf8(),
        "revision": pl.Int64(),
        "symbol": pl.Utf8(),
        "stamp": pl.Utf8(),
        "status": pl.Utf8(),
        "header": pl.Utf8(),
        "column_count": pl.Int64(),
        "time_unit": pl.Utf8(),
        "fingerprint": pl.Utf8(),
        "seen_at": TIME_DTYPE,
        "first_seen": TIME_DTYPE,
        "is_new": pl.Boolean(),
    }
)
_DTYPE_NAMES: Final = {
    "int": "int64",
    "float": "float64",
    "bool": "bool",
    "str": "str",
    "ts": "epoch",
    "ts_text": "datetime_text",
    "date_text": "date_text",
    "ignore": "ignored",
}
_SNIFF_BYTES: Final = 1 << 16


@dataclass(slots=True, frozen=True)
class FileFormat:
    """What a raw file looks like: header names, column count, epoch unit, dtypes."""

    header: list[str] | None
    column_count: int
    time_unit: str
    dtypes: list[str]

    @property
    def fingerprint(self) -> str:
        """Return the format's 16-hex-digit fingerprint."""
        return fingerprint(self.header, self.column_count, self.time_unit, self.dtypes)


def _registry_dtypes(dataset: Dataset, count: int | None = None) -> list[str]:
    """Return the registry's dtype names by position, `unknown` past its last column."""
    names = [_DTYPE_NAMES[column.kind] for column in dataset.csv_columns]
    if count is None:
        return names
    return [names[i] if i < len(names) else "unknown" for i in range(count)]


def _default_unit(dataset: Dataset) -> str:
    """Return `text` for datasets whose times are text, `ms` otherwise."""
    kinds = {column.kind for column in dataset.csv_columns}
    return "ms" if "ts" in kinds else "text"


def loaded_format(dataset: Dataset, header: str, time_unit: str) -> FileFormat:
    """Return the format of a loaded file from its manifest record.

    Args:
        dataset: The file's dataset.
        header: The header line as recorded ('' for a headerless file).
        time_unit: The epoch unit as recorded (`ms`, `us`, or '' when the file has no epochs).

    Returns:
        The `FileFormat`; the column count is the header's when there is one.
    """
    names = [name.strip() for name in header.split(",")] if header else None
    count = len(names) if names else len(dataset.csv_columns)
    return FileFormat(names, count, time_unit or _default_unit(dataset), _registry_dtypes(dataset))


def sniff_format(dataset: Dataset, chunk: bytes) -> FileFormat:
    """Return the format of a raw CSV from its first bytes.

    Args:
        dataset: The dataset the file was published under.
        chunk: The first (line-aligned) bytes of the CSV.

    Returns:
        The `FileFormat` as found: header, fields of the first data line, epoch unit of
        the first epoch column by magnitude, registry dtypes (`unknown` for extra columns).
    """
    header, body = split_header(chunk)
    first = body.split(b"\n", 1)[0].decode("utf-8", "replace").strip()
    fields = first.split(",") if first else []
    unit = _default_unit(dataset)
    epochs = [i for i, column in enumerate(dataset.csv_columns) if column.kind == "ts"]
    if epochs and epochs[0] < len(fields) and fields[epochs[0]].strip().isdigit():
        unit = "us" if int(fields[epochs[0]]) >= MICROS_THRESHOLD else "ms"
    names = [name.strip() for name in header.split(",")] if header else None
    count = len(fields) if fields else len(names or [])
    return FileFormat(names, count, unit, _registry_dtypes(dataset, count))


def sniff_bronze(lake: LakeRoot, dataset: Dataset, bronze_path: str) -> FileFormat | None:
    """Return the sniffed format of a kept bronze object, or None when it cannot be read."""
    with tempfile.TemporaryDirectory(prefix="lakehouse-sniff-") as workdir:
        try:
            local = lake.get_file(bronze_path, Path(workdir) / "file.zip")
            chunk = next(iter_csv_chunks(local, _SNIFF_BYTES), b"")
        except (LakehouseError, OSError) as exc:
            log.warning("fingerprint_unreadable", path=bronze_path, error=str(exc))
            return None
    return sniff_format(dataset, chunk)


def fingerprint_files(
    table: str, files: pl.DataFrame, formats: Mapping[str, FileFormat]
) -> pl.DataFrame:
    """Fingerprint files and flag the first file of each format never seen before.

    Args:
        table: The silver table (dataset) the files belong to.
        files: One row per archive key with `key`, `revision`, `symbol`, `stamp`, `status`
            and `seen_at` (when the key was first seen); keys without a format are skipped.
        formats: The format per key.

    Returns:
        `FINGERPRINTS_SCHEMA` rows ordered by (seen_at, stamp, key): `first_seen` is when
        the fingerprint's first file was seen, `is_new` is true for that first file unless
        it is the dataset's very first file.
    """
    rows: list[dict[str, object]] = []
    first_seen: dict[str, datetime] = {}
    ordered = files.filter(pl.col("key").is_in(list(formats))).sort("seen_at", "stamp", "key")
    for index, row in enumerate(ordered.iter_rows(named=True)):
        fmt = formats[row["key"]]
        fp = fmt.fingerprint
        is_new = fp not in first_seen and index > 0
        first_seen.setdefault(fp, row["seen_at"])
        rows.append(
            {
                "table": table,
                "key": row["key"],
                "revision": row["revision"],
                "symbol": row["symbol"],
                "stamp": row["stamp"],
                "status": row["status"],
                "header": ",".join(fmt.header) if fmt.header else "",
                "column_count": fmt.column_count,
                "time_unit": fmt.time_unit,
                "fingerprint": fp,
                "seen_at": row["seen_at"],
                "first_seen": first_seen[fp],
                "is_new": is_new,
            }
        )
    return pl.DataFrame(rows, schema=FINGERPRINTS_SCHEMA)


def _stored_format(dataset: Dataset, row: dict[str, object]) -> FileFormat:
    """Return the format recorded in a `gold.format_fingerprints` row."""
    header = str(row["header"] or "")
    count = int(row["column_count"])  # type: ignore[call-overload]
    names = [name.strip() for name in header.split(",")] if header else None
    return FileFormat(names, count, str(row["time_unit"]), _registry_dtypes(dataset, count))


def table_fingerprints(
    lake: LakeRoot,
    dataset: Dataset,
    current: pl.DataFrame,
    events: pl.DataFrame,
    known: pl.DataFrame | None = None,
) -> pl.DataFrame:
    """Fingerprint every loaded or format-quarantined file of one dataset.

    Args:
        lake: The lake holding the bronze objects (read only for format-quarantined files
            not fingerprinted before).
        dataset: The dataset.
        current: The current manifest rows of the dataset's keys.
        events: Every manifest event of those keys (for when each key was first seen).
        known: The dataset's rows already in `gold.format_fingerprints`, so that a kept
            quarantined file is sniffed once per revision.

    Returns:
        `fingerprint_files` rows.
    """
    seen = events.group_by("key").agg(seen_at=pl.col("recorded_at").min())
    files = current.join(seen, on="key", how="left").with_columns(
        seen_at=pl.coalesce("seen_at", "recorded_at")
    )
    stored: dict[tuple[str, int], dict[str, object]] = {}
    if known is not None and known.height and "revision" in known.columns:
        sniffed = known.filter(pl.col("status") == "quarantined")
        stored = {(r["key"], r["revision"]): r for r in sniffed.iter_rows(named=True)}
    formats: dict[str, FileFormat] = {}
    for row in files.iter_rows(named=True):
        if row["status"] == "loaded":
            formats[row["key"]] = loaded_format(dataset, row["header"], row["time_unit"])
        elif (
            row["status"] == "quarantined"
            and str(row["reason"]).startswith("FormatError")
            and str(row["bronze_path"]).startswith("bronze/")
        ):
            before = stored.get((row["key"], row["revision"]))
            found = (
                _stored_format(dataset, before)
                if before is not None
                else sniff_bronze(lake, dataset, row["bronze_path"])
            )
            if found is not None:
                formats[row["key"]] = found
    return fingerprint_files(dataset.table, files, formats)
