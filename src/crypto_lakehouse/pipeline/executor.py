"""Where per-file parse work runs: threads, a spawned process pool, or Dask workers.

Processes are started with `spawn`, never `fork`: deltalake's Rust runtime holds threads
and locks that a forked child would inherit broken.
"""

from __future__ import annotations

import multiprocessing
import os
from concurrent.futures import Executor, ProcessPoolExecutor, ThreadPoolExecutor
from typing import Literal

from crypto_lakehouse.exceptions import ConfigurationError

ExecutorKind = Literal["threads", "processes", "dask"]


def worker_count(requested: int) -> int:
    """Return the number of workers: the request, or one per core when it is 0."""
    return requested if requested > 0 else max(1, os.cpu_count() or 1)


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
        return client.get_executor(), client
    cluster = LocalCluster(
        n_workers=workers, threads_per_worker=1, processes=True, dashboard_address=None
    )
    client = Client(cluster)
    return client.get_executor(), _Closer(client, cluster)


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
