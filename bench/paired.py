"""Compare ingest variants of the small-file scenario by paired, alternating runs.

This host's speed drifts by 10-20 % within minutes, so two variants measured one after the
other differ by that much even when they do the same thing. Here the variants take turns,
round after round, in reverse order every other round, each run in a fresh spawned process
as in `bench/ingest.py`. The medians and the median of the per-round ratios to the first
variant are reported.

A variant is `name:key=value,...`. `latency_ms` sets the archive stand-in's wait before each
answer, `stand_in` which stand-in serves (`mirror`, the default, or `full`; one server per
stand-in and latency, all started up front), `workers` the parse workers (else
`--workers`), `executor` `threads` (the default) or `processes` (the pool's start-up is
inside the timing, as in `bench/ingest.py`); `env.NAME` sets an environment variable of the
variant's ingest processes (knobs read at start-up, such as allocator settings); any other
key is a Settings field.

    .venv/bin/python bench/paired.py --rounds 8 \\
        --variant "auto:latency_ms=10" --variant "never:latency_ms=10,overlap_parse=never"
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import statistics
import sys
import tempfile
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from _gen import WORK, klines_request, klines_tree
from _measure import (
    MB,
    STAND_INS,
    ServedArchive,
    cpu_info,
    cpu_ticks,
    ensure_paths,
    host_noise,
    run_measured,
    scratch,
    served_archive,
)
from _steps import ingest_run

if TYPE_CHECKING:
    from collections.abc import Iterator

RESULTS = Path(__file__).resolve().parent / "results"


@dataclass
class Variant:
    """One side of the comparison: a stand-in latency and Settings overrides."""

    name: str
    latency_ms: float = 0.0
    stand_in: str = "mirror"
    workers: int | None = None
    executor: str = "threads"
    overrides: dict[str, Any] = field(default_factory=dict)
    env: dict[str, str] = field(default_factory=dict)
    seconds: list[float] = field(default_factory=list)


def parse_variant(spec: str) -> Variant:
    """Parse `name:key=value,...`; values read as int, then float, else text."""
    name, _, rest = spec.partition(":")
    if not name:
        raise argparse.ArgumentTypeError(f"variant {spec!r} has no name")
    variant = Variant(name)
    for item in filter(None, (part.strip() for part in rest.split(","))):
        key, sep, text = item.partition("=")
        if not sep:
            raise argparse.ArgumentTypeError(f"{item!r} in {spec!r} is not key=value")
        value = _value(text)
        if key == "latency_ms":
            variant.latency_ms = float(value)
        elif key == "workers":
            variant.workers = int(value)
        elif key == "executor":
            if text not in ("threads", "processes"):
                raise argparse.ArgumentTypeError("executor must be threads or processes")
            variant.executor = text
        elif key == "stand_in":
            if text not in STAND_INS:
                raise argparse.ArgumentTypeError(f"stand_in must be one of {STAND_INS}")
            variant.stand_in = text
        elif key.startswith("env."):
            variant.env[key.removeprefix("env.")] = text
        else:
            variant.overrides[key] = value
    return variant


def _value(text: str) -> int | float | str:
    """Read a number when the text is one."""
    for kind in (int, float):
        try:
            return kind(text)
        except ValueError:
            continue
    return text


@contextlib.contextmanager
def _environment(values: dict[str, str]) -> Iterator[None]:
    """Set environment variables for the duration of the block, then restore them."""
    saved = {name: os.environ.get(name) for name in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for name, old in saved.items():
            if old is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = old


def run_rounds(variants: list[Variant], args: argparse.Namespace) -> int:
    """Run every variant once per round, alternating the order; return the rows expected."""
    tree = klines_tree(args.files, args.symbols)
    request = klines_request(tree)
    served = sorted({(v.stand_in, v.latency_ms) for v in variants})
    with contextlib.ExitStack() as stack:
        servers: dict[tuple[str, float], ServedArchive] = {
            (kind, ms): stack.enter_context(served_archive(tree.root, ms / 1000, kind))
            for kind, ms in served
        }
        for number in range(args.rounds):
            order = variants if number % 2 == 0 else variants[::-1]
            for variant in order:
                server = servers[variant.stand_in, variant.latency_ms]
                lake = Path(tempfile.mkdtemp(prefix="lake-paired-", dir=args.scratch))
                with _environment(variant.env):  # a spawned child copies it at its start
                    workers = args.workers if variant.workers is None else variant.workers
                    measured = run_measured(
                        ingest_run, server.archive_url, server.listing_url, str(lake), request,
                        variant.executor, workers, variant.overrides,
                    )  # fmt: skip
                value = measured.value
                if measured.error or value.get("rows") != tree.rows or value.get("failed"):
                    print(f"{variant.name}: run failed: {measured.error or value}",
                          file=sys.stderr)  # fmt: skip
                    return 1
                variant.seconds.append(float(value["seconds"]))
            print(f"round {number + 1}/{args.rounds}: " + ", ".join(
                f"{v.name} {v.seconds[-1]:.3f} s" for v in variants))  # fmt: skip
    _report(variants, tree.csv_bytes, args)
    return 0


def _report(variants: list[Variant], csv_bytes: int, args: argparse.Namespace) -> None:
    """Print medians and paired ratios; write them as JSON."""
    first = variants[0]
    rows = []
    print(f"\n{'variant':<16}{'median s':>10}{'MB/s':>8}{'min s':>8}{'ratio to ' + first.name:>22}")
    for variant in variants:
        median = statistics.median(variant.seconds)
        ratio = statistics.median(
            [mine / theirs for mine, theirs in zip(variant.seconds, first.seconds, strict=True)]
        )
        quartiles = statistics.quantiles(variant.seconds, n=4) if len(variant.seconds) > 1 else []
        rows.append({"variant": variant.name, "latency_ms": variant.latency_ms,
                     "executor": variant.executor, "overrides": variant.overrides,
                     "env": variant.env,
                     "seconds": variant.seconds,
                     "median_s": round(median, 3), "mb_per_s": round(csv_bytes / MB / median, 1),
                     "quartiles_s": [round(q, 3) for q in quartiles],
                     "paired_ratio": round(ratio, 3)})  # fmt: skip
        print(f"{variant.name:<16}{median:>10.3f}{csv_bytes / MB / median:>8.1f}"
              f"{min(variant.seconds):>8.3f}{ratio:>22.3f}")  # fmt: skip
    host = host_noise(args.ticks, cpu_ticks())
    print(f"host during the run: {host} (steal: CPU time given to other guests)")
    RESULTS.mkdir(parents=True, exist_ok=True)
    out = args.out or RESULTS / "paired.json"
    report = {"benchmark": "paired", "when": datetime.now(UTC).isoformat(timespec="seconds"),
              "machine": cpu_info(), "host_during_run": host, "argv": sys.argv[1:],
              "files": args.files, "rounds": args.rounds, "variants": rows}  # fmt: skip
    out.write_text(json.dumps(report, indent=2, default=str) + "\n")
    print(f"\nresults written to {out}")


def main(argv: list[str] | None = None) -> int:
    """Parse the command line and run the rounds."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--variant", action="append", type=parse_variant, required=True,
                        help="name:key=value,... (repeat; the first is the reference)")  # fmt: skip
    parser.add_argument("--rounds", type=int, default=8)
    parser.add_argument("--files", type=int, default=300, help="kline files (300)")
    parser.add_argument("--symbols", type=int, default=3, help="symbols (3, max 6)")
    parser.add_argument("--workers", type=int, default=0, help="parse workers (0 = cores)")
    parser.add_argument("--out", type=Path, default=None, help="JSON path (default results/)")
    parser.add_argument(
        "--work-dir", type=Path, default=WORK, help="where the lakes go, deleted at the end"
    )
    args = parser.parse_args(argv)
    names = [v.name for v in args.variant]
    if len(set(names)) != len(names):
        parser.error(f"variant names must differ: {names}")
    ensure_paths()
    WORK.mkdir(parents=True, exist_ok=True)
    args.ticks = cpu_ticks()
    with scratch(args.work_dir) as args.scratch:
        return run_rounds(args.variant, args)


if __name__ == "__main__":
    raise SystemExit(main())
