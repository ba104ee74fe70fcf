"""The `lakehouse` command: thin adapters that parse flags, run a pipeline, show its result."""

from __future__ import annotations

import asyncio
import sys
from datetime import date
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
        with render.RichProgress() as progress:
            result = asyncio.run(run_ingest(request, settings, progress=progress))
    except (LakehouseError, KeyError, ValueError) as exc:
        raise _fail(exc) from None
    render.stdout.print(render.ingest_summary(result))
    problems = render.problems_table(result)
    if problems is not None:
        render.stdout.print(problems)
        raise typer.Exit(code=1)


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


def main() -> None:
    """Entry point of the `lakehouse` script."""
    app()
