"""The lake's format version: `_lakehouse/format.json`, stamped by writers, checked by all.

A lake records the layout it was written in, so that a later version of the package can
change that layout and upgrade old lakes instead of misreading them:

    <root>/_lakehouse/format.json   {"format_version": 1, "written_by": "0.1.0"}

- Every command checks the lake first. A lake of a newer format is refused
  (`LakeFormatError`): this package would misread or damage it.
- Reading (`sql`, `status`, the `Lake` API) accepts an older or an unversioned lake.
- Writing stamps an unversioned or older lake with the current format when no registered
  migration step lies in between (stamping is then the whole upgrade); when one does, the
  write is refused until `lakehouse migrate` has run the steps.
- `migrate` runs the registered steps from the lake's version up to the current one, then
  stamps; on a current lake it does nothing. `MIGRATIONS` is empty today: version 0 (a lake
  written before versioning) becomes 1 by stamping alone.

The file is written atomically (temp name and rename on disk, one PUT on S3).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import TYPE_CHECKING, Final

import structlog

from crypto_lakehouse.exceptions import LakeFormatError, StorageError

if TYPE_CHECKING:
    from collections.abc import Callable, Mapping

    from crypto_lakehouse.storage.root import LakeRoot

log = structlog.get_logger(__name__)

#: The format this package reads and writes.
FORMAT_VERSION: Final = 1
#: Where the lake records its format, relative to the root.
FORMAT_KEY: Final = "_lakehouse/format.json"
#: The version of a lake without a format file (written before versioning, or empty).
UNVERSIONED: Final = 0


@dataclass(frozen=True, slots=True)
class MigrationStep:
    """One upgrade of a lake's layout from `source` to `source + 1`.

    Attributes:
        source: The format version the step upgrades from.
        describe: What the step changes, shown by `lakehouse migrate`.
        apply: Rewrites the lake; must be safe to run again after a crash half-way.
    """

    source: int
    describe: str
    apply: Callable[[LakeRoot], None]


#: Registered steps by the version they upgrade from. Empty: 0 -> 1 only stamps the file.
MIGRATIONS: Final[Mapping[int, MigrationStep]] = {}


@dataclass(frozen=True, slots=True)
class LakeFormat:
    """A lake's recorded format: its version and the package version that wrote it."""

    format_version: int
    written_by: str

    @property
    def versioned(self) -> bool:
        """Tell whether the lake had a format file (False: written before versioning)."""
        return self.format_version != UNVERSIONED


@dataclass(frozen=True, slots=True)
class MigrationResult:
    """What `migrate` did: the versions before and after, and the steps it ran in order."""

    before: int
    after: int
    steps: tuple[str, ...] = ()

    @property
    def changed(self) -> bool:
        """Tell whether the lake was upgraded (False: it already was current)."""
        return self.before != self.after


def package_version() -> str:
    """Return the installed package version recorded as `written_by` (`unknown` from source)."""
    from importlib import metadata  # ~7 ms to import: only writers pay it

    try:
        return metadata.version("crypto-lakehouse")
    except metadata.PackageNotFoundError:
        return "unknown"


def parse_format(data: bytes, uri: str) -> LakeFormat:
    """Parse a format file; e.g. `{"format_version": 1, "written_by": "0.1.0"}`.

    Raises:
        LakeFormatError: the file is not a JSON object with an integer `format_version`.
    """
    try:
        record = json.loads(data)
        version = record["format_version"]
        written_by = str(record.get("written_by", "unknown"))
    except (ValueError, TypeError, KeyError, AttributeError) as exc:
        raise LakeFormatError(
            f"{uri} is not a lake format file ({exc}); restore it or remove it to let "
            "`lakehouse migrate` stamp the lake again",
            supported=FORMAT_VERSION,
        ) from exc
    if not isinstance(version, int) or isinstance(version, bool) or version < 1:
        raise LakeFormatError(
            f"{uri} holds format_version {version!r}; expected a positive integer",
            supported=FORMAT_VERSION,
        )
    return LakeFormat(version, written_by)


def read_format(lake: LakeRoot) -> LakeFormat:
    """Return the lake's recorded format; version 0 when it has no format file.

    Raises:
        LakeFormatError: the format file is unreadable as JSON.
        StorageError: the lake could not be read.
    """
    try:
        if not lake.exists(FORMAT_KEY):
            return LakeFormat(UNVERSIONED, "")
        with lake.open_input(FORMAT_KEY) as source:
            data = source.read()
    except OSError as exc:  # an unreachable S3 endpoint, a denied permission
        raise StorageError(f"could not read {lake.uri_of(FORMAT_KEY)}: {exc}") from exc
    return parse_format(data, lake.uri_of(FORMAT_KEY))


def stamp(lake: LakeRoot, version: int | None = None) -> None:
    """Record `version` (default: the current one) as the lake's format, atomically."""
    version = FORMAT_VERSION if version is None else version
    record = {"format_version": version, "written_by": package_version()}
    lake.put_bytes(json.dumps(record).encode() + b"\n", FORMAT_KEY)
    log.info("lake_format_stamped", root=lake.uri, format_version=version)


def pending_steps(version: int) -> list[MigrationStep]:
    """Return the registered steps that upgrade `version` to `FORMAT_VERSION`, in order."""
    return [MIGRATIONS[v] for v in range(version, FORMAT_VERSION) if v in MIGRATIONS]


def _refuse_newer(lake: LakeRoot, found: LakeFormat) -> None:
    """Raise when the lake was written in a format newer than this package's."""
    if found.format_version > FORMAT_VERSION:
        raise LakeFormatError(
            f"lake {lake.uri} has format {found.format_version} (written by crypto-lakehouse "
            f"{found.written_by}); this version reads format {FORMAT_VERSION} at most: "
            "upgrade crypto-lakehouse",
            found=found.format_version,
            supported=FORMAT_VERSION,
        )


def check_format(lake: LakeRoot, *, write: bool) -> LakeFormat:
    """Check the lake before a command uses it; stamp it before its first write.

    Args:
        lake: The lake root.
        write: True for a command that writes (stamps an older lake whose upgrade is only
            the stamp); False for a read-only one (never writes).

    Returns:
        The format the lake has now.

    Raises:
        LakeFormatError: the lake's format is newer than this package's, or (for a write)
            older with migration steps pending: run `lakehouse migrate`.
    """
    found = read_format(lake)
    _refuse_newer(lake, found)
    if not write or found.format_version == FORMAT_VERSION:
        return found
    steps = pending_steps(found.format_version)
    if steps:
        raise LakeFormatError(
            f"lake {lake.uri} has format {found.format_version}; this version writes format "
            f"{FORMAT_VERSION}: run `lakehouse migrate --root {lake.uri}` first",
            found=found.format_version,
            supported=FORMAT_VERSION,
        )
    stamp(lake)
    return LakeFormat(FORMAT_VERSION, package_version())


def migrate(lake: LakeRoot) -> MigrationResult:
    """Upgrade the lake to the current format: run the pending steps in order, then stamp.

    Idempotent: a current lake is left untouched. A crash between steps leaves the last
    stamped version, and every step is safe to run again.

    Raises:
        LakeFormatError: the lake's format is newer than this package's.
    """
    found = read_format(lake)
    _refuse_newer(lake, found)
    if found.format_version == FORMAT_VERSION:
        return MigrationResult(FORMAT_VERSION, FORMAT_VERSION)
    done: list[str] = []
    reached = found.format_version
    for step in pending_steps(found.format_version):
        log.info("lake_migration_step", root=lake.uri, source=step.source, step=step.describe)
        step.apply(lake)
        reached = step.source + 1
        stamp(lake, reached)
        done.append(f"{step.source} -> {reached}: {step.describe}")
    if reached != FORMAT_VERSION:
        stamp(lake)
    return MigrationResult(found.format_version, FORMAT_VERSION, tuple(done))
