"""The server harness fails (CI) or skips (elsewhere) when a server cannot start."""

from __future__ import annotations

import pytest

from tests.harness.prometheus import ServerUnavailable, ensure_binary, unavailable


def test_unavailable_server_fails_in_ci(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CI", "true")
    with pytest.raises(pytest.fail.Exception, match="unavailable in CI: no server"):
        unavailable("no server")


def test_unavailable_server_skips_outside_ci(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("CI", raising=False)
    with pytest.raises(pytest.skip.Exception, match="no server"):
        unavailable("no server")


def test_a_missing_binary_that_cannot_be_installed_is_reported(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("PATH", "/nonexistent")
    with pytest.raises(ServerUnavailable, match="missing and cannot be installed"):
        ensure_binary("prometheus-does-not-exist", "prometheus")
