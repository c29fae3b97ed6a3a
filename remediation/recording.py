"""An executor that records actions and tracks the replicas each target would have.

Used by dry-run replays, tests and demos. With ``path`` set, every executed action is
appended to that JSON-lines file (so a test can count executor calls across restarts).
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from policies.markers import InvalidField
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

    def __post_init__(self) -> None:
        if self.initial_replicas < 0:
            raise InvalidField("initial_replicas", "must be >= 0")
        for target, n in self.replicas.items():
            if n < 0:
                raise InvalidField(f"replicas.{target}", "must be >= 0")


class RecordingExecutor:
    """Keeps replicas in memory; every call is recorded in ``calls``."""

    in_memory = True  # states() never waits: the engine awaits it in place
    cancellable = True

    def __init__(self, name: str = "recording", spec: RecordingSpec | None = None) -> None:
        self.name = name
        self.spec = spec or RecordingSpec()
        self.replicas: dict[str, int] = dict(self.spec.replicas)
        self.restarts: dict[str, int] = {}
        self.calls: list[Action] = []
        self._states: dict[str, TargetState] = {}

    def _replicas(self, target: str) -> int:
        return self.replicas.setdefault(target, self.spec.initial_replicas)

    async def execute(self, action: Action) -> str:
        self.calls.append(action)
        if self.spec.path:
            line = {"kind": action.kind, "target": action.target, "params": action.params()}
            await asyncio.to_thread(_append, Path(self.spec.path), json.dumps(line) + "\n")
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
        out: dict[str, TargetState] = {}
        cache, replicas = self._states, self.replicas
        for t in targets:
            n = replicas.get(t)
            if n is None:
                n = self._replicas(t)
            state = cache.get(t)
            if state is None or state.desired_replicas != n:  # states are frozen: reuse
                state = cache[t] = TargetState(target=t, desired_replicas=n, running_replicas=n)
            out[t] = state
        return out

    async def aclose(self) -> None:
        return None


def _append(path: Path, line: str) -> None:
    with path.open("a", encoding="utf-8") as f:
        f.write(line)
