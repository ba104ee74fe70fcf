"""A plain mirror of data.binance.vision for benchmarks: objects and S3 listings, nothing else.

`bench/ingest.py` runs the archive stand-in on the same 2 cores as the ingest it measures,
while the real archive (S3 behind CloudFront) costs the client's machine no CPU at all. The
full stand-in (`archive_server`, on aiohttp.web) spends ~0.25 ms of CPU a request, ~0.15 s of
the 0.9 s a 600-request ingest of small files takes, nearly all of it in aiohttp itself (a
bare aiohttp app answering from a dict costs 0.18 ms). This mirror answers the same requests
on a bare `asyncio.Protocol`: object answers are rendered once (headers and body) and kept,
so a GET costs a dictionary lookup and one `transport.write`. Per small-file ingest it used
0.03-0.08 s of CPU where the stand-in used 0.11-0.16 s. The ingest's time did not change
(`bench/paired.py`, 16 rounds: 0.986): the stand-in works on the other core while the
client's threads wait on each other. The benches use it so that they measure the client
alone, as it runs against the real archive.

It serves what a plain mirror (nginx over a copy of the archive, a MinIO bucket) serves, in
the same bytes as the stand-in: GET and HEAD of objects under /data/ with Content-Length,
ETag, Last-Modified and Content-Type; If-None-Match (304); S3 ListObjects v1 pages at
/data.binance.vision (`s3_objects.render_listing`); S3 XML errors (404, 405, 400).
HTTP/1.1 keep-alive, HTTP/1.0 and `Connection: close`. Big objects (> CHUNK_SIZE) go from
disk with os.sendfile. There is no fault injection and no request log: tests that need
those use `archive_server.ArchiveServer`, and `tests/servers/test_archive_mirror.py` checks
that both answer alike.
"""

from __future__ import annotations

import asyncio
import os
import threading
import time
from email.utils import formatdate
from pathlib import Path
from urllib.parse import unquote

from tests.servers.lifecycle import LoopThreadServer
from tests.servers.s3_objects import (
    BACKLOG,
    BUCKET,
    BUCKET_PATH,
    CHUNK_SIZE,
    SERVER_NAME,
    EtagCache,
    error_xml,
    etag_matches,
    locate,
    regular_file_stat,
    render_listing,
)

#: A request head longer than this is refused (431), as servers bound their header buffers.
MAX_HEAD_BYTES = 16 << 10
_REASONS = {
    200: "OK",
    304: "Not Modified",
    400: "Bad Request",
    404: "Not Found",
    405: "Method Not Allowed",
    431: "Request Header Fields Too Large",
    500: "Internal Server Error",
    501: "Not Implemented",
}


class _Answer:
    """A rendered answer: status line and headers (without Date), and its body source."""

    __slots__ = ("body", "file", "head", "length", "status")

    def __init__(
        self, status: int, headers: dict[str, str], body: bytes = b"", file: str | None = None,
        length: int | None = None,
    ) -> None:  # fmt: skip
        self.status = status
        self.body = body
        self.file = file
        self.length = len(body) if length is None else length
        lines = [f"HTTP/1.1 {status} {_REASONS[status]}", f"Server: {SERVER_NAME}"]
        if status != 304:  # as the stand-in (aiohttp) answers; RFC 9110 8.6 allows either
            lines.append(f"Content-Length: {self.length}")
        lines += [f"{name}: {value}" for name, value in headers.items()]
        self.head = ("\r\n".join(lines) + "\r\n").encode("latin-1")


def _xml_answer(status: int, body: bytes) -> _Answer:
    return _Answer(status, {"Content-Type": "application/xml"}, body)


class _Dates:
    """The Date header line, rendered once a second."""

    def __init__(self) -> None:
        self._second = -1
        self._line = b""

    def line(self) -> bytes:
        now = int(time.time())
        if now != self._second:
            self._second = now
            self._line = f"Date: {formatdate(now, usegmt=True)}\r\n".encode("latin-1")
        return self._line


class ArchiveMirror(LoopThreadServer):
    """Serve a folder laid out as data/... like the archive, from a daemon thread's loop."""

    def __init__(
        self, root: Path, *, host: str = "127.0.0.1", port: int = 0, latency: float = 0.0,
        page_size: int = 1000,
    ) -> None:  # fmt: skip
        """Serve `root`; every answer waits `latency` seconds first, as a distant CDN's does."""
        super().__init__()
        self.root = Path(root).resolve()
        self.host = host
        self.latency = latency
        self.page_size = page_size
        self._root = str(self.root).rstrip("/")
        self._port = port
        self._etags = EtagCache()
        self._objects: dict[str, _Object] = {}
        self._dates = _Dates()

    @property
    def archive_url(self) -> str:
        """Download base URL, e.g. http://127.0.0.1:PORT."""
        if self._thread is None and self._port == 0:
            raise RuntimeError("ArchiveMirror is not started")
        return f"http://{self.host}:{self._port}"

    @property
    def listing_url(self) -> str:
        """S3 listing URL, e.g. http://127.0.0.1:PORT/data.binance.vision."""
        return f"{self.archive_url}/{BUCKET}"

    def warm(self) -> int:
        """Render every small object's answer and hash every big one now; return the count."""
        files = [p for p in self.root.rglob("*") if p.is_file()]
        for path in files:
            self._object(f"/{path.relative_to(self.root).as_posix()}")
        return len(files)

    def answer(self, method: bytes, target: bytes, inm: str | None) -> _Answer:
        """Return the answer to a request (the loop's thread only: no locks)."""
        if method not in (b"GET", b"HEAD"):
            return _Answer(405, {"Content-Type": "application/xml", "Allow": "GET, HEAD"},
                           error_xml(405, "The specified method is not allowed against "
                                           "this resource."))  # fmt: skip
        raw_path, _, query = target.decode("latin-1").partition("?")
        path = unquote(raw_path)
        if path.rstrip("/") == BUCKET_PATH:
            status, body = render_listing(self._root, self._etags, query,
                                          page_size=self.page_size)  # fmt: skip
            return _xml_answer(status, body)
        found = self._object(path)
        if found is None:
            return _xml_answer(404, error_xml(404, "The specified key does not exist.",
                                               path.lstrip("/")))  # fmt: skip
        if inm is not None and etag_matches(inm, found.etag):
            return found.not_modified
        return found.ok

    def _object(self, path: str) -> _Object | None:
        """Return the rendered answers of the object at a request path (kept by path).

        Kept answers are checked against a stat of their file: a rewritten file is read again.
        """
        cached = self._objects.get(path)
        if cached is not None:
            st = regular_file_stat(cached.file)
            if st is not None and cached.signature == (st.st_ino, st.st_mtime_ns, st.st_size):
                return cached
        located = locate(self._root, path)
        st = regular_file_stat(located[0]) if located is not None else None
        if located is None or st is None:
            self._objects.pop(path, None)
            return None
        file, content_type = located
        if st.st_size <= CHUNK_SIZE:
            etag, data, last_modified, st = self._etags.small_object(file, st)
            body: bytes | None = data
        else:
            etag, st = self._etags.of_path(file)
            last_modified, body = formatdate(st.st_mtime, usegmt=True), None
        found = _Object(file, content_type, etag, last_modified, st, body)
        self._objects[path] = found
        return found

    async def _serve(self, ready: threading.Event, failure: list[BaseException]) -> None:
        """Bind, signal ready, serve until `stop`, then close every connection."""
        connections: set[_Connection] = set()
        try:
            server = await asyncio.get_running_loop().create_server(
                lambda: _Connection(self, connections), self.host, self._port,
                reuse_address=True, backlog=BACKLOG,
            )  # fmt: skip
        except BaseException as exc:  # e.g. the port is taken: raised again by start()
            failure.append(exc)
            ready.set()
            return
        self._port = server.sockets[0].getsockname()[1]
        ready.set()
        try:
            await self._until_stopped()
        finally:
            server.close()
            for connection in list(connections):
                connection.close()
            await server.wait_closed()


class _Object:
    """An object's two answers (200 and 304), rendered once; a big one's body stays on disk."""

    __slots__ = ("etag", "file", "not_modified", "ok", "signature")

    def __init__(
        self, file: str, content_type: str, etag: str, last_modified: str,
        st: os.stat_result, body: bytes | None,
    ) -> None:  # fmt: skip
        self.etag = etag
        self.file = file
        self.signature = (st.st_ino, st.st_mtime_ns, st.st_size)
        headers = {"Content-Type": content_type, "ETag": etag, "Last-Modified": last_modified}
        if body is not None:
            self.ok = _Answer(200, headers, body)
        else:
            self.ok = _Answer(200, headers, file=file, length=st.st_size)
        self.not_modified = _Answer(304, headers, length=st.st_size)


class _Connection(asyncio.Protocol):
    """One client connection: requests answered in order, one at a time."""

    def __init__(self, mirror: ArchiveMirror, connections: set[_Connection]) -> None:
        self._mirror = mirror
        self._connections = connections
        self._buffer = bytearray()
        self._transport: asyncio.Transport | None = None
        #: An answer is being sent (a sendfile, or waiting out the latency): requests queue.
        self._busy = False
        self._sending: asyncio.Task[None] | None = None  # held: the loop keeps weak refs

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self._transport = transport
        self._connections.add(self)

    def connection_lost(self, exc: Exception | None) -> None:
        self._connections.discard(self)
        self._transport = None

    def close(self) -> None:
        if self._transport is not None:
            self._transport.close()

    def data_received(self, data: bytes) -> None:
        self._buffer += data
        self._answer_waiting()

    def _answer_waiting(self) -> None:
        """Answer every complete request head in the buffer, in order, until one must wait."""
        while not self._busy and self._transport is not None:
            end = self._buffer.find(b"\r\n\r\n")
            if end < 0:
                if len(self._buffer) > MAX_HEAD_BYTES:
                    self._send(_xml_answer(431, error_xml(400, "Request header too large.")),
                               head_only=False, keep_alive=False)  # fmt: skip
                return
            head = bytes(self._buffer[:end])
            del self._buffer[: end + 4]
            self._request(head)

    def _request(self, head: bytes) -> None:
        """Parse one request head and start its answer."""
        line, _, fields = head.partition(b"\r\n")
        parts = line.split(b" ")
        if len(parts) != 3 or not parts[2].startswith(b"HTTP/1."):
            self._send(_xml_answer(400, error_xml(400, "Malformed request line.")),
                       head_only=False, keep_alive=False)  # fmt: skip
            return
        method, target, version = parts
        lowered = fields.lower()
        connection = _field(fields, lowered, b"connection")
        keep_alive = (connection or "").lower() != "close" and (
            version == b"HTTP/1.1" or (connection or "").lower() == "keep-alive"
        )
        if _field(fields, lowered, b"content-length") not in (None, "0") or (
            b"transfer-encoding" in lowered
        ):
            keep_alive = False  # a request body is not read: the connection cannot go on
        try:
            answer = self._mirror.answer(method, target, _field(fields, lowered, b"if-none-match"))
        except Exception as exc:  # answered, as S3 answers its own failures
            answer = _xml_answer(500, error_xml(500, f"{type(exc).__name__}: {exc}"))
        if answer.status in (405, 500):
            keep_alive = False
        head_only = method == b"HEAD"
        if self._mirror.latency > 0:
            self._busy = True
            asyncio.get_running_loop().call_later(
                self._mirror.latency, self._send_later, answer, head_only, keep_alive
            )
        else:
            self._send(answer, head_only=head_only, keep_alive=keep_alive)

    def _send_later(self, answer: _Answer, head_only: bool, keep_alive: bool) -> None:
        self._busy = False
        self._send(answer, head_only=head_only, keep_alive=keep_alive)
        self._answer_waiting()

    def _send(self, answer: _Answer, *, head_only: bool, keep_alive: bool) -> None:
        """Write an answer; a big object's body follows with os.sendfile."""
        transport = self._transport
        if transport is None:
            return
        head = answer.head + self._mirror._dates.line()
        if not keep_alive:
            head += b"Connection: close\r\n"
        head += b"\r\n"
        if head_only or answer.status == 304:
            transport.write(head)
        elif answer.file is None:
            transport.write(head + answer.body)
        else:
            self._busy = True
            transport.write(head)
            self._sending = asyncio.get_running_loop().create_task(
                self._send_file(answer, keep_alive)
            )
            return
        if not keep_alive:
            transport.close()

    async def _send_file(self, answer: _Answer, keep_alive: bool) -> None:
        """Send a big object from disk; a file shorter than announced closes the connection."""
        transport = self._transport
        assert transport is not None and answer.file is not None
        sent = 0
        try:
            with open(answer.file, "rb") as handle:
                sent = await asyncio.get_running_loop().sendfile(transport, handle, 0,
                                                                 answer.length)  # fmt: skip
        except (ConnectionError, RuntimeError, OSError):
            pass
        self._busy = False
        if sent != answer.length or not keep_alive:
            transport.close()
            return
        self._answer_waiting()


def _field(fields: bytes, lowered: bytes, name: bytes) -> str | None:
    """Return a header's value from a request head (the first, if repeated), or None."""
    at = lowered.find(b"\n" + name + b":")
    if at < 0:
        if not lowered.startswith(name + b":"):
            return None
        at = -1
    start = at + 1 + len(name) + 1
    end = fields.find(b"\r\n", start)
    return fields[start : end if end >= 0 else len(fields)].decode("latin-1").strip()
