"""State of one ingest run that its download and small-file stages share.

`run.py` orchestrates. What a run accumulates for its commits (parsed files, manifest events,
the result) belongs to the commit stage (`commit.Committer`), which the run hands on.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from crypto_lakehouse.ingest.runtime.cpu_load import CpuLoad

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
class IngestRun:
    """Mutable state of one run, shared by its tasks."""

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
    plans: dict[str, PlannedFile] = field(default_factory=dict)
    small: list[HeldFile] = field(default_factory=list)
    #: Batch parses on the executor now (`small_files.schedule_batches` fills idle workers).
    batches_running: int = 0
    batch_tasks: set[asyncio.Task[None]] = field(default_factory=set)
    #: Files still downloading (or still to start); at 0 the held files are shared out.
    awaiting: int = 0
    #: Bytes of the held files' zips kept in memory (bounded: `small_files.hold_limit_bytes`).
    held_bytes: int = 0
    #: The machine's CPU load since the downloads began (`small_files.schedule_batches`).
    cpu_load: CpuLoad = field(default_factory=CpuLoad)
    #: Set once the load said the downloads leave the cores idle: held files parse from then on.
    parse_beside_downloads: bool = False
    _arrived: set[str] = field(default_factory=set)
    #: Where downloads and spilled bad bodies go: one `Path` per run, not one per file.
    download_dir: Path = field(init=False)

    def __post_init__(self) -> None:
        self.download_dir = self.workdir / "download"

    @property
    def result(self) -> IngestResult:
        """Return the run's result, as the commit stage keeps it."""
        return self.commits.result

    def awaiting_done(self, key: str) -> bool:
        """Count a file as no longer downloading (once); tell whether it was the last one."""
        if key in self._arrived:
            return False
        self._arrived.add(key)
        self.awaiting -= 1
        return self.awaiting == 0

    def download_seconds_left(self, now: float | None = None) -> float | None:
        """Project how long the files still awaited take, at the pace of those arrived so far.

        None before any file has arrived (no pace to go by). The downloads began when
        `cpu_load` was made for them (`run._run_files`); `now` is `time.perf_counter()`.
        """
        arrived = len(self._arrived)
        if not arrived:
            return None
        elapsed = (time.perf_counter() if now is None else now) - self.cpu_load.wall_start
        return self.awaiting * elapsed / arrived

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
