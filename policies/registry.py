"""Built-in policy types: config ``type`` → (spec dataclass, factory).

The config loader parses ``[policies.NAME]`` into the spec dataclass named by ``type``
(unknown keys and bad values are errors with their key path), then calls the factory.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from policies.base import Policy
from policies.step import StepPolicy, StepSpec


@dataclass(frozen=True, slots=True)
class PolicyType:
    """How to build one kind of policy from its config table."""

    spec: type[Any]
    build: Callable[[str, Any], Policy]


def _step(name: str, spec: StepSpec) -> Policy:
    return StepPolicy(name=name, spec=spec, targets=spec.targets)


POLICY_TYPES: dict[str, PolicyType] = {
    "step": PolicyType(StepSpec, _step),
}
