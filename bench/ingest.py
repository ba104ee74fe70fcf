"""Benchmark archive → bronze → silver ingest against a bare isal + polars + Parquet baseline.

Scenarios and their targets:
  big    one UM monthly aggTrades zip of --csv-mb MB of CSV (target ≥ 250 MB/s, RSS < 2 GB)
  small  --files daily spot 1m kline zips of ~215 KB CSV each (target ≥ 150 MB/s)

Files are generated once and cached under bench/work/, served over HTTP in their own process
by a plain mirror of the archive (tests/servers/archive_mirror.py; `--stand-in full`: the
tests' stand-in, tests/servers/archive_server.py; each ingest row prints the CPU the server
used), and ingested by
`ingest.run.ingest` into a fresh temporary lake per run. Each measured step runs in its
own spawned process, --repeat rounds (3) in which every step (baselines and ingests) runs once,
in reverse order every other round, so the host's drift falls on all of them alike; the
median run is reported, every run in the JSON, and for each ingest the median over the rounds
of its speed against the one-process baseline of the same round ("paired").

    .venv/bin/python bench/ingest.py                       # both scenarios, default sizes
    .venv/bin/python bench/ingest.py --scenario big --csv-mb 4000 --executors processes
    .venv/bin/python bench/ingest.py --scenario small --files 900 --profile
    .venv/bin/python bench/ingest.py --scenario small --latency-ms 20 --overlap auto,never

`--latency-ms` makes the stand-in answer every request that much later, as a distant archive
does; the targets assume it answers at once, so runs with latency get no verdict.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from _gen import WORK, Tree, big_tree, klines_request, klines_tree
from _measure import (
    MB,
    STAND_INS,
    Measured,
    ServedArchive,
    cpu_info,
    cpu_ticks,
    ensure_paths,
    host_noise,
    run_measured,
    scratch,
    served_archive,
)
from _steps import baseline_big, baseline_small, ingest_run, stages_run

RESULTS = Path(__file__).resolve().parent / "results"
TARGETS = {"big": 250.0, "small": 150.0}
#: What each scenario's first baseline does on the reference machine the targets were set on
#: (MB/s of CSV). Printed beside this host's figure so a verdict can be read against the
#: host's speed; the two stand 4:1 there, 2.0-2.7:1 on the 2-core hosts measured here.
REFERENCE_BASELINES = {"big": 230.0, "small": 58.0}
RSS_BUDGET_MB = 2048.0


def _row(
    name: str, measured: Measured, csv_bytes: int, seconds: float | None = None
) -> dict[str, Any]:
    """Return one result row: throughput over the step's own timer, and memory peaks."""
    took = seconds if seconds is not None else measured.value.get("seconds", measured.wall_s)
    return {
        "step": name,
        "seconds": round(took, 3),
        "csv_mb": round(csv_bytes / MB, 1),
        "mb_per_s": round(csv_bytes / MB / took, 1) if took else None,
        "peak_rss_self_mb": round(measured.peak_rss_self_mb, 1),
        "peak_rss_children_mb": round(measured.peak_rss_children_mb, 1),
        "peak_rss_tree_mb": round(measured.peak_rss_tree_mb, 1)
        if measured.peak_rss_tree_mb is not None
        else None,
        "error": measured.error,
        "details": {k: v for k, v in measured.value.items() if k not in ("seconds",)},
        "runs_mb_per_s": _speeds(csv_bytes, measured.extra.get("all_seconds", [])),
    }


def _speeds(csv_bytes: int, seconds: list[float]) -> list[float]:
    """Return MB/s of CSV for each run's time."""
    return [round(csv_bytes / MB / t, 1) for t in seconds if t]


def _median_run(runs: list[Measured]) -> Measured:
    """Return the run of median time (the VM's noise is ±10-20 %), noting every run's time."""
    ok = sorted((m for m in runs if not m.error),
                key=lambda m: float(m.value.get("seconds", m.wall_s)))  # fmt: skip
    chosen = ok[len(ok) // 2] if ok else runs[0]
    chosen.extra["all_seconds"] = [round(float(m.value.get("seconds", m.wall_s)), 3)
                                   for m in runs]  # fmt: skip
    return chosen


def _print_table(title: str, rows: list[dict[str, Any]]) -> None:
    """Print rows as an aligned text table."""
    print(f"\n== {title}")
    head = f"{'step':<34}{'seconds':>9}{'CSV MB':>9}{'MB/s':>9}{'RSS self':>10}"
    print(head + f"{'children':>10}{'tree':>9}  note")
    for row in rows:
        note = "ERROR (see JSON)" if row["error"] else row.get("note", "")
        tree = row["peak_rss_tree_mb"]
        tree_text = f"{tree:.0f}" if tree is not None else "-"
        print(
            f"{row['step']:<34}{row['seconds']:>9.2f}{row['csv_mb']:>9.1f}"
            f"{row['mb_per_s'] or 0:>9.1f}{row['peak_rss_self_mb']:>10.0f}"
            f"{row['peak_rss_children_mb']:>10.0f}{tree_text:>9}  {note}"
        )


@dataclass
class _Step:
    """One measured step of a scenario: what it runs, and its runs so far."""

    name: str
    run: Callable[[int], Measured]
    ingest: bool = False
    overlap_parse: str | None = None
    runs: list[Measured] = field(default_factory=list)


def _baseline_step(
    name: str, out_dir: Path, fn: Callable[..., dict[str, Any]], source: Any, *rest: Any
) -> _Step:
    """A baseline step: `fn(source, a fresh output folder, *rest)` each round."""

    def run(number: int) -> Measured:
        return run_measured(fn, source, str(out_dir / f"round-{number}"), *rest)

    return _Step(name, run)


def _measure_interleaved(
    scenario: str,
    tree: Tree,
    request: dict[str, Any],
    baselines: list[_Step],
    executors: list[str],
    args: argparse.Namespace,
) -> list[dict[str, Any]]:
    """Run the baselines and the ingests in turn, `--repeat` rounds, and return their rows.

    The host's speed drifts by 10-20 % within minutes, so every step runs once per round,
    in reverse order every other round: a drift then falls on the baseline and the ingest
    alike. Each ingest goes into a fresh lake; with `--latency-ms` the stand-in answers
    every request that much later, as a distant archive does.
    """
    ensure_paths()
    modes = [m.strip() for m in args.overlap.split(",") if m.strip()]
    with served_archive(tree.root, args.latency_ms / 1000, args.stand_in) as server:
        steps = list(baselines)
        for executor in executors:
            for mode in modes:
                steps.append(_ingest_step(scenario, server, request, executor, mode, modes,
                                          args))  # fmt: skip
        for number in range(args.repeat):
            for step in steps if number % 2 == 0 else steps[::-1]:
                step.runs.append(step.run(number))
    reference = baselines[0]
    rows = []
    for step in steps:
        row = _row(step.name, _median_run(step.runs), tree.csv_bytes)
        if step.ingest:
            row["overlap_parse"] = step.overlap_parse
            row["paired_ratio_to_baseline"] = _paired_ratio(reference.runs, step.runs)
            _check_rows(row, _median_run(step.runs), tree)
        rows.append(row)
    return rows


def _ingest_step(
    scenario: str,
    server: ServedArchive,
    request: dict[str, Any],
    executor: str,
    mode: str,
    modes: list[str],
    args: argparse.Namespace,
) -> _Step:
    """An ingest step: one executor and overlap mode, a fresh lake per round."""
    overrides = {**_overrides(args), "overlap_parse": mode}

    def run(number: int) -> Measured:
        lake = Path(tempfile.mkdtemp(prefix=f"lake-{scenario}-", dir=args.scratch))
        before = server.cpu_seconds()
        measured = run_measured(ingest_run, server.archive_url, server.listing_url, str(lake),
                                request, executor, args.workers, overrides)  # fmt: skip
        after = server.cpu_seconds()
        if before is not None and after is not None:
            # The stand-in shares the cores with the ingest; the real archive does not.
            measured.value["stand_in_cpu_s"] = round(after - before, 3)
        return measured

    name = f"ingest executor={executor}" + (f" overlap={mode}" if len(modes) > 1 else "")
    return _Step(name, run, ingest=True, overlap_parse=mode)


def _paired_ratio(baseline: list[Measured], ingest: list[Measured]) -> float | None:
    """Return the median over rounds of baseline time / ingest time (a speed ratio)."""
    ratios = [
        float(b.value["seconds"]) / float(i.value["seconds"])
        for b, i in zip(baseline, ingest, strict=True)
        if not b.error and not i.error and b.value.get("seconds") and i.value.get("seconds")
    ]
    return round(statistics.median(ratios), 2) if ratios else None


def _check_rows(row: dict[str, Any], measured: Measured, tree: Tree) -> None:
    """Mark the row failed when the median run did not load every row."""
    value = measured.value
    if not measured.error and (value.get("rows") != tree.rows or value.get("failed")):
        row["error"] = f"loaded {value.get('rows')} of {tree.rows} rows; {value.get('failed')}"


def _profile(tree: Tree, request: dict[str, Any], top: int, stand_in: str) -> dict[str, Any]:
    """Run the stage-by-stage profile of one scenario in a child process."""
    ensure_paths()
    with served_archive(tree.root, stand_in=stand_in) as server:
        measured = run_measured(stages_run, server.archive_url, server.listing_url,
                                list(tree.keys), request, top)  # fmt: skip
    if measured.error:
        return {"error": measured.error}
    value = dict(measured.value)
    value["peak_rss_self_mb"] = round(measured.peak_rss_self_mb, 1)
    return value


def _print_profile(title: str, profile: dict[str, Any]) -> None:
    """Print the stage timings and the hottest functions."""
    print(f"\n-- {title}: stages run one after another in one process")
    if "error" in profile:
        print(profile["error"])
        return
    print(f"   write path: {profile.get('path', 'staged')}")
    csv_mb = profile["csv_bytes"] / MB
    for stage in ("download_s", "bronze_copy_s", "parse_s", "commit_s"):
        seconds = profile[stage]
        speed = csv_mb / seconds if seconds else 0.0
        print(f"   {stage:<16}{seconds:>8.2f} s  {speed:>8.1f} MB/s of CSV")
    total = sum(profile[stage] for stage in ("download_s", "bronze_copy_s", "parse_s", "commit_s"))
    print(f"   {'sum of stages':<16}{total:>8.2f} s  {csv_mb / total if total else 0:>8.1f} MB/s "
          "of CSV (each alone; the ingest overlaps them on the same cores)")  # fmt: skip
    for part in ("parse_top", "commit_top"):
        if not profile[part]:
            continue
        print(f"   {part} (cumulative s / own s / calls):")
        for row in profile[part][:12]:
            print(f"     {row['cumtime_s']:>7.2f} {row['tottime_s']:>7.2f} {row['calls']:>8}  "
                  f"{row['function']}")  # fmt: skip


def run_big(args: argparse.Namespace, executors: list[str]) -> dict[str, Any]:
    """Scenario big: one multi-hundred-MB monthly aggTrades file."""
    tree = big_tree(args.csv_mb)
    print(f"big: {tree.keys[0]}: {tree.csv_bytes / MB:.0f} MB CSV, "
          f"{tree.zip_bytes / MB:.0f} MB zip, {tree.rows:,} rows")  # fmt: skip
    zip_path = str(tree.root / tree.keys[0])
    baseline = _baseline_step("baseline isal+polars+parquet", args.scratch / "baseline",
                              baseline_big, zip_path, args.chunk_mb, args.compression)  # fmt: skip
    request = {"market": "um", "data_type": "aggTrades", "symbols": ["BTCUSDT"],
               "start": "2024-01-01", "end": "2024-01-31", "period": "monthly"}  # fmt: skip
    rows = _measure_interleaved("big", tree, request, [baseline], executors, args)
    return _finish("big", tree, rows, request, args)


def run_small(args: argparse.Namespace, executors: list[str]) -> dict[str, Any]:
    """Scenario small: hundreds of daily 1m kline files."""
    tree = klines_tree(args.files, args.symbols)
    days = -(-args.files // args.symbols)
    symbols = sorted({key.split("/")[4] for key in tree.keys})
    print(f"small: {len(tree.keys)} files ({len(symbols)} symbols × {days} days), "
          f"{tree.csv_bytes / MB:.0f} MB CSV, {tree.zip_bytes / MB:.0f} MB zip")  # fmt: skip
    paths = [str(tree.root / key) for key in tree.keys]
    baselines = [
        _baseline_step(
            f"baseline file-at-a-time ×{processes} proc",
            args.scratch / f"baseline-{processes}p",
            baseline_small,
            paths,
            processes,
            args.compression,
        )
        for processes in (1, 2)
    ]
    request = klines_request(tree)
    rows = _measure_interleaved("small", tree, request, baselines, executors, args)
    return _finish("small", tree, rows, request, args)


def _overrides(args: argparse.Namespace) -> dict[str, Any]:
    """Return Settings overrides given on the command line."""
    values = {"parse_batch_mb": args.chunk_mb, "download_concurrency": args.download_concurrency,
              "commit_batch_files": args.commit_batch_files,
              "parse_batch_files": args.parse_batch_files}  # fmt: skip
    return {k: v for k, v in values.items() if v is not None}


def _finish(
    scenario: str,
    tree: Tree,
    rows: list[dict[str, Any]],
    request: dict[str, Any],
    args: argparse.Namespace,
) -> dict[str, Any]:
    """Add ratios and target verdicts to the rows, print them, and profile when asked."""
    baseline = rows[0]["mb_per_s"] or 0.0
    for row in rows[1:]:
        if row["step"].startswith("ingest") and row["mb_per_s"] and baseline:
            ok = row["mb_per_s"] >= TARGETS[scenario]
            if scenario == "big":
                tree_rss = row["peak_rss_tree_mb"] or row["peak_rss_self_mb"]
                ok = ok and tree_rss < RSS_BUDGET_MB
            row["ratio_to_baseline"] = round(row["mb_per_s"] / baseline, 2)
            row["meets_target"] = ok
            paired = row.get("paired_ratio_to_baseline")
            paired_text = f" (paired {paired:.2f}×)" if paired else ""
            row["note"] = (f"{row['ratio_to_baseline']:.2f}× baseline{paired_text}; target "
                           f"{TARGETS[scenario]:.0f} MB/s {'met' if ok else 'MISSED'}")  # fmt: skip
            if args.latency_ms:
                row["meets_target"] = None  # the targets assume the stand-in on the same host
                row["note"] = f"{args.latency_ms:g} ms a request; no target at this latency"
        stand_in_cpu = row["details"].get("stand_in_cpu_s")
        if stand_in_cpu is not None:
            used = f"{args.stand_in} stand-in used {stand_in_cpu:.2f} s of CPU"
            row["note"] = f"{row.get('note', '')}; {used}"
    _print_table(f"scenario {scenario}", rows)
    reference = REFERENCE_BASELINES[scenario]
    if baseline:
        print(f"{rows[0]['step']}: {baseline:.1f} MB/s on this host, about {reference:.0f} on "
              f"the reference machine ({baseline / reference:.2f}×)")  # fmt: skip
    for row in rows:
        if row["error"]:
            print(f"\n{row['step']} failed:\n{row['error']}", file=sys.stderr)
    out: dict[str, Any] = {
        "files": len(tree.keys),
        "csv_bytes": tree.csv_bytes,
        "zip_bytes": tree.zip_bytes,
        "rows": tree.rows,
        "target_mb_per_s": TARGETS[scenario],
        "reference_baseline_mb_per_s": reference,
        "results": rows,
    }
    if args.profile:
        out["profile"] = _profile(tree, request, args.top, args.stand_in)
        _print_profile(f"scenario {scenario}", out["profile"])
    return out


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """Parse the command line."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--scenario", choices=("big", "small", "all"), default="all")
    parser.add_argument("--csv-mb", type=int, default=512, help="big: MB of CSV (default 512)")
    parser.add_argument("--files", type=int, default=300, help="small: kline files (300)")
    parser.add_argument("--symbols", type=int, default=3, help="small: symbols (3, max 6)")
    parser.add_argument(
        "--executors", default="processes,threads", help="comma-separated: processes,threads,dask"
    )
    parser.add_argument("--workers", type=int, default=0, help="parse workers (0 = cores)")
    parser.add_argument("--repeat", type=int, default=3,
                        help="runs per step; the median run is reported (3)")  # fmt: skip
    parser.add_argument("--chunk-mb", type=int, default=16,
                        help="CSV MB per parse batch, pipeline and baseline (16)")  # fmt: skip
    parser.add_argument("--download-concurrency", type=int, default=None)
    parser.add_argument("--commit-batch-files", type=int, default=None)
    parser.add_argument("--parse-batch-files", type=int, default=None)
    parser.add_argument("--compression", default="zstd", help="baseline Parquet codec")
    parser.add_argument("--latency-ms", type=float, default=0.0,
                        help="the stand-in waits this long before every answer, as a distant "
                             "archive does (0: answers at once, as targets assume)")  # fmt: skip
    parser.add_argument("--stand-in", choices=STAND_INS, default="mirror",
                        help="the archive stand-in on this host: mirror (a plain mirror, "
                             "~0.07 ms of CPU a request) or full (the tests' aiohttp stand-in, "
                             "~0.25 ms); the real archive costs this host nothing")  # fmt: skip
    parser.add_argument("--overlap", default="auto",
                        help="comma-separated LAKEHOUSE_TUNING__OVERLAP_PARSE modes to run: "
                             "auto,never,always (auto)")  # fmt: skip
    parser.add_argument(
        "--profile",
        action="store_true",
        help="also time each stage alone and cProfile parse and commit",
    )
    parser.add_argument("--top", type=int, default=25, help="profile rows kept per stage")
    parser.add_argument("--out", type=Path, default=None, help="JSON path (default results/)")
    parser.add_argument(
        "--work-dir", type=Path, default=WORK,
        help="where the run's lakes and outputs go, deleted at the end (default bench/work)",
    )  # fmt: skip
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    """Run the chosen scenarios; write bench/results/ingest[-<scenario>][-profile]-<date>.json."""
    args = parse_args(argv)
    WORK.mkdir(parents=True, exist_ok=True)
    executors = [e.strip() for e in args.executors.split(",") if e.strip()]
    report: dict[str, Any] = {
        "benchmark": "ingest",
        "work_dir": str(args.work_dir),
        "when": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": cpu_info(),
        "argv": sys.argv[1:] if argv is None else argv,
        "baseline_compression": args.compression,
        "latency_ms": args.latency_ms,
        "stand_in": args.stand_in,
        "scenarios": {},
    }
    print(f"machine: {report['machine']} (figures are noisy when the load average is high)")
    ticks = cpu_ticks()
    with scratch(args.work_dir) as args.scratch:
        # Small first: after the big scenario's gigabytes of writes and deletions the small
        # ingest measured 124.6 MB/s (paired 1.67x its baseline), alone right after 150.1
        # (2.03x), and first in the same command 151.0 (2.10x); the big one is the same
        # either way (285.6 and 291.2 MB/s, 2026-12-05).
        if args.scenario in ("small", "all"):
            report["scenarios"]["small"] = run_small(args, executors)
        if args.scenario in ("big", "all"):
            report["scenarios"]["big"] = run_big(args, executors)
    report["host_during_run"] = host_noise(ticks, cpu_ticks())
    print(
        f"\nhost during the run: {report['host_during_run']} (steal: CPU time the hypervisor "
        "gave to other guests while this one wanted it)"
    )
    RESULTS.mkdir(parents=True, exist_ok=True)
    # One file per scenario, the latest run (its date is inside): a one-scenario run must not
    # replace the full report, nor a profiling run (timings carry the profiler) a measured one.
    part = "" if args.scenario == "all" else f"-{args.scenario}"
    part += "-profile" if args.profile else ""
    out = args.out or RESULTS / f"ingest{part}.json"
    out.write_text(json.dumps(report, indent=2, default=str) + "\n")
    print(f"\nresults written to {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
