"""The HTTP status mapping every source shares, and Retry-After parsing (`sources.http`)."""

from __future__ import annotations

import email.utils

import pytest
from multidict import CIMultiDict

from crypto_lakehouse.exceptions import (
    NotFoundUpstreamError,
    RateLimitedError,
    RequestRejectedError,
    TerminalError,
    TransientError,
    TransientSourceError,
)
from crypto_lakehouse.sources.http import error_for_status, retry_after_seconds

URL = "https://data.binance.vision/data/spot/daily/klines/BTCUSDT/1m/x.zip"


@pytest.mark.parametrize("status", [200, 204, 304])
def test_success_statuses_map_to_no_error(status: int) -> None:
    """2xx and 304 are not errors."""
    assert error_for_status(status, URL, CIMultiDict()) is None


@pytest.mark.parametrize(
    ("status", "kind", "marker"),
    [
        (404, NotFoundUpstreamError, TerminalError),
        (400, RequestRejectedError, TerminalError),
        (403, RequestRejectedError, TerminalError),
        (410, RequestRejectedError, TerminalError),
        (408, TransientSourceError, TransientError),
        (429, RateLimitedError, TransientError),
        (500, TransientSourceError, TransientError),
        (503, TransientSourceError, TransientError),
    ],
)
def test_statuses_map_to_one_class_each(
    status: int, kind: type[Exception], marker: type[Exception]
) -> None:
    """Each status maps to its class, whose marker decides retry; url and status are kept."""
    error = error_for_status(status, URL, CIMultiDict())
    assert type(error) is kind and isinstance(error, marker)
    assert error.url == URL and error.status == status


def test_only_404_is_missing_upstream() -> None:
    """A 403 (S3's answer to a refused request) is rejected, never recorded as missing."""
    assert not isinstance(error_for_status(403, URL, CIMultiDict()), NotFoundUpstreamError)


def test_429_carries_retry_after() -> None:
    """The Retry-After of a 429 travels on the RateLimitedError."""
    error = error_for_status(429, URL, CIMultiDict({"retry-after": "3"}))
    assert isinstance(error, RateLimitedError) and error.retry_after == 3.0


def test_retry_after_reads_seconds_and_http_dates() -> None:
    """Retry-After as seconds or an HTTP date becomes seconds from now; junk becomes None."""
    date = email.utils.formatdate(1_000_030.0, usegmt=True)
    assert retry_after_seconds(CIMultiDict({"Retry-After": date}), now=1_000_000.0) == 30.0
    assert retry_after_seconds(CIMultiDict({"Retry-After": date}), now=2_000_000.0) == 0.0
    assert retry_after_seconds(CIMultiDict({"retry-after": "12"})) == 12.0
    assert retry_after_seconds(CIMultiDict({"Retry-After": "soon"})) is None
    assert retry_after_seconds(CIMultiDict()) is None
