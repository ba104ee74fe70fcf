"""One retry policy for every source: what is retried, how long to wait, how many times.

- **What:** the exception class alone decides. A `TransientError` is retried; anything else
  (a `TerminalError`, a bug) is raised at once. Callers keep no tuples of their own.
- **How long:** exponential back-off from `tuning.retry_backoff_seconds`, doubling per
  failed attempt, with jitter (each wait is drawn from the upper half of its step, so
  clients that failed together do not return together), never above
  `tuning.retry_max_wait_seconds`. A `RateLimitedError` that carries Retry-After waits
  exactly that long instead, capped the same way: the server said when. So does a
  `CircuitOpenError` until its breaker's next probe: no request is sent that it would refuse.
- **How many times:** `http_retries + 1` attempts in all.

The archive client, the REST transport and the WebSocket reconnect loop all wait by this
policy (the last one without an attempt limit: a live stream reconnects until stopped).
`sleep` is injectable so tests record waits instead of sleeping.
"""

from __future__ import annotations

import asyncio
import random
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, TypeVar

import structlog
from tenacity import AsyncRetrying, retry_if_exception_type, stop_after_attempt

from crypto_lakehouse.exceptions import CircuitOpenError, RateLimitedError, TransientError

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable

    from tenacity import RetryCallState

    from crypto_lakehouse.config import Settings

__all__ = ["RetryPolicy"]

log = structlog.get_logger(__name__)
_T = TypeVar("_T")


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """Retry transient failures with capped, jittered exponential back-off and Retry-After.

    Build it with `from_settings`; it holds no state between calls and may be shared.
    """

    attempts: int
    initial_seconds: float
    max_wait_seconds: float
    sleep: Callable[[float], Awaitable[None]] = field(default=asyncio.sleep, compare=False)
    #: Names the caller in the `retry_scheduled` log event, e.g. "archive" or "rest".
    name: str = "source"

    @classmethod
    def from_settings(
        cls,
        settings: Settings,
        *,
        name: str = "source",
        sleep: Callable[[float], Awaitable[None]] | None = None,
    ) -> RetryPolicy:
        """Return the policy of `settings`: `http_retries` and the two tuning waits."""
        return cls(
            attempts=settings.http_retries + 1,
            initial_seconds=settings.tuning.retry_backoff_seconds,
            max_wait_seconds=settings.tuning.retry_max_wait_seconds,
            sleep=sleep or asyncio.sleep,
            name=name,
        )

    def backoff(self, attempt: int) -> float:
        """Return the jittered wait after failed attempt number `attempt` (1 = the first)."""
        # The exponent stops at 60: a stream reconnecting for days must not overflow a float.
        step = self.initial_seconds * 2.0 ** min(60, max(0, attempt - 1))
        return min(self.max_wait_seconds, step) * random.uniform(0.5, 1.0)

    def wait_after(self, attempt: int, error: BaseException | None) -> float:
        """Return the wait after failed attempt `attempt`: the error's own wait, else back-off."""
        if (
            isinstance(error, (RateLimitedError, CircuitOpenError))
            and error.retry_after is not None
        ):
            return min(max(0.0, error.retry_after), self.max_wait_seconds)
        return self.backoff(attempt)

    def _wait(self, state: RetryCallState) -> float:
        """Adapt `wait_after` to tenacity's wait protocol."""
        error = state.outcome.exception() if state.outcome is not None else None
        return self.wait_after(state.attempt_number, error)

    def _log(self, state: RetryCallState) -> None:
        """Log one scheduled retry with its cause and wait."""
        error = state.outcome.exception() if state.outcome is not None else None
        wait = state.next_action.sleep if state.next_action is not None else 0.0
        log.warning("retry_scheduled", source=self.name, attempt=state.attempt_number,
                    wait_seconds=round(wait, 3), error=str(error))  # fmt: skip

    def retrying(self) -> AsyncRetrying:
        """Return a tenacity controller for one operation under this policy."""
        return AsyncRetrying(
            retry=retry_if_exception_type(TransientError),
            stop=stop_after_attempt(max(1, self.attempts)),
            wait=self._wait,
            sleep=self.sleep,
            before_sleep=self._log,
            reraise=True,
        )

    async def run(self, attempt: Callable[[], Awaitable[_T]]) -> _T:
        """Await `attempt()` until it succeeds, fails terminally, or the attempts run out.

        The first try runs without tenacity: building its controller for each of hundreds
        of small requests cost ~10 % of the event loop's time, and nearly all succeed at
        once. A first transient failure is handed to tenacity as its attempt 1, so the
        waits and the number of attempts are exactly the policy's.

        Raises:
            The last attempt's exception: a `TransientError` once the attempts are spent,
            any other exception at once.
        """
        try:
            return await attempt()
        except TransientError as exc:
            failed: BaseException | None = exc
        async for retry in self.retrying():
            with retry:
                if failed is not None:
                    error, failed = failed, None
                    raise error
                return await attempt()
        raise AssertionError("unreachable: tenacity returns or re-raises")
