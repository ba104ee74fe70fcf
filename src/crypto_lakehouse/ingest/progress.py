"""The progress seam: pipelines report through it; adapters draw bars (rich) or ignore it."""

from __future__ import annotations

from typing import Protocol


class ProgressSink(Protocol):
    """Receives progress of a long operation."""

    def plan(self, files: int, total_bytes: int) -> None:
        """Announce how many files and bytes the run will handle."""

    def downloaded(self, nbytes: int) -> None:
        """Report bytes received."""

    def file_done(self, key: str, outcome: str) -> None:
        """Report a file finished with an outcome."""


class NullProgress:
    """A sink that ignores everything (library use, tests)."""

    def plan(self, files: int, total_bytes: int) -> None:
        """Ignore the plan."""

    def downloaded(self, nbytes: int) -> None:
        """Ignore bytes."""

    def file_done(self, key: str, outcome: str) -> None:
        """Ignore file completions."""
