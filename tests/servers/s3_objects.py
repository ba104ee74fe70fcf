"""What the archive stand-ins serve: objects on disk with S3's ETags, listings and errors.

Shared by `archive_server` (the stand-in with faults and a request log) and
`archive_mirror` (the bare mirror the benchmarks use), so both answer in the same bytes.
"""

from __future__ import annotations

import email.utils
import hashlib
import os
import secrets
import stat
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO
from urllib.parse import parse_qs
from xml.sax.saxutils import escape

BUCKET = "data.binance.vision"
S3_NS = "http://s3.amazonaws.com/doc/2006-03-01/"
LISTING = "listing"
CHUNK_SIZE = 256 * 1024
BUCKET_PATH = f"/{BUCKET}"
SERVER_NAME = "AmazonS3"
# The listen backlog: a small one drops SYNs when a client opens many connections at once
# (a 1 s retransmit each); CloudFront does not.
BACKLOG = 128
_XML_HEAD = '<?xml version="1.0" encoding="UTF-8"?>\n'
_S3_CODES = {
    400: "InvalidArgument",
    403: "AccessDenied",
    404: "NoSuchKey",
    405: "MethodNotAllowed",
    500: "InternalError",
    503: "SlowDown",
}
_CONTENT_TYPES = {".zip": "application/zip", ".CHECKSUM": "text/plain"}


class EtagCache:
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
        last_modified = http_date(st.st_mtime)
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


def error_xml(code: int, message: str, key: str = "") -> bytes:
    """Render an S3-style XML error document."""
    name = _S3_CODES.get(code, "ServiceUnavailable" if code >= 500 else "InvalidRequest")
    key_xml = f"<Key>{escape(key)}</Key>" if key else ""
    return (
        f"{_XML_HEAD}<Error><Code>{name}</Code><Message>{escape(message)}</Message>{key_xml}"
        f"<RequestId>{secrets.token_hex(8).upper()}</RequestId></Error>"
    ).encode()


def regular_file_stat(path: str | Path) -> os.stat_result | None:
    """Return the stat of a regular file, or None when there is none at `path`."""
    try:
        st = os.stat(path)  # a str path: pathlib costs per request
    except (OSError, ValueError):  # ValueError: a NUL byte in the path
        return None
    return st if stat.S_ISREG(st.st_mode) else None


def http_date(mtime: float) -> str:
    """Format an mtime as an HTTP date, for Last-Modified."""
    return email.utils.formatdate(mtime, usegmt=True)


def etag_matches(header: str, etag: str) -> bool:
    """Tell whether an If-None-Match header value matches etag (weak comparison)."""
    tags = [t.strip().removeprefix("W/") for t in header.split(",")]
    return "*" in tags or etag in tags


def render_listing(
    root: str, etags: EtagCache, query: str, *, page_size: int, emit_next_marker: bool = True
) -> tuple[int, bytes]:
    """Render the answer to an S3 ListObjects v1 request over the files under `root`.

    Returns (status, XML body); both archive stand-ins (this one, `archive_mirror`) answer
    listings with it.
    """
    params = {k: v[0] for k, v in parse_qs(query, keep_blank_values=True).items()}
    if "list-type" in params:
        return 501, error_xml(501, "Only ListObjects v1 is emulated.")
    try:
        max_keys = int(params.get("max-keys", "1000"))
        if max_keys < 0:
            raise ValueError(max_keys)
    except ValueError:
        return 400, error_xml(400, "Provided max-keys not an integer or within integer range")
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


def _contents_xml(root: str, etags: EtagCache, key: str) -> str:
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
