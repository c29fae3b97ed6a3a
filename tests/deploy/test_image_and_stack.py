"""The image builds from the Dockerfile on the debootstrap base, its entry point resolves, and
deploy/stack.yml runs it in the real swarm: config as a swarm config, token as a secret,
HTTP on a host-mode port, healthy by its own health check."""

from __future__ import annotations

import json
import os
import socket
import time
import urllib.error
import urllib.request
from collections.abc import Iterator

import pytest

from tests.deploy.helpers import (
    DEPLOY,
    REPO,
    ensure_base_image,
    need_docker,
    sh,
    unavailable,
)

pytestmark = pytest.mark.integration

IMAGE = "autoscaler-test:deploy"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def wait_for(what: str, check: object, *, limit: float) -> None:
    """Poll ``check()`` until it is truthy; fail after ``limit`` seconds (a bound, not a
    measurement: the condition is what is tested)."""
    assert callable(check)
    deadline = time.monotonic() + limit
    while not check():
        if time.monotonic() > deadline:
            pytest.fail(f"timed out waiting for {what}")
        time.sleep(1)


@pytest.fixture(scope="module")
def image() -> str:
    need_docker()
    base = ensure_base_image()
    env_cmd = ["env", f"BASE_IMAGE={base}", str(DEPLOY / "build-image.sh"), IMAGE]
    sh(*env_cmd, timeout=1200)
    return IMAGE


def test_stack_file_passes_docker_stack_config() -> None:
    need_docker()
    rendered = sh("docker", "stack", "config", "-c", str(DEPLOY / "stack.yml"))
    for expected in (
        "node.role == manager",
        "mode: host",
        "target: /etc/autoscaler/config.toml",
        "target: autoscaler_token",
        "source: /var/run/docker.sock",
        "replicas: 1",
        "endpoint_mode: dnsrr",
    ):
        assert expected in rendered, expected


def test_image_entry_point_resolves(image: str) -> None:
    out = sh("docker", "run", "--rm", image, "--help")
    assert "usage: autoscaler" in out and "run" in out


def test_image_runs_as_non_root_in_the_docker_socket_group(image: str) -> None:
    gid = os.stat("/var/run/docker.sock").st_gid
    out = sh("docker", "run", "--rm", "--entrypoint", "id", image)
    assert out.startswith("uid=10001(autoscaler)")
    assert f"{gid}(" in out.split("groups=")[1]


def test_image_health_check_turns_healthy_once_the_loop_ticks(image: str) -> None:
    config = REPO / "tests" / "deploy" / "systemd-smoke.toml"
    name = f"astest-deploy-hc-{os.getpid()}"
    cid = sh(
        "docker", "run", "-d", "--name", name, "--health-interval", "2s",
        "-v", f"{config}:/etc/autoscaler/config.toml:ro", image,
    )  # fmt: skip
    try:
        wait_for(
            "the image's HEALTHCHECK to pass",
            lambda: (
                sh("docker", "inspect", "--format", "{{.State.Health.Status}}", cid) == "healthy"
            ),
            limit=120,
        )
    finally:
        sh("docker", "rm", "-f", cid, check=False)


@pytest.fixture
def swarm_stack(image: str) -> Iterator[tuple[str, int, str]]:
    state = sh(
        "docker", "info", "--format", "{{.Swarm.LocalNodeState}} {{.Swarm.ControlAvailable}}"
    )
    if state != "active true":
        unavailable(f"needs a swarm manager (docker swarm init), node is {state!r}")
    name = f"astest-deploy-{os.getpid()}"
    network, token, port = f"{name}-net", f"tok-{os.getpid()}", free_port()
    sh("docker", "network", "create", "-d", "overlay", "--attachable", network)
    sh("docker", "secret", "create", f"{name}_token", "-", stdin=token.encode())
    env = {
        "AUTOSCALER_NAME": name,
        "AUTOSCALER_IMAGE": image,
        "AUTOSCALER_PORT": str(port),
        "AUTOSCALER_NETWORK": network,
        "AUTOSCALER_CONFIG": str(REPO / "tests" / "deploy" / "stack-smoke.toml"),
    }
    try:
        sh(
            "env",
            *(f"{k}={v}" for k, v in env.items()),
            "docker",
            "stack",
            "deploy",
            "-c",
            str(DEPLOY / "stack.yml"),
            name,
        )
        yield name, port, token
    finally:
        sh("docker", "stack", "rm", name, check=False)
        label = f"label=com.docker.stack.namespace={name}"
        wait_for(
            "the stack's containers to go",
            lambda: not sh("docker", "ps", "-aq", "--filter", label, check=False),
            limit=120,
        )
        sh("docker", "secret", "rm", f"{name}_token", check=False)
        wait_for(
            "the network to be removed",
            lambda: (
                not sh("docker", "network", "ls", "-q", "--filter", f"name={network}")
                or sh("docker", "network", "rm", network, check=False) == network
            ),
            limit=60,
        )
        sh("docker", "volume", "rm", f"{name}_state", check=False)


def http(method: str, url: str, token: str | None = None) -> int:
    req = urllib.request.Request(url, method=method)
    if token is not None:
        req.add_header("Authorization", f"Bearer {token}")
    try:
        with urllib.request.urlopen(req, timeout=5) as resp:
            return int(resp.status)
    except urllib.error.HTTPError as exc:
        return exc.code


def test_stack_runs_healthy_with_config_secret_and_host_port(
    swarm_stack: tuple[str, int, str],
) -> None:
    name, port, token = swarm_stack
    label = f"label=com.docker.stack.namespace={name}"

    def health() -> str:
        cid = sh("docker", "ps", "-q", "--filter", label, check=False)
        if not cid:
            return ""
        raw = sh("docker", "inspect", "--format", "{{json .State.Health}}", cid, check=False)
        return str(json.loads(raw or "null") and json.loads(raw)["Status"])

    # The image's health check calls /healthz with urllib; its first run is after 30 s.
    wait_for("the container to be healthy", lambda: health() == "healthy", limit=300)
    assert http("GET", f"http://127.0.0.1:{port}/healthz") == 200
    # The token came from the swarm secret through token_file.
    assert http("POST", f"http://127.0.0.1:{port}/v1/pause", token="wrong") == 401
    assert http("POST", f"http://127.0.0.1:{port}/v1/pause", token=token) == 200
    assert http("POST", f"http://127.0.0.1:{port}/v1/resume", token=token) == 200
    cid = sh("docker", "ps", "-q", "--filter", label)
    # The non-root user reaches the Docker socket and sees this swarm's services.
    services = sh(
        "docker",
        "exec",
        cid,
        "python",
        "-c",
        "import docker; c = docker.APIClient(version='auto'); "
        "print(' '.join(s['Spec']['Name'] for s in c.services()))",
    )
    assert f"{name}_autoscaler" in services.split()
