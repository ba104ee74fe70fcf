"""An ingest called as a library leaves the process as it found it; the CLI opts into tuning."""

from __future__ import annotations

import asyncio
import gc
import threading
from datetime import date
from typing import TYPE_CHECKING, Any

from typer.testing import CliRunner

from crypto_lakehouse.cli.app import app
from crypto_lakehouse.ingest import run as run_module
from crypto_lakehouse.ingest.results import IngestResult
from crypto_lakehouse.ingest.run import IngestRequest, ingest
from crypto_lakehouse.ingest.write import ticks

if TYPE_CHECKING:
    from collections.abc import Callable
    from pathlib import Path

    import pytest

    from crypto_lakehouse.config import Settings

#: Small bar files (batch parse, background bronze writers) and one tick file (encoders).
REQUESTS = (
    IngestRequest("spot", "klines", ("BTCUSDT",), "1m", date(2020, 1, 1), date(2020, 1, 3),
                  refresh_quality=False),
    IngestRequest("cm", "aggTrades", ("BTCUSD_PERP",), start=date(2026, 5, 8),
                  end=date(2026, 5, 8), refresh_quality=False),
)  # fmt: skip


def _spy_tuning(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Record every process-wide tuning call (gc freeze, malloc trim) an ingest makes."""
    calls: list[str] = []
    freeze = gc.freeze
    monkeypatch.setattr(gc, "freeze", lambda: (calls.append("freeze"), freeze())[1])
    monkeypatch.setattr(ticks, "release_free_memory", lambda: calls.append("trim"))
    return calls


def _record_thread_starts(monkeypatch: pytest.MonkeyPatch) -> list[tuple[threading.Thread, str]]:
    """Record every thread started from now on, with the name of the thread that started it.

    The archive stand-in serves from its own thread (`archive-server-*`), whose event loop
    starts executor threads of its own: those belong to the test's server, not the run.
    """
    started: list[tuple[threading.Thread, str]] = []
    start = threading.Thread.start

    def recording(thread: threading.Thread) -> None:
        started.append((thread, threading.current_thread().name))
        start(thread)

    monkeypatch.setattr(threading.Thread, "start", recording)
    return started


def _ingest_all(settings: Settings, *, process_tuning: bool) -> list[IngestResult]:
    """Run every request of `REQUESTS` into the same lake, as one library caller would."""
    return [
        asyncio.run(ingest(request, settings, process_tuning=process_tuning))
        for request in REQUESTS
    ]


def test_a_library_ingest_leaves_no_thread_and_no_tuning_behind(
    tmp_path: Path, settings_for: Callable[..., Settings], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Parse, encoder and bronze-writer threads end with the run; the heap is never frozen."""
    calls = _spy_tuning(monkeypatch)
    settings = settings_for(str(tmp_path / "lake"))
    started = _record_thread_starts(monkeypatch)
    frozen_before = gc.get_freeze_count()
    results = _ingest_all(settings, process_tuning=False)
    assert [len(r.loaded) for r in results] == [3, 1]
    ours = [thread for thread, by in started if not by.startswith("archive-server")]
    assert {t.name.split("_")[0] for t in ours} >= {"parse", "bronze-writer", "encode-0"}
    assert [t.name for t in ours if t.is_alive()] == []
    assert gc.get_freeze_count() == frozen_before
    assert calls == []


def test_the_process_tuning_opt_in_freezes_the_heap_and_trims_after_tick_files(
    tmp_path: Path, settings_for: Callable[..., Settings], monkeypatch: pytest.MonkeyPatch
) -> None:
    """With the opt-in each run freezes the heap once and unfreezes it; tick files trim."""
    calls = _spy_tuning(monkeypatch)
    frozen_before = gc.get_freeze_count()
    results = _ingest_all(settings_for(str(tmp_path / "lake")), process_tuning=True)
    assert [len(r.loaded) for r in results] == [3, 1]
    assert calls == ["freeze", "freeze", "trim"]
    assert gc.get_freeze_count() == frozen_before


def test_the_cli_entry_point_opts_into_process_tuning(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`lakehouse ingest` is the process's only work, so it asks for the tuning."""
    seen: list[dict[str, Any]] = []

    async def recording(request: IngestRequest, settings: Settings, **options: Any) -> Any:
        seen.append(options)
        return IngestResult(table="spot_klines")

    monkeypatch.setattr(run_module, "ingest", recording)
    monkeypatch.setenv("LAKEHOUSE_ROOT", str(tmp_path / "lake"))
    outcome = CliRunner().invoke(
        app, ["ingest", "spot", "klines", "--symbols", "BTCUSDT", "--interval", "1m",
              "--start", "2020-01-01", "--end", "2020-01-01"],
    )  # fmt: skip
    assert outcome.exit_code == 0, outcome.output
    assert [options.get("process_tuning") for options in seen] == [True]
