"""Fixtures for the remediation tests: a real swarm (shared dockerd) and service factories.

Every service created here is named ``astest-remediation-…`` and removed on teardown; the
shared dockerd is never stopped or reconfigured.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from typing import TypeVar

import docker
import pytest

from tests.harness.dockerd import (
    IMAGE_V1,
    HarnessError,
    daemon_answers,
    ensure_swarm,
    remove_services,
)
from tests.remediation.helpers import ServiceFactory

_T = TypeVar("_T")
PREFIX = f"astest-remediation-{os.getpid()}-"
"""This run's services: the harness sweeps those of a run that died (the pid names it)."""
# busybox `sleep` as PID 1 ignores SIGTERM; trap it so task shutdown takes no grace period.
COMMAND = ["sh", "-c", "trap 'exit 0' TERM; sleep 3600 & wait"]


@pytest.fixture(scope="session")
def swarm() -> None:
    """A real single-node swarm with the test images, or a skip (a failure when CI=true)."""
    try:
        ensure_swarm()
    except (HarnessError, OSError) as exc:
        if os.environ.get("CI") == "true":
            pytest.fail(f"dockerd/swarm could not be started: {exc}")
        pytest.skip(f"dockerd/swarm could not be started: {exc}")


@pytest.fixture
def api(swarm: None) -> Iterator[docker.APIClient]:
    client = docker.APIClient(version="auto", timeout=30)
    try:
        yield client
    finally:
        client.close()


@pytest.fixture
def make_service(api: docker.APIClient) -> Iterator[ServiceFactory]:
    """Creates services (name prefixed ``astest-remediation-``); all removed afterwards."""
    created: list[str] = []

    def create(
        *,
        replicas: int | None = 1,
        labels: dict[str, str] | None = None,
        image: str = IMAGE_V1,
        global_mode: bool = False,
        update_delay_s: float = 0.0,
    ) -> str:
        name = f"{PREFIX}{uuid.uuid4().hex[:8]}"
        spec = docker.types.ContainerSpec(image=image, command=COMMAND)
        mode = (
            docker.types.ServiceMode("global")
            if global_mode
            else docker.types.ServiceMode("replicated", replicas=replicas)
        )
        update = docker.types.UpdateConfig(
            parallelism=1, delay=int(update_delay_s * 1e9), monitor=100_000_000, order="stop-first"
        )
        rollback = docker.types.RollbackConfig(parallelism=0, monitor=100_000_000)
        api.create_service(
            docker.types.TaskTemplate(container_spec=spec),
            name=name,
            labels=labels or {},
            mode=mode,
            update_config=update,
            rollback_config=rollback,
        )
        created.append(name)
        return name

    yield create
    for name in created:
        try:
            api.remove_service(name)
        except docker.errors.NotFound:
            pass


@pytest.fixture(scope="session", autouse=True)
def _no_services_left_behind() -> Iterator[None]:
    yield
    if not daemon_answers():
        return
    try:
        remove_services(PREFIX)
    except (HarnessError, OSError):
        pass
