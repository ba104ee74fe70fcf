"""The one retry policy (`crypto_lakehouse.retry`): what is retried, how long it waits."""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING

import pytest

from crypto_lakehouse.config import load_settings
from crypto_lakehouse.exceptions import (
    ChecksumMismatchError,
    NotFoundUpstreamError,
    RateLimitedError,
    StorageError,
    TransientSourceError,
)
from crypto_lakehouse.retry import RetryPolicy
from tests.sources.binance._support import SleepRecorder

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable, Sequence


def _policy(sleep: SleepRecorder, **overrides: object) -> RetryPolicy:
    """Return the policy of settings with 3 retries, 1 s first wait and a 10 s cap."""
    values: dict[str, object] = {
        "http_retries": 3, "retry_backoff_seconds": 1.0, "retry_max_wait_seconds": 10.0,
        **overrides,
    }  # fmt: skip
    return RetryPolicy.from_settings(load_settings(**values), sleep=sleep)


def _failing(errors: Sequence[Exception], result: str = "done") -> Callable[[], Awaitable[str]]:
    """Return an attempt that raises the given errors in turn, then returns `result`."""
    calls = iter(errors)

    async def attempt() -> str:
        error = next(calls, None)
        if error is not None:
            raise error
        return result

    return attempt


@pytest.mark.req("R3.2")
def test_transient_errors_are_retried_until_success() -> None:
    """Two transient failures are retried, with two waits, and the third try's value returns."""
    sleep = SleepRecorder()
    attempt = _failing([TransientSourceError("503"), TransientSourceError("reset")])
    assert asyncio.run(_policy(sleep).run(attempt)) == "done"
    assert len(sleep.waits) == 2


@pytest.mark.parametrize(
    "error",
    [NotFoundUpstreamError("404"), ChecksumMismatchError("sha"), StorageError("x"), OSError()],
)
def test_anything_but_a_transient_error_is_raised_at_once(error: Exception) -> None:
    """Terminal errors, and errors outside the tree's transient marker, are never retried."""
    sleep = SleepRecorder()
    with pytest.raises(type(error)):
        asyncio.run(_policy(sleep).run(_failing([error])))
    assert sleep.waits == []


def test_attempts_are_http_retries_plus_one_and_the_last_error_surfaces() -> None:
    """With http_retries=3 a persistent transient failure is tried 4 times, then raised."""
    sleep = SleepRecorder()
    errors = [TransientSourceError(f"try {n}") for n in range(1, 10)]
    with pytest.raises(TransientSourceError, match="try 4"):
        asyncio.run(_policy(sleep).run(_failing(errors)))
    assert len(sleep.waits) == 3


@pytest.mark.req("R3.2")
def test_backoff_doubles_with_jitter_and_stops_at_the_cap() -> None:
    """Waits lie in the upper half of 1, 2, 4, 8 s, then never above the 10 s cap."""
    policy = _policy(SleepRecorder())
    for attempt, step in enumerate([1.0, 2.0, 4.0, 8.0, 10.0, 10.0], start=1):
        for _ in range(50):
            assert step / 2 <= policy.backoff(attempt) <= step
    assert 5.0 <= policy.backoff(5000) <= 10.0  # a stream reconnecting for days


def test_retry_after_is_waited_exactly_and_capped() -> None:
    """A 429's Retry-After is the wait (no jitter); one above the cap waits the cap."""
    sleep = SleepRecorder()
    errors = [RateLimitedError("429", retry_after=7), RateLimitedError("429", retry_after=90)]
    asyncio.run(_policy(sleep).run(_failing(errors)))
    assert sleep.waits == [7.0, 10.0]


def test_a_429_without_retry_after_backs_off_like_any_transient_error() -> None:
    """RateLimitedError with no Retry-After waits the jittered back-off of its attempt."""
    policy = _policy(SleepRecorder())
    assert 0.5 <= policy.wait_after(1, RateLimitedError("429")) <= 1.0


def test_no_retries_means_one_attempt() -> None:
    """http_retries=0: a transient failure is raised after the single try, without a wait."""
    sleep = SleepRecorder()
    with pytest.raises(TransientSourceError):
        policy = _policy(sleep, http_retries=0)
        asyncio.run(policy.run(_failing([TransientSourceError("503")])))
    assert sleep.waits == []
