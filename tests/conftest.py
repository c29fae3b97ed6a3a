"""Shared fixtures: settings builders and an engine wired with fakes at the seams."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from autoscaler.config import Settings, from_mapping


def make_settings(**overrides: Any) -> Settings:
    """Settings for one target ``api`` with a queue step rule and a recording executor."""
    doc: dict[str, Any] = {
        "service": {"interval": "15s"},
        "signals": {"queue_length": {"max_age": "60s"}},
        "targets": {"api": {"executor": "rec", "min_replicas": 2, "max_replicas": 10}},
        "executors": {"rec": {"type": "recording", "initial_replicas": 2}},
        "policies": {
            "queue": {
                "type": "step",
                "signal": "queue_length",
                "above": 5,
                "below": 1,
                "scale_down_for": "10m",
                "targets": ["api"],
            }
        },
    }
    for key, value in overrides.items():
        section, _, field = key.partition("__")
        if field:
            doc.setdefault(section, {})[field] = value
        else:
            doc[section] = value
    return from_mapping(doc)


@pytest.fixture
def settings_factory() -> Callable[..., Settings]:
    return make_settings
