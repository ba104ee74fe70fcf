"""Local stand-in for data.binance.vision: archive downloads, S3 v1 listing and fault injection."""

from __future__ import annotations

import argparse
import contextlib
import email.utils
import hashlib
import json
import os
import secrets
import signal
import socket
import stat
import threading
import time
from collections import deque
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path, PurePosixPath
from typing import TYPE_CHECKING, BinaryIO, Literal, NamedTuple
from urllib.parse import parse_qs, unquote, urlsplit
from xml.sax.saxutils import escape

if TYPE_CHECKING:
    from collections.abc import Sequence
    from types import FrameType, TracebackType

BUCKET = "data.binance.vision"
S3_NS = "http://s3.amazonaws.com/doc/2006-03-01/"
LISTING = "listing"
CHUNK_SIZE = 256 * 1024
_XML_HEAD = '<?xml version="1.0" encoding="UTF-8"?>\n'
_HTML_PAGE = (
    b"<!DOCTYPE html><html><head><title>Maintenance</title></head><body>"
    b"<h1>Service temporarily unavailable</h1></body></html>"
)
_S3_CODES = {
    400: "InvalidArgument",
    403: "AccessDenied",
    404: "NoSuchKey",
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
        self._bodies: dict[tuple[str, int, int, int], tuple[str, bytes]] = {}

    def etag(self, path: Path, fh: BinaryIO, st: os.stat_result) -> str:
        """Return the ETag of the open file fh, hashing it (and rewinding) on a miss."""
        key = (str(path), st.st_ino, st.st_mtime_ns, st.st_size)
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

    def of_path(self, path: Path) -> tuple[str, os.stat_result]:
        """Return (ETag, stat) for a file on disk."""
        with path.open("rb") as fh:
            st = os.fstat(fh.fileno())
            return self.etag(path, fh, st), st

    def small_object(self, path: Path, st: os.stat_result) -> tuple[str, bytes, os.stat_result]:
        """Return (ETag, bytes, stat) of a file of at most CHUNK_SIZE bytes, from memory.

        Daily zips and CHECKSUMs are served thousands of times a run; keeping them in memory
        (keyed like the ETags, so a rewritten file is read again) spares an open and a read
        per request.
        """
        key = (str(path), st.st_ino, st.st_mtime_ns, st.st_size)
        with self._lock:
            cached = self._bodies.get(key)
        if cached is not None:
            return cached[0], cached[1], st
        with path.open("rb") as fh:
            st = os.fstat(fh.fileno())
            data = fh.read()
        etag = f'"{hashlib.md5(data, usedforsecurity=False).hexdigest()}"'
        key = (str(path), st.st_ino, st.st_mtime_ns, st.st_size)
        with self._lock:
            self._cache[key] = etag
            self._bodies[key] = (etag, data)
        return etag, data, st


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


def _regular_file_stat(path: Path) -> os.stat_result | None:
    """Return the stat of a regular file, or None when there is none at `path`."""
    try:
        st = path.stat()
    except OSError:
        return None
    return st if stat.S_ISREG(st.st_mode) else None


def _etag_matches(header: str, etag: str) -> bool:
    """Tell whether an If-None-Match header value matches etag (weak comparison)."""
    tags = [t.strip().removeprefix("W/") for t in header.split(",")]
    return "*" in tags or etag in tags


class _HTTPServer(ThreadingHTTPServer):
    """ThreadingHTTPServer that carries a reference to its ArchiveServer."""

    daemon_threads = True
    allow_reuse_address = True
    # socketserver's default backlog of 5 drops SYNs when a client opens more connections at
    # once (a 1 s retransmit each); CloudFront does not.
    request_queue_size = 128

    def __init__(self, address: tuple[str, int], app: ArchiveServer) -> None:
        """Bind to address and remember the owning app."""
        self.app = app
        super().__init__(address, _Handler)


class _Handler(BaseHTTPRequestHandler):
    """Request handler: downloads under /data/, listing at /data.binance.vision."""

    protocol_version = "HTTP/1.1"
    # Headers and body go out in separate writes; with Nagle on, the body waits for the
    # client's delayed ACK (~40 ms per request on Linux loopback), which real S3 does not add.
    disable_nagle_algorithm = True
    # Buffer the response: headers and a small body leave in one send at the flush, as a CDN
    # sends them, instead of two sends and two wake-ups of the client per request.
    wbufsize = CHUNK_SIZE
    server_version = "AmazonS3"
    sys_version = ""
    timeout = 60
    server: _HTTPServer

    def setup(self) -> None:
        """Register the connection so stop() can close it."""
        super().setup()
        self.server.app._track(self.connection, add=True)

    def finish(self) -> None:
        """Unregister the connection."""
        self.server.app._track(self.connection, add=False)
        super().finish()

    def log_message(self, format: str, *args: object) -> None:
        """Stay quiet: no per-request logging."""

    def do_GET(self) -> None:
        """Serve a GET."""
        self._dispatch()

    def do_HEAD(self) -> None:
        """Serve a HEAD."""
        self._dispatch()

    def _dispatch(self) -> None:
        """Apply any scripted fault, then route to the listing or a download."""
        split = urlsplit(self.path)
        path = unquote(split.path)
        target = LISTING if path.rstrip("/") == f"/{BUCKET}" else path
        fault = self.server.app.faults.take(target)
        if fault is not None and fault.kind == "delay":
            time.sleep(fault.seconds)
        elif fault is not None and fault.kind == "status":
            headers = {"Content-Type": "application/xml"}
            if fault.retry_after is not None:
                headers["Retry-After"] = str(fault.retry_after)
            self._send(fault.code, headers, _error_xml(fault.code, "Injected fault.", path))
            return
        elif fault is not None and fault.kind == "html":
            self._send(200, {"Content-Type": "text/html; charset=utf-8"}, _HTML_PAGE)
            return
        cut = fault.n_bytes if fault is not None and fault.kind == "truncate" else None
        if target == LISTING:
            self._serve_listing(split.query, cut)
        else:
            self._serve_file(path, cut)

    def _serve_listing(self, query: str, cut: int | None) -> None:
        """Answer an S3 ListObjects v1 request."""
        params = {k: v[0] for k, v in parse_qs(query, keep_blank_values=True).items()}
        xml_type = {"Content-Type": "application/xml"}
        if "list-type" in params:
            self._send(501, xml_type, _error_xml(501, "Only ListObjects v1 is emulated."))
            return
        try:
            max_keys = int(params.get("max-keys", "1000"))
            if max_keys < 0:
                raise ValueError(max_keys)
        except ValueError:
            self._send(
                400,
                xml_type,
                _error_xml(400, "Provided max-keys not an integer or within integer range"),
            )
            return
        prefix, delimiter = params.get("prefix", ""), params.get("delimiter", "")
        marker = params.get("marker", "")
        app = self.server.app
        page = list_page(
            app.root,
            prefix=prefix,
            delimiter=delimiter,
            marker=marker,
            limit=min(app.page_size, max_keys),
        )
        parts = [
            f'{_XML_HEAD}<ListBucketResult xmlns="{S3_NS}"><Name>{BUCKET}</Name>',
            f"<Prefix>{escape(prefix)}</Prefix><Marker>{escape(marker)}</Marker>",
        ]
        if page.truncated and delimiter and app.emit_next_marker and page.last is not None:
            parts.append(f"<NextMarker>{escape(page.last)}</NextMarker>")
        parts.append(f"<MaxKeys>{max_keys}</MaxKeys>")
        if delimiter:
            parts.append(f"<Delimiter>{escape(delimiter)}</Delimiter>")
        parts.append(f"<IsTruncated>{str(page.truncated).lower()}</IsTruncated>")
        for key in page.keys:
            parts.append(self._contents_xml(key))
        parts.extend(
            f"<CommonPrefixes><Prefix>{escape(p)}</Prefix></CommonPrefixes>" for p in page.prefixes
        )
        parts.append("</ListBucketResult>")
        self._send(200, xml_type, "".join(parts).encode(), cut=cut)

    def _contents_xml(self, key: str) -> str:
        """Render one <Contents> element for a key on disk."""
        try:
            etag, st = self.server.app._etags.of_path(self.server.app.root / key)
        except OSError:  # vanished between walk and stat
            return ""
        quoted = escape(etag, {'"': "&quot;"})
        return (
            f"<Contents><Key>{escape(key)}</Key><LastModified>{_s3_time(st.st_mtime)}"
            f"</LastModified><ETag>{quoted}</ETag><Size>{st.st_size}</Size>"
            "<StorageClass>STANDARD</StorageClass></Contents>"
        )

    def _serve_file(self, path: str, cut: int | None) -> None:
        """Serve an archive object from disk, with validators and conditional GET."""
        root = self.server.app.root
        parts = PurePosixPath(path).parts[1:]
        file = root.joinpath(*parts) if parts and parts[0] == "data" else None
        safe = file is not None and not any(p in ("..", ".") for p in parts)
        st = _regular_file_stat(file) if file is not None and safe else None
        if file is None or st is None:
            key = path.lstrip("/")
            self._send(
                404,
                {"Content-Type": "application/xml"},
                _error_xml(404, "The specified key does not exist.", key),
            )
            return
        content_type = _CONTENT_TYPES.get(file.suffix, "application/octet-stream")
        if st.st_size <= CHUNK_SIZE:
            etag, data, st = self.server.app._etags.small_object(file, st)
            self._send_object(content_type, etag, st, data, cut)
            return
        with file.open("rb") as fh:
            st = os.fstat(fh.fileno())
            etag = self.server.app._etags.etag(file, fh, st)
            self._send_object(content_type, etag, st, fh, cut)

    def _send_object(
        self,
        content_type: str,
        etag: str,
        st: os.stat_result,
        body: bytes | BinaryIO,
        cut: int | None,
    ) -> None:
        """Answer 304 when the client's validators match, else 200 with the object."""
        headers = {
            "Content-Type": content_type,
            "ETag": etag,
            "Last-Modified": email.utils.formatdate(st.st_mtime, usegmt=True),
        }
        if self._not_modified(etag, st.st_mtime):
            self._send(304, headers, b"", length=st.st_size)
            return
        self._send(200, headers, body, length=st.st_size, cut=cut)

    def _not_modified(self, etag: str, mtime: float) -> bool:
        """Evaluate If-None-Match (preferred) or If-Modified-Since."""
        inm = self.headers.get("If-None-Match")
        if inm is not None:
            return _etag_matches(inm, etag)
        ims = self.headers.get("If-Modified-Since")
        if ims is None:
            return False
        try:
            since = email.utils.parsedate_to_datetime(ims).timestamp()
        except (TypeError, ValueError):
            return False
        return int(mtime) <= since

    def _send(
        self,
        status: int,
        headers: dict[str, str],
        body: bytes | BinaryIO,
        *,
        length: int | None = None,
        cut: int | None = None,
    ) -> None:
        """Send a response with Content-Length, streaming body and honouring a truncation."""
        if length is None:
            length = len(body) if isinstance(body, bytes) else 0
        no_body = self.command == "HEAD" or status == 304
        planned = 0 if no_body else length if cut is None else min(cut, length)
        index = self.server.app._record(RequestRecord(self.command, self.path, status, planned))
        self.send_response(status)
        for name, value in headers.items():
            self.send_header(name, value)
        self.send_header("Content-Length", str(length))
        self.end_headers()
        sent = 0
        try:
            if isinstance(body, bytes):
                self.wfile.write(body[:planned])
                sent = planned
            else:
                while sent < planned and (chunk := body.read(min(CHUNK_SIZE, planned - sent))):
                    self.wfile.write(chunk)
                    sent += len(chunk)
            self.wfile.flush()
        except OSError:
            self.close_connection = True
        if sent != planned:  # client went away, or the file shrank under us
            self.server.app._record(RequestRecord(self.command, self.path, status, sent), index)
        if sent != length and not no_body:  # body shorter than Content-Length: must close
            self.close_connection = True


class ArchiveServer:
    """Threaded local HTTP server that mimics data.binance.vision over a folder of files."""

    def __init__(
        self,
        root: Path,
        *,
        page_size: int = 1000,
        emit_next_marker: bool = True,
        host: str = "127.0.0.1",
        port: int = 0,
    ) -> None:
        """Serve root (laid out as data/...); listings return at most page_size entries."""
        self.root = Path(root).resolve()
        self.page_size = page_size
        self.emit_next_marker = emit_next_marker
        self.host = host
        self.faults = FaultPlan()
        self._port = port
        self._etags = _EtagCache()
        self._lock = threading.Lock()
        self._log: list[RequestRecord] = []
        self._conns: set[socket.socket] = set()
        self._httpd: _HTTPServer | None = None
        self._thread: threading.Thread | None = None

    @property
    def port(self) -> int:
        """TCP port the server is (or was last) bound to."""
        if self._httpd is None and self._port == 0:
            raise RuntimeError("ArchiveServer is not started")
        return self._port

    @property
    def archive_url(self) -> str:
        """Download base URL, e.g. http://127.0.0.1:PORT."""
        return f"http://{self.host}:{self.port}"

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
        """Forget all logged requests."""
        with self._lock:
            self._log.clear()

    def warm_etags(self) -> int:
        """Hash every served file now, as S3 holds ETags before anyone lists; return the count.

        Benchmarks call it so the first listing does not pay the stand-in's own MD5 work.
        """
        files = [p for p in self.root.rglob("*") if p.is_file()]
        for path in files:
            self._etags.of_path(path)
        return len(files)

    def start(self) -> ArchiveServer:
        """Bind (reusing the previous port after a stop) and serve in a daemon thread."""
        if self._httpd is not None:
            raise RuntimeError("ArchiveServer is already running")
        self._httpd = _HTTPServer((self.host, self._port), self)
        self._port = self._httpd.server_address[1]
        self._thread = threading.Thread(
            target=self._httpd.serve_forever,
            kwargs={"poll_interval": 0.05},
            name=f"archive-server-{self._port}",
            daemon=True,
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop serving and close every open connection, including idle keep-alives."""
        httpd, thread = self._httpd, self._thread
        if httpd is None or thread is None:
            return
        httpd.shutdown()
        httpd.server_close()
        thread.join()
        with self._lock:
            conns = list(self._conns)
        for conn in conns:
            with contextlib.suppress(OSError):
                conn.shutdown(socket.SHUT_RDWR)
        self._httpd = self._thread = None

    def __enter__(self) -> ArchiveServer:
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

    def _record(self, record: RequestRecord, index: int | None = None) -> int:
        """Append a log record, or replace the one at index; return its index."""
        with self._lock:
            if index is None:
                self._log.append(record)
                return len(self._log) - 1
            if index < len(self._log) and self._log[index][:2] == record[:2]:
                self._log[index] = record
            return index

    def _track(self, conn: socket.socket, *, add: bool) -> None:
        """Add or remove an open client connection."""
        with self._lock:
            if add:
                self._conns.add(conn)
            else:
                self._conns.discard(conn)


def main(argv: Sequence[str] | None = None) -> int:
    """Run the server until SIGINT/SIGTERM, printing its URLs as one JSON line."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--root", type=Path, required=True, help="folder holding data/...")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--page-size", type=int, default=1000)
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
