"""State of one ingest run that its download and small-file stages share.

`run.py` orchestrates. What a run accumulates for its commits (parsed files, manifest events,
the result) belongs to the commit stage (`commit.Committer`), which the run hands on.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import asyncio
    from concurrent.futures import Executor
    from datetime import datetime
    from pathlib import Path

    from crypto_lakehouse.config import Settings
    from crypto_lakehouse.datasets import Dataset
    from crypto_lakehouse.ingest.commit import Committer
    from crypto_lakehouse.ingest.plan import PlannedFile
    from crypto_lakehouse.ingest.progress import ProgressSink
    from crypto_lakehouse.ingest.results import IngestResult
    from crypto_lakehouse.ingest.small_files import SmallFileBatches
    from crypto_lakehouse.storage.bronze import Manifest, ManifestEntry
    from crypto_lakehouse.storage.root import LakeRoot


@dataclass(frozen=True, slots=True)
class HeldFile:
    """A small verified file waiting for its batch parse.

    Either already in bronze and readable at `local`, or still only in memory (`body`): the
    batch's worker then stores it in bronze before parsing.
    """

    plan: PlannedFile
    entry: ManifestEntry
    previous: ManifestEntry | None
    local: Path | None = None
    body: bytes | None = field(default=None, repr=False)  # a repr must not print the zip


@dataclass(slots=True)
class DownloadPace:
    """How a run's downloads progress: files still awaited, and the time they may still take."""

    #: Files still downloading (or still to start); at 0 the held files are shared out.
    awaiting: int = 0
    #: When the downloads began (`time.perf_counter()`).
    started: float = 0.0
    _arrived: set[str] = field(default_factory=set)

    def begin(self, files: int, started: float) -> None:
        """Expect `files` downloads from `started` on."""
        self.awaiting, self.started = files, started
        self._arrived.clear()

    def done(self, key: str) -> bool:
        """Count a file as no longer downloading (once); tell whether it was the last one."""
        if key in self._arrived:
            return False
        self._arrived.add(key)
        self.awaiting -= 1
        return self.awaiting == 0

    def end(self) -> None:
        """Expect no more downloads (every file's task has returned)."""
        self.awaiting = 0

    def seconds_left(self, now: float | None = None) -> float | None:
        """Project how long the files still awaited take, at the pace of those arrived so far.

        None before any file has arrived (no pace to go by); `now` is `time.perf_counter()`.
        """
        arrived = len(self._arrived)
        if not arrived:
            return None
        elapsed = (time.perf_counter() if now is None else now) - self.started
        return self.awaiting * elapsed / arrived


@dataclass(slots=True)
class IngestRun:
    """One run: its settings and executor, and the stages its tasks hand files on to.

    What changes during the run belongs to a stage: the commit stage (`commits`), the
    small-file stage (`batches`), the downloads' pace (`pace`); `plans` is set once, after
    the listing.
    """

    lake: LakeRoot
    dataset: Dataset
    settings: Settings
    manifest: Manifest
    executor: Executor
    #: How many parses the executor runs at once.
    workers: int
    #: Files downloading at once. Every file's task starts at once, but only these go past
    #: this point, so the first responses are not queued behind hundreds of task starts.
    download_slots: asyncio.Semaphore
    progress: ProgressSink
    workdir: Path
    started: datetime
    #: The commit stage: every outcome and parsed file is handed on to it (`commit`).
    commits: Committer
    #: The small-file stage: held files, parsed in batches (`small_files`); set by `run`.
    batches: SmallFileBatches = field(init=False)
    plans: dict[str, PlannedFile] = field(default_factory=dict)
    #: The downloads' progress, shared by the fetch and small-file stages.
    pace: DownloadPace = field(default_factory=DownloadPace)
    #: Where downloads and spilled bad bodies go: one `Path` per run, not one per file.
    download_dir: Path = field(init=False)

    def __post_init__(self) -> None:
        self.download_dir = self.workdir / "download"

    @property
    def result(self) -> IngestResult:
        """Return the run's result, as the commit stage keeps it."""
        return self.commits.result

    #: Workers share this host's disk, so a parse may follow a download (not on Dask).
    stream_capable: bool = False
    #: Workers may run on other hosts (`--dask-address`): tasks name lake objects, not paths.
    remote_workers: bool = False
    #: Where those workers stage their rows in the lake: `_staging/<run>` (`staging`).
    stage_prefix: str = ""
    #: Commits what waits after `commit_interval_seconds` (see `run._arm_flush_timer`).
    flush_timer: asyncio.Task[None] | None = None
    #: The caller opted into process-wide tuning (`ingest(process_tuning=True)`, the CLI).
    process_tuning: bool = False
