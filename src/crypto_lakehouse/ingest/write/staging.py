"""Where a parse stages its silver rows (Arrow IPC) until the driver commits them.

On one host the staged file sits in the run's temp folder. Workers on other hosts
(`--dask-address` with an S3 lake) cannot write where the driver reads, so their tasks stage
under the lake instead, at `_staging/<run-id>/`, which every worker and the driver can reach:
no shared mount needed. The run deletes its prefix when it ends; a crashed run's leftovers are
never referenced by a table, and `sweep_stale` removes prefixes older than a cutoff (a week
after the next remote run; the vacuum retention in `lakehouse optimize`).
"""

from __future__ import annotations

import contextlib
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING

import pyarrow as pa
import pyarrow.dataset as pads
import pyarrow.fs as pafs

from crypto_lakehouse.exceptions import StorageError
from crypto_lakehouse.storage.root import replace_file, whole_or_nothing

if TYPE_CHECKING:
    from collections.abc import Iterator, Sequence

    from crypto_lakehouse.ingest.parse.file import ParseTask
    from crypto_lakehouse.storage.root import LakeRoot

#: Lake folder of staged rows of runs whose workers are on other hosts.
STAGING = "_staging"
_STAMP = "%Y%m%dT%H%M%SZ"


def new_run_prefix(now: datetime) -> str:
    """Return a fresh run's staging prefix in the lake: `_staging/<utc stamp>-<random>`."""
    return f"{STAGING}/{now.astimezone(UTC).strftime(_STAMP)}-{uuid.uuid4().hex[:12]}"


def location(task: ParseTask) -> tuple[pafs.FileSystem, str]:
    """Return the filesystem and path of a task's staged file."""
    if task.stage_lake is None:
        return pafs.LocalFileSystem(), task.staged_path
    fs, base = task.stage_lake.filesystem()
    return fs, f"{base}/{task.staged_path}"


def open_sink(task: ParseTask) -> pa.NativeFile:
    """Open the task's staged file for writing (S3: one object, visible once closed).

    Raises:
        StorageError: the lake refused the write.
    """
    fs, path = location(task)
    try:
        if isinstance(fs, pafs.LocalFileSystem):  # S3 has no folders to create
            Path(path).parent.mkdir(parents=True, exist_ok=True)
        return fs.open_output_stream(path)
    except OSError as exc:
        raise StorageError(f"could not stage {path}: {exc}") from exc


def replace(task: ParseTask, table: pa.Table) -> None:
    """Replace a task's staged rows whole: readers see the old file or the new, never half.

    On disk (the run's temp folder or a local lake) through a temp name and a rename; in an
    S3 lake, one object written whole or not at all (`whole_or_nothing`).

    Raises:
        StorageError: the new file could not be written.
    """
    fs, path = location(task)

    def write_ipc(tmp: Path) -> None:
        with pa.ipc.new_file(str(tmp), table.schema) as writer:
            writer.write_table(table)

    try:
        if isinstance(fs, pafs.LocalFileSystem):
            replace_file(Path(path), write_ipc)
            return
        with whole_or_nothing(fs, path) as sink, pa.ipc.new_file(sink, table.schema) as out:
            out.write_table(table)
    except OSError as exc:
        raise StorageError(f"could not stage {path}: {exc}") from exc


def read_table(task: ParseTask) -> pa.Table:
    """Read a task's staged rows whole (memory-mapped on local disk)."""
    if task.stage_lake is None:
        with pa.memory_map(task.staged_path) as source:
            return pa.ipc.open_file(source).read_all()
    fs, path = location(task)
    with fs.open_input_file(path) as source:
        return pa.ipc.open_file(source).read_all()


def dataset(tasks: Sequence[ParseTask]) -> pads.Dataset:
    """Return one Arrow dataset over the staged files of tasks (one per path, in order).

    The tasks of one run stage in one place, so one filesystem (one S3 client) serves all.
    """
    paths = list(dict.fromkeys(task.staged_path for task in tasks))
    fs, full = location(tasks[0])
    base = full.removesuffix(tasks[0].staged_path)
    return pads.dataset([base + path for path in paths], format="ipc", filesystem=fs)


def batches(tasks: Sequence[ParseTask], batch_size: int = 1 << 17) -> Iterator[pa.RecordBatch]:
    """Yield the staged rows of tasks in batches, reading ahead as a dataset scan does."""
    if tasks:
        yield from dataset(tasks).to_batches(batch_size=batch_size)


def remove(task: ParseTask) -> None:
    """Delete a task's staged file; a missing one is fine.

    Raises:
        StorageError: the file is there but could not be deleted.
    """
    fs, path = location(task)
    try:
        with contextlib.suppress(FileNotFoundError):
            fs.delete_file(path)
    except OSError as exc:
        raise StorageError(f"could not delete {path}: {exc}") from exc


def remove_prefix(lake: LakeRoot, prefix: str) -> None:
    """Delete a run's staging prefix in the lake, when it has one.

    Raises:
        StorageError: the prefix is there but could not be deleted.
    """
    fs, base = lake.filesystem()
    try:
        with contextlib.suppress(FileNotFoundError):
            fs.delete_dir(f"{base}/{prefix}")
    except OSError as exc:
        raise StorageError(f"could not delete {lake.uri_of(prefix)}: {exc}") from exc


def sweep_stale(lake: LakeRoot, now: datetime, older_than: timedelta) -> list[str]:
    """Delete the staging prefixes of runs started before `now - older_than`; return them.

    A run that crashed left its prefix behind; nothing references it. A prefix whose name is
    not a run stamp is left alone.
    """
    removed: list[str] = []
    cutoff = now - older_than
    for name in lake.list_dirs(STAGING):
        try:
            started = datetime.strptime(name.split("-", 1)[0], _STAMP).replace(tzinfo=UTC)
        except ValueError:
            continue
        if started < cutoff:
            remove_prefix(lake, f"{STAGING}/{name}")
            removed.append(name)
    return removed
