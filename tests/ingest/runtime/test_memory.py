"""The memory budget shrinks chunks, then workers, and an ingest runs with what fits."""

from __future__ import annotations

import asyncio
from datetime import date
from typing import TYPE_CHECKING, Any

import pytest

from crypto_lakehouse.ingest import file_steps
from crypto_lakehouse.ingest.run import IngestRequest, ingest
from crypto_lakehouse.ingest.runtime.memory import expected_peak_mb, plan_memory

if TYPE_CHECKING:
    from collections.abc import Callable
    from pathlib import Path

    from crypto_lakehouse.config import Settings
    from crypto_lakehouse.ingest.parse.file import ParseTask


def test_default_budget_keeps_the_defaults() -> None:
    """2 GB holds two thread workers at 16 MB chunks with room to spare."""
    plan = plan_memory(2048, 16, 2, processes=False)
    assert (plan.parse_batch_mb, plan.workers, plan.fits) == (16, 2, True)
    assert plan.expected_peak_mb == expected_peak_mb(16, 2, processes=False) < 2048


@pytest.mark.req("R2.3")
def test_small_budget_shrinks_chunks_before_workers() -> None:
    """Chunks are halved to 4 MB first; only then does a worker go."""
    threads = plan_memory(400, 64, 2, processes=False)
    assert (threads.parse_batch_mb, threads.workers, threads.fits) == (4, 2, True)
    plan = plan_memory(600, 64, 2, processes=True)
    assert (plan.parse_batch_mb, plan.workers, plan.fits) == (4, 1, True)


def test_budget_below_the_fixed_cost_is_reported_not_exceeded_silently() -> None:
    """A budget under the driver's own size cannot fit: the plan says so."""
    plan = plan_memory(128, 16, 2, processes=True)
    assert (plan.parse_batch_mb, plan.workers, plan.fits) == (1, 1, False)


@pytest.mark.req("R2.3")
def test_ingest_parses_in_the_chunks_the_budget_allows(
    tmp_path: Path, settings_for: Callable[..., Settings], monkeypatch: pytest.MonkeyPatch
) -> None:
    """With a 400 MB budget and 64 MB asked for, workers parse in 4 MB chunks."""
    seen: list[ParseTask] = []
    real = file_steps.write_tick_files

    def spy(task: ParseTask, *args: Any) -> Any:
        seen.append(task)
        return real(task, *args)

    monkeypatch.setattr(file_steps, "write_tick_files", spy)
    request = IngestRequest("cm", "aggTrades", ("BTCUSD_PERP",), start=date(2026, 5, 8),
                            end=date(2026, 5, 8))  # fmt: skip
    settings = settings_for(str(tmp_path / "lake"), memory_budget_mb=400, parse_batch_mb=64,
                            workers=2)  # fmt: skip
    result = asyncio.run(ingest(request, settings))
    assert result.rows_loaded == 105_280
    assert [t.chunk_bytes for t in seen] == [4 << 20]
