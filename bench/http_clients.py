"""Benchmark the archive client's small GETs: 300 daily zips and their CHECKSUMs (600 GETs).

`ArchiveClient.fetch` file by file, and `bulk_fetch.fetch_many` (what an ingest of small
files does), against a bare aiohttp loop over the same 600 URLs, the baseline of the same
run: the least a Python client on the event loop does per GET. The archive stand-in runs in
its own process; the steps take turns round after round. Reported per step: wall time, this
process's CPU time (every thread), and the paired ratio to the bare loop.

aiohttp is the one HTTP client of the sources. libcurl (pycurl, in a thread beside the loop)
was removed after the paired end-to-end ingest benchmark showed no gain of 15 % or more, on
the code before its removal, 2026-12-08, 2-core VM shared with other work (4 runs of
`bench/paired.py --variant "aiohttp:http_client=aiohttp" --variant "curl:http_client=curl"`,
6 or 12 rounds, the small-file scenario at 0 and at 10 ms latency): curl's time over
aiohttp's, median of the per-round ratios pooled over the runs, 0.94 at 0 ms (36 rounds;
runs 0.86-1.13) and 1.02 at 10 ms (24 rounds; runs 0.90-1.06). Per 600 GETs the client
CPU is aiohttp's (this script: 72 ms, as before the change, against 36 ms for libcurl's bulk).

    .venv/bin/python bench/http_clients.py --rounds 9 --latency-ms 0
"""

from __future__ import annotations

import argparse
import asyncio
import json
import resource
import statistics
import sys
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from _gen import WORK, klines_tree
from _measure import cpu_info, ensure_paths, scratch, served_archive

if TYPE_CHECKING:
    from collections.abc import Callable

RESULTS = Path(__file__).resolve().parent / "results"
STEPS = ("bare aiohttp", "fetch", "fetch_many")


def _cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


async def _bare_aiohttp(urls: list[str], concurrency: int) -> int:
    """GET every URL with a plain aiohttp session: the floor of a client on the loop."""
    import aiohttp

    gate = asyncio.Semaphore(concurrency)
    connector = aiohttp.TCPConnector(limit=concurrency * 2)
    async with aiohttp.ClientSession(connector=connector, auto_decompress=False) as session:

        async def one(url: str) -> int:
            async with gate, session.get(url) as response:
                return len(await response.read())

        return sum(await asyncio.gather(*(one(url) for url in urls)))


async def _fetch_all(served: Any, keys: list[str], spill: Path) -> int:
    """Fetch every key (zip and CHECKSUM, verified) with `ArchiveClient.fetch`, file by file."""
    from crypto_lakehouse.config import load_settings
    from crypto_lakehouse.sources.binance.archive.client import ArchiveClient

    settings = load_settings(root=str(spill / "lake"), binance_archive_url=served.archive_url,
                             binance_listing_url=served.listing_url)  # fmt: skip
    async with ArchiveClient(settings) as archive:
        bodies = await asyncio.gather(*(archive.fetch(key, spill) for key in keys))
    return sum(body.size for body in bodies)


async def _fetch_many(served: Any, keys: list[str], spill: Path) -> int:
    """Fetch every key through `bulk_fetch.fetch_many`, as an ingest does."""
    from crypto_lakehouse.config import load_settings
    from crypto_lakehouse.sources.binance.archive.bulk_fetch import fetch_many
    from crypto_lakehouse.sources.binance.archive.client import ArchiveClient, Body

    settings = load_settings(root=str(spill / "lake"), binance_archive_url=served.archive_url,
                             binance_listing_url=served.listing_url)  # fmt: skip
    size = 0
    async with ArchiveClient(settings) as archive:
        async for key, got in fetch_many(archive, keys, spill):
            if not isinstance(got, Body):
                raise RuntimeError(f"{key}: {got}")
            size += got.size
    return size


def _timed(step: Callable[[], int]) -> tuple[float, float]:
    """Run a step; return its wall and CPU seconds."""
    cpu, wall = _cpu_seconds(), time.perf_counter()
    step()
    return time.perf_counter() - wall, _cpu_seconds() - cpu


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rounds", type=int, default=9)
    parser.add_argument("--files", type=int, default=300)
    parser.add_argument("--latency-ms", type=float, default=0.0)
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()
    ensure_paths()
    tree = klines_tree(args.files)
    keys = sorted(tree.keys)
    steps = STEPS
    wall: dict[str, list[float]] = {s: [] for s in steps}
    cpu: dict[str, list[float]] = {s: [] for s in steps}
    with scratch(WORK) as spill, served_archive(tree.root, args.latency_ms / 1000) as served:
        base = served.archive_url.rstrip("/")
        urls = [f"{base}/{k}" for k in keys] + [f"{base}/{k}.CHECKSUM" for k in keys]
        runs: dict[str, Callable[[], int]] = {
            "bare aiohttp": lambda: asyncio.run(_bare_aiohttp(urls, args.concurrency)),
            "fetch": lambda: asyncio.run(_fetch_all(served, keys, spill)),
            "fetch_many": lambda: asyncio.run(_fetch_many(served, keys, spill)),
        }
        for step in steps:  # warm-up: imports, the stand-in's caches
            runs[step]()
        for round_number in range(args.rounds):
            order = steps if round_number % 2 == 0 else tuple(reversed(steps))
            for step in order:
                seconds, cpu_seconds = _timed(runs[step])
                wall[step].append(seconds)
                cpu[step].append(cpu_seconds)
    floor = wall["bare aiohttp"]
    ratios = {c: statistics.median(w / a for w, a in zip(wall[c], floor, strict=True))
              for c in steps}  # fmt: skip
    print(f"{len(urls)} GETs of {len(keys)} files, latency {args.latency_ms:g} ms, "
          f"concurrency {args.concurrency}, {args.rounds} rounds")  # fmt: skip
    print(f"{'client':16s} {'wall ms':>9s} {'CPU ms':>9s} {'wall ratio to bare':>24s}")
    rows = []
    for step in steps:
        row = {"client": step, "wall_ms": round(statistics.median(wall[step]) * 1000, 1),
               "cpu_ms": round(statistics.median(cpu[step]) * 1000, 1),
               "paired_ratio": round(ratios[step], 3)}  # fmt: skip
        rows.append(row)
        print(f"{step:16s} {row['wall_ms']:9.1f} {row['cpu_ms']:9.1f} {row['paired_ratio']:24.3f}")
    out = args.out or RESULTS / "http-clients.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(
        json.dumps(
            {
                "benchmark": "http_clients",
                "when": datetime.now(UTC).isoformat(timespec="seconds"),
                "machine": cpu_info(),
                "argv": sys.argv[1:],
                "rows": rows,
            },
            indent=1,
        )
    )
    print(f"results written to {out}")


if __name__ == "__main__":
    main()
