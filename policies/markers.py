"""Markers for config spec dataclasses (used by every package's specs).

The config loader in ``autoscaler.config`` reads these annotations:

- ``Seconds``: a duration; accepts ``"15s"``, ``"5m"``, ``"1h30m"``, ``"250ms"`` or a number.
- ``Secret``: a credential; the file may only hold a ``"${ENV_VAR}"`` reference, or the
  sibling key ``<name>_file`` naming a file (Docker secrets). The value is never logged.
"""

from __future__ import annotations

from typing import Annotated


class Secret:
    """A resolved secret. ``str()`` and ``repr()`` never show the value."""

    __slots__ = ("_value",)

    def __init__(self, value: str = "") -> None:
        self._value = value

    def get(self) -> str:
        """The secret value."""
        return self._value

    def __bool__(self) -> bool:
        return bool(self._value)

    def __repr__(self) -> str:
        return "Secret('***')" if self._value else "Secret('')"

    __str__ = __repr__

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Secret) and other._value == self._value

    def __hash__(self) -> int:
        return hash(self._value)


Seconds = Annotated[float, "seconds"]
