"""Render the quality report: an offline HTML page (heatmap, gap timeline) and a Markdown summary.

The HTML has no script and loads nothing: the heatmap is a table whose cells carry their
colour inline, the timeline an inline SVG, so the file opens anywhere, offline.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Final

import polars as pl
from jinja2 import Environment, FileSystemLoader, StrictUndefined, select_autoescape

if TYPE_CHECKING:
    from collections.abc import Iterable

TEMPLATES: Final = Path(__file__).parent / "templates"
HTML_NAME: Final = "quality-report.html"
MARKDOWN_NAME: Final = "quality-summary.md"
NO_DATA_COLOUR: Final = "#d9d9d9"
# (lowest score of the band, colour, legend label), best band first.
SCORE_BANDS: Final = (
    (100.0, "#1a9850", "100"),
    (99.0, "#91cf60", "99 – <100"),
    (95.0, "#d9ef8b", "95 – <99"),
    (80.0, "#fee08b", "80 – <95"),
    (50.0, "#fc8d59", "50 – <80"),
    (0.0, "#d73027", "< 50"),
)
CAUSE_COLOURS: Final = {
    "missing_upstream": "#d73027",
    "truncated": "#fc8d59",
    "not_loaded": "#7b3294",
    "in_file": "#fee08b",
    "before_listing": "#bdbdbd",
    "after_delisting": "#969696",
}
TIMELINE_WIDTH: Final = 900
TIMELINE_LABEL: Final = 160
TIMELINE_ROW: Final = 20


@dataclass(slots=True, frozen=True)
class Cell:
    """One heatmap cell: a symbol-day with its score and colour."""

    day: str
    score: float | None
    colour: str
    title: str


@dataclass(slots=True, frozen=True)
class Bar:
    """One gap drawn on the timeline, in SVG pixels."""

    x: float
    y: float
    width: float
    colour: str
    title: str


@dataclass(slots=True, frozen=True)
class TableView:
    """Everything the templates show for one table."""

    table: str
    days: list[str]
    rows: list[tuple[str, list[Cell]]]
    bars: list[Bar]
    svg_height: int


def score_colour(score: float | None) -> str:
    """Return the heatmap colour of a score (grey when there is none)."""
    if score is None:
        return NO_DATA_COLOUR
    for lowest, colour, _ in SCORE_BANDS:
        if score >= lowest:
            return colour
    return SCORE_BANDS[-1][1]


def _as_date(value: object) -> date:
    """Return a frame's day value, which must be a date."""
    if not isinstance(value, date):
        raise TypeError(f"expected a date in column 'day', got {value!r}")
    return value


def _day_range(first: date, last: date) -> list[date]:
    """Return every day from first to last inclusive."""
    return [first + timedelta(days=i) for i in range((last - first).days + 1)]


def _table_view(table: str, scores: pl.DataFrame, gaps: pl.DataFrame) -> TableView:
    """Build the heatmap rows and timeline bars of one table."""
    days_seen = pl.concat([scores.select("day"), gaps.select("day")]).get_column("day")
    days = _day_range(_as_date(days_seen.min()), _as_date(days_seen.max()))
    symbols = sorted(set(scores.get_column("symbol")) | set(gaps.get_column("symbol")))
    by_key = {(s, d): v for s, d, v in scores.select("symbol", "day", "score").iter_rows()}
    rows = []
    for symbol in symbols:
        cells = []
        for day in days:
            value = by_key.get((symbol, day))
            shown = "no data" if value is None else f"{value:g}"
            cells.append(
                Cell(day.isoformat(), value, score_colour(value), f"{symbol} {day}: {shown}")
            )
        rows.append((symbol, cells))
    start = datetime.combine(days[0], datetime.min.time(), UTC)
    span = (len(days) * timedelta(days=1)).total_seconds()
    bars = []
    for row, symbol in enumerate(symbols):
        for gap in gaps.filter(pl.col("symbol") == symbol).iter_rows(named=True):
            x0 = (gap["gap_start"] - start).total_seconds() / span * TIMELINE_WIDTH
            x1 = (gap["gap_end"] - start).total_seconds() / span * TIMELINE_WIDTH
            interval = f" {gap['interval']}" if gap["interval"] else ""
            missing = "?" if gap["missing"] is None else gap["missing"]
            title = (
                f"{symbol}{interval} {gap['cause']}: {missing} missing, "
                f"{gap['gap_start']:%Y-%m-%d %H:%M} – {gap['gap_end']:%Y-%m-%d %H:%M} UTC"
            )
            bars.append(
                Bar(
                    x=round(TIMELINE_LABEL + x0, 2),
                    y=row * TIMELINE_ROW + 2,
                    width=round(max(1.0, x1 - x0), 2),
                    colour=CAUSE_COLOURS.get(gap["cause"], "#000000"),
                    title=title,
                )
            )
    return TableView(
        table=table,
        days=[day.isoformat() for day in days],
        rows=rows,
        bars=bars,
        svg_height=max(1, len(symbols)) * TIMELINE_ROW + 4,
    )


def _tables(scores: pl.DataFrame, gaps: pl.DataFrame) -> Iterable[str]:
    """Return the table names found in either frame, sorted."""
    return sorted(set(scores.get_column("table")) | set(gaps.get_column("table")))


def _summary(
    scores: pl.DataFrame, gaps: pl.DataFrame, deductions: pl.DataFrame | None
) -> dict[str, object]:
    """Return the aggregate figures shown by both outputs."""
    per_table = (
        scores.group_by("table")
        .agg(
            symbols=pl.col("symbol").n_unique(),
            days=pl.len(),
            mean=pl.col("score").mean().round(2),
            min=pl.col("score").min(),
            perfect=(pl.col("score") >= 100.0).sum(),
        )
        .sort("table")
    )
    by_cause = (
        gaps.group_by("cause").agg(gaps=pl.len(), missing=pl.col("missing").sum()).sort("cause")
    )
    worst = scores.filter(pl.col("score") < 100.0).sort("score", "table", "symbol", "day").head(50)
    why: dict[tuple[str, str, date], str] = {}
    if deductions is not None:
        for row in deductions.sort("points", descending=True).iter_rows(named=True):
            key = (row["table"], row["symbol"], row["day"])
            part = f"{row['check']} −{row['points']:g} ({row['detail']})"
            why[key] = f"{why[key]}; {part}" if key in why else part
    largest = gaps.sort("missing", descending=True, nulls_last=True).head(20)
    return {
        "per_table": per_table.to_dicts(),
        "by_cause": by_cause.to_dicts(),
        "worst": [
            {**row, "why": why.get((row["table"], row["symbol"], row["day"]), "")}
            for row in worst.to_dicts()
        ],
        "largest": largest.to_dicts(),
        "total_days": scores.height,
        "total_gaps": gaps.height,
    }


def _environment() -> Environment:
    """Return the Jinja environment; HTML templates are autoescaped, Markdown is not."""
    return Environment(
        loader=FileSystemLoader(TEMPLATES),
        autoescape=select_autoescape(enabled_extensions=("html.j2",), default=False),
        undefined=StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
        keep_trailing_newline=True,
    )


def render_report(
    scores: pl.DataFrame,
    gaps: pl.DataFrame,
    *,
    deductions: pl.DataFrame | None = None,
    title: str = "Data quality report",
    generated_at: datetime | None = None,
) -> tuple[str, str]:
    """Render the HTML report and the Markdown summary.

    Args:
        scores: `score_checks(...).scores` (table, symbol, day, score), any tables.
        gaps: Gap rows (`GAPS_SCHEMA`) of the same tables and days.
        deductions: `score_checks(...).deductions`, to explain the days below 100.
        title: Page and summary title.
        generated_at: Time stamped on the report (now, UTC, by default).

    Returns:
        `(html, markdown)`. The HTML has one heatmap per table (rows = symbols, columns =
        every day of the table's range; a day with no score is grey) and a gap timeline.
    """
    generated = (generated_at or datetime.now(UTC)).strftime("%Y-%m-%d %H:%M UTC")
    views = [
        _table_view(
            table, scores.filter(pl.col("table") == table), gaps.filter(pl.col("table") == table)
        )
        for table in _tables(scores, gaps)
    ]
    context = {
        "title": title,
        "generated": generated,
        "views": views,
        "bands": [(colour, label) for _, colour, label in SCORE_BANDS],
        "no_data_colour": NO_DATA_COLOUR,
        "causes": CAUSE_COLOURS,
        "label_width": TIMELINE_LABEL,
        "row_height": TIMELINE_ROW,
        "timeline_width": TIMELINE_WIDTH + TIMELINE_LABEL,
        **_summary(scores, gaps, deductions),
    }
    env = _environment()
    html = env.get_template("report.html.j2").render(context)
    markdown = env.get_template("summary.md.j2").render(context)
    return html, markdown


def write_report(
    folder: Path,
    scores: pl.DataFrame,
    gaps: pl.DataFrame,
    *,
    deductions: pl.DataFrame | None = None,
    title: str = "Data quality report",
    generated_at: datetime | None = None,
) -> tuple[Path, Path]:
    """Render the report and write it into a folder (created if needed).

    Args:
        folder: Destination directory; existing report files there are replaced.
        scores: See `render_report`.
        gaps: See `render_report`.
        deductions: See `render_report`.
        title: See `render_report`.
        generated_at: See `render_report`.

    Returns:
        The paths of `quality-report.html` and `quality-summary.md`.
    """
    html, markdown = render_report(
        scores, gaps, deductions=deductions, title=title, generated_at=generated_at
    )
    folder.mkdir(parents=True, exist_ok=True)
    html_path, markdown_path = folder / HTML_NAME, folder / MARKDOWN_NAME
    html_path.write_text(html, encoding="utf-8")
    markdown_path.write_text(markdown, encoding="utf-8")
    return html_path, markdown_path
