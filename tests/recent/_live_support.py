"""Helpers shared by the update, supersession, stream and CLI tests (plain functions)."""

from __future__ import annotations

import gzip
import io
import json
import zipfile
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import polars as pl

from crypto_lakehouse.query.engine import QueryEngine
from crypto_lakehouse.storage.root import LakeRoot
from tests.servers.archive_files import FIXTURE_TREE
from tests.servers.rest_data import SymbolSpec, ms
from tests.servers.rest_server import RestServer

if TYPE_CHECKING:
    from collections.abc import Sequence


NOW = datetime(2020, 1, 5, 6, tzinfo=UTC)
KLINE_KEY = "data/spot/daily/klines/BTCUSDT/1m/BTCUSDT-1m-{}.zip"


def rest_server(**options: Any) -> RestServer:
    """Return an unstarted REST stand-in whose spot BTCUSDT history starts 2019-12-31."""
    symbols = {
        "spot": [SymbolSpec("BTCUSDT", "BTCUSDT", listed_at=ms("2019-12-31"), base_price=7200.0)],
        "um": [SymbolSpec("BTCUSDT", "BTCUSDT", listed_at=ms("2026-03-01"))],
        "cm": [],
    }
    return RestServer(symbols=symbols, now_ms=ms("2020-01-05T06:00"), **options)


def drop_archive_day(archive_root: Path, day: str) -> None:
    """Remove one daily spot 1m file (and its CHECKSUM) from the archive stand-in's tree."""
    path = archive_root / KLINE_KEY.format(day)
    path.unlink()
    path.with_name(path.name + ".CHECKSUM").unlink()


def fixture_kline_lines(day: str) -> list[str]:
    """Return the CSV lines of the real spot BTCUSDT 1m fixture file of a day."""
    data = (FIXTURE_TREE / KLINE_KEY.format(day)).read_bytes()
    with zipfile.ZipFile(io.BytesIO(data)) as zipped:
        text = zipped.read(zipped.namelist()[0]).decode()
    return [line for line in text.splitlines() if line.strip()]


def rest_rows(lines: Sequence[str]) -> list[list[Any]]:
    """Convert kline CSV lines into Binance REST kline arrays."""
    rows = []
    for line in lines:
        f = line.split(",")
        rows.append([int(f[0]), f[1], f[2], f[3], f[4], f[5], int(f[6]), f[7], int(f[8]),
                     f[9], f[10], "0"])  # fmt: skip
    return rows


def change_close(lines: Sequence[str], index: int, close: str) -> list[str]:
    """Return the lines with the close price of line `index` replaced."""
    out = list(lines)
    fields = out[index].split(",")
    fields[4] = close
    out[index] = ",".join(fields)
    return out


def csv_from_rest(rows: Sequence[Sequence[Any]]) -> str:
    """Return archive CSV text for REST kline arrays."""
    return "\n".join(",".join(str(v) for v in row) for row in rows) + "\n"


def query(root: str, sql: str) -> pl.DataFrame:
    """Run SQL over a lake root."""
    return QueryEngine(LakeRoot.at(root)).sql(sql)


def bronze_lines(root: Path, prefix: str) -> list[dict[str, Any]]:
    """Return every JSON line of the gzip bronze objects under a local lake prefix."""
    lines: list[dict[str, Any]] = []
    for path in sorted((root / prefix).rglob("*.jsonl.gz")):
        with gzip.open(path, "rt") as handle:
            lines += [json.loads(line) for line in handle]
    return lines


def kline_event(symbol: str, open_ms: int, *, closed: bool = True, close: str = "101.0") -> Any:
    """Return a 1m kline WebSocket event."""
    return {
        "e": "kline", "E": open_ms + 60_000, "s": symbol,
        "k": {"t": open_ms, "T": open_ms + 59_999, "s": symbol, "i": "1m", "f": 1, "L": 9,
              "o": "100.0", "c": close, "h": "102.0", "l": "99.0", "v": "10.5", "n": 9,
              "x": closed, "q": "1060.0", "V": "4.0", "Q": "404.0", "B": "0"},
    }  # fmt: skip


def kline_rest_row(open_ms: int, close: str = "101.0") -> list[Any]:
    """Return the REST kline array equal to `kline_event(..., close=close)`."""
    return [open_ms, "100.0", "102.0", "99.0", close, "10.5", open_ms + 59_999, "1060.0", 9,
            "4.0", "404.0", "0"]  # fmt: skip
