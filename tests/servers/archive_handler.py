"""How the archive stand-in answers one request: latency, faults, listing, objects.

`ArchiveHandler` runs on the stand-in's event loop (`archive_server.ArchiveServer`), whose
root, page size, fault plan, caches and request log it reads and writes.
"""

from __future__ import annotations

import asyncio
import email.utils
import os
from typing import TYPE_CHECKING, BinaryIO, NamedTuple
from urllib.parse import unquote, urlsplit

from aiohttp import web

from tests.servers.s3_objects import (
    BUCKET_PATH,
    CHUNK_SIZE,
    LISTING,
    SERVER_NAME,
    error_xml,
    etag_matches,
    http_date,
    locate,
    regular_file_stat,
    render_listing,
)

if TYPE_CHECKING:
    from tests.servers.archive_faults import Fault
    from tests.servers.archive_server import ArchiveServer

_HTML_PAGE = (
    b"<!DOCTYPE html><html><head><title>Maintenance</title></head><body>"
    b"<h1>Service temporarily unavailable</h1></body></html>"
)


class RequestRecord(NamedTuple):
    """One served request: method, path with query, status and body bytes sent."""

    method: str
    path: str
    status: int
    bytes_sent: int


class ArchiveHandler:
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
                error_xml(405, "The specified method is not allowed against this resource."),
            )
        # The raw target, decoded as the stdlib server did: aiohttp's own request.path has
        # its dot segments already resolved, which would hide "/data/../x" from the checks.
        if raw.startswith("/") and not raw.startswith("//") and "#" not in raw:
            raw_path, _, query = raw.partition("?")
        else:
            split = urlsplit(raw)
            raw_path, query = split.path, split.query
        path = unquote(raw_path)
        target = LISTING if path.rstrip("/") == BUCKET_PATH else path
        fault = self.app.faults.take(target)
        if fault is not None and fault.kind == "delay":
            await asyncio.sleep(fault.seconds)
        elif fault is not None and fault.kind == "status":
            headers = {"Content-Type": "application/xml"}
            if fault.retry_after is not None:
                headers["Retry-After"] = str(fault.retry_after)
            return self._send(
                request, fault.code, headers, error_xml(fault.code, "Injected fault.", path)
            )
        elif fault is not None and fault.kind == "html":
            return self._send(
                request, 200, {"Content-Type": "text/html; charset=utf-8"}, _HTML_PAGE
            )
        cut = fault if fault is not None and fault.kind == "truncate" else None
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
        self, request: web.BaseRequest, path: str, cut: Fault | None
    ) -> web.StreamResponse:
        """Serve an archive object from disk, with validators and conditional GET."""
        located = locate(self._root, path)
        st = regular_file_stat(located[0]) if located is not None else None
        if located is None or st is None:
            key = path.lstrip("/")
            return self._send(
                request,
                404,
                {"Content-Type": "application/xml"},
                error_xml(404, "The specified key does not exist.", key),
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
            last_modified = http_date(st.st_mtime)
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
        cut: Fault | None,
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
        headers["Server"] = SERVER_NAME
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
        cut: Fault | None = None,
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
        planned = length if cut is None else cut.cut_at(length)
        index = self.app._record(RequestRecord(request.method, request.raw_path, status, planned))
        headers["Server"] = SERVER_NAME
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
        return etag_matches(inm, etag)
    ims = request.headers.get("If-Modified-Since")
    if ims is None:
        return False
    try:
        since = email.utils.parsedate_to_datetime(ims).timestamp()
    except (TypeError, ValueError):
        return False
    return int(mtime) <= since
