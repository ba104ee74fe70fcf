"""The `lakehouse` command: thin adapters that parse flags, run a pipeline, show its result."""

from __future__ import annotations

import asyncio
import sys
from datetime import UTC, date, datetime
from typing import TYPE_CHECKING, Annotated

import typer

from crypto_lakehouse import cli_render as render
from crypto_lakehouse.config import Settings, load_settings
from crypto_lakehouse.exceptions import LakehouseError
from crypto_lakehouse.ops.logging import configure_logging

if TYPE_CHECKING:
    from crypto_lakehouse.query.status import TableStatus

app = typer.Typer(
    help="crypto-lakehouse: Binance public market data as typed, verified Delta tables.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)
_state: dict[str, object] = {"debug": False, "root": None}

RootOption = Annotated[
    str | None, typer.Option("--root", help="Lake root (path or s3://bucket/prefix)")
]


@app.callback()
def _main(
    debug: Annotated[bool, typer.Option("--debug", help="Show tracebacks")] = False,
    log_level: Annotated[str, typer.Option("--log-level")] = "",
) -> None:
    """Configure logging for every command."""
    _state["debug"] = debug
    settings = Settings()
    configure_logging(log_level or settings.log_level)


def _settings(root: str | None, **overrides: object) -> Settings:
    """Return settings with command-line overrides applied."""
    return load_settings(root=root, **overrides)


def _fail(exc: Exception) -> typer.Exit:
    """Print an error without a traceback (unless --debug) and return exit code 2."""
    if _state["debug"]:
        raise exc
    render.stderr.print(f"[bold red]error:[/] {exc}")
    return typer.Exit(code=2)


def _parse_symbols(value: str | None) -> tuple[str, ...]:
    """Split `A,B` into upper-case symbols."""
    if not value:
        return ()
    return tuple(s.strip().upper() for s in value.split(",") if s.strip())


@app.command()
def ingest(
    market: Annotated[str, typer.Argument(help="spot | um | cm | option")],
    data_type: Annotated[str, typer.Argument(help="klines, aggTrades, trades, fundingRate, ...")],
    symbols: Annotated[str | None, typer.Option(help="Comma-separated; default: all")] = None,
    interval: Annotated[str | None, typer.Option(help="Kline interval, e.g. 1m")] = None,
    start: Annotated[str | None, typer.Option(help="First day, YYYY-MM-DD")] = None,
    end: Annotated[str | None, typer.Option(help="Last day, YYYY-MM-DD (inclusive)")] = None,
    period: Annotated[str, typer.Option(help="daily | monthly | auto")] = "auto",
    executor: Annotated[str, typer.Option(help="threads | processes | dask")] = "threads",
    dask_address: Annotated[
        str | None, typer.Option(help="tcp://scheduler:8786; implies --executor dask")
    ] = None,
    workers: Annotated[int | None, typer.Option(help="Parse workers (default: cores)")] = None,
    root: RootOption = None,
) -> None:
    """Archive → bronze → silver. Exit 0 when every file was verified and loaded."""
    from crypto_lakehouse.pipeline.ingest import IngestRequest
    from crypto_lakehouse.pipeline.ingest import ingest as run_ingest

    try:
        settings = _settings(root, workers=workers)
        request = IngestRequest(
            market=market,
            data_type=data_type,
            symbols=_parse_symbols(symbols),
            interval=interval,
            start=date.fromisoformat(start) if start else None,
            end=date.fromisoformat(end) if end else None,
            period=period,  # type: ignore[arg-type]
            executor="dask" if dask_address else executor,  # type: ignore[arg-type]
            dask_address=dask_address,
        )
        started = datetime.now(UTC)
        with render.RichProgress() as progress:
            result = asyncio.run(run_ingest(request, settings, progress=progress))
    except (LakehouseError, KeyError, ValueError) as exc:
        raise _fail(exc) from None
    render.stdout.print(render.ingest_summary(result))
    _print_supersessions(settings, result.table, started)
    for note in result.notes:
        render.stderr.print(f"[yellow]note:[/] {note}")
    problems = render.problems_table(result)
    if problems is not None:
        render.stdout.print(problems)
        raise typer.Exit(code=1)


def _print_supersessions(settings: Settings, table: str, since: datetime) -> None:
    """Show how many provisional rows this run's archive files superseded, if any."""
    from crypto_lakehouse.cli_live_render import supersession_table
    from crypto_lakehouse.pipeline.supersede import supersession_summary
    from crypto_lakehouse.storage.lake import Lake

    summary = supersession_summary(Lake.at(settings.root), table, since=since)
    if summary is not None:
        render.stdout.print(supersession_table(summary))


@app.command()
def sql(
    query: Annotated[str, typer.Argument(help='e.g. "SELECT count(*) FROM silver.spot_klines"')],
    output: Annotated[str, typer.Option("--format", help="table | csv | json")] = "table",
    root: RootOption = None,
) -> None:
    """Run SQL over the lake; tables are `silver.<table>` and `gold.<table>`."""
    from crypto_lakehouse.query.engine import QueryEngine
    from crypto_lakehouse.storage.lake import Lake

    try:
        engine = QueryEngine(Lake.at(_settings(root).root))
        frame = engine.sql(query)
    except LakehouseError as exc:
        raise _fail(exc) from None
    if output == "json":
        sys.stdout.write(render.frame_json(frame) + "\n")
    elif output == "csv":
        sys.stdout.write(render.frame_csv(frame))
    else:
        render.stdout.print(render.frame_table(frame))


@app.command()
def status(root: RootOption = None) -> None:
    """Show the lake's coverage: tables, symbols, spans, rows, files, quarantined files."""
    import polars as pl

    from crypto_lakehouse.query.engine import QueryEngine
    from crypto_lakehouse.query.status import manifest_summary, table_status
    from crypto_lakehouse.storage.lake import Lake

    try:
        lake = Lake.at(_settings(root).root)
        engine = QueryEngine(lake)
        stats = table_status(lake, engine)
        counts, bad = manifest_summary(lake)
    except LakehouseError as exc:
        raise _fail(exc) from None
    frame = pl.DataFrame([render_status_row(s) for s in stats]) if stats else pl.DataFrame()
    render.stdout.print(render.frame_table(frame, title=f"lake {lake.uri}"))
    if counts.height:
        render.stdout.print(render.frame_table(counts, title="manifest: files by status"))
    if bad.height:
        render.stdout.print(render.frame_table(bad, title="quarantined or failed files"))


def render_status_row(status: TableStatus) -> dict[str, object]:
    """Return a TableStatus as a display row."""
    return {
        "table": f"{status.layer}.{status.table}",
        "version": status.version,
        "rows": status.rows,
        "symbols": status.symbols,
        "first": status.first,
        "last": status.last,
        "files": status.files,
        "MB": round(status.bytes / 1e6, 2),
    }


@app.command()
def optimize(
    table: Annotated[
        str | None, typer.Argument(help="silver.spot_klines (or spot_klines); default: all tables")
    ] = None,
    vacuum: Annotated[
        bool, typer.Option("--vacuum/--no-vacuum", help="Delete files older than the retention")
    ] = True,
    retention_hours: Annotated[
        int, typer.Option(help="Keep removed files this long (minimum 1) for live readers")
    ] = 168,
    zorder: Annotated[
        bool, typer.Option("--zorder/--no-zorder", help="Order files by the table's time column")
    ] = True,
    target_mb: Annotated[int, typer.Option(help="Target size of the rewritten files (MB)")] = 128,
    root: RootOption = None,
) -> None:
    """Compact small files, order them by time, and vacuum old files with a safe retention."""
    import polars as pl

    from crypto_lakehouse.query.api import split_name
    from crypto_lakehouse.query.engine import QueryEngine
    from crypto_lakehouse.storage.lake import Lake
    from crypto_lakehouse.storage.maintenance import (
        optimize_table,
        row_group_rows_for,
        time_columns,
    )

    try:
        lake = Lake.at(_settings(root).root)
        names = [split_name(table)] if table else QueryEngine(lake).tables()
        results = [
            optimize_table(
                lake, layer, name,
                zorder_by=time_columns(name) if zorder else None,
                target_size=target_mb << 20,
                vacuum=vacuum,
                vacuum_retention_hours=retention_hours,
                row_group_rows=row_group_rows_for(name),
            )
            for layer, name in names
        ]  # fmt: skip
    except LakehouseError as exc:
        raise _fail(exc) from None
    if not results:
        render.stdout.print(f"no tables in {lake.uri}")
        return
    rows = [
        {
            "table": r.name,
            "version": f"{r.before.version} → {r.after.version}",
            "files": f"{r.before.files} → {r.after.files}",
            "MB": f"{r.before.bytes / 1e6:.1f} → {r.after.bytes / 1e6:.1f}",
            "ordered by": ",".join(r.zorder_by) or "-",
            "vacuumed": len(r.vacuumed),
            "seconds": round(r.seconds, 2),
        }
        for r in results
    ]
    render.stdout.print(render.frame_table(pl.DataFrame(rows), title=f"optimize {lake.uri}"))


@app.command()
def update(
    market: Annotated[str, typer.Argument(help="spot | um | cm")],
    data_type: Annotated[str, typer.Argument(help="klines, aggTrades, fundingRate, metrics, ...")],
    symbols: Annotated[str, typer.Option(help="Comma-separated symbols, e.g. BTCUSDT,ETHUSDT")],
    interval: Annotated[str | None, typer.Option(help="Kline interval, e.g. 1m")] = None,
    start: Annotated[str | None, typer.Option(help="First day, YYYY-MM-DD")] = None,
    end: Annotated[str, typer.Option(help="Last day, YYYY-MM-DD, or now")] = "now",
    root: RootOption = None,
) -> None:
    """Bring a table up to now: archive files, then REST (provisional) for the days it lacks."""
    from crypto_lakehouse import cli_live_render as live_render
    from crypto_lakehouse.pipeline.update import UpdateRequest
    from crypto_lakehouse.pipeline.update import update as run_update

    try:
        request = UpdateRequest(
            market=market,
            data_type=data_type,
            symbols=_parse_symbols(symbols),
            interval=interval,
            start=date.fromisoformat(start) if start else None,
            end=None if end.lower() == "now" else date.fromisoformat(end),
        )
        settings = _settings(root)
        with live_render.UpdateProgressBars() as progress:
            result = asyncio.run(run_update(request, settings, progress=progress))
    except (LakehouseError, KeyError, ValueError) as exc:
        raise _fail(exc) from None
    for table in live_render.update_tables(result):
        render.stdout.print(table)
    if result.stopped:
        render.stderr.print(f"[bold red]stopped:[/] {result.rest_message}")
    code = live_render.update_exit_code(result)
    if code:
        raise typer.Exit(code=code)


@app.command()
def stream(
    market: Annotated[str, typer.Argument(help="spot | um | cm")],
    symbols: Annotated[str, typer.Option(help="Comma-separated symbols, e.g. BTCUSDT,ETHUSDT")],
    streams: Annotated[
        str, typer.Option(help="Comma-separated: kline_<interval>, aggTrade, markPrice, forceOrder")
    ] = "kline_1m",
    flush_seconds: Annotated[float, typer.Option(help="Write a micro-batch this often")] = 5.0,
    duration: Annotated[float | None, typer.Option(help="Stop after this many seconds")] = None,
    root: RootOption = None,
) -> None:
    """Stream live data into bronze and provisional silver rows until SIGINT/SIGTERM."""
    from crypto_lakehouse import cli_live_render as live_render
    from crypto_lakehouse.pipeline.live import StreamRequest, run_stream

    try:
        request = StreamRequest(
            market=market,
            symbols=_parse_symbols(symbols),
            streams=tuple(s.strip() for s in streams.split(",") if s.strip()),
            flush_seconds=flush_seconds,
            duration=duration,
        )
        settings = _settings(root)
        with live_render.StreamStatus() as status_line:
            result = asyncio.run(
                run_stream(request, settings, handle_signals=True, observer=status_line.update)
            )
    except (LakehouseError, KeyError, ValueError) as exc:
        raise _fail(exc) from None
    render.stdout.print(live_render.stream_summary(result))


quality_app = typer.Typer(
    help="Data quality: scores, gaps, reconciliation, reports.", no_args_is_help=True
)
gold_app = typer.Typer(help="Gold aggregates built from silver.", no_args_is_help=True)
app.add_typer(quality_app, name="quality")
app.add_typer(gold_app, name="gold")
StartOption = Annotated[str | None, typer.Option(help="First day, YYYY-MM-DD")]
EndOption = Annotated[str | None, typer.Option(help="Last day, YYYY-MM-DD (inclusive)")]
SymbolsOption = Annotated[str | None, typer.Option(help="Comma-separated; default: all")]


def _day(value: str | None) -> date | None:
    """Parse an optional YYYY-MM-DD flag."""
    return date.fromisoformat(value) if value else None


@quality_app.command("report")
def quality_report(
    table: Annotated[str | None, typer.Option(help="Silver table; default: all checked")] = None,
    symbols: SymbolsOption = None,
    start: StartOption = None,
    end: EndOption = None,
    out: Annotated[str, typer.Option(help="Folder for the HTML and Markdown report")] = "reports",
    root: RootOption = None,
) -> None:
    """Score what is asked (computing what gold lacks), show the worst problems, write reports."""
    from pathlib import Path

    from crypto_lakehouse import quality_render as qrender
    from crypto_lakehouse.quality.report import write_report
    from crypto_lakehouse.quality.report_data import checked_tables, ensure_quality, load_view
    from crypto_lakehouse.storage.lake import Lake

    try:
        lake = Lake.at(_settings(root).root)
        names = checked_tables(lake, table)
        picked = list(_parse_symbols(symbols)) or None
        first, last = _day(start), _day(end)
        with qrender.StepProgress("quality") as progress:
            ensure_quality(lake, names, symbols=picked, start=first, end=last, on_step=progress)
        view = load_view(lake, names, symbols=picked, start=first, end=last)
        html, markdown = write_report(Path(out), view.scores, view.gaps, deductions=view.deductions)
    except (LakehouseError, ValueError) as exc:
        raise _fail(exc) from None
    render.stdout.print(qrender.scores_table(view))
    problems = (
        qrender.worst_days_table(view),
        qrender.gaps_table(view),
        qrender.holes_table(view),
        qrender.violations_table(view),
        qrender.formats_table(view),
    )
    for shown in problems:
        if shown is not None:
            render.stdout.print(shown)
    render.stdout.print(f"HTML report: {html}")
    render.stdout.print(f"Markdown summary: {markdown}")


@quality_app.command("reconcile")
def quality_reconcile(
    symbols: Annotated[str, typer.Option(help="Comma-separated symbols")],
    start: Annotated[str, typer.Option(help="First day, YYYY-MM-DD")],
    end: Annotated[str, typer.Option(help="Last day, YYYY-MM-DD (inclusive)")],
    table: Annotated[str, typer.Option(help="Silver klines table")] = "spot_klines",
    agg_table: Annotated[
        str | None, typer.Option(help="aggTrades table; default <market>_agg_trades; 'none' skips")
    ] = None,
    root: RootOption = None,
) -> None:
    """Klines vs aggTrades, daily vs monthly files, archive vs REST. Exit 1 on any mismatch."""
    from crypto_lakehouse import quality_render as qrender
    from crypto_lakehouse.quality.reconcile_lake import reconcile_tables
    from crypto_lakehouse.storage import tables as delta_tables
    from crypto_lakehouse.storage.lake import Lake

    try:
        lake = Lake.at(_settings(root).root)
        trades: str | None = agg_table or table.removesuffix("klines") + "agg_trades"
        if agg_table == "none" or not delta_tables.table_exists(lake, "silver", str(trades)):
            trades = None
        with qrender.StepProgress("reconcile") as progress:
            result = reconcile_tables(
                lake, klines_table=table, agg_table=trades, symbols=_parse_symbols(symbols),
                start=date.fromisoformat(start), end=date.fromisoformat(end), on_step=progress,
            )  # fmt: skip
    except (LakehouseError, KeyError, ValueError) as exc:
        raise _fail(exc) from None
    render.stdout.print(qrender.reconcile_table(result))
    mismatches = qrender.mismatches_table(result)
    if mismatches is not None:
        render.stdout.print(mismatches)
        raise typer.Exit(code=1)


@gold_app.command("build")
def gold_build(
    table: Annotated[str | None, typer.Option(help="Silver klines table; default: all")] = None,
    symbols: SymbolsOption = None,
    start: StartOption = None,
    end: EndOption = None,
    interval: Annotated[str, typer.Option(help="Bar lengths, comma-separated, e.g. 1h,4h")] = "1h",
    offset: Annotated[str | None, typer.Option(help="Shift of bar boundaries, e.g. 30m")] = None,
    root: RootOption = None,
) -> None:
    """Rebuild gold bars, summaries, funding, basis and OI where the silver input changed."""
    from crypto_lakehouse import quality_render as qrender
    from crypto_lakehouse.pipeline.gold_build import build_gold
    from crypto_lakehouse.storage.lake import Lake

    try:
        lake = Lake.at(_settings(root).root)
        names = [table] if table else [n for n in lake.list_dirs("silver") if n.endswith("_klines")
                                       and n.split("_", 1)[0] in ("spot", "um", "cm")]  # fmt: skip
        intervals = tuple(i.strip() for i in interval.split(",") if i.strip())
        results = []
        for name in names:
            with qrender.StepProgress(f"gold {name}") as progress:
                results.append(build_gold(
                    lake, table=name, symbols=list(_parse_symbols(symbols)) or None,
                    start=_day(start), end=_day(end), intervals=intervals, offset=offset,
                    on_step=progress,
                ))  # fmt: skip
    except (LakehouseError, ValueError) as exc:
        raise _fail(exc) from None
    for result in results:
        render.stdout.print(qrender.gold_build_table(result))


def main() -> None:
    """Entry point of the `lakehouse` script."""
    app()
