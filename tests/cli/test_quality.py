"""`lakehouse quality` and `lakehouse gold` as a user runs them; the report in Chromium."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from tests.cli.test_app import KLINES, lakehouse
from tests.conftest import env_for
from tests.quality.lake_support import real_lines, republish
from tests.servers.archive_files import copy_fixture_tree
from tests.servers.archive_server import ArchiveServer

if TYPE_CHECKING:
    from collections.abc import Iterator

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run"]  # fmt: skip
SCORE_100 = "rgb(26, 152, 80)"


@pytest.fixture(scope="module")
def reported(
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[tuple[dict[str, str], Path, str]]:
    """Ingest the real days (2020-01-02 cut after row 700) and run `quality report` once."""
    base = tmp_path_factory.mktemp("cli-quality")
    archive_root = copy_fixture_tree(base / "archive")
    republish(archive_root, "2020-01-02", real_lines(archive_root, "2020-01-02")[:700])
    with ArchiveServer(archive_root) as archive:
        env = env_for(archive, str(base / "lake"))
        ingested = lakehouse(env, *KLINES)
        assert ingested.returncode == 0, ingested.stderr
        out = base / "reports"
        report = lakehouse(env, "quality", "report", "--out", str(out))
        assert report.returncode == 0, report.stderr
        yield env, out, report.stdout


@pytest.mark.req("R5.3")
def test_report_prints_scores_gaps_and_writes_both_files(
    reported: tuple[dict[str, str], Path, str],
) -> None:
    """The report names the truncated gap, prints where it wrote, and both files exist."""
    _, out, stdout = reported
    assert "quality scores" in stdout
    assert "truncated" in stdout
    assert "740" in stdout
    html, markdown = out / "quality-report.html", out / "quality-summary.md"
    assert f"HTML report: {html}" in stdout.replace("\n", "")
    assert html.exists()
    assert "| truncated | 1 | 740 |" in markdown.read_text()


def test_report_again_reads_gold_and_reconcile_and_gold_build_run(
    reported: tuple[dict[str, str], Path, str], tmp_path: Path
) -> None:
    """A second report reuses gold; reconcile finds nothing to differ; gold build is idempotent."""
    env, _, _ = reported
    again = lakehouse(env, "quality", "report", "--symbols", "BTCUSDT", "--start", "2020-01-02",
                      "--end", "2020-01-02", "--out", str(tmp_path))  # fmt: skip
    assert again.returncode == 0, again.stderr
    assert "quality_refreshed" not in again.stderr
    reconciled = lakehouse(env, "quality", "reconcile", "--symbols", "BTCUSDT", "--start",
                           "2020-01-01", "--end", "2020-01-03")  # fmt: skip
    assert reconciled.returncode == 0, reconciled.stdout + reconciled.stderr
    built = lakehouse(env, "gold", "build", "--table", "spot_klines", "--interval", "1h,4h")
    assert built.returncode == 0, built.stderr
    assert "bars_4h@0m" in built.stdout
    rebuilt = lakehouse(env, "gold", "build", "--table", "spot_klines", "--interval", "1h,4h")
    assert "nothing written" in rebuilt.stdout
    status = lakehouse(env, "status")
    assert status.returncode == 0, status.stderr
    assert "gold.quality" in status.stdout
    bad = lakehouse(env, "gold", "build", "--table", "spot_klines", "--interval", "90s")
    assert bad.returncode == 2
    assert "multiple of 1m" in bad.stderr


@pytest.mark.skipif(not CHROMIUM.exists(), reason="needs Debian's chromium at /usr/bin/chromium")
def test_cli_written_report_renders_the_heatmap_in_chromium(
    reported: tuple[dict[str, str], Path, str],
) -> None:
    """Headless Chromium shows one heatmap row of three cells coloured by score, and the gap."""
    from playwright.sync_api import sync_playwright

    _, out, _ = reported
    with sync_playwright() as driver:
        browser = driver.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        try:
            page = browser.new_page()
            page.goto((out / "quality-report.html").resolve().as_uri())
            cells = page.locator("section[data-table='spot_klines'] table.heatmap td.cell")
            assert cells.count() == 3
            days = [cells.nth(i).get_attribute("data-day") for i in range(3)]
            assert days == ["2020-01-01", "2020-01-02", "2020-01-03"]
            colours = [cells.nth(i).evaluate("e => getComputedStyle(e).backgroundColor")
                       for i in range(3)]  # fmt: skip
            assert colours[0] == colours[2] == SCORE_100
            assert colours[1] != SCORE_100
            box = cells.nth(1).bounding_box()
            assert box is not None
            assert box["width"] > 0
            assert box["height"] > 0
            assert page.locator("svg.timeline rect.gap").count() == 1
            assert "truncated" in (page.locator("svg.timeline rect.gap title").text_content() or "")
        finally:
            browser.close()
