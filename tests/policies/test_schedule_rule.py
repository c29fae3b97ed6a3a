"""Scheduled minimum replicas with cron semantics in a time zone."""

from __future__ import annotations

from datetime import datetime
from zoneinfo import ZoneInfo

import pytest
from policy_kit import ctx, journalable, one_sentence

from policies.base import Bounds
from policies.schedule import SchedulePolicy, ScheduleSpec, ScheduleWindow
from policies.types import Scale

BERLIN = ZoneInfo("Europe/Berlin")
OFFICE = ScheduleWindow(
    cron="0 8 * * mon-fri", duration=10 * 3600, min_replicas=4, name="office hours"
)
SPEC = ScheduleSpec(timezone="Europe/Berlin", windows=(OFFICE,))


def _at(*args: int) -> float:
    return datetime(*args, tzinfo=BERLIN).timestamp()


def _decide(now, spec=SPEC, replicas=2, bounds=None):
    (d,) = SchedulePolicy("hours", spec).evaluate(ctx(now, replicas=replicas, bounds=bounds))
    assert one_sentence(d.reason), d.reason
    assert journalable(d)
    return d


@pytest.mark.parametrize(
    ("when", "active"),
    [
        ((2026, 6, 1, 9, 0), True),  # Monday in summer (CEST)
        ((2026, 1, 5, 9, 0), True),  # Monday in winter (CET): the wall clock counts
        ((2026, 6, 1, 8, 0), True),  # the start itself
        ((2026, 6, 1, 7, 59), False),
        ((2026, 6, 1, 17, 59), True),
        ((2026, 6, 1, 18, 1), False),
        ((2026, 6, 6, 10, 0), False),  # Saturday
        ((2026, 6, 5, 17, 0), True),  # Friday
        ((2026, 3, 30, 8, 30), True),  # the Monday after the switch to summer time
    ],
)
def test_business_hours_window_follows_cron_in_the_configured_zone(when, active):
    d = _decide(_at(*when))
    if active:
        assert isinstance(d.action, Scale)
        assert d.action.replicas == 4
        assert d.inputs["active"] == ["office hours"]
    else:
        assert d.is_hold
        assert d.recommendation is None


def test_an_active_window_votes_for_its_floor_when_the_target_is_above_it():
    d = _decide(_at(2026, 6, 1, 9, 0), replicas=7)
    assert d.is_hold
    assert d.recommendation == 4


def test_overlapping_windows_take_the_largest_minimum_clamped_to_bounds():
    rush = ScheduleWindow(cron="30 8 * * *", duration=3600, min_replicas=12, name="rush")
    spec = ScheduleSpec(timezone="Europe/Berlin", windows=(OFFICE, rush))
    d = _decide(_at(2026, 6, 1, 9, 0), spec=spec, bounds=Bounds(2, 8, 60))
    assert isinstance(d.action, Scale)
    assert d.action.replicas == 8
    assert "'rush'" in d.reason


def test_the_same_instant_is_judged_in_the_configured_zone():
    utc = ScheduleSpec(timezone="UTC", windows=(OFFICE,))
    now = _at(2026, 6, 1, 9, 0)  # 07:00 UTC: before 08:00 UTC
    assert _decide(now, spec=utc).is_hold
    assert not _decide(now).is_hold


@pytest.mark.parametrize(
    "make",
    [
        lambda: ScheduleWindow(cron="not a cron"),
        lambda: ScheduleWindow(duration=0),
        lambda: ScheduleSpec(timezone="Mars/Olympus"),
    ],
)
def test_invalid_schedules_are_rejected(make):
    with pytest.raises(ValueError):
        make()


@pytest.mark.parametrize(
    ("when", "active"),
    [
        ("2025-03-30T03:29", False),
        ("2025-03-30T03:30", True),  # 02:30 does not exist that day: it fires at 03:30
        ("2025-03-30T04:15", True),  # still inside its hour
        ("2025-03-30T04:30", True),
        ("2025-03-30T04:31", False),
        ("2025-03-31T02:30", True),  # an ordinary day
        ("2025-03-31T03:31", False),
    ],
)
def test_a_window_starting_in_the_skipped_hour_lasts_its_whole_duration(when, active):
    tz = ZoneInfo("Europe/Berlin")
    window = ScheduleWindow("30 2 * * *", 3600, 6, "nightly")
    policy = SchedulePolicy("batch", ScheduleSpec("Europe/Berlin", (window,)))
    now = datetime.fromisoformat(when).replace(tzinfo=tz).timestamp()
    assert bool(policy.active(now)) is active
