"""Markers for config spec dataclasses (used by every package's specs).

The config loader in ``autoscaler.config`` reads these annotations:

- ``Seconds``: a duration; accepts ``"15s"``, ``"5m"``, ``"1h30m"``, ``"250ms"`` or a number.
- ``Secret``: a credential; the file may only hold a ``"${ENV_VAR}"`` reference, or the
  sibling key ``<name>_file`` naming a file (Docker secrets). The value is never logged.

A spec's ``__post_init__`` raises ``InvalidField`` when one key's value is out of range, so
the loader reports it at that key's path; a plain ``ValueError`` is reported at the table.
A key without which the component cannot work at all (a notifier's URL) is not checked
there, because the loader builds a spec's defaults when its table is invalid: the spec
defines ``missing()`` instead, which yields an ``InvalidField`` per such key left unset, and
the loader reports each at its key's path (``check`` fails, not the first action).
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


class InvalidField(ValueError):
    """The value of one key of a spec is invalid.

    ``key`` is spelled as in TOML (``for``, not ``for_``) and may go deeper into the value
    (``per_target.api``); ``message`` says what is wrong without repeating the key.
    """

    def __init__(self, key: str, message: str) -> None:
        super().__init__(key, message)
        self.key = key
        self.message = message

    def __str__(self) -> str:
        return f"{self.key}: {self.message}"


Seconds = Annotated[float, "seconds"]
