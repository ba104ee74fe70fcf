"""Local stand-in for data.binance.vision: archive downloads, S3 v1 listing and fault injection.

It serves on aiohttp.web, on its own event loop in a daemon thread, rather than on the
stdlib's ThreadingHTTPServer: `bench/ingest.py --scenario small` runs this stand-in on the same
2 cores as the ingest it measures, so every millisecond of CPU it spends per request is taken
from the thing measured (the real CDN costs us no cores). Fetching the 600 files of
bench/work/small-3x100 (8 concurrent keep-alive connections, ETags warmed, median of 12 runs
on the 2-core VM) cost the stdlib server 0.52 s of CPU (0.87 ms a request), 0.27 s once
warm_etags also loads small objects into memory (it used to hash them only, so every first
GET read and hashed its file again); this server costs 0.22 s (0.37 ms a request), against
0.18 s for a bare aiohttp.web app answering the same bytes from a dict. Small objects are
served from memory, the request path is resolved with plain string work, and big files
(> CHUNK_SIZE) go from disk to the socket with os.sendfile. Hashing a file on an ETag miss
and walking the tree for a listing run in the loop's executor, and a delay fault awaits,
so that one slow request never holds up the others.

`latency` makes every answer wait that long first, as a distant CDN's round trip does: the
local stand-in answers in a fraction of a millisecond, which no real archive does, and code
that overlaps work with the network (`LAKEHOUSE_TUNING__OVERLAP_PARSE=auto`) needs that wait to be
measured against (`bench/ingest.py --latency-ms`).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import signal
import threading
from pathlib import Path
from typing import TYPE_CHECKING

from aiohttp import web

from tests.servers.archive_faults import Fault, FaultPlan
from tests.servers.archive_handler import ArchiveHandler, RequestRecord
from tests.servers.lifecycle import LoopThreadServer
from tests.servers.s3_objects import (
    BACKLOG,
    BUCKET,
    CHUNK_SIZE,
    LISTING,
    S3_NS,
    EtagCache,
    regular_file_stat,
)

if TYPE_CHECKING:
    import ssl
    from collections.abc import Sequence
    from types import FrameType

#: Names other tests import from here; they live in `s3_objects` and `archive_faults`.
__all__ = ["BUCKET", "CHUNK_SIZE", "LISTING", "S3_NS", "ArchiveServer", "Fault", "FaultPlan",
           "RequestRecord", "main"]  # fmt: skip

# How long stop() lets requests in flight finish before cutting their connections.
_SHUTDOWN_TIMEOUT = 0.25


class ArchiveServer(LoopThreadServer):
    """Local HTTP server that mimics data.binance.vision over a folder of files.

    It runs an aiohttp.web application on its own event loop in a daemon thread.
    """

    def __init__(
        self,
        root: Path,
        *,
        page_size: int = 1000,
        emit_next_marker: bool = True,
        host: str = "127.0.0.1",
        port: int = 0,
        latency: float = 0.0,
        ssl_context: ssl.SSLContext | None = None,
    ) -> None:
        """Serve root (laid out as data/...); listings return at most page_size entries.

        Every answer waits `latency` seconds first (it may be changed while serving). With
        `ssl_context` it serves HTTPS, as data.binance.vision does.
        """
        super().__init__()
        self.root = Path(root).resolve()
        self.page_size = page_size
        self.latency = latency
        #: Requests being answered now, and the most at once since the start or `reset_log`.
        self.in_flight = 0
        self.max_in_flight = 0
        self.emit_next_marker = emit_next_marker
        self.host = host
        self.ssl_context = ssl_context
        self.faults = FaultPlan()
        self._port = port
        self._etags = EtagCache()
        self._lock = threading.Lock()
        self._log: list[RequestRecord] = []

    @property
    def port(self) -> int:
        """TCP port the server is (or was last) bound to."""
        if self._thread is None and self._port == 0:
            raise RuntimeError("ArchiveServer is not started")
        return self._port

    @property
    def archive_url(self) -> str:
        """Download base URL, e.g. http://127.0.0.1:PORT (https with an SSL context)."""
        scheme = "https" if self.ssl_context is not None else "http"
        return f"{scheme}://{self.host}:{self.port}"

    @property
    def listing_url(self) -> str:
        """S3 listing URL, e.g. http://127.0.0.1:PORT/data.binance.vision."""
        return f"{self.archive_url}/{BUCKET}"

    @property
    def requests(self) -> list[RequestRecord]:
        """Snapshot of the request log, oldest first."""
        with self._lock:
            return list(self._log)

    def reset_log(self) -> None:
        """Forget all logged requests, and the most requests seen in flight at once."""
        with self._lock:
            self._log.clear()
        self.max_in_flight = self.in_flight

    def warm_etags(self) -> int:
        """Hash every served file now, as S3 holds ETags before anyone lists; return the count.

        Benchmarks call it so the first listing does not pay the stand-in's own MD5 work, nor
        the first download of a small object its read: those (at most CHUNK_SIZE bytes) are
        loaded into the in-memory cache they are served from.
        """
        files = [p for p in self.root.rglob("*") if p.is_file()]
        for path in files:
            st = regular_file_stat(path)
            if st is not None and st.st_size <= CHUNK_SIZE:
                self._etags.small_object(path, st)
            else:
                self._etags.of_path(path)
        return len(files)

    async def _serve(self, ready: threading.Event, failure: list[BaseException]) -> None:
        """Bind, signal ready, and serve until stop() sets the stopping event."""
        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", ArchiveHandler(self).handle)
        runner = web.AppRunner(
            app,
            handle_signals=False,
            access_log=None,
            keepalive_timeout=60,
            shutdown_timeout=_SHUTDOWN_TIMEOUT,
        )
        try:
            await runner.setup()
            site = web.TCPSite(runner, self.host, self._port, reuse_address=True,
                               backlog=BACKLOG, ssl_context=self.ssl_context)  # fmt: skip
            await site.start()
            self._port = runner.addresses[0][1]
        except BaseException as exc:  # e.g. the port is taken: raised again by start()
            failure.append(exc)
            ready.set()
            with contextlib.suppress(Exception):
                await runner.cleanup()
            return
        threading.current_thread().name = f"archive-server-{self._port}"
        ready.set()
        try:
            await self._until_stopped()
        finally:
            # Stops listening, closes idle keep-alive connections at once and gives requests
            # in flight _SHUTDOWN_TIMEOUT to finish before their connections are cut.
            await runner.cleanup()

    def _record(self, record: RequestRecord, index: int | None = None) -> int:
        """Append a log record, or replace the one at index; return its index."""
        with self._lock:
            if index is None:
                self._log.append(record)
                return len(self._log) - 1
            if index < len(self._log) and self._log[index][:2] == record[:2]:
                self._log[index] = record
            return index


def main(argv: Sequence[str] | None = None) -> int:
    """Run the server until SIGINT/SIGTERM, printing its URLs as one JSON line."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--root", type=Path, required=True, help="folder holding data/...")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--page-size", type=int, default=1000)
    parser.add_argument(
        "--latency-ms", type=float, default=0.0, help="wait this long before every answer"
    )
    parser.add_argument(
        "--no-next-marker",
        action="store_true",
        help="omit NextMarker so clients must fall back to the last entry",
    )
    args = parser.parse_args(argv)
    if not args.root.is_dir():
        parser.error(f"--root {args.root} is not a directory")
    stop = threading.Event()

    def _on_signal(signum: int, frame: FrameType | None) -> None:
        stop.set()

    signal.signal(signal.SIGINT, _on_signal)
    signal.signal(signal.SIGTERM, _on_signal)
    server = ArchiveServer(
        args.root,
        page_size=args.page_size,
        host=args.host,
        port=args.port,
        emit_next_marker=not args.no_next_marker,
        latency=args.latency_ms / 1000,
    ).start()
    try:
        print(
            json.dumps({"archive_url": server.archive_url, "listing_url": server.listing_url}),
            flush=True,
        )
        while not stop.wait(0.2):
            pass
    finally:
        server.stop()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
