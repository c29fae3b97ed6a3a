"""Fixtures of the source tests: real exporter, Prometheus and Alertmanager processes,
always stopped at teardown (even when the test fails)."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import pytest

from tests.harness.alertmanager import AlertmanagerServer
from tests.harness.exporter import Exporter
from tests.harness.prometheus import PrometheusServer, ServerUnavailable, unavailable


@pytest.fixture
def exporter() -> Iterator[Exporter]:
    exp = Exporter()
    try:
        exp.start()
    except (RuntimeError, OSError) as exc:
        unavailable(f"exporter process: {exc}")
    try:
        yield exp
    finally:
        exp.stop()


@pytest.fixture
def start_prometheus() -> Iterator[Callable[..., PrometheusServer]]:
    """Start a real Prometheus (``start_prometheus(targets=[...], backfill=...)``)."""
    servers: list[PrometheusServer] = []

    def start(*, backfill: str = "", **kw: Any) -> PrometheusServer:
        try:
            server = PrometheusServer(**kw)
            servers.append(server)
            if backfill:
                server.backfill(backfill)
            server.start()
        except ServerUnavailable as exc:
            unavailable(f"prometheus: {exc}")
        return server

    try:
        yield start
    finally:
        for s in servers:
            s.close()


@pytest.fixture
def start_alertmanager() -> Iterator[Callable[..., AlertmanagerServer]]:
    servers: list[AlertmanagerServer] = []

    def start(**kw: Any) -> AlertmanagerServer:
        try:
            server = AlertmanagerServer(**kw)
            servers.append(server)
            server.start()
        except ServerUnavailable as exc:
            unavailable(f"alertmanager: {exc}")
        return server

    try:
        yield start
    finally:
        for s in servers:
            s.close()
