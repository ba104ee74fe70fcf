"""Keep Python's cyclic garbage collector off the objects that outlive a pipeline run.

An ingest allocates hundreds of thousands of short-lived containers (HTTP responses, futures,
per-file records), so the collector runs often, and each full collection walks every object
alive in the process, most of them created by importing polars, pyarrow and deltalake. Moving
those to the permanent generation for the length of a run (`gc.freeze`) keeps the collections
small; `gc.unfreeze` gives them back afterwards, so nothing is kept alive past the run.
"""

from __future__ import annotations

import contextlib
import gc
import threading
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from collections.abc import Iterator


class _Freezer:
    """Counts the runs inside `frozen_heap`, so overlapping runs freeze and unfreeze once."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.depth = 0


_freezer = _Freezer()


@contextlib.contextmanager
def frozen_heap() -> Iterator[None]:
    """Exclude the objects alive on entry from garbage collection until the outermost exit."""
    with _freezer.lock:
        if _freezer.depth == 0:
            gc.freeze()
        _freezer.depth += 1
    try:
        yield
    finally:
        with _freezer.lock:
            _freezer.depth -= 1
            if _freezer.depth == 0:
                gc.unfreeze()
