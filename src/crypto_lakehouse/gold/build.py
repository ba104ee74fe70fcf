"""Build the gold aggregates of a klines table, only for the (symbol, day)s whose input changed.

Products, each a Delta table under `gold/`:

- `bars_<interval>`: 1m klines resampled to the interval (with an offset), `complete` flag;
- `daily_summary`: OHLCV, VWAP, return, realised volatility, taker-buy ratio, funding paid
  (from `silver.<market>_funding_rate`) and the quality score (from `gold.quality`);
- `funding_adjusted_returns`: perpetual daily returns net of funding (UM/COIN-M);
- `basis`: a USD-M perpetual vs the spot market of the same symbol, per minute;
- `open_interest`: 5-minute metrics next to 5-minute price bars (UM/COIN-M).

Change detection lives in `gold_inputs.py`; an unchanged rebuild writes nothing at all.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from typing import TYPE_CHECKING, Final

import polars as pl
import pyarrow.compute as pc
import structlog

from crypto_lakehouse.datasets import dataset_for_table
from crypto_lakehouse.exceptions import ConfigurationError
from crypto_lakehouse.gold import frames as gold
from crypto_lakehouse.gold import inputs as gold_inputs
from crypto_lakehouse.gold.inputs import GOLD, SILVER, conform, to_runs
from crypto_lakehouse.quality.checks.tables import US_PER_DAY, interval_us
from crypto_lakehouse.storage import delta as tables
from crypto_lakehouse.storage import partitions

if TYPE_CHECKING:
    from collections.abc import Sequence

    from crypto_lakehouse.storage.partitions import Runs
    from crypto_lakehouse.storage.root import LakeRoot

log = structlog.get_logger(__name__)
StepCallback = Callable[[int, int, str], None]
SOURCE_INTERVAL: Final = "1m"
# UM metrics label the end of their 5 minutes until this day, the start from it on.
UM_METRICS_START_LABEL: Final = date(2026, 6, 25)
BASIS_PAIRS: Final = {
    "um_klines": ("um_klines", "spot_klines"),
    "spot_klines": ("um_klines", "spot_klines"),
}


@dataclass(slots=True, frozen=True)
class GoldBuildResult:
    """What a gold build rebuilt: days per product and rows written per gold table."""

    table: str
    rebuilt: dict[str, Runs] = field(default_factory=dict)
    rows: dict[str, int] = field(default_factory=dict)

    @property
    def written(self) -> bool:
        """Tell whether anything was written (False for an unchanged rebuild)."""
        return bool(self.rebuilt)

    def days(self, product: str) -> int:
        """Return how many (symbol, day)s of a product were rebuilt."""
        runs = self.rebuilt.get(product, {})
        return sum(len(partitions.run_days(run)) for spans in runs.values() for run in spans)


@dataclass(slots=True, frozen=True)
class _Context:
    """The tables one build reads."""

    lake: LakeRoot
    table: str
    funding: str | None
    metrics: str | None
    market: str
    built_at: datetime


def _read(
    ctx: _Context,
    table: str,
    runs: Runs,
    *,
    time_column: str = "open_time",
    klines: bool = True,
    pad_days: int = 0,
) -> pl.DataFrame:
    """Read silver rows of the runs (1m rows only for klines); empty when absent."""
    where = pc.field("interval") == SOURCE_INTERVAL if klines else None
    frame = partitions.scan_runs(
        ctx.lake, SILVER, table, runs, time_column=time_column, pad_days=pad_days, where=where
    )
    return frame if frame is not None else pl.DataFrame()


def _stamp(
    frame: pl.DataFrame, ctx: _Context, schema: pl.Schema, *, table: bool = True
) -> pl.DataFrame:
    """Add the table, day and build time columns and conform to a gold schema."""
    extra = [pl.lit(ctx.built_at).alias("built_at")]
    if table:
        extra.append(pl.lit(ctx.table).alias("table"))
    if "day" not in frame.columns:
        extra.append(pl.col("open_time").dt.date().alias("day"))
    return conform(frame.with_columns(extra), schema)


def _bar_days(runs: Runs, every: str, offset: str | None) -> tuple[Runs, Runs]:
    """Return (bar days to rebuild, input days to read) for changed input days."""
    every_us = interval_us(every)
    offset_us = interval_us(offset) % every_us if offset else 0
    if US_PER_DAY % every_us == 0 and offset_us == 0:
        return runs, runs
    bar_days: dict[str, set[date]] = {}
    for symbol, spans in runs.items():
        for day in (d for span in spans for d in partitions.run_days(span)):
            lo = int(partitions.midnight(day).timestamp() * 1_000_000)
            first = (lo - offset_us) // every_us * every_us + offset_us
            last = (lo + US_PER_DAY - 1 - offset_us) // every_us * every_us + offset_us
            for t in (first, last):
                bar_days.setdefault(symbol, set()).add(datetime.fromtimestamp(t / 1e6, UTC).date())
    spread = (every_us + US_PER_DAY - 1) // US_PER_DAY
    inputs = {
        s: {d + timedelta(days=n) for d in days for n in range(spread + 1)}
        for s, days in bar_days.items()
    }
    return partitions.symbol_runs(bar_days), partitions.symbol_runs(inputs)


def _bars(
    ctx: _Context, runs: Runs, every: str, offset: str | None
) -> tuple[str, pl.DataFrame, Runs]:
    """Resample the 1m input of the changed days into `every` bars."""
    bar_runs, input_runs = _bar_days(runs, every, offset)
    klines = _read(ctx, ctx.table, input_runs)
    bars = gold.resample_klines(klines, every, offset=offset) if klines.height else pl.DataFrame()
    out = (
        _stamp(bars, ctx, gold_inputs.BARS_SCHEMA)
        if bars.height
        else gold_inputs.BARS_SCHEMA.to_frame()
    )
    return f"bars_{every}", out.filter(partitions.in_runs(bar_runs)), bar_runs


def _summary(ctx: _Context, runs: Runs) -> pl.DataFrame:
    """Return the daily summary of the changed days, with funding and quality scores."""
    klines = _read(ctx, ctx.table, runs)
    if klines.is_empty():
        return gold_inputs.SUMMARY_SCHEMA.to_frame()
    funding = None
    if ctx.funding is not None:
        funding = _read(ctx, ctx.funding, runs, time_column="calc_time", klines=False)
        funding = funding if funding.height else None
    scores = partitions.scan(
        ctx.lake,
        GOLD,
        "quality",
        filter_expr=pc.field("table") == ctx.table,
        columns=["symbol", "day", "score"],
    )
    if scores is not None and scores.is_empty():
        scores = None
    summary = gold.daily_summary(klines, funding=funding, scores=scores)
    return _stamp(summary, ctx, gold_inputs.SUMMARY_SCHEMA)


def _funding_returns(ctx: _Context, runs: Runs) -> pl.DataFrame:
    """Return funding-adjusted daily returns of the changed days."""
    summary = _summary(ctx, runs)
    return _stamp(gold.funding_adjusted_returns(summary), ctx, gold_inputs.FUNDING_RETURNS_SCHEMA)


def _basis(ctx: _Context, runs: Runs) -> pl.DataFrame:
    """Return the per-minute basis of each symbol's perpetual against its spot market."""
    perp_table, spot_table = BASIS_PAIRS[ctx.table]
    perp, spot = _read(ctx, perp_table, runs), _read(ctx, spot_table, runs)
    found = [gold_inputs.BASIS_SCHEMA.to_frame()]
    for symbol in runs:
        mine_perp = perp.filter(pl.col("symbol") == symbol) if perp.height else perp
        mine_spot = spot.filter(pl.col("symbol") == symbol) if spot.height else spot
        if mine_perp.height and mine_spot.height:
            frame = gold.basis(mine_perp, mine_spot).with_columns(symbol=pl.col("perp_symbol"))
            found.append(_stamp(frame, ctx, gold_inputs.BASIS_SCHEMA, table=False))
    return pl.concat(found)


def _open_interest(ctx: _Context, runs: Runs) -> pl.DataFrame:
    """Return 5-minute metrics next to 5-minute price bars for the changed days."""
    assert ctx.metrics is not None
    klines = _read(ctx, ctx.table, runs)
    metrics = _read(ctx, ctx.metrics, runs, time_column="create_time", klines=False, pad_days=1)
    if klines.is_empty() or metrics.is_empty():
        return gold_inputs.OPEN_INTEREST_SCHEMA.to_frame()
    day = pl.col("open_time").dt.date()
    parts = [gold_inputs.OPEN_INTEREST_SCHEMA.to_frame()]
    for label, rows in (
        ("end", klines.filter(day < UM_METRICS_START_LABEL)),
        ("start", klines.filter(day >= UM_METRICS_START_LABEL)),
    ):
        use = "start" if ctx.market == "cm" else label
        if rows.height:
            joined = gold.open_interest_with_price(rows, metrics, label=use)  # type: ignore[arg-type]
            parts.append(_stamp(joined, ctx, gold_inputs.OPEN_INTEREST_SCHEMA))
    return pl.concat(parts).filter(partitions.in_runs(runs))


def _validate(intervals: Sequence[str], offset: str | None) -> None:
    """Reject bar lengths and offsets that are not whole minutes."""
    step = interval_us(SOURCE_INTERVAL)
    for value in (*intervals, *([offset] if offset else [])):
        if interval_us(value) % step:
            raise ConfigurationError(f"{value} is not a multiple of {SOURCE_INTERVAL}")


def _context(lake: LakeRoot, table: str) -> _Context:
    """Return the build context of a klines table, finding its funding and metrics tables."""
    try:
        dataset = dataset_for_table(table)
    except KeyError as exc:
        raise ConfigurationError(str(exc)) from None
    if dataset.data_type != "klines":
        raise ConfigurationError(
            f"gold is built from klines tables (spot_klines, um_klines, cm_klines), not {table}"
        )
    market = dataset.market
    funding = f"{market}_funding_rate" if market in ("um", "cm") else None
    metrics = f"{market}_metrics" if market in ("um", "cm") else None
    return _Context(
        lake=lake,
        table=table,
        funding=funding if funding and tables.table_exists(lake, SILVER, funding) else None,
        metrics=metrics if metrics and tables.table_exists(lake, SILVER, metrics) else None,
        market=market,
        built_at=datetime.now(UTC),
    )


def _signatures(
    ctx: _Context,
    *,
    symbols: Sequence[str] | None,
    start: date | None,
    end: date | None,
    intervals: Sequence[str],
    offset: str | None,
) -> dict[str, pl.DataFrame]:
    """Return the current input signature per product and (symbol, day)."""

    def parts(table: str, time_column: str, label: str, interval: str | None) -> pl.DataFrame:
        return gold_inputs.input_parts(
            ctx.lake,
            table,
            time_column,
            symbols=symbols,
            start=start,
            end=end,
            interval=interval,
            label=label,
        )

    klines = parts(ctx.table, "open_time", "klines", SOURCE_INTERVAL)
    products = {
        f"bars_{every}@{offset or '0m'}": gold_inputs.signatures(klines) for every in intervals
    }
    extra = [gold_inputs.score_parts(ctx.lake, ctx.table, klines)]
    if ctx.funding is not None:
        extra.append(parts(ctx.funding, "calc_time", "funding", None))
    products["daily_summary"] = gold_inputs.signatures(klines, *extra)
    if ctx.funding is not None:
        products["funding_adjusted_returns"] = products["daily_summary"]
    if ctx.table in BASIS_PAIRS:
        other = next(t for t in BASIS_PAIRS[ctx.table] if t != ctx.table)
        if tables.table_exists(ctx.lake, SILVER, other):
            theirs = parts(other, "open_time", other, SOURCE_INTERVAL)
            both = klines.join(theirs.select("symbol", "day"), on=["symbol", "day"], how="semi")
            products["basis"] = gold_inputs.signatures(both, theirs)
    if ctx.metrics is not None:
        metrics = parts(ctx.metrics, "create_time", "metrics", None)
        products["open_interest"] = gold_inputs.signatures(klines, metrics)
    return products


def _in_scope(
    state: pl.DataFrame, symbols: Sequence[str] | None, start: date | None, end: date | None
) -> pl.DataFrame:
    """Keep the build state rows a scoped build is responsible for."""
    if symbols:
        state = state.filter(pl.col("symbol").is_in(list(symbols)))
    if start is not None:
        state = state.filter(pl.col("day") >= start)
    if end is not None:
        state = state.filter(pl.col("day") <= end)
    return state


def _build_product(ctx: _Context, product: str, runs: Runs, offset: str | None) -> int:
    """Rebuild one product for the runs of days and write it; return rows written."""
    fixed: dict[str, object] = {"table": ctx.table}
    if product.startswith("bars_"):
        every = product.removeprefix("bars_").split("@")[0]
        name, frame, runs = _bars(ctx, runs, every, offset)
        fixed["offset"] = offset or "0m"
    elif product == "daily_summary":
        name, frame = product, _summary(ctx, runs)
    elif product == "funding_adjusted_returns":
        name, frame = product, _funding_returns(ctx, runs)
    elif product == "basis":
        name, frame = product, _basis(ctx, runs)
        fixed = {}
    else:
        name, frame = product, _open_interest(ctx, runs)
    predicate = partitions.runs_predicate(runs, fixed=fixed)
    partitions.replace_slices(
        ctx.lake, GOLD, name, frame, predicate, partition_by=["table"] if "table" in fixed else None
    )
    return frame.height


def build_gold(
    lake: LakeRoot,
    *,
    table: str,
    symbols: Sequence[str] | None = None,
    start: date | None = None,
    end: date | None = None,
    intervals: Sequence[str] = ("1h",),
    offset: str | None = None,
    on_step: StepCallback | None = None,
) -> GoldBuildResult:
    """Rebuild the gold products of a klines table where its silver input changed.

    Args:
        lake: The lake.
        table: A silver klines table with `1m` rows (`spot_klines`, `um_klines`, `cm_klines`).
        symbols: Symbols to build; all by default.
        start: First UTC day (inclusive); unbounded by default.
        end: Last UTC day (inclusive); unbounded by default.
        intervals: Bar lengths for `gold.bars_<interval>`, each a multiple of 1m.
        offset: Shift of the bar boundaries (e.g. `30m`); none by default.
        on_step: Called as `(done, total, product)` after each product (progress bars).

    Returns:
        `GoldBuildResult`. When no (symbol, day) input changed since the last build, nothing
        is written (no new Delta version anywhere).

    Raises:
        ConfigurationError: `table` is not a klines table, or an interval or offset is not
            a multiple of 1m.
    """
    ctx = _context(lake, table)
    _validate(intervals, offset)
    current = _signatures(
        ctx, symbols=symbols, start=start, end=end, intervals=intervals, offset=offset
    )
    state = _in_scope(gold_inputs.read_state(lake, table), symbols, start, end)
    changed = {
        product: gold_inputs.changed_days(sig, state, product) for product, sig in current.items()
    }
    changed = {product: days for product, days in changed.items() if days.height}
    result = GoldBuildResult(table)
    for done, (product, days) in enumerate(changed.items(), start=1):
        runs = to_runs(days)
        result.rebuilt[product] = runs
        result.rows[product] = _build_product(ctx, product, runs, offset)
        if on_step is not None:
            on_step(done, len(changed), product)
    gold_inputs.write_state(lake, table, changed, ctx.built_at)
    log.info(
        "gold_built",
        table=table,
        products=len(changed),
        days=sum(result.days(p) for p in changed),
        rows=sum(result.rows.values()),
    )
    return result
