"""Circuit breaker state machine (asyncio-native, clock passed in).

closed --(``failure_threshold`` consecutive failures)--> open
open --(``reset_timeout`` elapsed)--> half_open
half_open --(``half_open_trials`` successes)--> closed;  any failure --> open

The state is a small dict (``to_dict``/``from_dict``) so it can be persisted and a
restarted service does not hammer an API that was failing.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

BreakerState = Literal["closed", "open", "half_open"]


@dataclass(slots=True)
class CircuitBreaker:
    """Guards calls to one dependency."""

    name: str
    failure_threshold: int = 5
    reset_timeout: float = 30.0
    half_open_trials: int = 3
    state: BreakerState = "closed"
    since: float = 0.0
    failures: int = 0
    trials_ok: int = 0
    trials_in_flight: int = 0

    def allow(self, now: float) -> bool:
        """May a call go through at ``now``? Moves open → half_open when the timeout passed."""
        if self.state == "open" and now - self.since >= self.reset_timeout:
            self._move("half_open", now)
        if self.state == "closed":
            return True
        if self.state == "half_open":
            if self.trials_ok + self.trials_in_flight < self.half_open_trials:
                self.trials_in_flight += 1
                return True
            return False
        return False

    def is_open(self, now: float) -> bool:
        """Open and still within ``reset_timeout`` at ``now``: ``allow`` would refuse."""
        return self.state == "open" and now - self.since < self.reset_timeout

    def record_success(self, now: float) -> None:
        """A call succeeded."""
        if self.state == "half_open":
            self.trials_in_flight = max(0, self.trials_in_flight - 1)
            self.trials_ok += 1
            if self.trials_ok >= self.half_open_trials:
                self._move("closed", now)
        else:
            self.failures = 0

    def record_failure(self, now: float) -> None:
        """A call failed."""
        if self.state == "half_open":
            self._move("open", now)
            return
        self.failures += 1
        if self.state == "closed" and self.failures >= self.failure_threshold:
            self._move("open", now)

    def _move(self, state: BreakerState, now: float) -> None:
        self.state = state
        self.since = now
        self.failures = 0
        self.trials_ok = 0
        self.trials_in_flight = 0

    def to_dict(self) -> dict[str, Any]:
        return {"state": self.state, "since": self.since, "failures": self.failures}

    def restore(self, data: dict[str, Any]) -> None:
        """Restore persisted state (unknown or bad data leaves the breaker closed)."""
        state = data.get("state")
        if state in ("closed", "open", "half_open"):
            self.state = state
            self.since = float(data.get("since", 0.0))
            self.failures = int(data.get("failures", 0))
