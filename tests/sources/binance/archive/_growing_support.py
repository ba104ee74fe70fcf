"""A stand-in downloader for the growing-file tests: appends bytes slowly, then marks the end."""

from __future__ import annotations

import time
from threading import Thread
from typing import TYPE_CHECKING

from crypto_lakehouse.sources.binance.archive.growing import Ending, GrowingSource, mark_ended

if TYPE_CHECKING:
    from pathlib import Path


def grow(
    path: Path,
    data: bytes,
    source: GrowingSource,
    *,
    ending: Ending = "done",
    piece: int = 4096,
    pause: float = 0.001,
) -> Thread:
    """Append `data` to `path` in pieces from a thread, then mark how the download ended."""

    def run() -> None:
        with path.open("ab") as out:
            for start in range(0, len(data), piece):
                out.write(data[start : start + piece])
                out.flush()
                time.sleep(pause)
        mark_ended(source, ending)

    thread = Thread(target=run)
    thread.start()
    return thread
