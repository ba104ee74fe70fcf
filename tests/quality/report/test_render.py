"""The HTML report and Markdown summary, rendered as strings, on disk and in Chromium."""

from __future__ import annotations

from datetime import UTC, date, datetime
from pathlib import Path

import polars as pl
import pytest

from crypto_lakehouse.quality.checks.run import (
    CheckResults,
    CheckScope,
    UpstreamFacts,
    run_checks,
)
from crypto_lakehouse.quality.report.render import render_report, score_colour, write_report
from crypto_lakehouse.quality.score import ScoreResult, score_checks

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
GENERATED = datetime(2026, 1, 1, tzinfo=UTC)
GREEN = "rgb(26, 152, 80)"
RED = "rgb(215, 48, 39)"


@pytest.fixture(scope="module")
def checked(real_klines: pl.DataFrame) -> tuple[CheckResults, ScoreResult]:
    """Return checks and scores of BTCUSDT (real, complete) and ETHUSDT (degraded copy)."""
    eth = real_klines.with_columns(symbol=pl.lit("ETHUSDT")).filter(
        (pl.col("open_time").dt.date() != date(2020, 1, 2)) & ~pl.int_range(pl.len()).is_in([5])
    )
    facts = UpstreamFacts(missing_upstream=frozenset({("ETHUSDT", date(2020, 1, 2))}))
    results = CheckResults.concat(
        [
            run_checks(real_klines, table="spot_klines"),
            run_checks(eth, table="spot_klines", scope=CheckScope(facts=facts)),
        ]
    )
    return results, score_checks(results)


def test_score_colours() -> None:
    """Scores map to bands; a day without a score is grey."""
    assert score_colour(100.0) == "#1a9850"
    assert score_colour(99.5) == "#91cf60"
    assert score_colour(0.0) == "#d73027"
    assert score_colour(None) == "#d9d9d9"


def test_render_strings(checked: tuple[CheckResults, ScoreResult]) -> None:
    """The HTML holds 6 cells and no script or external link; Markdown lists gaps and why."""
    results, scored = checked
    html, markdown = render_report(
        scored.scores, results.gaps, deductions=scored.deductions, generated_at=GENERATED
    )
    assert html.count('<td class="cell"') == 6
    assert "<script" not in html and "src=" not in html and "href=" not in html
    assert "2026-01-01 00:00 UTC" in html
    assert "# Data quality report" in markdown
    assert "| missing_upstream | 1 | 1440 |" in markdown
    assert "| spot_klines | ETHUSDT | 2020-01-02 | 0.0 |" in markdown
    assert "completeness −100" in markdown


def test_empty_report_renders() -> None:
    """With nothing to show, both outputs still render."""
    empty = score_checks(CheckResults.concat([]))
    html, markdown = render_report(empty.scores, CheckResults.concat([]).gaps)
    assert "No quality results" in html
    assert "No gaps." in markdown


def test_write_report(tmp_path: Path, checked: tuple[CheckResults, ScoreResult]) -> None:
    """Both files land in the folder, which is created if needed."""
    results, scored = checked
    html_path, md_path = write_report(tmp_path / "out", scored.scores, results.gaps)
    assert html_path.read_text(encoding="utf-8").startswith("<!DOCTYPE html>")
    assert md_path.name == "quality-summary.md" and md_path.stat().st_size > 0


def test_report_renders_in_headless_chromium(
    tmp_path: Path, checked: tuple[CheckResults, ScoreResult]
) -> None:
    """Chromium shows 6 heatmap cells, green and red ones, symbol labels and gap bars."""
    if not CHROMIUM.exists():
        pytest.skip("/usr/bin/chromium is not installed (apt-get install chromium)")
    from playwright.sync_api import sync_playwright

    results, scored = checked
    html_path, _ = write_report(tmp_path, scored.scores, results.gaps, deductions=scored.deductions)
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        try:
            page = browser.new_page()
            page.goto(html_path.as_uri())
            cells = page.locator("td.cell")
            assert cells.count() == 6
            colours = [
                cells.nth(i).evaluate("e => getComputedStyle(e).backgroundColor") for i in range(6)
            ]
            assert colours[:3] == [GREEN] * 3
            assert colours[4] == RED
            box = cells.first.bounding_box()
            assert box is not None and box["width"] > 0 and box["height"] > 0
            labels = page.locator("th.symbol").all_inner_texts()
            assert labels == ["BTCUSDT", "ETHUSDT"]
            assert page.locator("svg.timeline rect.gap").count() == results.gaps.height
        finally:
            browser.close()
