"""Measured steps of the ingest benchmarks; each runs in its own spawned process.

Every function here takes plain arguments (picklable), runs one thing, and returns a dict of
figures. `bench/ingest.py` and `bench/scaling.py` run them through `_measure.run_measured`.
"""

from __future__ import annotations

import asyncio
import cProfile
import io
import os
import pstats
import shutil
import struct
import tempfile
import time
import zipfile
from concurrent.futures import ProcessPoolExecutor
from datetime import UTC, date, datetime
from inspect import signature
from multiprocessing import get_context
from pathlib import Path
from typing import Any

_LOCAL_HEADER = struct.Struct("<4sHHHHHIIIHH")
AGG_SCHEMA_NAMES = ("agg_trade_id", "price", "quantity", "first_trade_id", "last_trade_id",
                    "transact_time", "is_buyer_maker")  # fmt: skip
KLINE_SCHEMA_NAMES = ("open_time", "open", "high", "low", "close", "volume", "close_time",
                      "quote_volume", "trades", "taker_buy_volume", "taker_buy_quote_volume",
                      "ignore")  # fmt: skip


def _quiet() -> None:
    """Keep the pipeline's (and Dask's) logs out of the benchmark's output."""
    import logging

    from crypto_lakehouse.telemetry.logging import configure_logging

    configure_logging("WARNING", json=True)
    # Dask's worker processes configure their own logging from dask's config (inherited env).
    os.environ["DASK_LOGGING__DISTRIBUTED"] = "error"
    for name in ("distributed", "bokeh", "tornado"):
        logging.getLogger(name).setLevel(logging.ERROR)


def _agg_schema() -> dict[str, Any]:
    """Return the explicit polars read schema of UM aggTrades."""
    import polars as pl

    kinds = [pl.Int64, pl.Float64, pl.Float64, pl.Int64, pl.Int64, pl.Int64, pl.Boolean]
    return dict(zip(AGG_SCHEMA_NAMES, kinds, strict=True))


def _kline_schema() -> dict[str, Any]:
    """Return the explicit polars read schema of spot klines."""
    import polars as pl

    kinds = [pl.Int64, *[pl.Float64] * 5, pl.Int64, pl.Float64, pl.Int64, pl.Float64,
             pl.Float64, pl.Int64]  # fmt: skip
    return dict(zip(KLINE_SCHEMA_NAMES, kinds, strict=True))


def _member_blocks(path: Path, block: int = 4 << 20) -> Any:
    """Yield the raw deflate stream of a zip's only member in blocks."""
    with zipfile.ZipFile(path) as archive:
        info = archive.infolist()[0]
    with path.open("rb") as raw:
        raw.seek(info.header_offset)
        fields = _LOCAL_HEADER.unpack(raw.read(_LOCAL_HEADER.size))
        raw.seek(fields[9] + fields[10], 1)
        remaining = info.compress_size
        while remaining > 0:
            data = raw.read(min(block, remaining))
            remaining -= len(data)
            yield data


def baseline_big(zip_path: str, out_dir: str, chunk_mb: int, compression: str) -> dict[str, Any]:
    """Bare single-process pipeline: isal inflate → polars.read_csv(schema) → write_parquet.

    Streams in chunks of `chunk_mb` so memory stays bounded, one Parquet file per chunk.
    The files stay in `out_dir` for the bench to delete at its end (see `_measure.scratch`).
    """
    import polars as pl
    from isal import isal_zlib

    schema = _agg_schema()
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    inflater = isal_zlib.decompressobj(-15)
    pending = bytearray()
    csv_bytes = rows = parts = 0
    first = True
    started = time.perf_counter()

    def flush(data: bytes) -> None:
        nonlocal rows, parts, first
        frame = pl.read_csv(data, has_header=first, new_columns=None, schema=schema)
        first = False
        frame.write_parquet(out / f"part-{parts:05d}.parquet", compression=compression)
        rows += frame.height
        parts += 1

    for block in _member_blocks(Path(zip_path)):
        piece = inflater.decompress(block)
        csv_bytes += len(piece)
        pending += piece
        if len(pending) >= chunk_mb << 20:
            cut = pending.rfind(b"\n") + 1
            flush(bytes(pending[:cut]))
            del pending[:cut]
    tail = inflater.flush()
    csv_bytes += len(tail)
    pending += tail
    if pending.strip():
        flush(bytes(pending))
    seconds = time.perf_counter() - started
    return {"seconds": seconds, "csv_bytes": csv_bytes, "rows": rows, "parts": parts}


def _parse_small_files(paths: list[str], out_dir: str, compression: str) -> tuple[int, int]:
    """Parse kline zips one at a time (isal inflate, read_csv, write_parquet)."""
    import polars as pl
    from isal import isal_zlib

    schema = _kline_schema()
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    csv_bytes = rows = 0
    for index, path in enumerate(paths):
        raw = b"".join(_member_blocks(Path(path)))
        data = isal_zlib.decompress(raw, wbits=-15)
        csv_bytes += len(data)
        frame = pl.read_csv(data, has_header=False, schema=schema)
        frame.write_parquet(out / f"file-{index:05d}.parquet", compression=compression)
        rows += frame.height
    return csv_bytes, rows


def baseline_small(
    paths: list[str], out_dir: str, processes: int, compression: str
) -> dict[str, Any]:
    """Bare file-at-a-time parse of many small zips, in 1 or more spawned processes.

    The files stay in `out_dir` for the bench to delete at its end (see `_measure.scratch`).
    """
    started = time.perf_counter()
    if processes <= 1:
        csv_bytes, rows = _parse_small_files(paths, out_dir, compression)
    else:
        shards = [paths[i::processes] for i in range(processes)]
        with ProcessPoolExecutor(processes, mp_context=get_context("spawn")) as pool:
            # Warm the workers first so process start-up is not counted as parse time.
            list(pool.map(time.sleep, [0.2] * processes))
            started = time.perf_counter()
            results = list(pool.map(_parse_small_files, shards,
                                    [f"{out_dir}/{i}" for i in range(processes)],
                                    [compression] * processes))  # fmt: skip
        csv_bytes = sum(r[0] for r in results)
        rows = sum(r[1] for r in results)
    seconds = time.perf_counter() - started
    return {"seconds": seconds, "csv_bytes": csv_bytes, "rows": rows, "processes": processes}


def ingest_run(
    archive_url: str,
    listing_url: str,
    lake_root: str,
    request: dict[str, Any],
    executor: str,
    workers: int,
    overrides: dict[str, Any],
) -> dict[str, Any]:
    """Run `crypto_lakehouse.ingest.run.ingest` end to end into a fresh lake."""
    from crypto_lakehouse.config import load_settings
    from crypto_lakehouse.ingest.run import IngestRequest, ingest

    _quiet()
    # The measured figure is download + verify + parse + silver commit: the quality refresh and
    # auto-compaction that follow an ingest are measured by their own tests, not here.
    settings = load_settings(
        root=lake_root, binance_archive_url=archive_url, binance_listing_url=listing_url,
        workers=workers, **{"auto_compact": False, **overrides},
    )  # fmt: skip
    req = IngestRequest(
        market=request["market"], data_type=request["data_type"],
        symbols=tuple(request["symbols"]), interval=request.get("interval"),
        start=date.fromisoformat(request["start"]), end=date.fromisoformat(request["end"]),
        period=request.get("period", "auto"), executor=executor,  # type: ignore[arg-type]
        dask_address=request.get("dask_address"), refresh_quality=False,
    )  # fmt: skip
    # Measured as `lakehouse ingest` runs it: the CLI opts into process tuning (gc freeze,
    # malloc_trim), which a library call leaves off; older versions always applied it.
    tuning = {"process_tuning": True} if "process_tuning" in signature(ingest).parameters else {}
    started = time.perf_counter()
    result = asyncio.run(ingest(req, settings, **tuning))
    seconds = time.perf_counter() - started
    silver = Path(lake_root) / "silver"
    files = list(silver.rglob("*.parquet"))
    return {
        "seconds": seconds,
        "loaded": len(result.loaded),
        "failed": [(f.key, f.outcome, f.reason) for f in result.failed],
        "rows": result.rows_loaded,
        "silver_files": len(files),
        "silver_bytes": sum(f.stat().st_size for f in files),
    }


def _top(profile: cProfile.Profile, limit: int) -> list[dict[str, Any]]:
    """Return the functions with most cumulative time, as rows."""
    stats = pstats.Stats(profile, stream=io.StringIO())
    rows = []
    for (filename, line, name), (_, calls, tottime, cumtime, _) in stats.stats.items():  # type: ignore[attr-defined]
        short = filename.split("site-packages/")[-1].split("src/")[-1]
        rows.append({"function": f"{short}:{line}({name})", "calls": calls,
                     "tottime_s": round(tottime, 3), "cumtime_s": round(cumtime, 3)})  # fmt: skip
    rows.sort(key=lambda r: -r["cumtime_s"])
    return rows[:limit]


def _direct_module() -> Any:
    """Return `crypto_lakehouse.ingest.write.ticks` when this version of the pipeline has it."""
    try:
        from crypto_lakehouse.ingest.write import ticks as direct
    except ImportError:
        return None
    return direct if hasattr(direct, "write_tick_files") else None


def _csv_bytes(output: Any) -> int:
    """Return the CSV bytes a parse output (ParsedFile or a direct write) covered."""
    parsed = getattr(output, "parsed", output)
    return int(getattr(parsed, "csv_bytes", 0))


def stages_run(
    archive_url: str, listing_url: str, keys: list[str], request: dict[str, Any], top: int
) -> dict[str, Any]:
    """Time the pipeline's stages one after another in one process.

    Each stage runs alone, so the sum shows what the parts cost without contending with each
    other (the end-to-end run overlaps them on the same cores). Large files and tick files:
    download to disk → bronze copy → parse (cProfile) → commit. Small bar files take the
    ingest's batched path: fetch into memory (body and CHECKSUM) → bronze writes beside the
    batch parse, in equal batches on one thread per core → one commit.
    """
    from crypto_lakehouse.config import Settings
    from crypto_lakehouse.datasets import get_dataset
    from crypto_lakehouse.storage.root import LakeRoot

    _quiet()
    work = Path(tempfile.mkdtemp(prefix="bench-stages-", dir=Path(__file__).parent / "work"))
    settings = Settings(root=str(work / "lake"), binance_archive_url=archive_url,
                        binance_listing_url=listing_url)  # fmt: skip
    lake = LakeRoot.at(settings.root)
    dataset = get_dataset(request["market"], request["data_type"])
    try:
        if not dataset.tick and request.get("period") == "daily":
            return _batched_stages(settings, lake, dataset, keys, request, work)
        return _file_stages(settings, lake, dataset, keys, request, work, top)
    finally:
        shutil.rmtree(work, ignore_errors=True)


def _task(settings: Any, dataset: Any, key: str, path: Path, request: dict[str, Any],
          work: Path, now: datetime) -> Any:  # fmt: skip
    """Describe the parse of one downloaded archive file as the pipeline would."""
    from crypto_lakehouse.ingest.parse.file import ParseTask

    name = key.rsplit("/", 1)[-1].removesuffix(".zip")
    stamp = name[-10:] if request.get("period") != "monthly" else name[-7:]
    return ParseTask(
        market=dataset.market, data_type=dataset.data_type, key=key,
        symbol=key.split("/")[5] if dataset.market != "spot" else key.split("/")[4],
        interval=request.get("interval"), period=request.get("period", "daily"),
        stamp=stamp, revision=1, zip_path=str(path),
        staged_path=str(work / "stage" / (key.replace("/", "_") + ".staged")),
        chunk_bytes=settings.tuning.parse_batch_mb << 20, ingested_at=now,
    )  # fmt: skip


def _batched_stages(settings: Any, lake: Any, dataset: Any, keys: list[str],
                    request: dict[str, Any], work: Path) -> dict[str, Any]:  # fmt: skip
    """Small bar files, stage by stage, on the ingest's batched path."""
    from concurrent.futures import ThreadPoolExecutor

    from crypto_lakehouse.ingest.parse.batch import BatchFile, store_and_parse_batch
    from crypto_lakehouse.ingest.runtime.executor import worker_count
    from crypto_lakehouse.ingest.write.bars import commit_bar_files
    from crypto_lakehouse.sources.binance.archive.client import ArchiveClient
    from crypto_lakehouse.storage.bronze import bronze_path

    async def fetch_all() -> list[Any]:
        async with ArchiveClient(settings) as client:
            return list(await asyncio.gather(*(client.fetch(k, work / "spill") for k in keys)))

    timings: dict[str, float] = {}
    started = time.perf_counter()
    bodies = asyncio.run(fetch_all())
    timings["download_s"] = time.perf_counter() - started
    now = datetime.now(UTC)
    files = [BatchFile(_task(settings, dataset, b.key, work / b.key, request, work, now),
                       body=b.data, bronze_path=bronze_path(b.key, 1))
             for b in sorted(bodies, key=lambda b: b.key)]  # fmt: skip
    workers = worker_count(settings.workers)
    count = workers * -(-len(files) // (workers * settings.tuning.parse_batch_files))
    size = -(-len(files) // count)
    uri = lake.table_uri("silver", dataset.table)
    started = time.perf_counter()
    with ThreadPoolExecutor(workers) as pool:
        batches = [files[i : i + size] for i in range(0, len(files), size)]
        writes = [w for ws in pool.map(lambda b: store_and_parse_batch(b, lake, uri), batches)
                  for w in ws]  # fmt: skip
    timings["bronze_copy_s"] = 0.0
    timings["parse_s"] = time.perf_counter() - started
    started = time.perf_counter()
    commit_bar_files(lake, dataset, [w.parsed for w in writes], writes, first_loads=True)
    timings["commit_s"] = time.perf_counter() - started
    return {
        **{k: round(v, 3) for k, v in timings.items()},
        "path": f"batched: {len(batches)} batches of ≤ {size} files on {workers} threads, "
        "bronze written beside the parse (parse_s includes it)",
        "csv_bytes": sum(w.parsed.csv_bytes for w in writes),
        "files": len(keys),
        "parse_top": [],
        "commit_top": [],
    }


def _file_stages(settings: Any, lake: Any, dataset: Any, keys: list[str],
                 request: dict[str, Any], work: Path, top: int) -> dict[str, Any]:  # fmt: skip
    """Large or tick files, stage by stage, one file at a time; parse and commit profiled."""
    from crypto_lakehouse.ingest.parse.file import parse_to_stage
    from crypto_lakehouse.ingest.write import staged as silver
    from crypto_lakehouse.sources.binance.archive.client import ArchiveClient

    timings: dict[str, float] = {}

    async def download_all() -> list[tuple[str, Path, int]]:
        async with ArchiveClient(settings) as client:

            async def one(key: str) -> tuple[str, Path, int]:
                sha = await client.fetch_checksum(key)
                got = await client.download(key, work / "download", sha)
                return key, got.path, got.size

            return list(await asyncio.gather(*(one(k) for k in keys)))

    started = time.perf_counter()
    downloaded = asyncio.run(download_all())
    timings["download_s"] = time.perf_counter() - started
    started = time.perf_counter()
    for key, path, _ in downloaded:
        lake.put_file(path, f"bronze/{key}")
    timings["bronze_copy_s"] = time.perf_counter() - started
    now = datetime.now(UTC)
    tasks = [_task(settings, dataset, key, path, request, work, now)
             for key, path, _ in downloaded]  # fmt: skip
    # Tick tables take the pipeline's direct path when it has one (workers write the
    # table's Parquet files, one small transaction adds them); others stage and commit.
    direct = _direct_module() if dataset.tick else None
    uri = lake.table_uri("silver", dataset.table)
    profile = cProfile.Profile()
    started = time.perf_counter()
    profile.enable()
    if direct is not None:
        outputs: list[Any] = [
            direct.write_tick_files(task, uri, lake.storage_options) for task in tasks
        ]
    else:
        outputs = [parse_to_stage(task) for task in tasks]
    profile.disable()
    timings["parse_s"] = time.perf_counter() - started
    csv_bytes = sum(_csv_bytes(o) for o in outputs)
    commit_profile = cProfile.Profile()
    started = time.perf_counter()
    commit_profile.enable()
    batch = settings.tuning.commit_batch_files
    for first in range(0, len(outputs), batch):
        if direct is not None:
            direct.commit_tick_files(lake, dataset, outputs[first : first + batch])
        else:
            silver.commit_files(lake, outputs[first : first + batch])
    commit_profile.disable()
    timings["commit_s"] = time.perf_counter() - started
    return {
        **{k: round(v, 3) for k, v in timings.items()},
        "path": "direct (workers write table files)" if direct is not None else "staged",
        "csv_bytes": csv_bytes,
        "files": len(keys),
        "parse_top": _top(profile, top),
        "commit_top": _top(commit_profile, top),
    }
