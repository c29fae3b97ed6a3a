"""An executor that records actions and tracks the replicas each target would have.

Used by dry-run replays, tests and demos. With ``path`` set, every executed action is
appended to that JSON-lines file (so a test can count executor calls across restarts).
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from policies.types import Action, Restart, Rollback, Scale, TargetState


@dataclass(frozen=True, slots=True)
class RecordingSpec:
    """Config of a ``recording`` executor."""

    initial_replicas: int = 2
    """Replicas every target starts with."""
    path: str = ""
    """Optional JSON-lines file that every executed action is appended to."""
    replicas: dict[str, int] = field(default_factory=dict)
    """Per-target initial replicas, overriding ``initial_replicas``."""


class RecordingExecutor:
    """Keeps replicas in memory; every call is recorded in ``calls``."""

    def __init__(self, name: str = "recording", spec: RecordingSpec | None = None) -> None:
        self.name = name
        self.spec = spec or RecordingSpec()
        self.replicas: dict[str, int] = dict(self.spec.replicas)
        self.restarts: dict[str, int] = {}
        self.calls: list[Action] = []

    def _replicas(self, target: str) -> int:
        return self.replicas.setdefault(target, self.spec.initial_replicas)

    async def execute(self, action: Action) -> str:
        self.calls.append(action)
        if self.spec.path:
            line = {"kind": action.kind, "target": action.target, "params": action.params()}
            _append_line(self.spec.path, json.dumps(line))
        if isinstance(action, Scale):
            before = self._replicas(action.target)
            self.replicas[action.target] = action.replicas
            return f"replicas {before} -> {action.replicas}"
        if isinstance(action, Restart):
            self.restarts[action.target] = self.restarts.get(action.target, 0) + 1
            return "restarted"
        if isinstance(action, Rollback):
            return "rolled back"
        return "recorded"

    async def states(self, targets: Sequence[str]) -> Mapping[str, TargetState]:
        return {
            t: TargetState(target=t, desired_replicas=n, running_replicas=n)
            for t in targets
            for n in (self._replicas(t),)
        }

    async def aclose(self) -> None:
        return None


def _append_line(path: str, line: str) -> None:
    # A short local append, kept on the loop on purpose: replays call this thousands of
    # times and need the lines in call order; a thread hop per action would buy nothing.
    with Path(path).open("a", encoding="utf-8") as f:
        f.write(line + "\n")
