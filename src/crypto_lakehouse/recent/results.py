"""Result value objects of `update`, `stream` and the supersession report; counts are derived."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Literal

if TYPE_CHECKING:
    from datetime import date

    from crypto_lakehouse.ingest.results import IngestResult, SupersessionSummary

DayOutcome = Literal["filled", "empty", "failed", "unavailable", "beyond_history", "unsupported"]
GapReason = Literal["missing_upstream", "after_archive"]
RestStatus = Literal["ok", "not_needed", "unsupported", "region_blocked", "banned", "errors"]


@dataclass(frozen=True, slots=True)
class DayFill:
    """What REST did for one symbol-day the archive lacks."""

    symbol: str
    day: date
    gap: GapReason
    outcome: DayOutcome
    rows: int = 0
    reason: str = ""
    bronze_key: str = ""


@dataclass(slots=True)
class UpdateResult:
    """The outcome of one `lakehouse update` run: the archive part, then the REST part."""

    table: str
    archive: IngestResult | None = None
    archive_error: str = ""
    days: list[DayFill] = field(default_factory=list)
    rest_status: RestStatus = "not_needed"
    rest_message: str = ""
    breakers: dict[str, str] = field(default_factory=dict)
    supersessions: SupersessionSummary | None = None

    @property
    def archive_loaded(self) -> int:
        """Return archive files loaded in this run."""
        return len(self.archive.loaded) if self.archive else 0

    @property
    def archive_ok(self) -> bool:
        """Tell whether the archive part ran and no file failed."""
        return self.archive is not None and self.archive.ok and not self.archive_error

    @property
    def filled(self) -> list[DayFill]:
        """Return days REST filled with at least one row."""
        return [d for d in self.days if d.outcome == "filled"]

    @property
    def still_missing(self) -> list[DayFill]:
        """Return days that neither the archive nor REST could fill in this run."""
        return [d for d in self.days if d.outcome != "filled"]

    @property
    def rest_rows(self) -> int:
        """Return provisional rows REST fetched in this run."""
        return sum(d.rows for d in self.days)

    @property
    def stopped(self) -> bool:
        """Tell whether the run was stopped (an IP ban): the caller must not continue."""
        return self.rest_status == "banned"

    @property
    def ok(self) -> bool:
        """Tell whether the run succeeded: archive fine, REST fine or unavailable by region."""
        return self.archive_ok and self.rest_status in (
            "ok",
            "not_needed",
            "unsupported",
            "region_blocked",
        )


@dataclass(slots=True)
class StreamResult:
    """The outcome of one `lakehouse stream` run."""

    market: str
    frames: int = 0
    rows: dict[str, int] = field(default_factory=dict)
    flushes: int = 0
    reconnects: int = 0
    backfilled_rows: int = 0
    backfill_errors: list[str] = field(default_factory=list)
    bronze_keys: list[str] = field(default_factory=list)

    @property
    def total_rows(self) -> int:
        """Return the silver rows written from WebSocket frames."""
        return sum(self.rows.values())
