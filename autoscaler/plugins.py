"""Executor plugins: the built-in registry plus the ``autoscaler.executors`` entry points.

Entry points are looked up only when a config names a type that is not built in, and the
object they name must be a ``remediation.registry.ExecutorType``.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from importlib.metadata import entry_points

from autoscaler.errors import ConfigError
from remediation.registry import EXECUTOR_TYPES, ExecutorType

EXECUTOR_ENTRY_POINTS = "autoscaler.executors"


def executor_type(name: str) -> ExecutorType:
    """A built-in executor type, or one from the entry-point group, loaded lazily."""
    if name in EXECUTOR_TYPES:
        return EXECUTOR_TYPES[name]
    for ep in entry_points(group=EXECUTOR_ENTRY_POINTS):
        if ep.name == name:
            try:
                found = ep.load()
            except Exception as exc:  # a plugin's import error is a config problem, named
                raise ConfigError(
                    [f"entry point {ep.value!r} cannot be loaded: {type(exc).__name__}: {exc}"]
                ) from exc
            if not isinstance(found, ExecutorType):
                raise ConfigError([f"entry point {ep.value!r} is not an ExecutorType"])
            return found
    raise ConfigError([f"unknown executor type {name!r}"])


class ExecutorRegistry(Mapping[str, ExecutorType]):
    """Built-in and entry-point executor types, as one read-only mapping."""

    def __getitem__(self, name: str) -> ExecutorType:
        try:
            return executor_type(name)
        except ConfigError as exc:
            raise KeyError(name) from exc

    def __contains__(self, name: object) -> bool:
        return isinstance(name, str) and (
            name in EXECUTOR_TYPES
            or any(ep.name == name for ep in entry_points(group=EXECUTOR_ENTRY_POINTS))
        )

    def __iter__(self) -> Iterator[str]:
        names = dict.fromkeys(EXECUTOR_TYPES)
        names.update(dict.fromkeys(ep.name for ep in entry_points(group=EXECUTOR_ENTRY_POINTS)))
        return iter(names)

    def __len__(self) -> int:
        return sum(1 for _ in self)
