"""Time the batched parse of small kline files alone, and compare it with another checkout.

A whole small-file ingest moves by ±10-25 % from one run to the next on this shared VM, more
than most changes to the batch parse are worth. This bench isolates that parse: 300 daily
1m kline zips, already in memory, go through `parse_batch_to_files` in equal batches on a
thread pool (no downloads, no bronze, no commit), in a fresh process per measurement. With
`--baseline-src` another checkout's `src/` (say, `git worktree add /tmp/base HEAD~1`) is
measured in turn, round after round, so the host's drift falls on both alike; the median of
the per-round ratios is what to trust. Each process also reports its first batch round
(cold: thread pools, first touches of memory) apart from the warm ones.

    .venv/bin/python bench/batches.py --rounds 8 --baseline-src /tmp/base/src
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from _gen import WORK, klines_tree
from _measure import ROOT, cpu_info, ensure_paths, scratch

RESULTS = Path(__file__).resolve().parent / "results"


def child(root: str, keys: list[str], batch: int, threads: list[int], warm: int, work: str) -> None:
    """In a fresh process: time one cold round, then `warm` rounds, per thread count.

    The tables go to folders under `work`, which the parent deletes at the very end: on this
    VM's ext4, files created soon after deletions cost far more (`_measure.scratch`).
    """
    from _steps import _task

    from crypto_lakehouse.config import Settings
    from crypto_lakehouse.datasets import get_dataset
    from crypto_lakehouse.ingest.parse.batch import parse_batch_to_files

    dataset, now = get_dataset("spot", "klines"), datetime.now(UTC)
    request = {"interval": "1m", "period": "daily"}
    tasks = [_task(Settings(), dataset, key, Path(root) / key, request, Path(work), now)
             for key in keys]  # fmt: skip
    zips = [(Path(root) / key).read_bytes() for key in keys]
    batches = [(tasks[i : i + batch], zips[i : i + batch]) for i in range(0, len(tasks), batch)]
    out: dict[str, Any] = {}
    for count in threads:
        with ThreadPoolExecutor(count) as pool:
            seconds = []
            for round_number in range(warm + 1):
                folder = f"{work}/{count}-{round_number}"
                started = time.perf_counter()
                list(pool.map(lambda b, f=folder: parse_batch_to_files(b[0], f, {}, b[1]),
                              batches))  # fmt: skip
                seconds.append(time.perf_counter() - started)
        out[str(count)] = {"cold_s": seconds[0], "warm_s": statistics.median(seconds[1:])}
    print(json.dumps(out))


def _measure(
    src: str, args: argparse.Namespace, root: Path, keys: list[str], work: Path
) -> dict[str, Any]:
    """Run `child` in a fresh interpreter that imports crypto_lakehouse from `src`."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([src, str(ROOT), str(ROOT / "bench")])}
    work.mkdir(parents=True)
    command = [sys.executable, __file__, "--child", str(root), ",".join(keys),
               str(args.batch), args.threads, str(args.warm), str(work)]  # fmt: skip
    done = subprocess.run(command, env=env, capture_output=True, text=True, check=True)
    return dict(json.loads(done.stdout.strip().splitlines()[-1]))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--files", type=int, default=300)
    parser.add_argument("--batch", type=int, default=50, help="files per batch (50)")
    parser.add_argument("--threads", default="1,2", help="thread counts to time (1,2)")
    parser.add_argument("--rounds", type=int, default=6, help="fresh processes per checkout")
    parser.add_argument("--warm", type=int, default=3, help="warm rounds per process (3)")
    parser.add_argument(
        "--baseline-src", default=None, help="another checkout's src/, measured in turn"
    )
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()
    ensure_paths()
    tree = klines_tree(args.files)
    keys = sorted(tree.keys)
    variants = {"this": str(ROOT / "src")}
    if args.baseline_src:
        variants["baseline"] = str(Path(args.baseline_src).resolve())
    runs: dict[str, list[dict[str, Any]]] = {name: [] for name in variants}
    with scratch(WORK) as work:
        for round_number in range(args.rounds):
            order = list(variants) if round_number % 2 == 0 else list(reversed(variants))
            for name in order:
                folder = work / f"{name}-{round_number}"
                runs[name].append(_measure(variants[name], args, tree.root, keys, folder))
    rows = _report(runs, args, tree.csv_bytes)
    out = args.out or RESULTS / "batches.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"benchmark": "batches", "machine": cpu_info(),
                               "when": datetime.now(UTC).isoformat(timespec="seconds"),
                               "argv": sys.argv[1:], "variants": variants, "rows": rows},
                              indent=1))  # fmt: skip
    print(f"results written to {out}")


def _report(
    runs: dict[str, list[dict[str, Any]]], args: argparse.Namespace, csv_bytes: int
) -> list[dict[str, Any]]:
    """Print and return, per thread count, each variant's medians and the paired ratios."""
    print(f"{args.files} files in batches of {args.batch}, {args.rounds} processes per variant, "
          f"{args.warm} warm rounds each; {csv_bytes / 1e6:.0f} MB of CSV")  # fmt: skip
    print(f"{'variant':10s} {'threads':>7s} {'warm ms':>8s} {'MB/s':>7s} {'cold ms':>8s} "
          f"{'vs 1 thread':>11s} {'vs baseline':>11s}")  # fmt: skip
    rows = []
    for name, measured in runs.items():
        for count in args.threads.split(","):
            warm = [m[count]["warm_s"] for m in measured]
            cold = [m[count]["cold_s"] for m in measured]
            one = [m["1"]["warm_s"] for m in measured] if "1" in measured[0] else None
            speedup = (
                statistics.median(o / w for o, w in zip(one, warm, strict=True)) if one else None
            )
            paired = None
            if name != "baseline" and "baseline" in runs:
                base = [m[count]["warm_s"] for m in runs["baseline"]]
                paired = statistics.median(w / b for w, b in zip(warm, base, strict=True))
            row = {"variant": name, "threads": int(count), "warm_ms": statistics.median(warm) * 1e3,
                   "cold_ms": statistics.median(cold) * 1e3,
                   "mb_per_s": csv_bytes / 1e6 / statistics.median(warm),
                   "speedup_vs_1_thread": speedup, "ratio_to_baseline": paired}  # fmt: skip
            rows.append(row)
            print(f"{name:10s} {count:>7s} {row['warm_ms']:8.0f} {row['mb_per_s']:7.0f} "
                  f"{row['cold_ms']:8.0f} {_fmt(speedup):>11s} {_fmt(paired):>11s}")  # fmt: skip
    return rows


def _fmt(value: float | None) -> str:
    """Render a ratio, or nothing where it does not apply."""
    return "" if value is None else f"{value:.3f}"


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "--child":
        _root, _keys, _batch, _threads, _warm, _work = sys.argv[2:8]
        child(_root, _keys.split(","), int(_batch), [int(t) for t in _threads.split(",")],
              int(_warm), _work)  # fmt: skip
    else:
        main()
