"""`lakehouse quality ...` and `lakehouse gold ...`: thin adapters over quality/ and gold."""

from __future__ import annotations

from datetime import date
from typing import Annotated

import typer

from crypto_lakehouse.cli import render
from crypto_lakehouse.cli.common import RootOption, fail, lake_for, parse_symbols, settings_for
from crypto_lakehouse.exceptions import LakehouseError

quality_app = typer.Typer(
    help="Data quality: scores, gaps, reconciliation, reports.", no_args_is_help=True
)
gold_app = typer.Typer(help="Gold aggregates built from silver.", no_args_is_help=True)
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

    from crypto_lakehouse.cli import quality_render as qrender
    from crypto_lakehouse.quality.report.data import checked_tables, ensure_quality, load_view
    from crypto_lakehouse.quality.report.render import write_report

    try:
        lake = lake_for(settings_for(root), write=True)
        names = checked_tables(lake, table)
        picked = list(parse_symbols(symbols)) or None
        first, last = _day(start), _day(end)
        with qrender.StepProgress("quality") as progress:
            ensure_quality(lake, names, symbols=picked, start=first, end=last, on_step=progress)
        view = load_view(lake, names, symbols=picked, start=first, end=last)
        html, markdown = write_report(Path(out), view.scores, view.gaps, deductions=view.deductions)
    except (LakehouseError, ValueError) as exc:
        raise fail(exc) from None
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
    from crypto_lakehouse.cli import quality_render as qrender
    from crypto_lakehouse.quality.reconcile.lake import reconcile_tables
    from crypto_lakehouse.storage import delta as delta_tables

    try:
        lake = lake_for(settings_for(root), write=True)
        trades: str | None = agg_table or table.removesuffix("klines") + "agg_trades"
        if agg_table == "none" or not delta_tables.table_exists(lake, "silver", str(trades)):
            trades = None
        with qrender.StepProgress("reconcile") as progress:
            result = reconcile_tables(
                lake, klines_table=table, agg_table=trades, symbols=parse_symbols(symbols),
                start=date.fromisoformat(start), end=date.fromisoformat(end), on_step=progress,
            )  # fmt: skip
    except (LakehouseError, KeyError, ValueError) as exc:
        raise fail(exc) from None
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
    from crypto_lakehouse.cli import quality_render as qrender
    from crypto_lakehouse.gold.build import build_gold

    try:
        lake = lake_for(settings_for(root), write=True)
        names = [table] if table else [n for n in lake.list_dirs("silver") if n.endswith("_klines")
                                       and n.split("_", 1)[0] in ("spot", "um", "cm")]  # fmt: skip
        intervals = tuple(i.strip() for i in interval.split(",") if i.strip())
        results = []
        for name in names:
            with qrender.StepProgress(f"gold {name}") as progress:
                results.append(build_gold(
                    lake, table=name, symbols=list(parse_symbols(symbols)) or None,
                    start=_day(start), end=_day(end), intervals=intervals, offset=offset,
                    on_step=progress,
                ))  # fmt: skip
    except (LakehouseError, ValueError) as exc:
        raise fail(exc) from None
    for result in results:
        render.stdout.print(qrender.gold_build_table(result))
