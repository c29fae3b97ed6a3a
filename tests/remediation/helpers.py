"""Polling helpers for the remediation tests (bounded deadlines, never fixed sleeps)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import docker
import pytest

_T = TypeVar("_T")

ServiceFactory = Callable[..., str]
"""``make_service(replicas=, labels=, image=, global_mode=, update_delay_s=)`` → name."""


def running_tasks(api: docker.APIClient, service: str) -> list[dict[str, Any]]:
    tasks = api.tasks(filters={"service": service, "desired-state": "running"})
    return [t for t in tasks if t.get("Status", {}).get("State") == "running"]


def wait_for(
    probe: Callable[[], _T],
    *,
    timeout: float = 90.0,
    what: str = "condition",
    show: Callable[[], object] | None = None,
) -> _T:
    """Poll ``probe`` until it returns something truthy, or fail after ``timeout``; the
    failure names what ``show`` returns then (the state a yes/no probe hides)."""
    end = time.monotonic() + timeout
    last: _T = probe()
    while not last:
        if time.monotonic() > end:
            seen = f"; now: {show()!r}" if show is not None else ""
            pytest.fail(f"timed out after {timeout}s waiting for {what} (last: {last!r}{seen})")
        time.sleep(0.2)
        last = probe()
    return last


async def await_for(
    probe: Callable[[], Awaitable[_T]], *, deadline: float = 90.0, what: str = "condition"
) -> _T:
    """Async ``wait_for``."""
    end = time.monotonic() + deadline
    last = await probe()
    while not last:
        if time.monotonic() > end:
            pytest.fail(f"timed out after {deadline}s waiting for {what} (last: {last!r})")
        await asyncio.sleep(0.2)
        last = await probe()
    return last
