"""Circuit breaker per host: stop calling a host that keeps failing, then probe it again.

    closed ──N consecutive failures──► open ──reset timeout──► half_open
      ▲                                  ▲                        │ one probe
      └───────────── probe succeeds ─────┼────────────────────────┤
                                         └──── probe fails ───────┘

While open, calls fail fast with `CircuitOpenError`. In half-open exactly one call (the
probe) is let through; the others keep failing fast until it reports. The caller decides
what a failure is: the REST client counts 5xx answers and transport errors, not 4xx.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from enum import StrEnum
from typing import TYPE_CHECKING

import structlog

from crypto_lakehouse.exceptions import CircuitOpenError

if TYPE_CHECKING:
    from collections.abc import Callable

    from crypto_lakehouse.config import Settings

log = structlog.get_logger(__name__)


class BreakerState(StrEnum):
    """The three states of a host's breaker."""

    CLOSED = "closed"
    OPEN = "open"
    HALF_OPEN = "half_open"


@dataclass(slots=True)
class _Host:
    """Mutable breaker state of one host."""

    state: BreakerState = BreakerState.CLOSED
    failures: int = 0
    opened_at: float = 0.0
    probing: bool = False


class CircuitBreaker:
    """Per-host circuit breakers behind one object, shared by every client of a process."""

    def __init__(
        self,
        *,
        failure_threshold: int = 5,
        reset_seconds: float = 30.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        """Create the breakers.

        Args:
            failure_threshold: Consecutive failures that open a host's breaker.
            reset_seconds: How long a breaker stays open before it lets one probe through.
            clock: Monotonic seconds; injectable for tests.
        """
        self._threshold = failure_threshold
        self._reset = reset_seconds
        self._clock = clock
        self._hosts: dict[str, _Host] = {}

    @classmethod
    def from_settings(cls, settings: Settings) -> CircuitBreaker:
        """Build a breaker from `breaker_failure_threshold` and `breaker_reset_seconds`."""
        return cls(
            failure_threshold=settings.tuning.breaker_failure_threshold,
            reset_seconds=settings.tuning.breaker_reset_seconds,
        )

    def _host(self, host: str) -> _Host:
        """Return the state of `host`, turning open into half-open once the reset has passed."""
        entry = self._hosts.setdefault(host, _Host())
        if entry.state is BreakerState.OPEN and self._clock() - entry.opened_at >= self._reset:
            entry.state = BreakerState.HALF_OPEN
            entry.probing = False
            log.info("breaker_half_open", host=host)
        return entry

    def state(self, host: str) -> BreakerState:
        """Return the current state of `host` (closed for hosts never seen)."""
        return self._host(host).state

    def snapshot(self) -> dict[str, str]:
        """Return host → state ("closed", "open", "half_open") for a status command."""
        return {host: self._host(host).state.value for host in sorted(self._hosts)}

    def before_call(self, host: str) -> None:
        """Let a call to `host` through or fail fast.

        In half-open the first caller becomes the probe; it must report with
        `record_success`, `record_failure` or `release`.

        Raises:
            CircuitOpenError: If the breaker is open, or half-open with a probe in flight.
        """
        entry = self._host(host)
        if entry.state is BreakerState.CLOSED:
            return
        if entry.state is BreakerState.HALF_OPEN and not entry.probing:
            entry.probing = True
            log.info("breaker_probe", host=host)
            return
        wait = max(0.0, self._reset - (self._clock() - entry.opened_at))
        raise CircuitOpenError(
            f"circuit open for {host} after {entry.failures} consecutive failures; "
            f"failing fast, next probe in {wait:.1f} s",
            url=host,
            retry_after=wait,
        )

    def record_success(self, host: str) -> None:
        """Report that `host` answered; closes a half-open breaker."""
        entry = self._host(host)
        if entry.state is BreakerState.HALF_OPEN:
            log.info("breaker_closed", host=host, failures=entry.failures)
            entry.state = BreakerState.CLOSED
            entry.probing = False
        if entry.state is BreakerState.CLOSED:
            entry.failures = 0

    def record_failure(self, host: str) -> None:
        """Report a failed call; opens the breaker at the threshold or when a probe fails."""
        entry = self._host(host)
        entry.failures += 1
        if entry.state is BreakerState.HALF_OPEN:
            entry.state = BreakerState.OPEN
            entry.opened_at = self._clock()
            entry.probing = False
            log.warning("breaker_reopened", host=host, failures=entry.failures)
        elif entry.state is BreakerState.CLOSED and entry.failures >= self._threshold:
            entry.state = BreakerState.OPEN
            entry.opened_at = self._clock()
            log.warning("breaker_opened", host=host, failures=entry.failures)

    def release(self, host: str) -> None:
        """Report that a call ended without an outcome (cancelled); frees the probe slot."""
        entry = self._host(host)
        entry.probing = False
