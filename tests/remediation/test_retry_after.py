"""The one ``Retry-After`` parser the HTTP executors share (RFC 9110 §10.2.3)."""

from __future__ import annotations

import pytest

from remediation.base import parse_retry_after

SENT = "Wed, 21 Oct 2015 07:28:00 GMT"
SENT_AT = 1445412480.0


def never() -> float:
    raise AssertionError("the clock is read only when the answer has no readable Date")


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("120", 120.0),
        (" 5 ", 5.0),
        ("0", 0.0),
        ("Wed, 21 Oct 2015 07:28:30 GMT", 30.0),  # IMF-fixdate
        ("Wednesday, 21-Oct-15 07:29:00 GMT", 60.0),  # obsolete RFC 850 form
        ("Wed Oct 21 07:28:10 2015", 10.0),  # obsolete asctime form (UTC, no zone given)
        ("Wed, 21 Oct 2015 07:00:00 GMT", 0.0),  # a date past: now
        ("-3", 0.0),
        (None, None),
        ("", None),
        ("soon", None),
        ("Wed, 99 Oct 2015 07:28:00 GMT", None),
        ("inf", None),  # would defer the executor for ever
        ("nan", None),
    ],
)
def test_delay_seconds_and_http_dates_are_read_and_garbage_is_none(
    value: str | None, expected: float | None
) -> None:
    assert parse_retry_after(value, date=SENT, clock=never) == expected


def test_a_date_is_counted_from_the_clock_when_the_answer_has_no_readable_date() -> None:
    later = "Wed, 21 Oct 2015 07:28:45 GMT"
    assert parse_retry_after(later, clock=lambda: SENT_AT) == 45.0
    assert parse_retry_after(later, date="yesterday", clock=lambda: SENT_AT) == 45.0
    assert parse_retry_after(later, clock=lambda: SENT_AT + 3600) == 0.0
