"""Small GETs on libcurl's multi interface, run in one thread beside the event loop.

An ingest of daily files makes hundreds of small GETs (a zip and its CHECKSUM per file).
Through aiohttp each costs the event loop ~0.15-0.2 ms of Python, and 600 of them bound the
download phase of a small-file ingest. libcurl does the HTTP in C: this transport runs one
`CurlMulti` in a thread that holds the GIL only to queue requests and hand bodies back, and
it hashes each body there too, where `hashlib` releases the GIL. 300 zips with their
CHECKSUMs took ~112 ms of CPU, ~35 of it on the loop, against ~164 ms, all on the loop,
through aiohttp (`bench/http_clients.py`).

The thread waits in `poll` on libcurl's sockets and on a wake-up pipe, so a request queued
from the loop starts at once rather than at the next socket event.

`bulk()` takes many GETs at once and hands their outcomes back in batches: each `get` costs the
loop a future, a wake-up of the coroutines awaiting it and a GIL hand-off with this thread
(600 GETs one by one: 52-60 ms of CPU, against ~32 for a bare pycurl loop with the hashing); a
bulk costs one hand-off per pass of the thread.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import io
import os
import queue
import select
import ssl
import threading
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import certifi
import pycurl
from multidict import CIMultiDict

if TYPE_CHECKING:
    from collections.abc import Iterable

#: libcurl's receive buffer (default 16 KB): a daily zip arrives in one or two writes, each a
#: call back into Python under the GIL.
_BUFFER_BYTES = 256 << 10
#: Errors that, once a response's status line has arrived, mean its body was cut short.
_SHORT_BODY_ERRORS = frozenset({pycurl.E_PARTIAL_FILE, pycurl.E_RECV_ERROR})
_POLL_IN = select.POLLIN | select.POLLPRI
_POLL_OUT = select.POLLOUT


class CurlTransportError(Exception):
    """A GET failed below HTTP (connect, timeout, reset); `short` when the body was cut."""

    def __init__(self, message: str, *, code: int, short: bool) -> None:
        super().__init__(message)
        self.code = code
        self.short = short


@dataclass(frozen=True, slots=True)
class WholeResponse:
    """A whole response: status, the last header block, body, and the body's SHA-256."""

    status: int
    headers: CIMultiDict[str]
    body: bytes = field(repr=False)
    #: Hex digest, computed where the body was received (off the event loop for curl).
    sha256: str


Outcome = WholeResponse | CurlTransportError


@dataclass(slots=True)
class _Request:
    url: str
    proxy: str | None
    loop: asyncio.AbstractEventLoop
    #: Where the outcome goes: the future of one `get`, or the `BulkGets` it belongs to.
    future: asyncio.Future[WholeResponse] | None = None
    bulk: BulkGets | None = None
    #: The bulk caller's name for this request, returned beside its outcome.
    tag: object = None
    body: io.BytesIO = field(default_factory=io.BytesIO)
    headers: io.BytesIO = field(default_factory=io.BytesIO)


class BulkGets:
    """GETs submitted together, whose outcomes come back in batches on the event loop.

    Made by `CurlTransport.bulk()` inside the loop that reads it. `submit` queues requests
    (each with a tag of the caller's); `next_done` waits for at least one outcome and returns
    every outcome that has arrived, as `(tag, response or CurlTransportError)`.
    """

    def __init__(self, transport: CurlTransport, loop: asyncio.AbstractEventLoop) -> None:
        self._transport = transport
        self._loop = loop
        self._done: list[tuple[object, Outcome]] = []
        self._waiter: asyncio.Future[None] | None = None
        #: Requests submitted whose outcomes `next_done` has not returned yet.
        self.pending = 0

    def submit(self, gets: Iterable[tuple[object, str, str | None]]) -> None:
        """Queue `(tag, url, proxy)` GETs (proxy None: none, not even from the environment).

        Raises:
            CurlTransportError: the transport is closed.
        """
        requests = [_Request(url, proxy, self._loop, bulk=self, tag=tag)
                    for tag, url, proxy in gets]  # fmt: skip
        if requests:
            self._transport._submit(requests)
            self.pending += len(requests)

    async def next_done(self) -> list[tuple[object, Outcome]]:
        """Return the outcomes that have arrived, waiting for one if none has; [] when idle."""
        if not self._done and self.pending:
            self._waiter = self._loop.create_future()
            try:
                await self._waiter
            finally:
                self._waiter = None
        done, self._done = self._done, []
        self.pending -= len(done)
        return done

    def _deliver(self, tag: object, outcome: Outcome) -> None:
        """On the loop: keep an outcome for `next_done`, and wake it."""
        self._done.append((tag, outcome))
        if self._waiter is not None and not self._waiter.done():
            self._waiter.set_result(None)


def _parse_headers(raw: bytes) -> CIMultiDict[str]:
    """Return the last response's headers (after proxy CONNECT or redirect answers)."""
    start = raw.rfind(b"\r\n\r\n", 0, len(raw.rstrip()))  # the blank line before the last
    lines = raw[start + 4 if start >= 0 else 0 :].decode("latin-1").split("\r\n")[1:]
    pairs = [line.split(":", 1) for line in lines if ":" in line]
    return CIMultiDict((name.strip(), value.strip()) for name, value in pairs)


def _ca_file() -> str | None:
    """Return the CA bundle Python's `ssl` trusts, so both HTTP stacks trust the same roots.

    `SSL_CERT_FILE` first, then OpenSSL's default file, then certifi's bundle (httpx brings
    it) where the system has none, as on a python.org build for macOS.
    """
    paths = ssl.get_default_verify_paths()
    for candidate in (os.environ.get(paths.openssl_cafile_env), paths.cafile):
        if candidate and os.path.exists(candidate):
            return candidate
    # Asked only when the system has none: `certifi.where()` imports importlib's resource
    # readers, 7-10 ms in a fresh process, at the first GET of every run.
    bundled = certifi.where()
    return bundled if os.path.exists(bundled) else None


class CurlTransport:
    """GET whole small bodies through one libcurl multi handle in a background thread.

    `max_connections` bounds the connections libcurl opens (further requests wait inside
    libcurl); `connect_timeout` bounds the connect, and a transfer that receives nothing for
    `read_timeout` seconds fails, as aiohttp's `sock_connect` and `sock_read` do.
    """

    def __init__(
        self, *, max_connections: int, connect_timeout: float, read_timeout: float
    ) -> None:
        self._max_connections = max_connections
        self._connect_timeout_ms = max(1, int(connect_timeout * 1000))
        self._read_timeout_s = max(1, round(read_timeout))
        self._ca_file = _ca_file()
        self._submitted: queue.SimpleQueue[list[_Request] | None] = queue.SimpleQueue()
        self._wake_read, self._wake_write = os.pipe()
        os.set_blocking(self._wake_read, False)
        os.set_blocking(self._wake_write, False)
        #: Set by a submitter that writes a wake-up byte, cleared by the thread before it takes
        #: requests: later submitters skip the write (a syscall, and a wake-up of the thread)
        #: while one is pending. True always has its byte in the pipe (or about to be); a False
        #: that is stale only costs a spare write. A bare flag, then, without a lock.
        self._wake_pending = False
        self._thread: threading.Thread | None = None
        self._closed = False
        self._lock = threading.Lock()

    async def get(self, url: str, proxy: str | None = None) -> WholeResponse:
        """GET `url` (through `proxy`, or directly when None) and return the whole response.

        Raises:
            CurlTransportError: the request failed below HTTP; any HTTP status is returned.
        """
        loop = asyncio.get_running_loop()
        future: asyncio.Future[WholeResponse] = loop.create_future()
        self._submit([_Request(url, proxy, loop, future=future)])
        return await future

    def bulk(self) -> BulkGets:
        """Return a new bulk of GETs whose outcomes come back to the running loop in batches."""
        return BulkGets(self, asyncio.get_running_loop())

    def _submit(self, requests: list[_Request] | None) -> None:
        """Queue requests (None: stop) and wake the transport thread."""
        with self._lock:
            if self._closed:
                raise CurlTransportError("transport closed", code=0, short=False)
            if requests is None:
                self._closed = True
            if self._thread is None and requests is not None:
                self._thread = threading.Thread(target=self._run, name="curl", daemon=True)
                self._thread.start()
        self._submitted.put(requests)
        # After the put: a thread that cleared the flag before it took requests sees this one.
        if self._wake_pending:
            return
        self._wake_pending = True
        with contextlib.suppress(BlockingIOError):  # the pipe is full of wake-ups already
            os.write(self._wake_write, b"\0")

    def close(self) -> None:
        """Stop the thread; requests still in flight fail with CurlTransportError."""
        with self._lock:
            already = self._closed
            thread = self._thread
        if not already:
            self._submit(None)
        if thread is not None:
            thread.join()
        for fd in (self._wake_read, self._wake_write):
            with contextlib.suppress(OSError):
                os.close(fd)

    def _easy(self, request: _Request, spare: list[pycurl.Curl]) -> pycurl.Curl:
        """Return a handle (a spare one when there is) set up for `request`."""
        handle = spare.pop() if spare else self._new_handle()
        handle.setopt(pycurl.URL, request.url)
        handle.setopt(pycurl.PROXY, request.proxy or "")  # "": no proxy, not even from env
        handle.setopt(pycurl.WRITEDATA, request.body)
        handle.setopt(pycurl.WRITEHEADER, request.headers)
        return handle

    def _new_handle(self) -> pycurl.Curl:
        """Return a handle with the options every request shares (they survive reuse)."""
        handle = pycurl.Curl()
        handle.setopt(pycurl.NOSIGNAL, 1)
        handle.setopt(pycurl.FOLLOWLOCATION, 1)
        handle.setopt(pycurl.MAXREDIRS, 10)
        handle.setopt(pycurl.BUFFERSIZE, _BUFFER_BYTES)
        handle.setopt(pycurl.CONNECTTIMEOUT_MS, self._connect_timeout_ms)
        handle.setopt(pycurl.LOW_SPEED_LIMIT, 1)
        handle.setopt(pycurl.LOW_SPEED_TIME, self._read_timeout_s)
        if self._ca_file is not None:
            handle.setopt(pycurl.CAINFO, self._ca_file)
        return handle

    def _run(self) -> None:
        """The transport thread: add queued requests, drive transfers, hand results back."""
        multi = pycurl.CurlMulti()
        multi.setopt(pycurl.M_MAX_TOTAL_CONNECTIONS, self._max_connections)
        active: dict[pycurl.Curl, _Request] = {}
        spare: list[pycurl.Curl] = []
        try:
            while not self._take_requests(multi, active, spare):
                while True:
                    status, _ = multi.perform()
                    if status != pycurl.E_CALL_MULTI_PERFORM:
                        break
                self._hand_back(self._finished(multi, active, spare))
                self._wait(multi, active)
        finally:
            failed: list[tuple[_Request, Outcome]] = [
                (r, CurlTransportError("transport closed", code=0, short=False))
                for r in active.values()
            ]
            for handle in active:
                multi.remove_handle(handle)
                handle.close()
            self._hand_back(failed)
            for handle in spare:
                handle.close()
            multi.close()

    def _take_requests(
        self, multi: pycurl.CurlMulti, active: dict[pycurl.Curl, _Request], spare: list[pycurl.Curl]
    ) -> bool:
        """Add every queued request to the multi handle; True when asked to stop."""
        self._wake_pending = False  # before taking: a request queued after this writes again
        while True:
            try:
                requests = self._submitted.get_nowait()
            except queue.Empty:
                return False
            if requests is None:
                return True
            for request in requests:
                handle = self._easy(request, spare)
                active[handle] = request
                multi.add_handle(handle)

    def _finished(
        self, multi: pycurl.CurlMulti, active: dict[pycurl.Curl, _Request], spare: list[pycurl.Curl]
    ) -> list[tuple[_Request, Outcome]]:
        """Collect completed transfers as responses or errors, and recycle their handles."""
        done: list[tuple[_Request, Outcome]] = []
        while True:
            remaining, succeeded, failed = multi.info_read()
            for handle in succeeded:
                request = active.pop(handle)
                body = request.body.getvalue()
                response = WholeResponse(
                    status=int(handle.getinfo(pycurl.RESPONSE_CODE)),
                    headers=_parse_headers(request.headers.getvalue()),
                    body=body,
                    sha256=hashlib.sha256(body).hexdigest(),
                )
                done.append((request, response))
                multi.remove_handle(handle)
                spare.append(handle)
            for handle, code, message in failed:
                request = active.pop(handle)
                # Cut before any response (nothing, or a reset) is a failed request, as with
                # aiohttp; cut after the status line is a short body.
                answered = int(handle.getinfo(pycurl.RESPONSE_CODE)) > 0
                short = code in _SHORT_BODY_ERRORS and answered
                received = len(request.body.getvalue())
                done.append((request, CurlTransportError(
                    f"curl error {code} ({message}) after {received} bytes",
                    code=code, short=short,
                )))  # fmt: skip
                multi.remove_handle(handle)
                handle.close()  # a failed handle may hold a broken connection state
            if not remaining:
                return done

    def _wait(self, multi: pycurl.CurlMulti, active: dict[pycurl.Curl, _Request]) -> None:
        """Sleep (GIL released) until a socket is ready, libcurl's timer fires, or a wake-up."""
        poller = select.poll()
        poller.register(self._wake_read, _POLL_IN)
        readers, writers, errors = multi.fdset()
        for fd in set(readers) | set(writers) | set(errors):
            mask = (_POLL_IN if fd in readers or fd in errors else 0) | (
                _POLL_OUT if fd in writers else 0
            )
            poller.register(fd, mask)
        timeout_ms = multi.timeout()
        if not active:
            timeout_ms = -1  # nothing in flight: sleep until a request is queued
        elif timeout_ms < 0:
            timeout_ms = 100  # libcurl has no timer: look again soon
        for fd, _ in poller.poll(timeout_ms):
            if fd == self._wake_read:
                try:
                    while os.read(self._wake_read, 4096):
                        pass
                except BlockingIOError:
                    pass

    @staticmethod
    def _hand_back(done: list[tuple[_Request, Outcome]]) -> None:
        """Resolve each request's future on its own loop, one call per loop for the batch."""
        by_loop: dict[asyncio.AbstractEventLoop, list[tuple[_Request, Outcome]]] = {}
        for request, outcome in done:
            by_loop.setdefault(request.loop, []).append((request, outcome))
        for loop, outcomes in by_loop.items():
            # A closed loop raises RuntimeError: nobody waits for these any more.
            with contextlib.suppress(RuntimeError):
                loop.call_soon_threadsafe(_resolve, outcomes)


def _resolve(outcomes: list[tuple[_Request, Outcome]]) -> None:
    """On the loop: hand each outcome to its bulk, or set its future (unless cancelled)."""
    for request, outcome in outcomes:
        if request.bulk is not None:
            request.bulk._deliver(request.tag, outcome)
            continue
        future = request.future
        if future is None or future.done():
            continue
        if isinstance(outcome, BaseException):
            future.set_exception(outcome)
        else:
            future.set_result(outcome)  # type: ignore[arg-type]
