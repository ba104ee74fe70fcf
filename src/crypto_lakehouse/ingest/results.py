"""Result value objects of the pipelines; counts are derived, never stored."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

Outcome = Literal[
    "loaded",
    "skipped_unchanged",
    "quarantined",
    "checksum_mismatch",
    "missing_upstream",
    "failed",
]
FAILED_OUTCOMES: frozenset[str] = frozenset({"quarantined", "checksum_mismatch", "failed"})


@dataclass(frozen=True, slots=True)
class FileOutcome:
    """What happened to one archive key in one run."""

    key: str
    outcome: Outcome
    rows: int = 0
    bytes: int = 0
    revision: int = 1
    reason: str = ""
    downloaded: bool = False


@dataclass(slots=True)
class IngestResult:
    """The outcome of one `lakehouse ingest` run, file by file."""

    table: str
    files: list[FileOutcome] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    @property
    def loaded(self) -> list[FileOutcome]:
        """Return files whose rows reached silver in this run."""
        return [f for f in self.files if f.outcome == "loaded"]

    @property
    def failed(self) -> list[FileOutcome]:
        """Return files quarantined or failed in this run."""
        return [f for f in self.files if f.outcome in FAILED_OUTCOMES]

    @property
    def skipped(self) -> list[FileOutcome]:
        """Return files left alone because upstream had not changed."""
        return [f for f in self.files if f.outcome == "skipped_unchanged"]

    @property
    def missing(self) -> list[FileOutcome]:
        """Return expected files that upstream does not publish."""
        return [f for f in self.files if f.outcome == "missing_upstream"]

    @property
    def rows_loaded(self) -> int:
        """Return the number of silver rows written in this run."""
        return sum(f.rows for f in self.loaded)

    @property
    def bytes_downloaded(self) -> int:
        """Return the bytes fetched from upstream in this run."""
        return sum(f.bytes for f in self.files if f.downloaded)

    @property
    def ok(self) -> bool:
        """Tell whether every file was verified and loaded (or unchanged)."""
        return not self.failed

    def merge(self, other: IngestResult) -> None:
        """Fold another result (e.g. another symbol) into this one."""
        self.files.extend(other.files)
        self.notes.extend(other.notes)


SUPERSESSION_KINDS: tuple[str, ...] = (
    "value_changed",
    "value_added",
    "value_removed",
    "missing_in_archive",
    "missing_in_provisional",
)


@dataclass(frozen=True, slots=True)
class SupersessionSummary:
    """How provisional rows compared with the archive rows that replaced them."""

    table: str
    superseded_rows: int = 0
    differing_rows: int = 0
    counts: tuple[tuple[str, int], ...] = ()

    def count(self, kind: str) -> int:
        """Return the number of report rows of one kind (see SUPERSESSION_KINDS)."""
        return dict(self.counts).get(kind, 0)

    @property
    def differences(self) -> int:
        """Return the number of report rows: differing values plus rows missing on a side."""
        return sum(n for _, n in self.counts)

    @property
    def identical_rows(self) -> int:
        """Return provisional rows the archive confirmed exactly."""
        return max(0, self.superseded_rows - self.differing_rows - self.count("missing_in_archive"))
