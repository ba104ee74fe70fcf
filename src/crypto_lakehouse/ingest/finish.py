"""What follows a run's last commit: compaction, the quality refresh, and staging cleanup.

None of these can fail the ingest: the data has landed. A failure is logged, and a failed
quality refresh is noted on the result (`lakehouse quality report` recomputes it).
"""

from __future__ import annotations

import asyncio
from datetime import timedelta
from typing import TYPE_CHECKING

import structlog

from crypto_lakehouse.exceptions import LakehouseError
from crypto_lakehouse.ingest.write import staged as silver
from crypto_lakehouse.ingest.write import staging
from crypto_lakehouse.quality.refresh.run import refresh_after_ingest
from crypto_lakehouse.storage.maintenance import auto_compact

if TYPE_CHECKING:
    from crypto_lakehouse.ingest.run_state import IngestRun

log = structlog.get_logger(__name__)


def clear_staging(run: IngestRun) -> None:
    """Delete the run's staging prefix and those of crashed runs; a failure only warns.

    Nothing references staged files once their commits are done, so leftovers cost space, not
    correctness: a week-old prefix is a crashed run's (no run lasts that long).
    """
    try:
        staging.remove_prefix(run.lake, run.stage_prefix)
        swept = staging.sweep_stale(run.lake, run.started, older_than=timedelta(days=7))
    except LakehouseError as exc:
        log.warning("staging_cleanup_failed", prefix=run.stage_prefix, error=str(exc)[:200])
        return
    if swept:
        log.info("staging_swept", prefixes=swept)


async def compact(run: IngestRun) -> None:
    """Compact the partitions this table has filled with small files (one commit each)."""
    results = await asyncio.to_thread(
        auto_compact,
        run.lake,
        silver.SILVER,
        run.dataset.table,
        max_small_files=run.settings.tuning.auto_compact_max_small_files,
    )
    for result in results:
        log.info("silver_compacted", table=run.dataset.table, result=str(result))


async def refresh_quality(run: IngestRun) -> None:
    """Recompute quality for the (symbol, day)s whose files changed state in this run.

    A failure here is reported on the result, never turned into a failed ingest: the data
    landed, only its report card is stale (`lakehouse quality report` recomputes it).
    """
    touched: list[tuple[str, str, str]] = sorted(
        {
            (plan.symbol, str(plan.period), plan.stamp)
            for outcome in run.result.files
            if outcome.outcome != "skipped_unchanged"
            and (plan := run.plans.get(outcome.key)) is not None
        }
    )
    if not touched:
        return
    try:
        await asyncio.to_thread(refresh_after_ingest, run.lake, run.dataset.table, touched)
    except Exception as exc:  # reported on the result and in the log
        log.warning("quality_refresh_failed", table=run.dataset.table, error=str(exc))
        run.result.notes.append(f"quality refresh failed: {exc}")
