"""The executor protocol: what carries an action out in the world.

Executors are plugins: ``remediation.registry.EXECUTOR_TYPES`` maps a config ``type`` to a
spec dataclass and a factory; third-party executors register in the entry-point group
``autoscaler.executors``. Blocking clients run in ``asyncio.to_thread``.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC
from email.utils import parsedate_to_datetime
from typing import Literal, Protocol

from forecasting.errors import AutoscalerError
from policies.types import Action, TargetState


class ExecutorError(AutoscalerError):
    """An executor could not carry out an action. ``temporary`` says whether a retry may
    succeed (timeouts, 5xx, version conflicts) or not (unknown service, bad request);
    ``delay`` is how long the server asked to wait first (``Retry-After``); ``retried``
    says the executor already retried it as far as it will (the bus does not again);
    ``uncertain`` says it may have been carried out all the same (a write whose answer never
    came): a restart or rollback is then not retried and keeps its cooldown, as one the
    bus's timeout cut."""

    def __init__(
        self,
        message: str,
        *,
        temporary: bool = False,
        delay: float = 0.0,
        retried: bool = False,
        uncertain: bool = False,
    ) -> None:
        super().__init__(message, temporary=temporary, delay=delay)
        self.retried = retried
        self.uncertain = uncertain


def parse_retry_after(
    value: str | None, *, date: str | None = None, clock: Callable[[], float] = time.time
) -> float | None:
    """Seconds a ``Retry-After`` header asks to wait (RFC 9110 §10.2.3): its delay-seconds,
    or its HTTP-date less the response's ``Date`` (the server's clock: the client's skew
    does not count), less ``clock()`` when the response has no readable ``Date``. A date in
    the past is 0; an absent or unreadable value is None (the caller's own backoff then)."""
    if value is None:
        return None
    try:
        seconds = float(value)
    except ValueError:
        at = _http_date(value)
        if at is None:
            return None
        sent = _http_date(date) if date is not None else None
        seconds = at - (clock() if sent is None else sent)
    if not math.isfinite(seconds):
        return None  # "inf" or "nan": no server means that
    return max(0.0, seconds)


def _http_date(text: str) -> float | None:
    """Epoch seconds of an HTTP-date (IMF-fixdate, or the obsolete RFC 850 and asctime
    forms, which are UTC too); None when it is not one."""
    try:
        when = parsedate_to_datetime(text.strip())
    except (TypeError, ValueError, IndexError, OverflowError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return when.timestamp()


OutcomeStatus = Literal[
    "done",
    "dry-run",
    "failed",
    "breaker-open",
    "skipped-cooldown",
    "skipped-duplicate",
    "skipped-rate-limit",
    "skipped-paused",
    "skipped-no-executor",
    "skipped-retry-after",
    "skipped-running",
]


@dataclass(frozen=True, slots=True)
class Outcome:
    """What happened to an action: its status and a human-readable detail."""

    action: Action
    status: OutcomeStatus
    detail: str
    at: float
    executor: str = ""
    uncertain: bool = False
    """Failed as far as we know, yet it may still take effect: the call timed out and runs
    on (a worker thread cannot be stopped). Its cooldown stays, so it is not done twice."""


class Executor(Protocol):
    """Carries out actions for the targets it manages and reports their state."""

    name: str
    # Optional: ``cancellable = True`` says ``execute`` stops when cancelled (it awaits
    # asyncio I/O only): the bus then cancels a call that timed out. Without it the call is
    # left to run (a worker thread cannot be stopped) and a restart or rollback is not tried
    # again meanwhile. ``retry_after_per_target = True`` says its server rate-limits each
    # target apart (Fly: per machine): a ``Retry-After`` then holds calls for that target
    # only, not for every target of the executor. ``retries_in_call = True`` says
    # ``execute`` retries its own temporary failures (the notifiers): a call the bus's
    # timeout cut is not retried by the bus on top of them.

    async def execute(self, action: Action) -> str:
        """Carry out ``action``; return a short detail. Raise ``ExecutorError`` on failure."""
        ...

    async def states(self, targets: Sequence[str]) -> Mapping[str, TargetState]:
        """Current state of each target this executor knows (others are left out)."""
        ...

    async def aclose(self) -> None:
        """Release connections."""
        ...
