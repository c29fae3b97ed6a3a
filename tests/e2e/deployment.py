"""The closed loop, deployed for real on the node's swarm (used by the e2e test and
``bench/reaction.py``).

``Deployment.up()`` starts, all on loopback:

1. the shared dockerd in swarm mode and the busybox images ``autoscaler-test/busybox:v1``
   (good) and ``:v2`` (bad) (tests/harness/dockerd.py; the daemon is never stopped);
2. the service image from the Dockerfile (deploy/build-image.sh through
   tests/deploy/helpers.py: the debootstrap base is built only when missing, and the
   Docker layer cache makes a rebuild of unchanged sources quick);
3. the target: a replicated swarm service on v1, opted in with labels under this run's own
   prefix (``astest-e2e-<pid>.*``), so no other run's sidecar can act on it, nor this one's
   on another's;
4. the workload emulator (tests/e2e/workload.py) as a subprocess, reading that service;
5. a real Prometheus scraping the emulator every second (tests/harness/prometheus.py);
6. the autoscaler, deployed with ``docker stack deploy -c deploy/stack.yml`` in the host
   network namespace (no IPVS here: no ingress mesh, and Prometheus is on loopback), with
   tests/e2e/config.toml (time-compressed) as its swarm config and a swarm secret token.

Everything created is named ``astest-e2e-<pid>...`` and removed by ``down()``.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any

from tests.harness import dockerd
from tests.harness.prometheus import PrometheusServer, free_port, http_ok

REPO = Path(__file__).resolve().parents[2]
HERE = Path(__file__).resolve().parent
IMAGE = "autoscaler-test:e2e"
OBJECTIVE_MS = 150.0
"""The P95 objective of the emulated service."""
CAPACITY_RPS = 10.0
MIN_REPLICAS, MAX_REPLICAS = 2, 8


class DeploymentError(RuntimeError):
    """A part of the loop could not be started."""


def sh(*args: str, timeout: float = 120, check: bool = True, stdin: bytes | None = None) -> str:
    r = subprocess.run(args, capture_output=True, timeout=timeout, input=stdin, check=False)
    out = r.stdout.decode(errors="replace").strip()
    if check and r.returncode != 0:
        err = r.stderr.decode(errors="replace").strip()
        raise DeploymentError(f"{' '.join(args)} -> {r.returncode}\n{out}\n{err}")
    return out


def wait_for(what: str, check: Callable[[], Any], *, limit: float, every: float = 0.2) -> Any:
    """Poll ``check()`` until it returns something truthy, which is returned; ``TimeoutError``
    after ``limit`` seconds (a bound, not a measurement)."""
    deadline = time.monotonic() + limit
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out after {limit:g}s waiting for {what}")
        time.sleep(every)


def get_json(url: str, *, timeout: float = 5) -> tuple[int, Any]:
    try:
        with urllib.request.urlopen(url, timeout=timeout) as resp:
            return int(resp.status), json.loads(resp.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read() or b"null")


def build_image(image: str = IMAGE) -> str:
    """The service image from the Dockerfile, on the debootstrap base (built when missing)."""
    from tests.deploy.helpers import DEPLOY, ensure_base_image  # pytest-aware helper

    base = ensure_base_image()
    sh("env", f"BASE_IMAGE={base}", str(DEPLOY / "build-image.sh"), image, timeout=1200)
    return image


class Deployment:
    """One closed loop: target service, workload, Prometheus and the sidecar stack."""

    def __init__(self, *, scale_up_above: float = 100.0, image: str = IMAGE) -> None:
        self.name = f"astest-e2e-{os.getpid()}"
        self.service = f"{self.name}-web"
        self.stack = self.name
        self.image = image
        self.scale_up_above = scale_up_above
        self.token = f"e2e-{os.getpid()}-{time.time_ns()}"
        self.dir = Path(tempfile.mkdtemp(prefix="astest-e2e-"))
        self.workload_port = free_port()
        self.http_port = free_port()
        self.workload: subprocess.Popen[bytes] | None = None
        self.prometheus: PrometheusServer | None = None
        self._config_version = 0

    # --- URLs ----------------------------------------------------------------------------

    @property
    def sidecar(self) -> str:
        return f"http://127.0.0.1:{self.http_port}"

    @property
    def workload_url(self) -> str:
        return f"http://127.0.0.1:{self.workload_port}"

    # --- bring-up --------------------------------------------------------------------------

    def up(self) -> None:
        dockerd.ensure_swarm()
        self._create_service()
        self._start_workload()
        self.prometheus = PrometheusServer(targets=[f"127.0.0.1:{self.workload_port}"])
        self.prometheus.start()
        sh("docker", "secret", "create", f"{self.name}_token", "-", stdin=self.token.encode())
        self.deploy_stack()

    def _create_service(self) -> None:
        sh(
            "docker", "service", "create", "--detach", "--no-resolve-image",
            "--name", self.service,
            "--replicas", str(MIN_REPLICAS),
            "--label", f"{self.name}.enable=true",
            "--label", f"{self.name}.min={MIN_REPLICAS}",
            "--label", f"{self.name}.max={MAX_REPLICAS}",
            "--label", f"{self.name}.policy=latency,rollback",
            # Busybox sleeps: a task is running within a second; stopping is immediate.
            "--stop-grace-period", "1s",
            "--update-parallelism", "0", "--update-delay", "0s", "--update-monitor", "2s",
            "--rollback-parallelism", "0", "--rollback-monitor", "2s",
            dockerd.IMAGE_V1,
        )  # fmt: skip
        wait_for(f"{MIN_REPLICAS} running tasks", lambda: self.running() == MIN_REPLICAS, limit=60)

    def _start_workload(self) -> None:
        with (self.dir / "workload.log").open("ab") as log:
            self.workload = subprocess.Popen(
                [
                    sys.executable, "-m", "tests.e2e.workload",
                    "--service", self.service, "--port", str(self.workload_port),
                    "--capacity", str(CAPACITY_RPS), "--demand", "5",
                ],
                cwd=REPO, stdout=log, stderr=subprocess.STDOUT,
            )  # fmt: skip
        wait_for(
            "the workload's /metrics", lambda: http_ok(f"{self.workload_url}/metrics"), limit=30
        )

    def config_text(self, *, extra: str = "") -> str:
        assert self.prometheus is not None
        text = (HERE / "config.toml").read_text()
        for key, value in {
            "@SERVICE@": self.service,
            "@PROMETHEUS_URL@": self.prometheus.url,
            "@HTTP_PORT@": str(self.http_port),
            "@LABEL_PREFIX@": self.name,
            "@SCALE_UP_ABOVE@": f"{self.scale_up_above:g}",
        }.items():
            text = text.replace(key, value)
        return text + extra

    def deploy_stack(self) -> None:
        """(Re)deploy the sidecar; each call makes a new swarm config version."""
        self._config_version += 1
        path = self.dir / f"config-v{self._config_version}.toml"
        path.write_text(self.config_text())
        env = {
            "AUTOSCALER_NAME": self.name,
            "AUTOSCALER_IMAGE": self.image,
            "AUTOSCALER_CONFIG": str(path),
            "CONFIG_VERSION": str(self._config_version),
            "AUTOSCALER_PORT": str(self.http_port),
            "AUTOSCALER_HTTP_PORT": str(self.http_port),
            "AUTOSCALER_NETWORK": "host",
        }
        sh(
            "env", *(f"{k}={v}" for k, v in env.items()),
            "docker", "stack", "deploy", "--detach=true", "-c", str(REPO / "deploy" / "stack.yml"),
            self.stack,
        )  # fmt: skip
        wait_for("the sidecar's /readyz", self.ready, limit=120)

    # --- observations ------------------------------------------------------------------------

    def ready(self) -> bool:
        try:
            return get_json(f"{self.sidecar}/readyz", timeout=2)[0] == 200
        except (OSError, ValueError):
            return False

    def readyz_status(self) -> int:
        try:
            return get_json(f"{self.sidecar}/readyz", timeout=2)[0]
        except (OSError, ValueError):
            return 0

    def inspect(self) -> dict[str, Any]:
        doc: list[dict[str, Any]] = json.loads(sh("docker", "service", "inspect", self.service))
        return doc[0]

    def running(self) -> int:
        """Tasks of the target in state running (Docker API, through the CLI)."""
        out = sh(
            "docker", "service", "ps", self.service, "--filter", "desired-state=running",
            "--format", "{{.CurrentState}}", check=False,
        )  # fmt: skip
        return sum(1 for line in out.splitlines() if line.startswith("Running"))

    def desired(self) -> int:
        return int(self.inspect()["Spec"]["Mode"]["Replicated"]["Replicas"])

    def decisions(self, *, since: float = 0.0) -> list[dict[str, Any]]:
        """Journal rows for the target (``GET /v1/decisions`` on the sidecar), oldest first."""
        status, doc = get_json(
            f"{self.sidecar}/v1/decisions?target={self.service}&since={since}&limit=10000"
        )
        if status != 200:
            raise DeploymentError(f"/v1/decisions answered {status}: {doc}")
        rows: list[dict[str, Any]] = doc["decisions"]
        return sorted(rows, key=lambda r: float(r["at"]))

    def actions(
        self, kind: str, status: str = "done", *, since: float = 0.0
    ) -> list[dict[str, Any]]:
        """Journal rows of one action kind and status; ``kind`` is a journal kind
        ("rollback") or "scale_up" / "scale_down" (a scale row by its direction)."""
        out = []
        for r in self.decisions(since=since):
            params = r["params"] if isinstance(r["params"], dict) else json.loads(r["params"])
            r = {**r, "params": params}
            if r["status"] != status:
                continue
            if kind in ("scale_up", "scale_down") and r["kind"] == "scale":
                up = int(params["replicas"]) > int(params["from"])
                if up == (kind == "scale_up"):
                    out.append(r)
            elif r["kind"] == kind:
                out.append(r)
        return out

    def history(self, *, since: float = 0.0) -> list[dict[str, Any]]:
        status, rows = get_json(f"{self.workload_url}/history?since={since}")
        assert status == 200
        out: list[dict[str, Any]] = rows
        return out

    def state(self) -> dict[str, Any]:
        out: dict[str, Any] = get_json(f"{self.workload_url}/state")[1]
        return out

    def set_demand(self, points: list[list[float]]) -> None:
        body = json.dumps({"points": points}).encode()
        req = urllib.request.Request(
            f"{self.workload_url}/schedule", data=body, method="POST",
            headers={"Content-Type": "application/json"},
        )  # fmt: skip
        with urllib.request.urlopen(req, timeout=5) as resp:
            assert resp.status == 200

    def kill_prometheus(self) -> None:
        """SIGKILL Prometheus (no clean shutdown); ``prometheus.start()`` brings it back on
        the same port and data directory."""
        assert self.prometheus is not None and self.prometheus.proc is not None
        self.prometheus.proc.kill()
        self.prometheus.proc.wait()
        self.prometheus.proc = None

    def update_image(self, image: str) -> None:
        """Deploy ``image`` the way an operator does (no registry: no digest resolution)."""
        sh(
            "docker", "service", "update", "--detach", "--no-resolve-image",
            "--image", image, self.service,
        )  # fmt: skip

    def sidecar_container(self) -> str:
        label = f"label=com.docker.stack.namespace={self.stack}"
        return sh("docker", "ps", "-q", "--filter", label, "--filter", "status=running")

    # --- teardown --------------------------------------------------------------------------

    def logs(self) -> str:
        """The sidecar's and the workload's recent logs, for a failing test's message."""
        side = sh(
            "docker", "service", "logs", "--raw", "--tail", "40", f"{self.stack}_autoscaler",
            check=False,
        )  # fmt: skip
        wl = (self.dir / "workload.log").read_text(errors="replace")[-2000:]
        return f"--- sidecar ---\n{side}\n--- workload ---\n{wl}"

    def down(self) -> None:
        with contextlib.suppress(Exception):
            sh("docker", "stack", "rm", self.stack, check=False)
        with contextlib.suppress(Exception):
            sh("docker", "service", "rm", self.service, check=False)
        if self.workload is not None:
            self.workload.terminate()
            try:
                self.workload.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.workload.kill()
                self.workload.wait()
        if self.prometheus is not None:
            self.prometheus.close()
        label = f"label=com.docker.stack.namespace={self.stack}"
        with contextlib.suppress(TimeoutError):
            wait_for(
                "the stack's containers to go",
                lambda: not sh("docker", "ps", "-aq", "--filter", label, check=False),
                limit=60,
                every=0.5,
            )
        sh("docker", "secret", "rm", f"{self.name}_token", check=False)
        for v in range(1, self._config_version + 1):
            sh("docker", "config", "rm", f"{self.name}_config_v{v}", check=False)
        with contextlib.suppress(TimeoutError):
            # The volume is released a moment after its container is gone.
            wait_for(
                "the state volume to be removed",
                lambda: (
                    sh("docker", "volume", "rm", f"{self.stack}_state", check=False)
                    or not sh(
                        "docker", "volume", "ls", "-q", "--filter", f"name={self.stack}_state"
                    )
                ),
                limit=30,
                every=0.5,
            )
        shutil.rmtree(self.dir, ignore_errors=True)
