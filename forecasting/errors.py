"""The root of the project's error tree.

It lives in the lowest package of the chain so every package can raise into it:

    AutoscalerError            anything this project raises on purpose
    ├── ForecastError          forecasting/   (a model cannot produce a forecast)
    ├── PolicyError            policies/      (a policy spec or evaluation is invalid)
    ├── ExecutorError          remediation/   (an executor could not carry out an action)
    ├── ConfigError            autoscaler/    (the configuration is invalid; exit code 2)
    └── SourceError            autoscaler/    (a metric source failed for this tick)

``temporary`` cuts across the tree: a temporary error may succeed when retried after
``delay`` seconds (kopf's ``TemporaryError``); a permanent one will not.
"""

from __future__ import annotations


class AutoscalerError(Exception):
    """Base class of every error this project raises deliberately."""

    def __init__(self, message: str, *, temporary: bool = False, delay: float = 0.0) -> None:
        super().__init__(message)
        self.temporary = temporary
        self.delay = delay


class ForecastError(AutoscalerError):
    """A model could not produce a forecast (for example: not enough history)."""
