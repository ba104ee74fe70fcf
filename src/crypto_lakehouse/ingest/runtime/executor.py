"""Where per-file parse work runs: threads, a spawned process pool, or Dask workers.

Processes are started with `spawn`, never `fork`: deltalake's Rust runtime holds threads
and locks that a forked child would inherit broken.
"""

from __future__ import annotations

import multiprocessing
import os
from concurrent.futures import Executor, Future, ProcessPoolExecutor, ThreadPoolExecutor
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Generic, Literal, ParamSpec, TypeVar

from crypto_lakehouse.exceptions import ConfigurationError, StorageError

if TYPE_CHECKING:
    from collections.abc import Callable

ExecutorKind = Literal["threads", "processes", "dask"]
_P = ParamSpec("_P")
_T = TypeVar("_T")


def worker_count(requested: int) -> int:
    """Return the number of workers: the request, or one per core when it is 0."""
    return requested if requested > 0 else max(1, os.cpu_count() or 1)


@dataclass(frozen=True, slots=True)
class InWorker(Generic[_P, _T]):
    """A worker's task that translates the lake's OSError into `StorageError` at this boundary.

    A worker reads bronze and writes silver through pyarrow's filesystems, which raise
    OSError (a refused S3 part, a full disk); the run decides a file's status by the
    exception's class (`ingest.failures`), so the worker hands back the lakehouse's own.
    Picklable when `fn` is (spawned processes, Dask).
    """

    fn: Callable[_P, _T]

    def __call__(self, *args: _P.args, **kwargs: _P.kwargs) -> _T:
        """Run the task; raise `StorageError` from an OSError."""
        try:
            return self.fn(*args, **kwargs)
        except OSError as exc:
            raise StorageError(f"lake error in a worker: {exc}") from exc


def make_executor(
    kind: ExecutorKind, workers: int, *, dask_address: str | None = None
) -> tuple[Executor, object | None]:
    """Build an executor and, for Dask, the client that must be closed with it.

    Returns:
        (executor, owner) where owner is the Dask client/cluster to close, else None.
    """
    count = worker_count(workers)
    if kind == "threads":
        return ThreadPoolExecutor(max_workers=count, thread_name_prefix="parse"), None
    if kind == "processes":
        context = multiprocessing.get_context("spawn")
        return ProcessPoolExecutor(max_workers=count, mp_context=context), None
    if kind == "dask":
        return _dask_executor(count, dask_address)
    raise ConfigurationError(f"unknown executor {kind!r}; use threads, processes or dask")


def _dask_executor(workers: int, address: str | None) -> tuple[Executor, object]:
    """Connect to a Dask scheduler, or start a LocalCluster of worker processes."""
    from distributed import Client, LocalCluster

    if address:
        client = Client(address)
        return DaskExecutor(client.get_executor(pure=False)), client
    cluster = LocalCluster(
        n_workers=workers, threads_per_worker=1, processes=True, dashboard_address=None
    )
    client = Client(cluster)
    return DaskExecutor(client.get_executor(pure=False)), _Closer(client, cluster)


class DaskExecutor(Executor):
    """Adapt distributed's `ClientExecutor` to the full `concurrent.futures.Executor` API.

    `ClientExecutor.shutdown` takes no `cancel_futures` argument (Python 3.9+ API), so calling
    `executor.shutdown(wait=True, cancel_futures=True)` on it raises TypeError; tasks are
    submitted with `pure=False` so a re-submitted task is run again, not served from the cache.
    """

    def __init__(self, inner: Executor) -> None:
        self._inner = inner

    def submit(self, fn: Callable[_P, _T], /, *args: _P.args, **kwargs: _P.kwargs) -> Future[_T]:
        """Run `fn(*args, **kwargs)` on a Dask worker."""
        return self._inner.submit(fn, *args, **kwargs)

    def shutdown(self, wait: bool = True, *, cancel_futures: bool = False) -> None:
        """Cancel outstanding tasks when asked, else wait for them (when `wait`)."""
        self._inner.shutdown(wait=wait and not cancel_futures)

    def map(self, fn: Callable[..., _T], *iterables: Any, **kwargs: Any) -> Any:
        """Map `fn` over iterables on Dask workers."""
        return self._inner.map(fn, *iterables, **kwargs)


class _Closer:
    """Close a Dask client and its local cluster together."""

    def __init__(self, client: object, cluster: object) -> None:
        self._client = client
        self._cluster = cluster

    def close(self) -> None:
        """Close the client, then the cluster."""
        self._client.close()  # type: ignore[attr-defined]
        self._cluster.close()  # type: ignore[attr-defined]


def close_owner(owner: object | None) -> None:
    """Close what `make_executor` returned as owner."""
    if owner is not None:
        owner.close()  # type: ignore[attr-defined]
