"""Benchmark how ingest time grows with input size, and what a second Dask worker buys.

Input: consecutive monthly UM aggTrades files of --file-mb MB of CSV each (cached under
bench/work/), so 0.25 GB is one file and 4 GB sixteen. Each size is ingested end to end (stand-in
HTTP server, fresh lake, own process); time per GB should stay within ±15% of the median across
sizes (linear scaling); each size runs --repeat times (3) and its median run counts.
Then the largest size is ingested with executor="dask" on a
LocalCluster of 1 and of 2 worker processes.

    .venv/bin/python bench/scaling.py                  # 0.25, 0.5, 1 GB (a few minutes)
    .venv/bin/python bench/scaling.py --max-gb 4       # the full 0.25 … 4 GB ladder
    .venv/bin/python bench/scaling.py --no-dask --executor processes
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import sys
import tempfile
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

from _gen import WORK, months_tree
from _measure import MB, cpu_info, ensure_paths, run_measured, served_archive
from _steps import ingest_run

RESULTS = Path(__file__).resolve().parent / "results"
SIZES_GB = (0.25, 0.5, 1.0, 2.0, 4.0)
TOLERANCE = 0.15


def _month_end(index: int) -> date:
    """Return the last day of the index-th month counted from 2024-01 (0-based)."""
    year, month = 2024 + (index + 1) // 12, (index + 1) % 12 + 1
    return date(year, month, 1) - timedelta(days=1)


def _ingest(server: Any, months: int, executor: str, workers: int, label: str) -> dict[str, Any]:
    """Ingest the first `months` files into a fresh lake in a child process."""
    request = {"market": "um", "data_type": "aggTrades", "symbols": ["BTCUSDT"],
               "start": "2024-01-01", "end": _month_end(months - 1).isoformat(),
               "period": "monthly"}  # fmt: skip
    lake = Path(tempfile.mkdtemp(prefix="lake-scaling-", dir=WORK))
    try:
        measured = run_measured(ingest_run, server.archive_url, server.listing_url, str(lake),
                                request, executor, workers, {})  # fmt: skip
    finally:
        shutil.rmtree(lake, ignore_errors=True)
    if measured.error:
        print(f"{label} failed:\n{measured.error}", file=sys.stderr)
    return {
        "seconds": measured.value.get("seconds"),
        "files": measured.value.get("loaded"),
        "rows": measured.value.get("rows"),
        "failed": measured.value.get("failed"),
        "peak_rss_tree_mb": measured.peak_rss_tree_mb,
        "error": measured.error,
    }


def _fit(ladder: list[dict[str, Any]]) -> tuple[float, float]:
    """Fit time = fixed + marginal × GB by least squares (fixed costs hide in small sizes)."""
    points = [(r["input_gb"], r["seconds"]) for r in ladder if r["seconds"]]
    if len(points) < 2:
        return float("nan"), float("nan")
    slope, intercept = statistics.linear_regression(*zip(*points, strict=True))
    return intercept, slope


def _marginal_spread(ladder: list[dict[str, Any]], fixed: float, marginal: float) -> float:
    """Return the largest relative gap between (time − fixed) / GB and the fitted slope."""
    gaps = [abs((r["seconds"] - fixed) / r["input_gb"] / marginal - 1)
            for r in ladder if r["seconds"] and marginal]  # fmt: skip
    return max(gaps) if gaps else float("nan")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """Parse the command line."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--max-gb", type=float, default=1.0, help="largest input (default 1)")
    parser.add_argument("--file-mb", type=int, default=250, help="CSV MB per monthly file")
    parser.add_argument("--executor", default="threads", help="threads | processes | dask")
    parser.add_argument("--workers", type=int, default=0, help="parse workers (0 = cores)")
    parser.add_argument("--no-dask", action="store_true", help="skip the 1 vs 2 Dask workers run")
    parser.add_argument("--repeat", type=int, default=3, help="runs per size; the median counts")
    parser.add_argument("--out", type=Path, default=None)
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    """Run the size ladder and the Dask comparison; write bench/results/scaling-<date>.json."""
    args = parse_args(argv)
    sizes = [gb for gb in SIZES_GB if gb <= args.max_gb + 1e-9]
    months_needed = [max(1, round(gb * 1000 / args.file_mb)) for gb in sizes]
    tree = months_tree(max(months_needed), args.file_mb)
    per_file = tree.csv_bytes / len(tree.keys)
    ensure_paths()
    ladder: list[dict[str, Any]] = []
    dask: dict[str, Any] = {}
    with served_archive(tree.root) as server:
        # One untimed pass first: the first run pays for a cold page cache of the served files
        # and the stand-in's first ETags, which is not a cost of the data volume.
        _ingest(server, months_needed[0], args.executor, args.workers, "warm-up")
        print(f"{'input GB':>9}{'files':>7}{'seconds':>9}{'s per GB':>10}{'MB/s':>8}{'RSS MB':>8}")
        for gb, months in zip(sizes, months_needed, strict=True):
            # The median of several runs: on a shared 2-core VM one run varies by ±10 %.
            runs = [_ingest(server, months, args.executor, args.workers, f"{gb} GB")
                    for _ in range(args.repeat)]  # fmt: skip
            timed = sorted((r for r in runs if r["seconds"]), key=lambda r: r["seconds"])
            run = dict(timed[len(timed) // 2]) if timed else runs[0]
            run["repeats_seconds"] = [r["seconds"] for r in runs]
            csv_bytes = per_file * months
            seconds = run["seconds"] or float("nan")
            run.update(input_gb=round(csv_bytes / 1e9, 3), months=months,
                       seconds_per_gb=round(seconds / (csv_bytes / 1e9), 2),
                       mb_per_s=round(csv_bytes / MB / seconds, 1))  # fmt: skip
            ladder.append(run)
            rss = run["peak_rss_tree_mb"] or 0.0
            print(f"{run['input_gb']:>9.2f}{months:>7}{seconds:>9.1f}{run['seconds_per_gb']:>10.1f}"
                  f"{run['mb_per_s']:>8.1f}{rss:>8.0f}")  # fmt: skip
        if not args.no_dask:
            months = months_needed[-1]
            csv_bytes = per_file * months
            for workers in (1, 2):
                run = _ingest(server, months, "dask", workers, f"dask ×{workers}")
                seconds = run["seconds"] or float("nan")
                run["mb_per_s"] = round(csv_bytes / MB / seconds, 1)
                dask[f"workers_{workers}"] = run
                print(f"dask LocalCluster, {workers} worker process(es), {csv_bytes / 1e9:.2f} GB: "
                      f"{seconds:.1f} s, {run['mb_per_s']:.1f} MB/s")  # fmt: skip
    per_gb = [r["seconds_per_gb"] for r in ladder if r["seconds"]]
    median = statistics.median(per_gb) if per_gb else float("nan")
    spread = max(abs(v / median - 1) for v in per_gb) if per_gb else float("nan")
    linear = spread <= TOLERANCE
    fixed, marginal = _fit(ladder)
    print(f"\nseconds per GB: median {median:.1f}, largest deviation {spread * 100:.0f}% "
          f"→ {'linear (within ±15%)' if linear else 'NOT within ±15%'}")  # fmt: skip
    print(f"least-squares fit: time ≈ {fixed:.2f} s fixed + {marginal:.2f} s per GB")
    residual = _marginal_spread(ladder, fixed, marginal)
    print(f"per-GB time without the fixed part deviates at most {residual * 100:.0f}% "
          "from the fitted slope")  # fmt: skip
    speedup = None
    if dask.get("workers_1", {}).get("seconds") and dask.get("workers_2", {}).get("seconds"):
        speedup = round(dask["workers_1"]["seconds"] / dask["workers_2"]["seconds"], 2)
        print(f"dask: 2 workers vs 1 → {speedup}× throughput")
    report = {
        "benchmark": "scaling",
        "when": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": cpu_info(),
        "argv": sys.argv[1:] if argv is None else argv,
        "executor": args.executor,
        "file_csv_mb": round(per_file / MB, 1),
        "ladder": ladder,
        "seconds_per_gb_median": round(median, 2),
        "max_deviation": round(spread, 3),
        "linear_within_15pct": linear,
        "fit_fixed_seconds": round(fixed, 3),
        "fit_seconds_per_gb": round(marginal, 3),
        "max_deviation_after_fixed": round(residual, 3),
        "dask": dask,
        "dask_speedup_2_vs_1": speedup,
    }
    RESULTS.mkdir(parents=True, exist_ok=True)
    out = args.out or RESULTS / "scaling.json"
    out.write_text(json.dumps(report, indent=2) + "\n")
    print(f"results written to {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
