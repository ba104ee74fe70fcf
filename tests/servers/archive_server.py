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
import asyncio
import contextlib
import email.utils
import hashlib
import json
import os
import secrets
import signal
import stat
import threading
import time
from collections import deque
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, BinaryIO, Literal, NamedTuple
from urllib.parse import parse_qs, unquote, urlsplit
from xml.sax.saxutils import escape

from aiohttp import web

from tests.servers.lifecycle import LoopThreadServer

if TYPE_CHECKING:
    import ssl
    from collections.abc import Sequence
    from types import FrameType

BUCKET = "data.binance.vision"
S3_NS = "http://s3.amazonaws.com/doc/2006-03-01/"
LISTING = "listing"
CHUNK_SIZE = 256 * 1024
_BUCKET_PATH = f"/{BUCKET}"
_SERVER = "AmazonS3"
# The listen backlog: a small one drops SYNs when a client opens many connections at once
# (a 1 s retransmit each); CloudFront does not.
_BACKLOG = 128
# How long stop() lets requests in flight finish before cutting their connections.
_SHUTDOWN_TIMEOUT = 0.25
_XML_HEAD = '<?xml version="1.0" encoding="UTF-8"?>\n'
_HTML_PAGE = (
    b"<!DOCTYPE html><html><head><title>Maintenance</title></head><body>"
    b"<h1>Service temporarily unavailable</h1></body></html>"
)
_S3_CODES = {
    400: "InvalidArgument",
    403: "AccessDenied",
    404: "NoSuchKey",
    405: "MethodNotAllowed",
    500: "InternalError",
    503: "SlowDown",
}
_CONTENT_TYPES = {".zip": "application/zip", ".CHECKSUM": "text/plain"}

FaultKind = Literal["status", "truncate", "html", "delay"]


@dataclass(frozen=True)
class Fault:
    """One scripted misbehaviour, applied to a single matching request."""

    kind: FaultKind
    code: int = 200
    retry_after: int | None = None
    n_bytes: int = 0
    seconds: float = 0.0

    @classmethod
    def status(cls, code: int, *, retry_after: int | None = None) -> Fault:
        """Answer with this HTTP status and an S3-style XML error body."""
        return cls("status", code=code, retry_after=retry_after)

    @classmethod
    def truncate(cls, n_bytes: int) -> Fault:
        """Announce the full Content-Length, send only n_bytes of body, then close."""
        return cls("truncate", n_bytes=max(0, n_bytes))

    @classmethod
    def html(cls) -> Fault:
        """Answer 200 with a small text/html page instead of the object."""
        return cls("html")

    @classmethod
    def delay(cls, seconds: float) -> Fault:
        """Sleep this long, then serve the request normally."""
        return cls("delay", seconds=seconds)


def _normalize_target(target: str) -> str:
    """Map "listing", a key, a path or a full URL to the form requests are matched by."""
    if target == LISTING:
        return target
    path = urlsplit(target).path if "://" in target else target.split("?", 1)[0]
    return "/" + path.lstrip("/")


class FaultPlan:
    """Thread-safe per-target queues of faults, consumed one per matching request."""

    def __init__(self) -> None:
        """Start with no faults scripted."""
        self._lock = threading.Lock()
        self._queues: dict[str, deque[Fault]] = {}

    def add(self, target: str, fault: Fault, *, times: int = 1) -> None:
        """Queue fault for the next `times` requests to target (download path or "listing")."""
        with self._lock:
            self._queues.setdefault(_normalize_target(target), deque()).extend([fault] * times)

    def take(self, target: str) -> Fault | None:
        """Pop the next fault queued for target, if any."""
        with self._lock:
            queue = self._queues.get(_normalize_target(target))
            return queue.popleft() if queue else None

    def pending(self, target: str | None = None) -> int:
        """Count faults not yet consumed, for one target or for all."""
        with self._lock:
            if target is not None:
                return len(self._queues.get(_normalize_target(target), ()))
            return sum(len(q) for q in self._queues.values())

    def clear(self) -> None:
        """Drop every queued fault."""
        with self._lock:
            self._queues.clear()


class RequestRecord(NamedTuple):
    """One served request: method, path with query, status and body bytes sent."""

    method: str
    path: str
    status: int
    bytes_sent: int


class _EtagCache:
    """Quoted-md5 ETags cached by (path, inode, mtime_ns, size)."""

    def __init__(self) -> None:
        """Start empty."""
        self._lock = threading.Lock()
        self._cache: dict[tuple[str, int, int, int], str] = {}
        self._bodies: dict[tuple[str, int, int, int], tuple[str, bytes, str]] = {}

    def etag(self, path: str | Path, fh: BinaryIO, st: os.stat_result) -> str:
        """Return the ETag of the open file fh, hashing it (and rewinding) on a miss."""
        key = (os.fspath(path), st.st_ino, st.st_mtime_ns, st.st_size)
        with self._lock:
            cached = self._cache.get(key)
        if cached is not None:
            return cached
        digest = hashlib.md5(usedforsecurity=False)
        while chunk := fh.read(CHUNK_SIZE):
            digest.update(chunk)
        fh.seek(0)
        etag = f'"{digest.hexdigest()}"'
        with self._lock:
            self._cache[key] = etag
        return etag

    def of_path(self, path: str | Path) -> tuple[str, os.stat_result]:
        """Return (ETag, stat) for a file on disk; a cached ETag costs a stat, not an open.

        A listing page names up to 1,000 keys: opening each cost ~80 µs, four times the stat.
        """
        st = os.stat(path)
        with self._lock:
            cached = self._cache.get((os.fspath(path), st.st_ino, st.st_mtime_ns, st.st_size))
        if cached is not None:
            return cached, st
        with open(path, "rb") as fh:
            st = os.fstat(fh.fileno())
            return self.etag(path, fh, st), st

    def small_object(
        self, path: str | Path, st: os.stat_result
    ) -> tuple[str, bytes, str, os.stat_result]:
        """Return (ETag, bytes, Last-Modified, stat) of a file of at most CHUNK_SIZE bytes.

        Daily zips and CHECKSUMs are served thousands of times a run; keeping them in memory
        (keyed like the ETags, so a rewritten file is read again) spares an open and a read
        per request.
        """
        name = os.fspath(path)
        key = (name, st.st_ino, st.st_mtime_ns, st.st_size)
        with self._lock:
            cached = self._bodies.get(key)
        if cached is not None:
            return cached[0], cached[1], cached[2], st
        with open(name, "rb") as fh:  # a str path: pathlib costs per request
            st = os.fstat(fh.fileno())
            data = fh.read()
        key = (name, st.st_ino, st.st_mtime_ns, st.st_size)
        with self._lock:
            etag = self._cache.get(key)
        if etag is None or len(data) != st.st_size:
            etag = f'"{hashlib.md5(data, usedforsecurity=False).hexdigest()}"'
        last_modified = _http_date(st.st_mtime)
        with self._lock:
            self._cache[key] = etag
            self._bodies[key] = (etag, data, last_modified)
        return etag, data, last_modified, st


@dataclass(frozen=True)
class ListingPage:
    """One page of an S3 v1 listing: keys, common prefixes and truncation state."""

    keys: list[str]
    prefixes: list[str]
    truncated: bool
    last: str | None


def list_page(root: Path, *, prefix: str, delimiter: str, marker: str, limit: int) -> ListingPage:
    """Compute one S3 ListObjects v1 page over the files under root."""
    base = root / prefix[: prefix.rfind("/") + 1]
    keys: list[str] = []
    if ".." not in prefix.split("/") and base.is_dir():
        for dirpath, dirnames, filenames in os.walk(base, followlinks=True):
            dirnames[:] = [d for d in dirnames if not d.startswith(".")]
            rel_dir = Path(dirpath).relative_to(root).as_posix()
            keys.extend(f"{rel_dir}/{name}" for name in filenames if not name.startswith("."))
    entries: set[str] = set()
    prefixes: set[str] = set()
    for key in keys:
        if not key.startswith(prefix):
            continue
        rest = key[len(prefix) :]
        cut = rest.find(delimiter) if delimiter else -1
        if cut < 0:
            entries.add(key)
        else:
            prefixes.add(prefix + rest[: cut + len(delimiter)])
    after = sorted(e for e in entries | prefixes if e > marker)
    page = after[: max(limit, 0)]
    return ListingPage(
        keys=[e for e in page if e not in prefixes],
        prefixes=[e for e in page if e in prefixes],
        truncated=len(after) > len(page),
        last=page[-1] if page else None,
    )


def _s3_time(mtime: float) -> str:
    """Format an mtime like S3 listings do: 2026-04-01T08:06:34.000Z."""
    return time.strftime("%Y-%m-%dT%H:%M:%S.000Z", time.gmtime(mtime))


def _error_xml(code: int, message: str, key: str = "") -> bytes:
    """Render an S3-style XML error document."""
    name = _S3_CODES.get(code, "ServiceUnavailable" if code >= 500 else "InvalidRequest")
    key_xml = f"<Key>{escape(key)}</Key>" if key else ""
    return (
        f"{_XML_HEAD}<Error><Code>{name}</Code><Message>{escape(message)}</Message>{key_xml}"
        f"<RequestId>{secrets.token_hex(8).upper()}</RequestId></Error>"
    ).encode()


def _regular_file_stat(path: str | Path) -> os.stat_result | None:
    """Return the stat of a regular file, or None when there is none at `path`."""
    try:
        st = os.stat(path)  # a str path: pathlib costs per request
    except (OSError, ValueError):  # ValueError: a NUL byte in the path
        return None
    return st if stat.S_ISREG(st.st_mode) else None


def _http_date(mtime: float) -> str:
    """Format an mtime as an HTTP date, for Last-Modified."""
    return email.utils.formatdate(mtime, usegmt=True)


def _etag_matches(header: str, etag: str) -> bool:
    """Tell whether an If-None-Match header value matches etag (weak comparison)."""
    tags = [t.strip().removeprefix("W/") for t in header.split(",")]
    return "*" in tags or etag in tags


def render_listing(
    root: str, etags: _EtagCache, query: str, *, page_size: int, emit_next_marker: bool = True
) -> tuple[int, bytes]:
    """Render the answer to an S3 ListObjects v1 request over the files under `root`.

    Returns (status, XML body); both archive stand-ins (this one, `archive_mirror`) answer
    listings with it.
    """
    params = {k: v[0] for k, v in parse_qs(query, keep_blank_values=True).items()}
    if "list-type" in params:
        return 501, _error_xml(501, "Only ListObjects v1 is emulated.")
    try:
        max_keys = int(params.get("max-keys", "1000"))
        if max_keys < 0:
            raise ValueError(max_keys)
    except ValueError:
        return 400, _error_xml(400, "Provided max-keys not an integer or within integer range")
    prefix, delimiter = params.get("prefix", ""), params.get("delimiter", "")
    marker = params.get("marker", "")
    page = list_page(Path(root or "/"), prefix=prefix, delimiter=delimiter, marker=marker,
                     limit=min(page_size, max_keys))  # fmt: skip
    parts = [
        f'{_XML_HEAD}<ListBucketResult xmlns="{S3_NS}"><Name>{BUCKET}</Name>',
        f"<Prefix>{escape(prefix)}</Prefix><Marker>{escape(marker)}</Marker>",
    ]
    if page.truncated and delimiter and emit_next_marker and page.last is not None:
        parts.append(f"<NextMarker>{escape(page.last)}</NextMarker>")
    parts.append(f"<MaxKeys>{max_keys}</MaxKeys>")
    if delimiter:
        parts.append(f"<Delimiter>{escape(delimiter)}</Delimiter>")
    parts.append(f"<IsTruncated>{str(page.truncated).lower()}</IsTruncated>")
    parts.extend(_contents_xml(root, etags, key) for key in page.keys)
    parts.extend(
        f"<CommonPrefixes><Prefix>{escape(p)}</Prefix></CommonPrefixes>" for p in page.prefixes
    )
    parts.append("</ListBucketResult>")
    return 200, "".join(parts).encode()


def _contents_xml(root: str, etags: _EtagCache, key: str) -> str:
    """Render one <Contents> element for a key on disk."""
    try:
        etag, st = etags.of_path(f"{root}/{key}")
    except OSError:  # vanished between walk and stat
        return ""
    quoted = escape(etag, {'"': "&quot;"})
    return (
        f"<Contents><Key>{escape(key)}</Key><LastModified>{_s3_time(st.st_mtime)}"
        f"</LastModified><ETag>{quoted}</ETag><Size>{st.st_size}</Size>"
        "<StorageClass>STANDARD</StorageClass></Contents>"
    )


def locate(root: str, path: str) -> tuple[str, str] | None:
    """Map a decoded request path to (file under root/data, Content-Type), None if outside.

    Plain string work, as pathlib would split the path the same way (empty and "."
    segments dropped) at several times the cost, on every request.
    """
    if not path.startswith("/"):
        return None
    parts = [p for p in path.split("/") if p and p != "."]
    if not parts or parts[0] != "data" or ".." in parts:
        return None
    name = parts[-1]
    dot = name.rfind(".")
    suffix = name[dot:] if 0 < dot < len(name) - 1 else ""
    file = root + "/" + "/".join(parts)
    return file, _CONTENT_TYPES.get(suffix, "application/octet-stream")


class _Handler:
    """Request handling on the server's event loop: downloads under /data/, listing at /bucket."""

    def __init__(self, app: ArchiveServer) -> None:
        """Serve for app (its root, page size, faults, caches and request log)."""
        self.app = app
        self._root = str(app.root).rstrip("/")  # "" for "/": file paths are root + "/..."

    async def handle(self, request: web.BaseRequest) -> web.StreamResponse:
        """Count the request in flight while it is answered (`ArchiveServer.max_in_flight`)."""
        app = self.app
        app.in_flight += 1
        app.max_in_flight = max(app.max_in_flight, app.in_flight)
        try:
            return await self._answer(request)
        finally:
            app.in_flight -= 1

    async def _answer(self, request: web.BaseRequest) -> web.StreamResponse:
        """Wait out the latency, apply any scripted fault, then route the request."""
        if self.app.latency > 0:
            await asyncio.sleep(self.app.latency)
        raw = request.raw_path
        if request.method not in ("GET", "HEAD"):  # as S3 answers a POST or PUT to the bucket
            return self._send(
                request,
                405,
                {"Content-Type": "application/xml", "Allow": "GET, HEAD"},
                _error_xml(405, "The specified method is not allowed against this resource."),
            )
        # The raw target, decoded as the stdlib server did: aiohttp's own request.path has
        # its dot segments already resolved, which would hide "/data/../x" from the checks.
        if raw.startswith("/") and not raw.startswith("//") and "#" not in raw:
            raw_path, _, query = raw.partition("?")
        else:
            split = urlsplit(raw)
            raw_path, query = split.path, split.query
        path = unquote(raw_path)
        target = LISTING if path.rstrip("/") == _BUCKET_PATH else path
        fault = self.app.faults.take(target)
        if fault is not None and fault.kind == "delay":
            await asyncio.sleep(fault.seconds)
        elif fault is not None and fault.kind == "status":
            headers = {"Content-Type": "application/xml"}
            if fault.retry_after is not None:
                headers["Retry-After"] = str(fault.retry_after)
            return self._send(
                request, fault.code, headers, _error_xml(fault.code, "Injected fault.", path)
            )
        elif fault is not None and fault.kind == "html":
            return self._send(
                request, 200, {"Content-Type": "text/html; charset=utf-8"}, _HTML_PAGE
            )
        cut = fault.n_bytes if fault is not None and fault.kind == "truncate" else None
        if target == LISTING:
            # Walking the tree and hashing unseen files may take a while: off the loop.
            loop = asyncio.get_running_loop()
            status, body = await loop.run_in_executor(None, self._listing, query)
            return await self._respond(
                request, status, {"Content-Type": "application/xml"}, body, cut=cut
            )
        return await self._serve_file(request, path, cut)

    def _listing(self, query: str) -> tuple[int, bytes]:
        """Render the answer to an S3 ListObjects v1 request: (status, XML body)."""
        app = self.app
        return render_listing(self._root, app._etags, query, page_size=app.page_size,
                              emit_next_marker=app.emit_next_marker)  # fmt: skip

    async def _serve_file(
        self, request: web.BaseRequest, path: str, cut: int | None
    ) -> web.StreamResponse:
        """Serve an archive object from disk, with validators and conditional GET."""
        located = locate(self._root, path)
        st = _regular_file_stat(located[0]) if located is not None else None
        if located is None or st is None:
            key = path.lstrip("/")
            return self._send(
                request,
                404,
                {"Content-Type": "application/xml"},
                _error_xml(404, "The specified key does not exist.", key),
            )
        file, content_type = located
        if st.st_size <= CHUNK_SIZE:
            etag, data, last_modified, st = self.app._etags.small_object(file, st)
            return await self._send_object(
                request, content_type, etag, last_modified, st, data, cut
            )
        fh = open(file, "rb")  # noqa: SIM115 - closed below, after the response is sent
        try:
            st = os.fstat(fh.fileno())
            # Hashing a big file on an ETag miss takes a while: off the loop.
            loop = asyncio.get_running_loop()
            etag = await loop.run_in_executor(None, self.app._etags.etag, file, fh, st)
            last_modified = _http_date(st.st_mtime)
            return await self._send_object(request, content_type, etag, last_modified, st, fh, cut)
        finally:
            fh.close()

    async def _send_object(
        self,
        request: web.BaseRequest,
        content_type: str,
        etag: str,
        last_modified: str,
        st: os.stat_result,
        body: bytes | BinaryIO,
        cut: int | None,
    ) -> web.StreamResponse:
        """Answer 304 when the client's validators match, else 200 with the object."""
        headers = {"Content-Type": content_type, "ETag": etag, "Last-Modified": last_modified}
        if _not_modified(request, etag, st.st_mtime):
            return self._send(request, 304, headers, b"", length=st.st_size)
        if isinstance(body, bytes) and cut is None:
            return self._send(request, 200, headers, body, length=st.st_size)
        return await self._respond(request, 200, headers, body, length=st.st_size, cut=cut)

    def _send(
        self,
        request: web.BaseRequest,
        status: int,
        headers: dict[str, str],
        body: bytes,
        *,
        length: int | None = None,
    ) -> web.Response:
        """Answer with a whole in-memory body (none for HEAD and 304), logging it first."""
        if length is None:
            length = len(body)
        no_body = request.method == "HEAD" or status == 304
        self.app._record(
            RequestRecord(request.method, request.raw_path, status, 0 if no_body else length)
        )
        headers["Server"] = _SERVER
        if no_body:
            # aiohttp drops Content-Length from a 304 itself (RFC 9110 8.6), keeps it on HEAD.
            headers["Content-Length"] = str(length)
            return web.Response(status=status, headers=headers)
        return web.Response(status=status, headers=headers, body=body)

    async def _respond(
        self,
        request: web.BaseRequest,
        status: int,
        headers: dict[str, str],
        body: bytes | BinaryIO,
        *,
        length: int | None = None,
        cut: int | None = None,
    ) -> web.StreamResponse:
        """Stream a body with its full Content-Length, honouring a truncation.

        A body shorter than Content-Length (a truncate fault, a client gone, a file shrunk under
        us) closes the connection after the bytes that were sent, so the client sees an
        incomplete payload rather than waiting for the rest.
        """
        if length is None:
            length = len(body) if isinstance(body, bytes) else 0
        if request.method == "HEAD":
            return self._send(request, status, headers, b"", length=length)
        planned = length if cut is None else min(cut, length)
        index = self.app._record(RequestRecord(request.method, request.raw_path, status, planned))
        headers["Server"] = _SERVER
        response = web.StreamResponse(status=status, headers=headers)
        response.content_length = length
        sent = 0
        try:
            await response.prepare(request)
            if isinstance(body, bytes):
                if planned:
                    await response.write(body[:planned])
                sent = planned
            elif planned:
                sent = await _sendfile(request, body, planned)
        except ConnectionError:  # client went away
            pass
        if sent != planned:
            self.app._record(RequestRecord(request.method, request.raw_path, status, sent), index)
        if sent != length and request.transport is not None:
            # Close after the bytes written so far have been flushed; aiohttp's own
            # write_eof then meets a closing transport, which it takes as a gone client.
            request.transport.close()
        return response


async def _sendfile(request: web.BaseRequest, fh: BinaryIO, count: int) -> int:
    """Send the first count bytes of fh after the headers; return how many went out.

    os.sendfile through the loop, as aiohttp's FileResponse does: the kernel copies the file to
    the socket, a third to a half of the CPU of reading it into Python and writing it back
    (3 x 200 MB: 0.11-0.18 s, against 0.34-0.43 s for the stdlib server's read/write loop).
    Fewer than count means the file shrank or the client went away; the loop leaves the
    file's position after the last byte sent.
    """
    transport = request.transport
    if transport is None or transport.is_closing():
        return 0
    try:
        return await asyncio.get_running_loop().sendfile(transport, fh, 0, count)
    except (ConnectionError, RuntimeError):  # RuntimeError: the transport closed before
        return fh.tell()


def _not_modified(request: web.BaseRequest, etag: str, mtime: float) -> bool:
    """Evaluate If-None-Match (preferred) or If-Modified-Since."""
    inm = request.headers.get("If-None-Match")
    if inm is not None:
        return _etag_matches(inm, etag)
    ims = request.headers.get("If-Modified-Since")
    if ims is None:
        return False
    try:
        since = email.utils.parsedate_to_datetime(ims).timestamp()
    except (TypeError, ValueError):
        return False
    return int(mtime) <= since


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
        self._etags = _EtagCache()
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
            st = _regular_file_stat(path)
            if st is not None and st.st_size <= CHUNK_SIZE:
                self._etags.small_object(path, st)
            else:
                self._etags.of_path(path)
        return len(files)

    async def _serve(self, ready: threading.Event, failure: list[BaseException]) -> None:
        """Bind, signal ready, and serve until stop() sets the stopping event."""
        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", _Handler(self).handle)
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
                               backlog=_BACKLOG, ssl_context=self.ssl_context)  # fmt: skip
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
