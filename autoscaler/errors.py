"""The service's error tree, in one place.

    AutoscalerError
    ├── ForecastError    (forecasting)
    ├── PolicyError      (policies)
    ├── ExecutorError    (remediation)
    ├── ConfigError      invalid configuration: every problem with its key path, exit code 2
    └── SourceError      a metric source failed for this tick; its targets hold

Each carries ``temporary`` (a retry may succeed) and ``delay`` (seconds before retrying).
"""

from __future__ import annotations

from collections.abc import Sequence

from forecasting.errors import AutoscalerError, ForecastError
from policies.types import PolicyError
from remediation.base import ExecutorError


class ConfigError(AutoscalerError):
    """The configuration is invalid. ``problems`` lists ``"key.path: message"`` lines."""

    def __init__(self, problems: Sequence[str]) -> None:
        self.problems = list(problems)
        super().__init__("invalid configuration:\n  " + "\n  ".join(self.problems))


class SourceError(AutoscalerError):
    """A metric source failed for this tick; affected targets hold."""


__all__ = [
    "AutoscalerError",
    "ConfigError",
    "ExecutorError",
    "ForecastError",
    "PolicyError",
    "SourceError",
]
