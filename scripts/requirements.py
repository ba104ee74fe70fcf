"""Generate docs/requirements.md: each requirement R1.1-R7.3 with its code, tests and figures.

One table below says, per requirement, its status, the modules that implement it and how it
is approached; the tests come from the `@pytest.mark.req("R3.2")` markers that pytest
collects; the figures from the latest results in bench/results/. `--check` exits 1 when the
page is stale or the trace is broken (a built requirement without a collected test, a marker
naming an unknown id, a module path that does not exist), so CI keeps the page true.

    .venv/bin/python scripts/requirements.py            # rewrite docs/requirements.md
    .venv/bin/python scripts/requirements.py --check    # exit 1 if stale or broken
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import re
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import pytest

if TYPE_CHECKING:
    from collections.abc import Callable

ROOT = Path(__file__).resolve().parent.parent
PAGE = ROOT / "docs" / "requirements.md"
PACKAGE = ROOT / "src" / "crypto_lakehouse"
RESULTS = ROOT / "bench" / "results"
Status = Literal["built", "partly built", "not built yet"]


@dataclass(frozen=True, slots=True)
class Requirement:
    """One requirement of the specification, and where the project stands on it."""

    id: str
    title: str
    meaning: str
    status: Status
    modules: tuple[str, ...] = ()
    approach: str = ""


def _req(
    rid: str, title: str, meaning: str, status: Status, modules: str = "", approach: str = ""
) -> Requirement:
    """Build a row of the table; `modules` is space-separated, relative to the package."""
    return Requirement(rid, title, meaning, status, tuple(modules.split()), approach)


# fmt: off
REQUIREMENTS: tuple[Requirement, ...] = (
    _req("R1.1", "layered lakehouse", "bronze: raw objects as fetched, with a manifest; silver: "
         "validated, typed tables; gold: business-ready aggregates", "built",
         "storage/bronze.py storage/bronze_writes.py storage/delta.py ingest/ ingest/parse/rows.py "
         "gold/build.py gold/frames.py datasets.py",
         "Archive zips, REST pages and WS micro-batches land in bronze at keys mirroring "
         "upstream, with a Delta manifest of every revision; silver tables are typed Delta "
         "tables with lineage columns; gold tables are rebuilt from silver."),
    _req("R1.2", "cloud-native, horizontally scalable", "every component in a container; "
         "stateless services; more replicas or workers add capacity", "partly built",
         "storage/root.py ingest/runtime/executor.py ingest/write/staging.py",
         "Ingest workers are stateless: a Dask worker reads its zips from bronze and stages "
         "its rows in the lake, so workers on other hosts add capacity over shared S3 "
         "storage. Containers (Dockerfile, compose, Kubernetes) are not built yet."),
    _req("R1.3", "independently deployable services, API-first", "ingest workers, the "
         "query/sharing API and the orchestrator run as separate processes over shared "
         "storage", "partly built", "ingest/runtime/executor.py query/api.py cli/app.py",
         "Ingest runs as its own process (CLI) with optional Dask worker processes, and the "
         "Python `Lake` API reads the same storage. The HTTP query/sharing service (serve/) "
         "and the Prefect orchestrator (flows/) are not built yet."),
    _req("R2.1", "throughput", "≥ 20 MB/s sustained, 50 MB/s peak, end to end, on every data "
         "type", "partly built",
         "ingest/small_files.py ingest/overlap.py ingest/parse/ ingest/write/ "
         "sources/binance/archive/zipstream.py",
         "Measured end to end by bench/ingest.py (archive stand-in → bronze → silver) on 1m "
         "klines (many small files) and aggTrades (one large file); other data types share "
         "the same parse and write path but have no figure of their own. The tests show the "
         "mechanisms the speed rests on, not the speed."),
    _req("R2.2", "latency", "API queries < 1 s at p95; processing < 5 min per GB; a workflow "
         "< 10 min end to end", "partly built", "query/engine.py query/api.py cli/app.py",
         "Query latency is measured on the Python `Lake` API and the `lakehouse sql` CLI "
         "(bench/query.py) and processing time per GB by bench/scaling.py; no HTTP API "
         "exists yet to measure, and no workflow runner (Prefect) to time."),
    _req("R2.3", "scalability", "linear in data volume (to 10 TB); horizontal to 10 nodes; "
         "vertical to 32 cores", "partly built",
         "ingest/runtime/executor.py ingest/runtime/memory.py ingest/write/staging.py",
         "One 2-core machine cannot show 10 nodes or 32 cores. Instead: bench/scaling.py checks "
         "that time per GB stays within 15 % from 0.25 to 4 GB; the Dask executor is tested "
         "on a LocalCluster whose workers share nothing with the driver but the lake (S3 on "
         "moto), which is what a 10-node cluster needs; the memory budget bounds each "
         "worker, so cores and nodes are added by adding workers."),
    _req("R3.1", "availability", "99.9 %; graceful degradation when a dependency fails; "
         "automatic recovery", "partly built",
         "sources/binance/rest/breaker.py sources/binance/ws/client.py recent/live.py "
         "storage/delta.py",
         "99.9 % over a year cannot be shown on one machine in a test run. It is approached "
         "by recovery that needs no operator: a killed ingest re-run completes the same "
         "tables, a WebSocket drop reconnects and back-fills from REST, an open breaker fails "
         "fast and probes again, and a REST ban or region block degrades to an archive-only "
         "result that says so. Health monitoring and replicas are not built yet."),
    _req("R3.2", "fault tolerance", "retries with exponential backoff; circuit breakers on "
         "external services; integrity kept through failures", "built",
         "retry.py exceptions.py sources/http.py sources/binance/rest/breaker.py "
         "sources/binance/archive/ sources/binance/rest/client.py ingest/failures.py",
         "Transient/Terminal exception classes decide retries; back-off is exponential with "
         "jitter and honours Retry-After; the REST breaker opens after consecutive failures; "
         "a truncated or HTML body is retried, then quarantined with its reason."),
    _req("R3.3", "consistency", "ACID writes; eventual consistency where acceptable "
         "(provisional rows); validation and reconciliation", "built",
         "storage/delta.py storage/root.py ingest/write/supersede.py ingest/write/provisional.py "
         "quality/reconcile/",
         "Every write is one Delta commit or an atomic object replace; REST/WS rows are "
         "provisional until an archive file supersedes them; reconcile compares sources."),
    _req("R4.1", "authentication and authorization", "role-based access control; API keys; "
         "JWT sessions", "not built yet",
         approach="Not built yet: it belongs to the serving layer (serve/), not yet built."),
    _req("R4.2", "encryption", "AES-256 at rest; TLS 1.3 in transit; key management and "
         "rotation", "not built yet",
         approach="Not built yet: envelope encryption (storage/crypto), SSE-KMS storage "
         "options and a TLS 1.3 server are planned; today the clients only verify HTTPS."),
    _req("R4.3", "audit", "every user action and data access logged; compliance reporting",
         "not built yet",
         approach="Not built yet: the hash-chained audit trail needs the metadata database "
         "and the serving layer."),
    _req("R5.1", "ingestion sources", "bulk archives (Binance's S3 archive); real-time APIs; "
         "more than one exchange", "partly built",
         "sources/binance/archive/ sources/binance/rest/ sources/binance/ws/ ingest/run.py "
         "recent/update.py recent/live.py",
         "Binance's archive, REST and WebSocket are built; a second exchange is not built "
         "yet (sources/<exchange>/ is the place for it)."),
    _req("R5.2", "data types", "klines/OHLCV; funding rates; liquidations", "built",
         "datasets.py sources/binance/archive/formats.py sources/binance/rest/frames.py "
         "sources/binance/ws/frames.py",
         "Every archive data type of the registry, funding from archive and REST, and "
         "liquidations from the archive snapshots and the forceOrder stream."),
    _req("R5.3", "data quality", "validation and quality scores; anomaly detection; "
         "reconciliation across sources", "built",
         "ingest/parse/ quality/checks/ quality/score.py quality/reconcile/ quality/refresh/ "
         "quality/report/"),
    _req("R6.1", "external APIs", "REST clients with rate limiting, throttling, error handling "
         "and retries", "built",
         "sources/binance/rest/client.py sources/binance/rest/ratelimit.py "
         "sources/binance/rest/breaker.py sources/binance/rest/paging.py sources/http.py"),
    _req("R6.2", "storage", "S3-compatible object storage; efficient transfer; metadata "
         "management", "partly built",
         "storage/root.py storage/delta.py storage/bronze.py storage/maintenance.py "
         "storage/partitions.py storage/format_version.py",
         "Every lake test that takes `lake_root` runs on local disk and on S3 (a moto server "
         "over real HTTP); the manifest is the metadata of bronze, and the lake records its "
         "format version. The metadata database "
         "(SQLAlchemy, Alembic) is not built yet."),
    _req("R6.3", "workflows", "Prefect orchestration; task dependencies; monitoring and "
         "alerting of runs", "not built yet",
         approach="Not built yet: flows/ will wrap the functions the CLI calls."),
    _req("R7.1", "metrics", "performance metrics; health checks and status; resource "
         "utilisation", "partly built", "query/status.py cli/app.py",
         "`lakehouse status` reports each table's coverage and the manifest's health; the "
         "benchmarks record throughput and peak memory. Prometheus metrics are not built "
         "yet."),
    _req("R7.2", "logging", "structured JSON logs; ready for aggregation; configurable levels",
         "built", "telemetry/logging.py config.py",
         "structlog JSON lines on stderr (a readable format on a terminal); the level is the "
         "`log_level` setting (LAKEHOUSE_LOG_LEVEL)."),
    _req("R7.3", "alerting", "threshold alerts; error-rate monitoring; data-quality alerts",
         "not built yet",
         approach="Not built yet: Prometheus rules and Alertmanager come with the metrics; "
         "today quality scores and anomalies are reported, not alerted on."),
)
# fmt: on


class _Markers:
    """A pytest plugin that records, per requirement id, the tests that carry its marker."""

    def __init__(self) -> None:
        self.tests: dict[str, set[str]] = {}

    def pytest_collection_modifyitems(self, items: list[pytest.Item]) -> None:
        """Record every `req` marker of every collected test (parameters folded into one)."""
        for item in items:
            node = item.nodeid.split("[", 1)[0]
            for marker in item.iter_markers("req"):
                for rid in marker.args:
                    self.tests.setdefault(str(rid), set()).add(node)


def collect_markers() -> dict[str, list[str]]:
    """Return the collected tests per requirement id, by running pytest's collection."""
    plugin = _Markers()
    out = io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(out):
        args = ["--collect-only", "-q", "-p", "no:cacheprovider", f"--rootdir={ROOT}"]
        code = pytest.main([*args, str(ROOT / "tests")], plugins=[plugin])
    if code != pytest.ExitCode.OK:
        summary = out.getvalue().rpartition("short test summary info")[2] or out.getvalue()
        raise SystemExit(f"pytest could not collect the tests (exit {int(code)}):{summary}")
    return {rid: sorted(nodes) for rid, nodes in sorted(plugin.tests.items())}


def problems(
    requirements: tuple[Requirement, ...], markers: dict[str, list[str]], package: Path = PACKAGE
) -> list[str]:
    """Return what breaks the trace: unknown ids, built without tests, tests of unbuilt ones."""
    known = {r.id for r in requirements}
    found = [
        f"marker names unknown requirement {rid}: {', '.join(tests)}"
        for rid, tests in markers.items()
        if rid not in known
    ]
    for req in requirements:
        tests = markers.get(req.id, [])
        if req.status != "not built yet" and not tests:
            found.append(
                f"{req.id} is {req.status} but no collected test is marked req({req.id!r})"
            )
        if req.status == "not built yet" and tests:
            found.append(f"{req.id} is not built yet but tests are marked with it: {tests}")
        found += [
            f"{req.id} names {m}, which is not under src/crypto_lakehouse/"
            for m in req.modules
            if not (package / m).exists()
        ]
    return found


def _latest(benchmark: str, accept: Callable[[dict[str, Any]], bool]) -> tuple[str, Any] | None:
    """Return (file name, content) of the newest result of a benchmark that `accept` takes."""
    found: list[tuple[str, str, Any]] = []
    for path in sorted(RESULTS.glob("*.json")):
        with contextlib.suppress(ValueError, OSError):
            data = json.loads(path.read_text())
            if isinstance(data, dict) and data.get("benchmark") == benchmark and accept(data):
                found.append((str(data.get("when", "")), path.name, data))
    if not found:
        return None
    _, name, data = max(found, key=lambda row: (row[0], row[1]))
    return name, data


def _where(name: str, data: dict[str, Any], script: str) -> str:
    """Return the provenance of a figure: the command that made it, its date and machine."""
    argv, args = list(data.get("argv", [])), []
    while argv:  # where the results and scratch files went is no part of the command
        arg = argv.pop(0)
        if arg in ("--out", "--work-dir", "--scratch") and argv:
            argv.pop(0)
        elif not arg.startswith(("--out=", "--work-dir=", "--scratch=")):
            args.append(arg)
    command = " ".join([f"python {script}", *args])
    cores = data.get("machine", {}).get("cores", "?")
    when = str(data.get("when", ""))[:10]
    return f"(`{command}`, {when}, {cores} cores; `bench/results/{name}`)"


def _without_latency(scenario: str) -> Callable[[dict[str, Any]], bool]:
    """Accept ingest results of a scenario run against an archive that answers at once."""
    return lambda data: scenario in data.get("scenarios", {}) and not data.get("latency_ms")


def _throughput() -> list[str]:
    """Return the end-to-end MB/s of each ingest scenario's latest run without added latency."""
    lines = []
    for scenario in ("small", "big"):
        hit = _latest("ingest", _without_latency(scenario))
        if hit is None:
            continue
        name, data = hit
        sc = data["scenarios"][scenario]
        runs = [
            f"{r['mb_per_s']:.0f} MB/s ({r['step'].removeprefix('ingest ')})"
            for r in sc["results"]
            if r["step"].startswith("ingest") and not r.get("error")
        ]
        files = f"{sc['files']} file{'s' * (sc['files'] != 1)}"
        lines.append(
            f"{scenario} ({files}, {sc['csv_bytes'] / 1e6:.0f} MB of CSV): {', '.join(runs)} "
            f"{_where(name, data, 'bench/ingest.py')}"
        )
    return lines


def _query_latency() -> list[str]:
    """Return the p95 query latencies of the latest query benchmark (compacted layout first)."""
    hit = _latest("query", lambda d: bool(d.get("layouts")))
    if hit is None:
        return []
    name, data = hit
    layouts = data["layouts"]
    layout = "optimized" if "optimized" in layouts else next(iter(layouts))
    api = layouts[layout].get("lake_api", {})
    cli = layouts[layout].get("cli", {})
    parts = [f"`Lake` {q} {v['p95_ms']:.0f} ms" for q, v in api.items() if "p95_ms" in v]
    parts += [f"CLI {q} {v['p95_ms']:.0f} ms" for q, v in cli.items() if "p95_ms" in v]
    return [
        f"p95, {data['lake']['rows'] / 1e6:.1f} M rows, {layout} layout: {'; '.join(parts)} "
        f"{_where(name, data, 'bench/query.py')}"
    ]


def _scaling() -> tuple[list[str], list[str]]:
    """Return the processing time per GB, and the linearity and Dask figures, of bench/scaling."""
    hit = _latest("scaling", lambda d: "seconds_per_gb_median" in d)
    if hit is None:
        return [], []
    name, data = hit
    where = _where(name, data, "bench/scaling.py")
    sizes = [step["input_gb"] for step in data.get("ladder", [])] or [0.0]
    per_gb = [f"processing: {data['seconds_per_gb_median']:.2f} s per GB of CSV {where}"]
    verdict = "linear" if data.get("linear_within_15pct") else "not linear"
    linear = [
        f"time per GB within {data['max_deviation'] * 100:.0f} % of the median from "
        f"{min(sizes):.2f} to {max(sizes):.2f} GB ({verdict} within 15 %); a second Dask worker: "
        f"{data.get('dask_speedup_2_vs_1', '?')}x on {data.get('machine', {}).get('cores', '?')} "
        f"cores {where}"
    ]
    return per_gb, linear


def figures() -> dict[str, list[str]]:
    """Return the latest benchmark figures per requirement id."""
    per_gb, linear = _scaling()
    return {"R2.1": _throughput(), "R2.2": _query_latency() + per_gb, "R2.3": linear}


def _anchor(req: Requirement) -> str:
    """Return the anchor GitHub gives the requirement's heading, e.g. `r23-scalability`."""
    heading = f"{req.id} {req.title}".lower()
    return re.sub(r"[^\w\- ]", "", heading).replace(" ", "-")


def render(
    requirements: tuple[Requirement, ...], markers: dict[str, list[str]], figs: dict[str, list[str]]
) -> str:
    """Return the Markdown page."""
    lines = [
        "# Requirements: code, tests and figures",
        "",
        "Each requirement of the specification (R1.1-R7.3), what the project has built for it,",
        "the modules that implement it (under `src/crypto_lakehouse/`), the tests that show it",
        '(marked `@pytest.mark.req("R3.2")`) and the latest benchmark figure where one exists.',
        "Generated by `python scripts/requirements.py`; do not edit by hand. The suite fails",
        "when this page is stale (`tests/test_requirements.py`).",
        "",
        "| id | requirement | status | tests |",
        "| --- | --- | --- | --- |",
    ]
    lines += [
        f"| [{r.id}](#{_anchor(r)}) | {r.title} | {r.status} | {len(markers.get(r.id, []))} |"
        for r in requirements
    ]
    for req in requirements:
        lines += ["", f"## {req.id} {req.title}", "", f"**{req.status}.** {req.meaning}.", ""]
        if req.approach:
            lines += [req.approach, ""]
        if req.modules:
            lines.append("Modules: " + ", ".join(f"`{m}`" for m in req.modules) + ".")
            lines.append("")
        if figs.get(req.id):
            lines += ["Figures:", "", *[f"- {fig}" for fig in figs[req.id]], ""]
        tests = markers.get(req.id, [])
        if tests:
            lines += ["Tests:", "", *[f"- `{test}`" for test in tests]]
    return "\n".join(lines).rstrip() + "\n"


def main(argv: list[str] | None = None) -> int:
    """Write the page, or with --check say whether it is current and the trace whole."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="exit 1 if stale or broken")
    args = parser.parse_args(argv)
    markers = collect_markers()
    broken = problems(REQUIREMENTS, markers)
    page = render(REQUIREMENTS, markers, figures())
    for problem in broken:
        print(f"requirements: {problem}", file=sys.stderr)
    if args.check:
        current = PAGE.read_text() if PAGE.exists() else ""
        if current != page:
            print(
                f"requirements: {PAGE.relative_to(ROOT)} is stale; run "
                "`python scripts/requirements.py`",
                file=sys.stderr,
            )
            return 1
        return 1 if broken else 0
    PAGE.write_text(page)
    print(
        f"wrote {PAGE.relative_to(ROOT)}: {len(REQUIREMENTS)} requirements, "
        f"{sum(map(len, markers.values()))} marked tests"
    )
    return 1 if broken else 0


if __name__ == "__main__":
    sys.exit(main())
