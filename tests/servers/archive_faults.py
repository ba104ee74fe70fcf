"""Scripted misbehaviour of the archive stand-in: one-off faults per path, periodic ones.

Two kinds of script, both counted per request the stand-in receives:

- `FaultPlan.add(target, fault, times=n)`: the next `n` requests to one path (or to the
  listing) get `fault`, e.g. "the first GET of zip X answers HTML";
- `FaultPlan.every(n, fault)`: every n-th request, or with `objects_only=True` every n-th
  request for an object under /data/, gets `fault`, e.g. "every 3rd request 503, every 7th
  object a truncated body". The first rule that matches wins; a one-off fault for the path
  goes before them all. Every request counts, whichever fault it gets.
"""

from __future__ import annotations

import threading
from collections import deque
from dataclasses import dataclass
from typing import Literal
from urllib.parse import urlsplit

from tests.servers.s3_objects import LISTING

FaultKind = Literal["status", "truncate", "html", "delay"]


@dataclass(frozen=True)
class Fault:
    """One scripted misbehaviour, applied to a single matching request."""

    kind: FaultKind
    code: int = 200
    retry_after: int | None = None
    n_bytes: int = 0
    seconds: float = 0.0
    #: For a truncation: the share of the body sent, instead of `n_bytes`.
    fraction: float | None = None

    @classmethod
    def status(cls, code: int, *, retry_after: int | None = None) -> Fault:
        """Answer with this HTTP status and an S3-style XML error body."""
        return cls("status", code=code, retry_after=retry_after)

    @classmethod
    def truncate(cls, n_bytes: int) -> Fault:
        """Announce the full Content-Length, send only n_bytes of body, then close."""
        return cls("truncate", n_bytes=max(0, n_bytes))

    @classmethod
    def truncate_share(cls, fraction: float) -> Fault:
        """Announce the full Content-Length, send only this share of the body, then close."""
        return cls("truncate", fraction=min(max(fraction, 0.0), 1.0))

    @classmethod
    def html(cls) -> Fault:
        """Answer 200 with a small text/html page instead of the object."""
        return cls("html")

    @classmethod
    def delay(cls, seconds: float) -> Fault:
        """Sleep this long, then serve the request normally."""
        return cls("delay", seconds=seconds)

    def cut_at(self, length: int) -> int:
        """Return how many of a body's `length` bytes a truncation sends."""
        if self.fraction is not None:
            return int(length * self.fraction)
        return min(self.n_bytes, length)


@dataclass(frozen=True)
class _Every:
    """A periodic rule: every `period`-th request (or object request) gets `fault`."""

    period: int
    fault: Fault
    objects_only: bool


def _normalize_target(target: str) -> str:
    """Map "listing", a key, a path or a full URL to the form requests are matched by."""
    if target == LISTING:
        return target
    path = urlsplit(target).path if "://" in target else target.split("?", 1)[0]
    return "/" + path.lstrip("/")


class FaultPlan:
    """Thread-safe fault scripts: per-target queues and periodic rules, one fault a request."""

    def __init__(self) -> None:
        """Start with no faults scripted and no requests counted."""
        self._lock = threading.Lock()
        self._queues: dict[str, deque[Fault]] = {}
        self._every: list[_Every] = []
        self._requests = 0
        self._objects = 0

    def add(self, target: str, fault: Fault, *, times: int = 1) -> None:
        """Queue fault for the next `times` requests to target (download path or "listing")."""
        with self._lock:
            self._queues.setdefault(_normalize_target(target), deque()).extend([fault] * times)

    def every(self, period: int, fault: Fault, *, objects_only: bool = False) -> None:
        """Give every `period`-th request (every object request with `objects_only`) `fault`.

        Counting starts with the stand-in's first request, whenever the rule is added.
        """
        if period < 1:
            raise ValueError(f"period must be at least 1, got {period}")
        with self._lock:
            self._every.append(_Every(period, fault, objects_only))

    def take(self, target: str) -> Fault | None:
        """Count one request to target and return the fault it gets, if any."""
        with self._lock:
            self._requests += 1
            if target != LISTING:
                self._objects += 1
            queue = self._queues.get(_normalize_target(target))
            if queue:
                return queue.popleft()
            for rule in self._every:
                if rule.objects_only and target == LISTING:
                    continue
                count = self._objects if rule.objects_only else self._requests
                if count % rule.period == 0:
                    return rule.fault
            return None

    def pending(self, target: str | None = None) -> int:
        """Count one-off faults not yet consumed, for one target or for all."""
        with self._lock:
            if target is not None:
                return len(self._queues.get(_normalize_target(target), ()))
            return sum(len(q) for q in self._queues.values())

    def clear(self) -> None:
        """Drop every scripted fault, periodic rules included, and restart the counts."""
        with self._lock:
            self._queues.clear()
            self._every.clear()
            self._requests = self._objects = 0
