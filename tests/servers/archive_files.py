"""Helpers that build and publish archive-style zip files with CHECKSUM companions."""

from __future__ import annotations

import hashlib
import io
import os
import shutil
import time
import uuid
import zipfile
from pathlib import Path, PurePosixPath

FIXTURE_TREE = Path(__file__).resolve().parents[1] / "fixtures" / "binance-vision"
KLINES_1M = "data/spot/daily/klines/BTCUSDT/1m/"
ZIP_KEY = KLINES_1M + "BTCUSDT-1m-2020-01-01.zip"
ZIP_PATH = "/" + ZIP_KEY


def make_zip(
    member_name: str, payload: bytes, *, extra_members: dict[str, bytes] | None = None
) -> bytes:
    """Return a deflated zip holding member_name (first) plus any extra members."""
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", compression=zipfile.ZIP_DEFLATED) as zf:
        zf.writestr(member_name, payload)
        for name, data in (extra_members or {}).items():
            zf.writestr(name, data)
    return buf.getvalue()


def checksum_text(zip_bytes: bytes, zip_name: str, *, newline: bool = False) -> str:
    """Return the CHECKSUM line as sha256sum prints it: `<sha256>  <name>`."""
    line = f"{hashlib.sha256(zip_bytes).hexdigest()}  {zip_name}"
    return line + "\n" if newline else line


def _atomic_write(path: Path, data: bytes) -> None:
    """Write data to path via a hidden temp file and rename, keeping mtimes increasing."""
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex}.tmp")
    tmp.write_bytes(data)
    if path.exists():
        # A re-publish must look new even within the filesystem's timestamp granularity.
        mtime_ns = max(time.time_ns(), path.stat().st_mtime_ns + 1_000_000)
        os.utime(tmp, ns=(mtime_ns, mtime_ns))
    os.replace(tmp, path)


def publish(
    root: Path,
    key: str,
    csv_text: str | bytes,
    *,
    checksum: str | None = None,
    newline: bool = False,
) -> Path:
    """Write root/key as a one-CSV zip plus key.CHECKSUM (checksum overrides the hex digest)."""
    parts = PurePosixPath(key).parts
    if not parts or parts[0] != "data" or ".." in parts or not key.endswith(".zip"):
        raise ValueError(f"key must look like data/.../NAME.zip, got {key!r}")
    zip_name = parts[-1]
    payload = csv_text.encode() if isinstance(csv_text, str) else csv_text
    zip_bytes = make_zip(zip_name.removesuffix(".zip") + ".csv", payload)
    text = checksum_text(zip_bytes, zip_name, newline=newline)
    if checksum is not None:
        text = f"{checksum}  {zip_name}" + ("\n" if newline else "")
    zip_path = root.joinpath(*parts)
    zip_path.parent.mkdir(parents=True, exist_ok=True)
    _atomic_write(zip_path, zip_bytes)
    _atomic_write(zip_path.with_name(zip_name + ".CHECKSUM"), text.encode())
    return zip_path


def copy_fixture_tree(dst: Path) -> Path:
    """Copy the real Binance fixture tree (data/...) into dst and return dst."""
    shutil.copytree(FIXTURE_TREE, dst, dirs_exist_ok=True)
    return dst


def fixture_keys(prefix: str) -> list[str]:
    """Return every key of the fixture tree under `prefix`, sorted as S3 lists them."""
    return sorted(
        p.relative_to(FIXTURE_TREE).as_posix()
        for p in FIXTURE_TREE.rglob("*")
        if p.is_file() and p.relative_to(FIXTURE_TREE).as_posix().startswith(prefix)
    )
