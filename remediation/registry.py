"""Built-in executor types: config ``type`` → (spec dataclass, factory).

Third-party executors are found lazily in the entry-point group ``autoscaler.executors``;
each entry point must name an ``ExecutorType``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from remediation.base import Executor
from remediation.board import BoardSpec, BreakerBoard
from remediation.fly import FlyExecutor, FlySpec
from remediation.notify import (
    PagerDutyNotifier,
    PagerDutySpec,
    SlackNotifier,
    SlackSpec,
    WebhookNotifier,
    WebhookSpec,
)
from remediation.recording import RecordingExecutor, RecordingSpec
from remediation.swarm import SwarmExecutor, SwarmSpec


@dataclass(frozen=True, slots=True)
class ExecutorType:
    """How to build one kind of executor from its config table."""

    spec: type[Any]
    build: Callable[[str, Any], Executor]


EXECUTOR_TYPES: dict[str, ExecutorType] = {
    "recording": ExecutorType(RecordingSpec, lambda name, spec: RecordingExecutor(name, spec)),
    "swarm": ExecutorType(SwarmSpec, lambda name, spec: SwarmExecutor(name, spec)),
    "fly": ExecutorType(FlySpec, lambda name, spec: FlyExecutor(name, spec)),
    "slack": ExecutorType(SlackSpec, lambda name, spec: SlackNotifier(name, spec)),
    "pagerduty": ExecutorType(PagerDutySpec, lambda name, spec: PagerDutyNotifier(name, spec)),
    "webhook": ExecutorType(WebhookSpec, lambda name, spec: WebhookNotifier(name, spec)),
    "breakers": ExecutorType(BoardSpec, lambda name, spec: BreakerBoard(name, spec)),
}
"""Built-in executors. Per-target bounds (``bounds=``), the board's ``level_of``,
``on_transition`` and ``clock``, and test seams are keyword arguments of the classes: the
engine builds those executors itself when it needs them."""
