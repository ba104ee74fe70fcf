"""How the stand-in servers start and stop: `with server:`, and on a loop in a thread.

Every stand-in (archive, mirror, REST, WebSocket) starts on `start()` and stops on `stop()`,
so a test serves in a `with` block. The archive stand-in and the benchmarks' mirror run on
their own asyncio loop in a daemon thread (`LoopThreadServer`), so a test, or a bench's
child process, can serve while its own thread does synchronous work.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
from abc import ABC, abstractmethod
from typing import TYPE_CHECKING, Self

if TYPE_CHECKING:
    from types import TracebackType


class StartStop(ABC):
    """A server that a `with` block starts and stops."""

    @abstractmethod
    def start(self) -> Self:
        """Start serving (bound and answering when it returns); return the server."""

    @abstractmethod
    def stop(self) -> None:
        """Stop serving and release the port and threads."""

    def __enter__(self) -> Self:
        """Start on entering the with block."""
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        """Stop on leaving the with block."""
        self.stop()


class LoopThreadServer(StartStop):
    """Runs `_serve` on a fresh event loop in a daemon thread until `stop`."""

    def __init__(self) -> None:
        self._thread: threading.Thread | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stopping: asyncio.Event | None = None

    @abstractmethod
    async def _serve(self, ready: threading.Event, failure: list[BaseException]) -> None:
        """Bind, set `ready` (after appending any bind error to `failure`), and serve until
        `_stopping` is set; then close every connection."""

    def start(self) -> Self:
        """Bind and serve from a daemon thread; raise what binding raised."""
        name = type(self).__name__
        if self._thread is not None:
            raise RuntimeError(f"{name} is already running")
        ready = threading.Event()
        failure: list[BaseException] = []
        thread = threading.Thread(
            target=asyncio.run, args=(self._main(ready, failure),), name=name, daemon=True
        )
        thread.start()
        if not ready.wait(30):
            raise RuntimeError(f"{name} did not start")
        if failure:
            thread.join()
            raise failure[0]
        self._thread = thread
        return self

    async def _main(self, ready: threading.Event, failure: list[BaseException]) -> None:
        """Note the loop and the stop event, then serve."""
        self._loop = asyncio.get_running_loop()
        self._stopping = asyncio.Event()
        await self._serve(ready, failure)

    async def _until_stopped(self) -> None:
        """Wait until `stop` is called."""
        assert self._stopping is not None
        await self._stopping.wait()

    def stop(self) -> None:
        """Stop serving and wait for the thread to end."""
        thread, loop, stopping = self._thread, self._loop, self._stopping
        if thread is None:
            return
        if loop is not None and stopping is not None:
            with contextlib.suppress(RuntimeError):  # loop already gone
                loop.call_soon_threadsafe(stopping.set)
        thread.join()
        self._thread = self._loop = self._stopping = None
