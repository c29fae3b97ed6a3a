"""Scheduled scaling: cron-style minimum replicas (business hours, batch windows).

Each window starts at the fire times of an APScheduler 3.x ``CronTrigger`` (built with
``CronTrigger.from_crontab`` in the configured time zone, so daylight-saving changes follow
the wall clock) and lasts ``duration`` seconds. While windows are active the rule raises
the target to the largest of their ``min_replicas`` and votes for that floor, so other rules
may scale in down to it but not below; outside every window it has no opinion.

Note APScheduler's crontab day-of-week numbers count from Monday = 0; use names
(``mon-fri``) to avoid surprises.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from apscheduler.triggers.cron import CronTrigger

from policies.base import Context
from policies.decisions import clamp, hold, preamble, scale
from policies.markers import InvalidField, Seconds
from policies.types import Decision


@dataclass(frozen=True, slots=True)
class ScheduleWindow:
    """One recurring window (``[[policies.NAME.windows]]``)."""

    cron: str = "0 9 * * mon-fri"
    """Crontab expression (minute hour day month day_of_week) of the window's start."""
    duration: Seconds = 28800.0
    """Seconds the window lasts after each start."""
    min_replicas: int = 2
    """Minimum replicas while the window is active."""
    name: str = ""
    """Name used in reasons (default: the cron expression)."""

    def __post_init__(self) -> None:
        if self.duration <= 0:
            raise InvalidField("duration", "must be > 0")
        if self.min_replicas < 0:
            raise InvalidField("min_replicas", "must be >= 0")
        try:
            CronTrigger.from_crontab(self.cron, timezone="UTC")
        except ValueError as exc:
            raise InvalidField("cron", str(exc)) from exc

    @property
    def label(self) -> str:
        return self.name or self.cron


@dataclass(frozen=True, slots=True)
class ScheduleSpec:
    """Config of a ``schedule`` policy."""

    timezone: str = "UTC"
    """IANA time zone the cron expressions are read in (e.g. ``Europe/Berlin``)."""
    windows: tuple[ScheduleWindow, ...] = ()
    """The recurring windows; overlapping windows take the largest minimum."""
    targets: tuple[str, ...] = ()
    """Targets the rule applies to (empty: every target)."""

    def __post_init__(self) -> None:
        try:
            ZoneInfo(self.timezone)
        except (ZoneInfoNotFoundError, ValueError) as exc:
            raise InvalidField("timezone", f"unknown time zone {self.timezone!r}") from exc


_DST_SHIFT = 3600.0
"""The largest daylight-saving shift of any time zone (most are one hour)."""


@dataclass(slots=True)
class SchedulePolicy:
    """Minimum replicas on a schedule."""

    name: str
    spec: ScheduleSpec
    targets: Sequence[str] = field(default=())
    _triggers: list[tuple[ScheduleWindow, CronTrigger]] = field(init=False, default_factory=list)

    def __post_init__(self) -> None:
        tz = ZoneInfo(self.spec.timezone)
        self._triggers = [
            (w, CronTrigger.from_crontab(w.cron, timezone=tz)) for w in self.spec.windows
        ]

    def active(self, now: float) -> list[ScheduleWindow]:
        """The windows active at ``now``: some start lies in ``[now - duration, now]``.

        The search for starts begins an hour early: on the day clocks spring forward a
        start in the skipped hour fires an hour late (APScheduler's rule), and a search from
        ``now - duration`` in wall time would already be past it."""
        tz = ZoneInfo(self.spec.timezone)
        out = []
        for window, trigger in self._triggers:
            since = now - window.duration
            t = datetime.fromtimestamp(since - _DST_SHIFT, tz=UTC).astimezone(tz)
            start = trigger.get_next_fire_time(None, t)
            while start is not None and start.timestamp() < since:
                start = trigger.get_next_fire_time(start, start + timedelta(seconds=1))
            if start is not None and start.timestamp() <= now:
                out.append(window)
        return out

    def evaluate(self, ctx: Context) -> Sequence[Decision]:
        inputs: dict[str, Any] = {"timezone": self.spec.timezone}
        current, early = preamble(self.name, ctx, inputs)
        if early is not None or current is None:
            return [early] if early is not None else []
        windows = self.active(ctx.now)
        inputs["active"] = [w.label for w in windows]
        if not windows:
            return [hold(self.name, ctx, "no scheduled window is active", inputs)]
        top = max(windows, key=lambda w: w.min_replicas)
        floor = clamp(top.min_replicas, ctx)
        inputs["min_replicas"] = floor
        what = f"schedule {top.label!r} ({self.spec.timezone}) requires at least {floor} replicas"
        if current < floor:
            reason = f"{what}: scale up {current} -> {floor}"
            return [
                scale(self.name, ctx, replicas=floor, current=current, reason=reason, inputs=inputs)
            ]
        return [
            hold(self.name, ctx, f"{what}, and {current} are running", inputs, recommendation=floor)
        ]
