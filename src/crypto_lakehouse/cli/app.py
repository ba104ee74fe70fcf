"""The `lakehouse` command: thin adapters that parse flags, run a pipeline, show its result."""

from __future__ import annotations

import asyncio
import sys
from datetime import UTC, date, datetime, timedelta
from typing import TYPE_CHECKING, Annotated

import typer

from crypto_lakehouse.cli import render
from crypto_lakehouse.cli.common import (
    RootOption,
    fail,
    lake_for,
    parse_symbols,
    settings_for,
    state,
)
from crypto_lakehouse.cli.quality import gold_app, quality_app
from crypto_lakehouse.config import Settings
from crypto_lakehouse.exceptions import LakehouseError
from crypto_lakehouse.telemetry.logging import configure_logging

if TYPE_CHECKING:
    from crypto_lakehouse.query.status import TableStatus

app = typer.Typer(
    help="crypto-lakehouse: Binance public market data as typed, verified Delta tables.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)


@app.callback()
def _main(
    debug: Annotated[bool, typer.Option("--debug", help="Show tracebacks")] = False,
    log_level: Annotated[str, typer.Option("--log-level")] = "",
) -> None:
    """Configure logging for every command."""
    state["debug"] = debug
    settings = Settings()
    configure_logging(log_level or settings.log_level)


@app.command()
def ingest(  # noqa: PLR0913 - typer maps each parameter to one flag of the command
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
    download_concurrency: Annotated[
        int | None,
        typer.Option(
            help="HTTP requests in flight at once (default 16): raise it for a distant archive "
            "on a fast link, where round trips bound the downloads"
        ),
    ] = None,
    root: RootOption = None,
) -> None:
    """Archive → bronze → silver. Exit 0 when every file was verified and loaded."""
    from crypto_lakehouse.ingest.run import IngestRequest
    from crypto_lakehouse.ingest.run import ingest as run_ingest

    try:
        settings = settings_for(root, workers=workers, download_concurrency=download_concurrency)
        request = IngestRequest(
            market=market,
            data_type=data_type,
            symbols=parse_symbols(symbols),
            interval=interval,
            start=date.fromisoformat(start) if start else None,
            end=date.fromisoformat(end) if end else None,
            period=period,  # type: ignore[arg-type]
            executor="dask" if dask_address else executor,  # type: ignore[arg-type]
            dask_address=dask_address,
        )
        started = datetime.now(UTC)
        with render.RichProgress() as progress:
            result = asyncio.run(
                run_ingest(request, settings, progress=progress, process_tuning=True)
            )
    except (LakehouseError, KeyError, ValueError) as exc:
        raise fail(exc) from None
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
    from crypto_lakehouse.cli.live_render import supersession_table
    from crypto_lakehouse.ingest.write.supersede import supersession_summary
    from crypto_lakehouse.storage.root import LakeRoot

    summary = supersession_summary(LakeRoot.at(settings.root), table, since=since)
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

    try:
        engine = QueryEngine(lake_for(settings_for(root), write=False))
        frame = engine.sql(query)
    except LakehouseError as exc:
        raise fail(exc) from None
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

    try:
        lake = lake_for(settings_for(root), write=False)
        engine = QueryEngine(lake)
        stats = table_status(lake, engine)
        counts, bad = manifest_summary(lake)
    except LakehouseError as exc:
        raise fail(exc) from None
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
    """Compact small files, order them by time, and vacuum old files with a safe retention.

    Vacuuming the whole lake also deletes the staging prefixes that crashed Dask runs left
    behind (`_staging/`), when older than the retention.
    """
    import polars as pl

    from crypto_lakehouse.ingest.write import staging
    from crypto_lakehouse.query.api import split_name
    from crypto_lakehouse.query.engine import QueryEngine
    from crypto_lakehouse.storage.maintenance import (
        optimize_table,
        row_group_rows_for,
        time_columns,
    )

    try:
        lake = lake_for(settings_for(root), write=True)
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
        swept = (
            staging.sweep_stale(lake, datetime.now(UTC), timedelta(hours=retention_hours))
            if vacuum and table is None
            else []
        )
    except LakehouseError as exc:
        raise fail(exc) from None
    if swept:
        render.stdout.print(f"deleted {len(swept)} staging folder(s) of crashed runs: "
                            + ", ".join(swept))  # fmt: skip
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
    from crypto_lakehouse.cli import live_render
    from crypto_lakehouse.recent.update import UpdateRequest
    from crypto_lakehouse.recent.update import update as run_update

    try:
        request = UpdateRequest(
            market=market,
            data_type=data_type,
            symbols=parse_symbols(symbols),
            interval=interval,
            start=date.fromisoformat(start) if start else None,
            end=None if end.lower() == "now" else date.fromisoformat(end),
        )
        settings = settings_for(root)
        with live_render.UpdateProgressBars() as progress:
            result = asyncio.run(
                run_update(request, settings, progress=progress, process_tuning=True)
            )
    except (LakehouseError, KeyError, ValueError) as exc:
        raise fail(exc) from None
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
    from crypto_lakehouse.cli import live_render
    from crypto_lakehouse.recent.live import StreamRequest, run_stream

    try:
        request = StreamRequest(
            market=market,
            symbols=parse_symbols(symbols),
            streams=tuple(s.strip() for s in streams.split(",") if s.strip()),
            flush_seconds=flush_seconds,
            duration=duration,
        )
        settings = settings_for(root)
        with live_render.StreamStatus() as status_line:
            result = asyncio.run(
                run_stream(request, settings, handle_signals=True, observer=status_line.update)
            )
    except (LakehouseError, KeyError, ValueError) as exc:
        raise fail(exc) from None
    render.stdout.print(live_render.stream_summary(result))


@app.command()
def migrate(root: RootOption = None) -> None:
    """Upgrade the lake to this version's format (a lake written by a newer one is refused)."""
    from crypto_lakehouse.storage.format_version import migrate as run_migrate

    try:
        lake = lake_for(settings_for(root), write=False)
        result = run_migrate(lake)
    except LakehouseError as exc:
        raise fail(exc) from None
    if not result.changed:
        render.stdout.print(
            f"lake {lake.uri}: format {result.after}, already current", soft_wrap=True
        )
        return
    for step in result.steps:
        render.stdout.print(f"ran {step}", soft_wrap=True)
    render.stdout.print(
        f"lake {lake.uri}: format {result.before} -> {result.after}", soft_wrap=True
    )


app.add_typer(quality_app, name="quality")
app.add_typer(gold_app, name="gold")


def main() -> None:
    """Entry point of the `lakehouse` script."""
    app()
