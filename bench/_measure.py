"""Run one measured step in a fresh spawned process and report its wall time and peak memory.

Each step gets its own process so peaks do not mix: `ru_maxrss` of the child (and of its own
children: pool workers, Dask workers) is read at its end, and the whole process tree's RSS is
sampled from outside to catch the peak of the sum: from /proc on Linux, else with psutil
(when installed).

The sampler shares the machine's cores with the step it measures, so it must cost next to
nothing: psutil's `children(recursive=True)` scans every process on the machine, ~1.2 ms of
CPU per sample, which every 20 ms slowed a 0.6 s small-file ingest by ~0.08 s (measured).
On Linux the tree is found from `/proc/<pid>/task/<tid>/children` every tenth sample, and each
sample reads one `statm` per process (~20 µs in all).
"""

from __future__ import annotations

import contextlib
import multiprocessing
import os
import resource
import shutil
import sys
import tempfile
import threading
import time
import traceback
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from crypto_lakehouse.ingest.runtime.cpu_load import IDLE, IOWAIT, STEAL, cpu_ticks

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator
    from multiprocessing.connection import Connection

ROOT = Path(__file__).resolve().parents[1]
MB = 1_000_000
__all__ = ["cpu_ticks"]  # re-exported for the bench scripts, beside `host_noise`


@dataclass(slots=True)
class Measured:
    """What one measured step returned and cost."""

    value: dict[str, Any]
    wall_s: float
    peak_rss_self_mb: float
    peak_rss_children_mb: float
    peak_rss_tree_mb: float | None
    error: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)


def ensure_paths() -> None:
    """Make `tests.servers` and `bench/` importable (bench scripts run as plain files)."""
    for path in (str(ROOT), str(ROOT / "bench")):
        if path not in sys.path:
            sys.path.insert(0, path)


def _child(fn: Callable[..., dict[str, Any]], args: tuple[Any, ...], conn: Connection) -> None:
    """Run fn in the child and send back its value, wall time and ru_maxrss figures."""
    ensure_paths()
    started = time.perf_counter()
    try:
        value, error = fn(*args), None
    except BaseException:  # the parent reports it; the bench goes on with other steps
        value, error = {}, traceback.format_exc()
    wall = time.perf_counter() - started
    self_kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    children_kb = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    conn.send((value, wall, self_kb * 1024 / MB, children_kb * 1024 / MB, error))
    conn.close()


def _proc_children(pid: int) -> list[int]:
    """Return the direct children of a process, from every one of its threads (Linux /proc)."""
    children: list[int] = []
    try:
        tasks = os.listdir(f"/proc/{pid}/task")
    except OSError:
        return children
    for task in tasks:
        try:
            with open(f"/proc/{pid}/task/{task}/children") as handle:
                children.extend(int(child) for child in handle.read().split())
        except OSError:
            continue
    return children


def _proc_tree(pid: int) -> list[int]:
    """Return a process and all its descendants (Linux /proc)."""
    tree = [pid]
    index = 0
    while index < len(tree):
        tree.extend(_proc_children(tree[index]))
        index += 1
    return tree


def _proc_rss(pid: int) -> int:
    """Return a process's resident set in bytes, or 0 when it is gone."""
    try:
        with open(f"/proc/{pid}/statm") as handle:
            return int(handle.read().split()[1]) * _PAGE_SIZE
    except (OSError, IndexError, ValueError):
        return 0


_PAGE_SIZE = os.sysconf("SC_PAGE_SIZE") if hasattr(os, "sysconf") else 4096
_HAS_PROC = sys.platform.startswith("linux") and os.path.isdir("/proc/self/task")


class _TreeSampler:
    """Sample the RSS sum of a process and its descendants every `interval` seconds."""

    #: Samples between two walks of the process tree (new pool or Dask worker processes).
    TREE_EVERY = 10

    def __init__(self, pid: int, interval: float = 0.02) -> None:
        self.peak: float | None = None
        self._pid = pid
        self._interval = interval
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        """Poll until stopped or the process is gone."""
        if _HAS_PROC:
            self._run_proc()
        else:
            self._run_psutil()

    def _run_proc(self) -> None:
        """Poll /proc: walk the tree every `TREE_EVERY` samples, read `statm` each sample."""
        peak = 0
        pids: list[int] = []
        samples = 0
        while not self._stop.is_set():
            if samples % self.TREE_EVERY == 0:
                pids = _proc_tree(self._pid)
            samples += 1
            total = sum(_proc_rss(pid) for pid in pids)
            if total == 0 and not os.path.exists(f"/proc/{self._pid}"):
                break
            peak = max(peak, total)
            self.peak = peak / MB
            self._stop.wait(self._interval)

    def _run_psutil(self) -> None:
        """Poll with psutil (other systems); nothing when psutil is not installed."""
        try:
            import psutil
        except ImportError:
            return
        try:
            root = psutil.Process(self._pid)
        except psutil.Error:
            return
        peak = 0
        while not self._stop.is_set():
            try:
                procs = [root, *root.children(recursive=True)]
            except psutil.Error:
                break
            total = 0
            for proc in procs:
                try:
                    total += proc.memory_info().rss
                except psutil.Error:
                    continue
            peak = max(peak, total)
            self.peak = peak / MB
            self._stop.wait(self._interval)

    def __enter__(self) -> _TreeSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


@contextlib.contextmanager
def _pythonpath_first() -> Iterator[None]:
    """Put `PYTHONPATH`'s entries first on `sys.path` while a child is spawned.

    spawn gives the child the parent's `sys.path`, not one built from its environment, so a
    variant that set `PYTHONPATH` to another checkout's `src/` (`bench/paired.py`) ran this
    checkout's code, so a comparison of two checkouts measured the same code twice.
    """
    extra = [path for path in os.environ.get("PYTHONPATH", "").split(os.pathsep) if path]
    saved = sys.path[:]
    sys.path[:0] = extra
    try:
        yield
    finally:
        sys.path[:] = saved


def run_measured(fn: Callable[..., dict[str, Any]], *args: Any) -> Measured:
    """Run `fn(*args)` in a spawned child process and return its value and costs.

    The page cache is written back first (`os.sync`, before the clock starts): the kernel
    otherwise flushes the previous step's output while this one runs. After the big
    scenario's five 512 MB ingests and baselines, the small scenario measured 106 MB/s;
    with the sync, 152 (2026-12-05).
    """
    os.sync()
    context = multiprocessing.get_context("spawn")
    parent, child = context.Pipe(duplex=False)
    process = context.Process(target=_child, args=(fn, args, child))
    with _pythonpath_first():
        process.start()
    child.close()
    assert process.pid is not None
    with _TreeSampler(process.pid) as sampler:
        try:
            value, wall, self_mb, children_mb, error = parent.recv()
        except EOFError:
            value, wall, self_mb, children_mb = {}, 0.0, 0.0, 0.0
            error = f"child died with exit code {process.exitcode}"
    process.join()
    return Measured(value, wall, self_mb, children_mb, sampler.peak, error)


def cpu_info() -> dict[str, Any]:
    """Describe the machine the figures were measured on."""
    return {"cores": os.cpu_count(), "python": sys.version.split()[0], "platform": sys.platform,
            "loadavg_at_start": os.getloadavg()}  # fmt: skip


def host_noise(start: list[int] | None, end: list[int] | None) -> dict[str, float]:
    """Describe the host over a run: the share of CPU time stolen by the hypervisor, and busy.

    On this shared VM a run's figures move with the host: steal time is the hypervisor
    running someone else while this VM wanted the core, so a run with much of it measured
    the neighbours as well as the code.
    """
    if start is None or end is None:
        return {}
    delta = [b - a for a, b in zip(start, end, strict=True)]
    total = sum(delta) or 1
    ticks_per_second = os.sysconf("SC_CLK_TCK") * (os.cpu_count() or 1)
    return {
        "steal_share": round(delta[STEAL] / total, 4),
        "busy_share": round((total - delta[IDLE] - delta[IOWAIT]) / total, 3),
        "seconds": round(total / ticks_per_second, 1),
    }


@contextlib.contextmanager
def scratch(parent: Path) -> Iterator[Path]:
    """Yield a folder for every lake and output of one bench run; delete it when the run ends.

    Nothing is deleted between measured steps. On this VM's ext4 (mounted without a journal)
    a file created within minutes of deletions in the same block group costs up to ~1 ms of
    kernel time (`recently_deleted` scans the freed inodes) instead of ~15 µs, so deleting a
    run's lake before the next run made each run pay for the previous one's cleanup.
    """
    parent.mkdir(parents=True, exist_ok=True)
    folder = Path(tempfile.mkdtemp(prefix="scratch-", dir=parent))
    try:
        yield folder
    finally:
        shutil.rmtree(folder, ignore_errors=True)


#: The archive stand-ins a bench can run: `mirror` (`tests/servers/archive_mirror.py`, a plain
#: mirror on a bare asyncio protocol, ~0.07 ms of CPU a request) and `full`
#: (`tests/servers/archive_server.py`, the tests' stand-in on aiohttp.web with fault injection,
#: ~0.25 ms). The real archive costs the client's machine no CPU; `mirror` comes closest.
STAND_INS = ("mirror", "full")


@dataclass(frozen=True, slots=True)
class ServedArchive:
    """URLs of an archive stand-in running in its own process, and that process's id."""

    archive_url: str
    listing_url: str
    pid: int
    stand_in: str = "mirror"

    def cpu_seconds(self) -> float | None:
        """Return the CPU time the stand-in's process has used so far (None off Linux)."""
        return process_cpu_seconds(self.pid)


def process_cpu_seconds(pid: int) -> float | None:
    """Return a process's user + system CPU seconds from /proc, or None where unreadable."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as handle:
            fields = handle.read().rsplit(b")", 1)[1].split()
    except (OSError, IndexError):
        return None
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _serve(root: str, latency_s: float, stand_in: str, conn: Connection) -> None:
    """Child: serve `root` with the chosen stand-in (warmed) until the parent says stop."""
    ensure_paths()
    from tests.servers.archive_mirror import ArchiveMirror
    from tests.servers.archive_server import ArchiveServer

    if stand_in == "mirror":
        with ArchiveMirror(Path(root), latency=latency_s) as mirror:
            mirror.warm()
            conn.send((mirror.archive_url, mirror.listing_url))
            conn.recv()  # blocks until the parent is done
        return
    with ArchiveServer(Path(root), latency=latency_s) as server:
        server.warm_etags()
        conn.send((server.archive_url, server.listing_url))
        conn.recv()


@contextlib.contextmanager
def served_archive(
    root: Path, latency_s: float = 0.0, stand_in: str = "mirror"
) -> Iterator[ServedArchive]:
    """Run an archive stand-in (`STAND_INS`) in a spawned process, as the real archive is another
    machine.

    In the benchmark's own process its threads would compete for one GIL with the memory
    sampler; in its own process it only competes for the cores. Every answer waits
    `latency_s` first, as a distant archive's round trip does.
    """
    if stand_in not in STAND_INS:
        raise ValueError(f"unknown stand-in {stand_in!r}: one of {', '.join(STAND_INS)}")
    context = multiprocessing.get_context("spawn")
    parent, child = context.Pipe()
    process = context.Process(target=_serve, args=(str(root), latency_s, stand_in, child),
                              daemon=True)  # fmt: skip
    process.start()
    try:
        archive_url, listing_url = parent.recv()
        assert process.pid is not None
        yield ServedArchive(archive_url, listing_url, process.pid, stand_in)
    finally:
        parent.send("stop")
        process.join(timeout=10)
        if process.is_alive():
            process.terminate()
