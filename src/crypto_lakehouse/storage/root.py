"""Lake root: where layers live, on local disk or S3, and atomic object writes there."""

from __future__ import annotations

import contextlib
import itertools
import os
import shutil
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING
from urllib.parse import urlparse

import pyarrow as pa
import pyarrow.fs as pafs

from crypto_lakehouse.exceptions import ConfigurationError, StorageError

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator, Mapping


def _s3_options(env: Mapping[str, str]) -> dict[str, str]:
    """Collect delta-rs S3 options from the standard AWS_* variables."""
    options = {
        key: env[key]
        for key in ("AWS_ENDPOINT_URL", "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_REGION")
        if env.get(key)
    }
    options.setdefault("AWS_REGION", env.get("AWS_DEFAULT_REGION", "us-east-1"))
    if options.get("AWS_ENDPOINT_URL", "").startswith("http://"):
        options["AWS_ALLOW_HTTP"] = "true"
    # Safe concurrent commits without a lock table: put-if-absent via ETags (delta-rs ≥ 0.22).
    options["conditional_put"] = "etag"
    return options


@dataclass(frozen=True, slots=True)
class LakeRoot:
    """A lake root: `uri` is an absolute local path or `s3://bucket/prefix`."""

    uri: str
    storage_options: dict[str, str] = field(default_factory=dict)

    @classmethod
    def at(cls, root: str, env: Mapping[str, str] | None = None) -> LakeRoot:
        """Return the lake at a path or S3 URI, taking S3 credentials from the environment."""
        env = os.environ if env is None else env
        if root.startswith("s3://"):
            parsed = urlparse(root)
            if not parsed.netloc:
                raise ConfigurationError(f"S3 lake root needs a bucket: {root!r}")
            return cls(root.rstrip("/"), _s3_options(env))
        if "://" in root:
            raise ConfigurationError(f"lake root must be a path or s3://bucket/prefix: {root!r}")
        return cls(str(Path(root).expanduser().resolve()))

    @property
    def is_s3(self) -> bool:
        """Tell whether the lake lives on S3."""
        return self.uri.startswith("s3://")

    def uri_of(self, relative: str) -> str:
        """Return the URI of a path inside the lake, e.g. `s3://b/p/silver/spot_klines`."""
        return f"{self.uri}/{relative.lstrip('/')}"

    def table_uri(self, layer: str, table: str) -> str:
        """Return the Delta table URI of `layer.table`, e.g. `<root>/silver/spot_klines`."""
        return self.uri_of(f"{layer}/{table}")

    def filesystem(self) -> tuple[pafs.FileSystem, str]:
        """Return a pyarrow filesystem and the root path inside it."""
        if not self.is_s3:
            return pafs.LocalFileSystem(), self.uri
        parsed = urlparse(self.uri)
        opts = self.storage_options
        endpoint = urlparse(opts["AWS_ENDPOINT_URL"]) if opts.get("AWS_ENDPOINT_URL") else None
        fs = pafs.S3FileSystem(
            access_key=opts.get("AWS_ACCESS_KEY_ID"),
            secret_key=opts.get("AWS_SECRET_ACCESS_KEY"),
            region=opts.get("AWS_REGION", "us-east-1"),
            endpoint_override=endpoint.netloc if endpoint else None,
            scheme=endpoint.scheme if endpoint else "https",
        )
        return fs, f"{parsed.netloc}{parsed.path}"

    def put_file(self, local: Path, relative: str) -> None:
        """Store a local file at `relative` atomically: readers see all of it or nothing.

        Local disk: a hard link (or, across filesystems, a copy) at a temp name in the target
        folder, then a rename; `local` must not be modified afterwards. S3: a single PUT is
        atomic by itself.
        """
        if not self.is_s3:
            self._replace_local(relative, lambda tmp: _link_or_copy(local, tmp))
            return
        fs, base = self.filesystem()
        try:
            with local.open("rb") as source, whole_or_nothing(fs, f"{base}/{relative}") as sink:
                shutil.copyfileobj(source, sink, 8 << 20)
        except OSError as exc:
            raise StorageError(f"could not write {self.uri_of(relative)}: {exc}") from exc

    def put_bytes(self, data: bytes, relative: str) -> None:
        """Store bytes at `relative` atomically (temp name and rename; one PUT on S3)."""
        if not self.is_s3:
            self._replace_local(relative, lambda tmp: _write_new(tmp, data))
            return
        fs, base = self.filesystem()
        try:
            with whole_or_nothing(fs, f"{base}/{relative}") as sink:
                sink.write(data)
        except OSError as exc:
            raise StorageError(f"could not write {self.uri_of(relative)}: {exc}") from exc

    def _replace_local(self, relative: str, write: Callable[[Path], object]) -> None:
        """Write a local object through a temp name in its folder (`replace_file`).

        Raises:
            StorageError: the disk refused the write (the OS error is its cause).
        """
        try:
            replace_file(Path(self.uri) / relative, write)
        except OSError as exc:
            raise StorageError(f"could not write {self.uri_of(relative)}: {exc}") from exc

    def get_file(self, relative: str, local: Path) -> Path:
        """Copy an object of the lake to a local path and return it (no copy on local disk).

        Raises:
            StorageError: the object could not be read or the copy written.
        """
        if not self.is_s3:
            return Path(self.uri) / relative
        fs, base = self.filesystem()
        try:
            local.parent.mkdir(parents=True, exist_ok=True)
            with fs.open_input_stream(f"{base}/{relative}") as source, local.open("wb") as sink:
                shutil.copyfileobj(source, sink, 8 << 20)  # type: ignore[misc]
        except OSError as exc:
            raise StorageError(f"could not read {self.uri_of(relative)}: {exc}") from exc
        return local

    def open_input(self, relative: str) -> pa.NativeFile:
        """Open an object for random-access reading (ranged GETs on S3, no local copy).

        Raises:
            StorageError: the object cannot be opened.
        """
        fs, base = self.filesystem()
        try:
            return fs.open_input_file(f"{base}/{relative}")
        except OSError as exc:
            raise StorageError(f"could not open {self.uri_of(relative)}: {exc}") from exc

    def exists(self, relative: str) -> bool:
        """Tell whether an object exists."""
        if not self.is_s3:
            return (Path(self.uri) / relative).exists()
        fs, base = self.filesystem()
        return bool(fs.get_file_info(f"{base}/{relative}").type != pafs.FileType.NotFound)

    def list_dirs(self, relative: str) -> list[str]:
        """Return the names of the sub-folders of a folder (empty when it does not exist)."""
        fs, base = self.filesystem()
        path = f"{base}/{relative}".rstrip("/")
        try:
            infos = fs.get_file_info(pafs.FileSelector(path, allow_not_found=True))
        except OSError:
            return []
        return sorted(i.base_name for i in infos if i.type == pafs.FileType.Directory)


def replace_file(target: Path, write: Callable[[Path], object]) -> None:
    """Write a local file through a temp name in its folder, then rename it in place.

    Readers see the old file or the new, never half of one. The folder is made only when
    the write finds it missing: bronze writes hundreds of objects into each folder, and a
    `mkdir` and a random temp name per object were a third of their system time.
    """
    tmp = target.with_name(f".{target.name}.{_temp_suffix()}.tmp")
    try:
        try:
            write(tmp)
        except FileNotFoundError:  # its folder, unless another write just made it
            target.parent.mkdir(parents=True, exist_ok=True)
            write(tmp)  # raises again when what is missing is `put_file`'s source
        os.replace(tmp, target)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


@contextlib.contextmanager
def whole_or_nothing(fs: pafs.FileSystem, path: str) -> Iterator[pa.NativeFile]:
    """Open an object store object for writing; a failed write leaves no object at `path`.

    pyarrow's S3 output stream completes its upload when closed, also when the block that
    wrote it failed half-way: the partial bytes appear at the key (seen on moto with a 7-byte
    and a 12 MB multipart body). There is no abort, so after a failure the object is closed
    and deleted. A previous object at the key is lost either way; bronze and staging keys
    are fresh per revision and per run.
    """
    sink = fs.open_output_stream(path)
    try:
        yield sink
    except BaseException:
        with contextlib.suppress(Exception):
            sink.close()
        with contextlib.suppress(Exception):
            fs.delete_file(path)
        raise
    sink.close()


#: Temp names are unique per process (pid and a random token) and per write (a counter).
_TEMP_TOKEN = uuid.uuid4().hex[:12]
_temp_serial = itertools.count()


def _temp_suffix() -> str:
    """Return a temp-name suffix no other write, in this process or another, is using."""
    return f"{os.getpid()}-{_TEMP_TOKEN}-{next(_temp_serial)}"


def _write_new(path: Path, data: bytes) -> None:
    """Write bytes to a file that must not exist yet, without Python's buffered layer."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o666)
    try:
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view) :]
    finally:
        os.close(fd)


def _link_or_copy(source: Path, target: Path) -> None:
    """Hard-link `source` at `target` (no bytes copied), or copy it across filesystems."""
    try:
        os.link(source, target)
    except OSError:  # another filesystem, or links not supported
        shutil.copyfile(source, target)
