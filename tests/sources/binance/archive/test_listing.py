"""Pure listing, marker and CHECKSUM parsing."""

from __future__ import annotations

import pytest

from crypto_lakehouse.exceptions import TransientSourceError
from crypto_lakehouse.sources.binance.archive.listing import (
    file_stamp,
    listing_url,
    next_marker,
    parse_checksum,
    parse_listing,
)

_PAGE = b"""<?xml version="1.0" encoding="UTF-8"?>
<ListBucketResult xmlns="http://s3.amazonaws.com/doc/2006-03-01/">
<Name>data.binance.vision</Name><Prefix>data/spot/daily/klines/</Prefix><Marker></Marker>
<IsTruncated>true</IsTruncated>
<Contents><Key>data/a.zip</Key><LastModified>2026-04-01T08:06:34.000Z</LastModified>
<ETag>&quot;abc&quot;</ETag><Size>91</Size></Contents>
<CommonPrefixes><Prefix>data/spot/daily/klines/BTCUSDT/</Prefix></CommonPrefixes>
</ListBucketResult>"""


def test_parse_listing_reads_namespaced_contents_and_prefixes() -> None:
    """A namespaced S3 page yields its objects, sub-directories and truncation flag."""
    page = parse_listing(_PAGE)
    assert page.is_truncated
    assert page.objects[0].key == "data/a.zip"
    assert page.objects[0].etag == "abc"
    assert page.objects[0].size == 91
    assert page.prefixes == ("data/spot/daily/klines/BTCUSDT/",)


def test_next_marker_falls_back_to_last_entry_when_next_marker_missing() -> None:
    """Without NextMarker the last key or prefix in sort order becomes the marker."""
    page = parse_listing(_PAGE)
    assert page.next_marker is None
    assert next_marker(page) == "data/spot/daily/klines/BTCUSDT/"


def test_parse_listing_rejects_html() -> None:
    """An HTML page instead of XML is a transient listing failure, not an empty listing."""
    with pytest.raises(TransientSourceError):
        parse_listing(b"<html><body>busy</body></html>")


@pytest.mark.parametrize("newline", ["", "\n"])
def test_parse_checksum_takes_first_token(newline: str) -> None:
    """The CHECKSUM body is `sha  name` with or without a trailing newline."""
    digest = "d" * 64
    assert parse_checksum(f"{digest}  BTCUSDT-1m-2020-01-01.zip{newline}") == digest


def test_parse_checksum_rejects_garbage() -> None:
    """A body that does not start with a SHA-256 is refused."""
    with pytest.raises(ValueError, match="SHA-256"):
        parse_checksum("<html>")


def test_listing_url_and_file_stamp() -> None:
    """URLs keep slashes in the prefix; stamps come from daily and monthly names."""
    url = listing_url("http://h/bucket", "data/spot/", "data/spot/x")
    assert url == "http://h/bucket?delimiter=/&prefix=data/spot/&marker=data/spot/x"
    assert file_stamp("BTCUSDT-1m-2020-01-01.zip") == "2020-01-01"
    assert file_stamp("BTCUSDT-fundingRate-2026-04.zip") == "2026-04"
    assert file_stamp("BTCUSD_PERP-aggTrades-2026-05-08.zip") == "2026-05-08"
