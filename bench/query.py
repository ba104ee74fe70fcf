"""Benchmark query latency over a year of 1m klines for 20 symbols (~10.5 M silver rows).

The lake is written once (cached under bench/work/) directly as silver Delta rows, in the
layout the pipeline produces: partitioned by symbol and interval, one commit per 64 daily files
of one symbol (the ingest's commit batch). A second copy is compacted and z-ordered by open_time
(`lakehouse optimize`) so both layouts are measured. Targets: one symbol, one day of
1m: p50 ≤ 20 ms, p95 ≤ 50 ms; one symbol, one year resampled to 1h: p95 ≤ 500 ms.

    .venv/bin/python bench/query.py                    # both layouts, 30 warm runs per query
    .venv/bin/python bench/query.py --runs 100 --layouts optimized
"""

from __future__ import annotations

import argparse
import json
import random
import shutil
import statistics
import subprocess
import sys
import time
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

from _gen import KLINE_SYMBOLS, WORK, silver_klines_year
from _measure import cpu_info

if TYPE_CHECKING:
    from collections.abc import Callable

RESULTS = Path(__file__).resolve().parent / "results"
FIRST_DAY = date(2023, 1, 1)
DAYS_PER_COMMIT = 64
TARGETS_MS = {"day_1m": (20.0, 50.0), "year_1h": (None, 500.0), "klines_day": (20.0, 50.0)}
DAY_SQL = (
    "SELECT * FROM silver.spot_klines WHERE symbol = '{symbol}' AND interval = '1m' "
    "AND open_time >= TIMESTAMPTZ '{start}' AND open_time < TIMESTAMPTZ '{end}' "
    "ORDER BY open_time"
)
YEAR_SQL = (
    "SELECT date_trunc('hour', open_time) AS open_time, arg_min(open, open_time) AS open, "
    "max(high) AS high, min(low) AS low, arg_max(close, open_time) AS close, "
    "sum(volume) AS volume, sum(quote_volume) AS quote_volume, sum(trades) AS trades "
    "FROM silver.spot_klines WHERE symbol = '{symbol}' AND interval = '1m' "
    "AND open_time >= TIMESTAMPTZ '{start}' AND open_time < TIMESTAMPTZ '{end}' "
    "GROUP BY 1 ORDER BY 1"
)


def symbols_for(count: int) -> list[str]:
    """Return `count` symbol names: the known ones first, then made-up ones."""
    names = list(KLINE_SYMBOLS[:count])
    names += [f"SYM{index:02d}USDT" for index in range(count - len(names))]
    return names


def build_lake(root: Path, symbols: int, days: int) -> dict[str, Any]:
    """Write the silver spot_klines table once, in the pipeline's layout; reuse it after."""
    marker = root / ".complete.json"
    if marker.exists():
        return dict(json.loads(marker.read_text()))
    from crypto_lakehouse.datasets import get_dataset
    from crypto_lakehouse.storage import delta as tables
    from crypto_lakehouse.storage.maintenance import BAR_ROW_GROUP_ROWS
    from crypto_lakehouse.storage.root import LakeRoot

    shutil.rmtree(root, ignore_errors=True)
    lake = LakeRoot.at(str(root))
    dataset = get_dataset("spot", "klines")
    started = time.perf_counter()
    rows = commits = 0
    ingested_at = datetime.now(UTC)
    for index, symbol in enumerate(symbols_for(symbols)):
        frame = silver_klines_year(symbol, FIRST_DAY, days, 1000 + index, ingested_at)
        for first in range(0, days, DAYS_PER_COMMIT):
            part = frame.slice(first * 1440, DAYS_PER_COMMIT * 1440)
            # Same Parquet layout as the ingest's bar commits (16k-row groups).
            tables.append(lake, "silver", dataset.table, part.to_arrow(),
                          partition_by=list(dataset.partition_by),
                          row_group_rows=BAR_ROW_GROUP_ROWS)  # fmt: skip
            rows += part.height
            commits += 1
    meta = {"rows": rows, "commits": commits, "symbols": symbols, "days": days,
            "build_seconds": round(time.perf_counter() - started, 1)}  # fmt: skip
    marker.write_text(json.dumps(meta))
    return meta


def optimized_copy(source: Path, root: Path) -> dict[str, Any]:
    """Copy the lake; compact + z-order it by open_time as `lakehouse optimize` does."""
    marker = root / ".complete.json"
    if marker.exists():
        return dict(json.loads(marker.read_text()))
    from crypto_lakehouse.storage.maintenance import optimize_table, row_group_rows_for
    from crypto_lakehouse.storage.root import LakeRoot

    shutil.rmtree(root, ignore_errors=True)
    shutil.copytree(source, root)
    result = optimize_table(
        LakeRoot.at(str(root)),
        "silver",
        "spot_klines",
        zorder_by=["open_time"],
        vacuum_retention_hours=0,
        force_retention=True,
        row_group_rows=row_group_rows_for("spot_klines"),
    )
    meta = {"files_before": result.before.files, "files_after": result.after.files,
            "optimize_seconds": round(result.seconds, 1)}  # fmt: skip
    marker.write_text(json.dumps(meta))
    return meta


def layout_of(root: Path) -> dict[str, Any]:
    """Return the table's file count, bytes and row-group count."""
    import pyarrow.parquet as pq
    from deltalake import DeltaTable

    delta = DeltaTable(str(root / "silver" / "spot_klines"))
    files = delta.file_uris()
    groups = [pq.ParquetFile(f).metadata.num_row_groups for f in files[:5]]
    return {"version": delta.version(), "files": len(files),
            "mb": round(sum(Path(f).stat().st_size for f in files) / 1e6, 1),
            "row_groups_per_file_sample": groups}  # fmt: skip


def _stats(samples: list[float]) -> dict[str, float]:
    """Return p50/p95/mean/min/max in ms."""
    ordered = sorted(samples)
    p95 = ordered[min(len(ordered) - 1, round(0.95 * (len(ordered) - 1)))]
    return {"p50_ms": round(statistics.median(ordered) * 1000, 2),
            "p95_ms": round(p95 * 1000, 2), "mean_ms": round(statistics.fmean(ordered) * 1000, 2),
            "min_ms": round(ordered[0] * 1000, 2), "max_ms": round(ordered[-1] * 1000, 2),
            "runs": len(ordered)}  # fmt: skip


def _time(call: Callable[[], object], runs: int) -> tuple[float, list[float], object]:
    """Return the first (cold) duration, the warm durations, and the last result."""
    started = time.perf_counter()
    result = call()
    cold = time.perf_counter() - started
    warm = []
    for _ in range(runs):
        started = time.perf_counter()
        result = call()
        warm.append(time.perf_counter() - started)
    return cold, warm, result


def measure_api(root: Path, symbols: list[str], days: int, runs: int) -> dict[str, Any]:
    """Time the queries through one `crypto_lakehouse.Lake` (a warm, shared engine)."""
    from crypto_lakehouse import Lake

    rng = random.Random(42)
    lake = Lake(root)
    out: dict[str, Any] = {}
    year_end = (FIRST_DAY + timedelta(days=days)).isoformat()

    def pick_day() -> tuple[str, str, str]:
        day = FIRST_DAY + timedelta(days=rng.randrange(days))
        return rng.choice(symbols), day.isoformat(), (day + timedelta(days=1)).isoformat()

    def day_sql() -> object:
        symbol, start, end = pick_day()
        frame = lake.sql(DAY_SQL.format(symbol=symbol, start=start, end=end))
        assert frame.height == 1440, frame.height
        return frame

    def year_sql() -> object:
        symbol = rng.choice(symbols)
        query = YEAR_SQL.format(symbol=symbol, start=FIRST_DAY.isoformat(), end=year_end)
        frame = lake.sql(query)
        assert frame.height == days * 24, frame.height
        return frame

    def klines_day() -> object:
        symbol, start, end = pick_day()
        frame = lake.klines("spot", symbol, "1m", start, end)
        assert frame.height == 1440, frame.height
        return frame

    def refresh() -> object:
        return lake.engine.version("silver", "spot_klines")

    for name, call in (("day_1m", day_sql), ("year_1h", year_sql), ("klines_day", klines_day),
                       ("snapshot_check", refresh)):  # fmt: skip
        cold, warm, _ = _time(call, runs)
        out[name] = {"cold_ms": round(cold * 1000, 1), **_stats(warm)}
    lake.close()
    return out


def measure_cli(root: Path, symbols: list[str], days: int, runs: int) -> dict[str, Any]:
    """Time `lakehouse sql` (a new process per query) end to end."""
    exe = Path(sys.executable).with_name("lakehouse")
    day = FIRST_DAY + timedelta(days=days // 2)
    queries = {
        "day_1m": DAY_SQL.format(symbol=symbols[0], start=day.isoformat(),
                                 end=(day + timedelta(days=1)).isoformat()),
        "year_1h": YEAR_SQL.format(symbol=symbols[0], start=FIRST_DAY.isoformat(),
                                   end=(FIRST_DAY + timedelta(days=days)).isoformat()),
        "startup_only": "SELECT 1",
    }  # fmt: skip
    out: dict[str, Any] = {}
    for name, query in queries.items():
        samples = []
        for _ in range(runs):
            started = time.perf_counter()
            subprocess.run([str(exe), "sql", query, "--root", str(root), "--format", "csv"],
                           check=True, capture_output=True)  # fmt: skip
            samples.append(time.perf_counter() - started)
        out[name] = _stats(samples)
    return out


def _verdict(name: str, stats: dict[str, float]) -> str:
    """Say whether a query met its targets."""
    p50_target, p95_target = TARGETS_MS.get(name, (None, None))
    parts = []
    if p50_target is not None:
        parts.append(f"p50≤{p50_target:.0f} {'met' if stats['p50_ms'] <= p50_target else 'MISSED'}")
    if p95_target is not None:
        parts.append(f"p95≤{p95_target:.0f} {'met' if stats['p95_ms'] <= p95_target else 'MISSED'}")
    return "; ".join(parts)


def _print(layout: str, info: dict[str, Any], api: dict[str, Any], cli: dict[str, Any]) -> None:
    """Print one layout's figures."""
    print(f"\n== layout {layout}: {info['files']} files, {info['mb']} MB, "
          f"row groups/file {info['row_groups_per_file_sample']}")  # fmt: skip
    columns = f"{'cold ms':>9}{'p50 ms':>9}{'p95 ms':>9}{'max ms':>9}"
    print(f"{'query (Lake API, warm)':<28}{columns}  target")
    for name, stats in api.items():
        print(f"{name:<28}{stats['cold_ms']:>9.1f}{stats['p50_ms']:>9.1f}{stats['p95_ms']:>9.1f}"
              f"{stats['max_ms']:>9.1f}  {_verdict(name, stats)}")  # fmt: skip
    if cli:
        print(f"{'lakehouse sql (new process)':<28}{'':>9}{'p50 ms':>9}{'p95 ms':>9}{'max ms':>9}")
        for name, stats in cli.items():
            print(f"{name:<28}{'':>9}{stats['p50_ms']:>9.1f}{stats['p95_ms']:>9.1f}"
                  f"{stats['max_ms']:>9.1f}")  # fmt: skip


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """Parse the command line."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--symbols", type=int, default=20)
    parser.add_argument("--days", type=int, default=365)
    parser.add_argument("--runs", type=int, default=30, help="warm runs per query")
    parser.add_argument("--cli-runs", type=int, default=5, help="`lakehouse sql` runs per query")
    parser.add_argument("--layouts", default="pipeline,optimized")
    parser.add_argument("--out", type=Path, default=None)
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    """Build (or reuse) the lakes, measure, print, and write bench/results/query-<date>.json."""
    args = parse_args(argv)
    base = WORK / f"query-lake-{args.symbols}x{args.days}"
    built = build_lake(base, args.symbols, args.days)
    print(f"lake {base}: {built['rows']:,} rows in {built['commits']} commits "
          f"(built in {built['build_seconds']} s once, then cached)")  # fmt: skip
    symbols = symbols_for(args.symbols)
    report: dict[str, Any] = {"benchmark": "query", "when": datetime.now(UTC).isoformat(
        timespec="seconds"), "machine": cpu_info(), "lake": built, "layouts": {}}  # fmt: skip
    for layout in [name.strip() for name in args.layouts.split(",") if name.strip()]:
        root = base
        extra: dict[str, Any] = {}
        if layout == "optimized":
            root = WORK / f"query-lake-{args.symbols}x{args.days}-optimized"
            extra = optimized_copy(base, root)
        info = {**layout_of(root), **extra}
        api = measure_api(root, symbols, args.days, args.runs)
        cli = measure_cli(root, symbols, args.days, args.cli_runs) if args.cli_runs else {}
        _print(layout, info, api, cli)
        report["layouts"][layout] = {"table": info, "lake_api": api, "cli": cli}
    RESULTS.mkdir(parents=True, exist_ok=True)
    out = args.out or RESULTS / "query.json"
    out.write_text(json.dumps(report, indent=2) + "\n")
    print(f"\nresults written to {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
