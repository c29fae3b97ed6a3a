"""Pure helpers of the swarm executor (no daemon needed)."""

from __future__ import annotations

import pytest

from remediation.swarm import parse_time


def test_docker_timestamps_with_nanoseconds_parse_to_epoch_seconds() -> None:
    assert parse_time("2024-05-01T10:00:00.123456789Z") == pytest.approx(1714557600.123456)
    assert parse_time("2024-05-01T10:00:00Z") == 1714557600.0
    assert parse_time("0001-01-01T00:00:00Z") == 0.0
    assert parse_time("") == 0.0
    assert parse_time(None) == 0.0
    assert parse_time("yesterday") == 0.0
