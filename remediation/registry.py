"""Built-in executor types: config ``type`` → (spec dataclass, factory).

Third-party executors are found lazily in the entry-point group ``autoscaler.executors``;
each entry point must name an ``ExecutorType``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from remediation.base import Executor
from remediation.recording import RecordingExecutor, RecordingSpec


@dataclass(frozen=True, slots=True)
class ExecutorType:
    """How to build one kind of executor from its config table."""

    spec: type[Any]
    build: Callable[[str, Any], Executor]


EXECUTOR_TYPES: dict[str, ExecutorType] = {
    "recording": ExecutorType(RecordingSpec, lambda name, spec: RecordingExecutor(name, spec)),
}
