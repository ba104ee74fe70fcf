"""Generate Binance-shaped archive trees (zip + CHECKSUM) for the benchmarks, cached on disk.

Values are synthetic but shaped like the real files: a UM aggTrades monthly file (header row,
ms epochs, lowercase booleans, ids that increase) and spot 1m daily klines (no header, 12
columns, 8-decimal prices, ms epochs). Trees are cached under bench/work/ and reused.
"""

from __future__ import annotations

import calendar
import hashlib
import io
import json
import math
import zipfile
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import polars as pl

WORK = Path(__file__).resolve().parent / "work"
AGG_HEADER = "agg_trade_id,price,quantity,first_trade_id,last_trade_id,transact_time,is_buyer_maker"
AGG_ROWS_PER_CHUNK = 1_000_000
KLINE_SYMBOLS = ("BTCUSDT", "ETHUSDT", "BNBUSDT", "SOLUSDT", "XRPUSDT", "ADAUSDT")
_KLINE_BASE = {"BTCUSDT": 16500.0, "ETHUSDT": 1200.0, "BNBUSDT": 245.0, "SOLUSDT": 10.0,
               "XRPUSDT": 0.34, "ADAUSDT": 0.25}  # fmt: skip
_DONE = ".complete.json"


@dataclass(frozen=True, slots=True)
class Tree:
    """A generated archive tree: its root folder and what it holds."""

    root: Path
    keys: tuple[str, ...]
    csv_bytes: int
    zip_bytes: int
    rows: int


def _write_checksum(zip_path: Path) -> None:
    """Write `<zip>.CHECKSUM` as `sha256sum` prints it."""
    digest = hashlib.sha256()
    with zip_path.open("rb") as handle:
        while block := handle.read(8 << 20):
            digest.update(block)
    zip_path.with_name(zip_path.name + ".CHECKSUM").write_text(
        f"{digest.hexdigest()}  {zip_path.name}\n"
    )


def _load_cached(root: Path) -> Tree | None:
    """Return a tree generated earlier (its marker file is written last)."""
    marker = root / _DONE
    if not marker.exists():
        return None
    meta = json.loads(marker.read_text())
    return Tree(root, tuple(meta["keys"]), meta["csv_bytes"], meta["zip_bytes"], meta["rows"])


def _save(tree: Tree) -> Tree:
    """Write the marker that makes a tree reusable."""
    meta = {"keys": list(tree.keys), "csv_bytes": tree.csv_bytes, "zip_bytes": tree.zip_bytes,
            "rows": tree.rows}  # fmt: skip
    (tree.root / _DONE).write_text(json.dumps(meta))
    return tree


def _uniform(offset: int, rows: int, seed: int) -> pl.Expr:
    """Return `rows` deterministic pseudo-random floats in [0, 1) (hash of the row index)."""
    index = pl.int_range(offset, offset + rows, dtype=pl.Int64)
    return (index.hash(seed) // 2048).cast(pl.Float64) / float(1 << 53)


def _normal(offset: int, rows: int, seed: int) -> pl.Expr:
    """Return `rows` deterministic standard normal draws (Box-Muller over two uniforms)."""
    radius = (-2.0 * (1.0 - _uniform(offset, rows, seed)).log()).sqrt()
    return radius * (2.0 * math.pi * _uniform(offset, rows, seed + 1)).cos()


def agg_trades_chunk(
    offset: int,
    first_id: int,
    first_trade: int,
    start_ms: int,
    span_ms: int,
    rows: int,
    price: float,
    seed: int,
) -> tuple[pl.DataFrame, int, float]:
    """Return `rows` aggTrades spread evenly over [start_ms, start_ms + span_ms).

    Returns:
        The frame, the next first_trade_id, and the last price (for the next chunk).
    """
    gap = max(1, span_ms // rows)
    index = pl.int_range(0, rows, dtype=pl.Int64)
    fills = (_uniform(offset, rows, seed) * 5).cast(pl.Int64) + 1
    step = (_uniform(offset, rows, seed + 2) * 3).cast(pl.Int64) - 1
    jitter = (_uniform(offset, rows, seed + 3) * gap).cast(pl.Int64)
    frame = pl.select(
        agg_trade_id=index + first_id,
        price=(price + step.cum_sum().cast(pl.Float64) * 0.1).round(1),
        quantity=(-4.0 + 1.5 * _normal(offset, rows, seed + 4)).exp().clip(0.001).round(3),
        last_trade_id=fills.cum_sum() + (first_trade - 1),
        fills=fills,
        transact_time=(start_ms + index * span_ms // rows + jitter).cum_max()
        .clip(upper_bound=start_ms + span_ms - 1),
        is_buyer_maker=_uniform(offset, rows, seed + 6) < 0.5,
    ).select(
        "agg_trade_id", "price", "quantity",
        (pl.col("last_trade_id") - pl.col("fills") + 1).alias("first_trade_id"),
        "last_trade_id", "transact_time", "is_buyer_maker",
    )  # fmt: skip
    return frame, int(frame["last_trade_id"][-1]) + 1, float(frame["price"][-1])


def agg_trades_month(
    root: Path, symbol: str, year: int, month: int, csv_mb: int, *, seed: int = 7
) -> tuple[str, int, int]:
    """Write one UM monthly aggTrades zip (deflate) + CHECKSUM of about `csv_mb` MB of CSV.

    Returns:
        (archive key, CSV bytes, rows)
    """
    key = (f"data/futures/um/monthly/aggTrades/{symbol}/"
           f"{symbol}-aggTrades-{year:04d}-{month:02d}.zip")  # fmt: skip
    path = root / key
    path.parent.mkdir(parents=True, exist_ok=True)
    seed = seed * 1000 + year * 12 + month
    month_start = _epoch_ms(date(year, month, 1))
    probe, _, _ = agg_trades_chunk(0, 2 * 10**9, 5 * 10**9, month_start, 10**9, 100_000, 42e3, seed)
    per_row = len(probe.write_csv(include_header=False).encode()) / probe.height
    total_rows = int(csv_mb * 1_000_000 / per_row)
    days = calendar.monthrange(year, month)[1]
    month_ms = days * 86_400_000
    next_id, next_trade, price = (
        2_000_000_000 + month * 10**8,
        4_000_000_000 + month * 10**9,
        42000.0,
    )
    csv_bytes = written = 0
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_DEFLATED, compresslevel=6) as zf:
        member = zf.open(path.name.removesuffix(".zip") + ".csv", "w", force_zip64=True)
        with member:
            header = (AGG_HEADER + "\n").encode()
            member.write(header)
            csv_bytes += len(header)
            while written < total_rows:
                rows = min(AGG_ROWS_PER_CHUNK, total_rows - written)
                start = month_start + written * month_ms // total_rows
                span = (written + rows) * month_ms // total_rows - written * month_ms // total_rows
                frame, next_trade, price = agg_trades_chunk(
                    written, next_id, next_trade, start, span, rows, price, seed
                )
                data = frame.write_csv(include_header=False).encode()
                member.write(data)
                csv_bytes += len(data)
                next_id += rows
                written += rows
    _write_checksum(path)
    return key, csv_bytes, total_rows


def big_tree(csv_mb: int) -> Tree:
    """Return (generating once) a tree holding one UM BTCUSDT aggTrades file for 2024-01."""
    root = WORK / f"big-{csv_mb}MB"
    cached = _load_cached(root)
    if cached is not None:
        return cached
    key, csv_bytes, rows = agg_trades_month(root, "BTCUSDT", 2024, 1, csv_mb)
    return _save(Tree(root, (key,), csv_bytes, (root / key).stat().st_size, rows))


def months_tree(months: int, csv_mb: int) -> Tree:
    """Return a tree of consecutive monthly aggTrades files (2024-01 on) of `csv_mb` each."""
    root = WORK / f"months-{csv_mb}MB"
    cached = _load_cached(root)
    if cached is not None and len(cached.keys) >= months:
        return cached
    keys: list[str] = list(cached.keys) if cached else []
    csv_total = cached.csv_bytes if cached else 0
    rows_total = cached.rows if cached else 0
    for index in range(len(keys), months):
        year, month = 2024 + index // 12, index % 12 + 1
        key, csv_bytes, rows = agg_trades_month(root, "BTCUSDT", year, month, csv_mb)
        keys.append(key)
        csv_total += csv_bytes
        rows_total += rows
    zip_total = sum((root / k).stat().st_size for k in keys)
    return _save(Tree(root, tuple(keys), csv_total, zip_total, rows_total))


def _epoch_ms(day: date) -> int:
    """Return midnight UTC of a day as epoch milliseconds."""
    return int(datetime(day.year, day.month, day.day, tzinfo=UTC).timestamp() * 1000)


def kline_day(day: date, base: float, seed: int) -> tuple[bytes, float]:
    """Return one day of 1,440 spot 1m klines as CSV bytes (no header) and the last close."""
    rows = 1440
    offset = _epoch_ms(day) // 60_000
    open_time = pl.int_range(0, rows, dtype=pl.Int64) * 60_000 + _epoch_ms(day)
    frame = pl.select(
        open_time=open_time,
        close=base * (0.0008 * _normal(offset, rows, seed)).cum_sum().exp(),
        spread=(0.0006 * _normal(offset, rows, seed + 2)).abs(),
        volume=(3.0 + 0.8 * _normal(offset, rows, seed + 4)).exp(),
        taker=0.3 + 0.4 * _uniform(offset, rows, seed + 6),
        trades=(_uniform(offset, rows, seed + 7) * 2900).cast(pl.Int64) + 100,
    ).with_columns(open=pl.col("close").shift(1, fill_value=base))
    frame = frame.select(
        "open_time",
        pl.col("open").round(2),
        (pl.max_horizontal("open", "close") * (1 + pl.col("spread"))).round(2).alias("high"),
        (pl.min_horizontal("open", "close") * (1 - pl.col("spread"))).round(2).alias("low"),
        pl.col("close").round(2),
        pl.col("volume").round(5),
        (pl.col("open_time") + 59_999).alias("close_time"),
        (pl.col("volume") * pl.col("close")).round(8).alias("quote_volume"),
        "trades",
        (pl.col("volume") * pl.col("taker")).round(5).alias("taker_buy_volume"),
        (pl.col("volume") * pl.col("taker") * pl.col("close")).round(8)
        .alias("taker_buy_quote_volume"),
        pl.lit(0, dtype=pl.Int64).alias("ignore"),
    )  # fmt: skip
    data = frame.write_csv(include_header=False, float_precision=8).encode()
    return data, float(frame["close"][-1])


def klines_request(tree: Tree, first_day: date = date(2023, 1, 1)) -> dict[str, object]:
    """Return the ingest request (as `_steps.ingest_run` takes it) covering a kline tree."""
    symbols = sorted({key.split("/")[4] for key in tree.keys})
    days = -(-len(tree.keys) // len(symbols))
    last = first_day + timedelta(days=days - 1)
    return {"market": "spot", "data_type": "klines", "symbols": symbols, "interval": "1m",
            "start": first_day.isoformat(), "end": last.isoformat(),
            "period": "daily"}  # fmt: skip


def klines_tree(files: int, symbols: int = 3, first_day: date = date(2023, 1, 1)) -> Tree:
    """Return a tree of spot 1m daily kline zips: `symbols` symbols × ceil(files/symbols) days."""
    days = -(-files // symbols)
    names = KLINE_SYMBOLS[:symbols]
    root = WORK / f"small-{len(names)}x{days}"
    cached = _load_cached(root)
    if cached is not None:
        return cached
    keys: list[str] = []
    csv_total = zip_total = 0
    for index, symbol in enumerate(names):
        seed = 100 + index
        price = _KLINE_BASE[symbol]
        for offset in range(days):
            day = first_day + timedelta(days=offset)
            key = (f"data/spot/daily/klines/{symbol}/1m/"
                   f"{symbol}-1m-{day.isoformat()}.zip")  # fmt: skip
            data, price = kline_day(day, price, seed)
            buffer = io.BytesIO()
            with zipfile.ZipFile(buffer, "w", compression=zipfile.ZIP_DEFLATED) as zf:
                zf.writestr(Path(key).name.removesuffix(".zip") + ".csv", data)
            path = root / key
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(buffer.getvalue())
            _write_checksum(path)
            keys.append(key)
            csv_total += len(data)
            zip_total += len(buffer.getvalue())
    return _save(Tree(root, tuple(keys), csv_total, zip_total, 1440 * len(keys)))


def silver_klines_year(
    symbol: str, first_day: date, days: int, seed: int, ingested_at: datetime
) -> pl.DataFrame:
    """Return `days` of 1m spot klines for one symbol directly in the silver schema."""
    from crypto_lakehouse.datasets import get_dataset

    rows = days * 1440
    base = _KLINE_BASE.get(symbol, 100.0 + seed)
    start = _epoch_ms(first_day)
    index = pl.int_range(0, rows, dtype=pl.Int64)
    frame = pl.select(
        open_time=(start + index * 60_000) * 1000,
        close=base * (0.0008 * _normal(0, rows, seed)).cum_sum().exp(),
        spread=(0.0006 * _normal(0, rows, seed + 2)).abs(),
        volume=(3.0 + 0.8 * _normal(0, rows, seed + 4)).exp(),
        taker=0.3 + 0.4 * _uniform(0, rows, seed + 6),
        trades=(_uniform(0, rows, seed + 7) * 2900).cast(pl.Int64) + 100,
        day=(start + index * 60_000) // 86_400_000,
    ).with_columns(open=pl.col("close").shift(1, fill_value=base))
    stamp = pl.from_epoch(pl.col("day") * 86_400, time_unit="s").dt.strftime("%Y-%m-%d")
    key = pl.lit(f"data/spot/daily/klines/{symbol}/1m/{symbol}-1m-") + stamp + pl.lit(".zip")
    frame = frame.select(
        pl.lit(symbol).alias("symbol"),
        pl.lit("1m").alias("interval"),
        pl.col("open_time").cast(pl.Datetime("us", "UTC")),
        # Rounded like the archive's decimal text, so Parquet compresses it as it does real data.
        pl.col("open").round(2),
        (pl.max_horizontal("open", "close") * (1 + pl.col("spread"))).round(2).alias("high"),
        (pl.min_horizontal("open", "close") * (1 - pl.col("spread"))).round(2).alias("low"),
        pl.col("close").round(2),
        pl.col("volume").round(5),
        (pl.col("open_time") + 59_999_000).cast(pl.Datetime("us", "UTC")).alias("close_time"),
        (pl.col("volume") * pl.col("close")).round(8).alias("quote_volume"),
        "trades",
        (pl.col("volume") * pl.col("taker")).round(5).alias("taker_buy_volume"),
        (pl.col("volume") * pl.col("taker") * pl.col("close"))
        .round(8)
        .alias("taker_buy_quote_volume"),
        pl.lit("archive").alias("_source"),
        key.alias("_bronze_key"),
        pl.lit(1, dtype=pl.Int64).alias("_revision"),
        pl.lit(ingested_at).cast(pl.Datetime("us", "UTC")).alias("_ingested_at"),
        pl.lit(False).alias("_provisional"),
    )
    schema = get_dataset("spot", "klines").silver_schema()
    return frame.select([pl.col(name).cast(dtype) for name, dtype in schema.items()])
