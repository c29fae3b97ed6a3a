"""A real dockerd with a single-node swarm and two tiny local images, for integration tests.

``ensure_swarm()`` makes sure that

- ``dockerd`` is installed (``apt-get install docker.io`` as root when it is missing);
- a daemon answers on ``/var/run/docker.sock`` (one is started, logging to a temp file, when
  none answers; it is shared with other engineers, so it is never stopped, restarted or
  reconfigured here);
- the node is a swarm manager (``docker swarm init --advertise-addr 127.0.0.1``);
- nothing is left of test runs that died without cleaning up (``sweep_orphans``): a killed
  run's e2e sidecar keeps acting on every service labelled for it, and rolled back the
  paused updates another run's swarm tests wait for;
- ``autoscaler-test/busybox:v1`` and ``:v2`` exist, imported with ``docker import`` from a
  busybox-static root filesystem (no registry is reachable). The two differ in a file, so
  an update from v1 to v2 and a rollback are real image changes.

``SocketProxy`` is a unix-socket proxy in front of the real socket: stopping it makes every
client see connection errors exactly as if dockerd were down, without touching dockerd.
"""

from __future__ import annotations

import contextlib
import io
import os
import re
import shutil
import socket
import subprocess
import tarfile
import tempfile
import threading
import time
from pathlib import Path

DOCKER_SOCK = "/var/run/docker.sock"
IMAGE = "autoscaler-test/busybox"
IMAGE_V1 = f"{IMAGE}:v1"
IMAGE_V2 = f"{IMAGE}:v2"
BUSYBOX = "/bin/busybox"

_lock = threading.Lock()
_ready = False


class HarnessError(RuntimeError):
    """The real component could not be started."""


def _run(*args: str, timeout: float = 120, stdin: bytes | None = None) -> str:
    proc = subprocess.run(args, input=stdin, capture_output=True, timeout=timeout, check=False)
    if proc.returncode != 0:
        err = proc.stderr.decode(errors="replace").strip()
        raise HarnessError(f"{' '.join(args[:4])}: exit {proc.returncode}: {err}")
    return proc.stdout.decode(errors="replace").strip()


def daemon_answers(path: str = DOCKER_SOCK) -> bool:
    """True when something answers ``GET /_ping`` with ``OK`` on the unix socket ``path``."""
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
            s.settimeout(3)
            s.connect(path)
            s.sendall(b"GET /_ping HTTP/1.0\r\nHost: docker\r\n\r\n")
            data = b""
            while chunk := s.recv(4096):
                data += chunk
        return data.startswith(b"HTTP/1.") and data.rstrip().endswith(b"OK")
    except OSError:
        return False


def _install_docker() -> None:
    if shutil.which("dockerd") and shutil.which("docker"):
        return
    if os.geteuid() != 0:
        raise HarnessError("dockerd is not installed and we are not root to apt-get it")
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    for cmd in (["apt-get", "update"], ["apt-get", "install", "-y", "docker.io"]):
        proc = subprocess.run(cmd, capture_output=True, env=env, timeout=600, check=False)
        if proc.returncode != 0:
            raise HarnessError(f"{' '.join(cmd)} failed: {proc.stderr.decode()[-500:]}")


def _start_dockerd(deadline: float = 90.0) -> None:
    if daemon_answers():
        return
    _install_docker()
    log = Path(tempfile.gettempdir()) / "autoscaler-test-dockerd.log"
    # The daemon outlives the test run (it is shared infrastructure), so it is not our child:
    # a shell starts it in a session of its own and exits, leaving nothing for us to reap.
    subprocess.run(
        ["sh", "-c", 'setsid dockerd >>"$1" 2>&1 </dev/null &', "sh", str(log)],
        check=True,
        timeout=30,
    )
    start = time.monotonic()
    while time.monotonic() - start < deadline:
        if daemon_answers():
            return
        time.sleep(0.5)
    tail = log.read_text(errors="replace")[-1500:] if log.exists() else ""
    raise HarnessError(f"dockerd did not answer on {DOCKER_SOCK}; log {log}:\n{tail}")


def _ensure_swarm_mode() -> None:
    state = _run("docker", "info", "--format", "{{.Swarm.LocalNodeState}}")
    if state == "active":
        return
    try:
        _run("docker", "swarm", "init", "--advertise-addr", "127.0.0.1")
    except HarnessError:
        # A concurrent init by another engineer's harness is fine.
        if _run("docker", "info", "--format", "{{.Swarm.LocalNodeState}}") != "active":
            raise


def _rootfs_tar(version: str) -> bytes:
    if not Path(BUSYBOX).exists():
        _install_package("busybox-static")
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        for d in ("bin", "tmp", "etc"):
            info = tarfile.TarInfo(d)
            info.type = tarfile.DIRTYPE
            info.mode = 0o755
            tar.addfile(info)
        tar.add(BUSYBOX, arcname="bin/busybox")
        for applet in ("sh", "sleep", "cat", "ls", "true"):
            link = tarfile.TarInfo(f"bin/{applet}")
            link.type = tarfile.SYMTYPE
            link.linkname = "busybox"
            tar.addfile(link)
        body = f"autoscaler-test {version}\n".encode()
        info = tarfile.TarInfo("etc/autoscaler-test-version")
        info.size = len(body)
        info.mode = 0o644
        tar.addfile(info, io.BytesIO(body))
    return buf.getvalue()


def _install_package(name: str) -> None:
    if os.geteuid() != 0:
        raise HarnessError(f"{name} is missing and we are not root to apt-get it")
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    for cmd in (["apt-get", "update"], ["apt-get", "install", "-y", name]):
        proc = subprocess.run(cmd, capture_output=True, env=env, timeout=600, check=False)
        if proc.returncode != 0:
            raise HarnessError(f"{' '.join(cmd)} failed: {proc.stderr.decode()[-500:]}")


def _ensure_images() -> None:
    for version, tag in (("v1", IMAGE_V1), ("v2", IMAGE_V2)):
        with contextlib.suppress(HarnessError):
            _run("docker", "image", "inspect", tag)
            continue
        _run(
            "docker", "import",
            "--change", 'CMD ["/bin/sleep", "3600"]',
            "-", tag,
            stdin=_rootfs_tar(version),
        )  # fmt: skip


def ensure_swarm() -> None:
    """Start (if needed) dockerd, the swarm and the test images. Raises ``HarnessError``."""
    global _ready
    with _lock:
        if _ready and daemon_answers():
            return
        _start_dockerd()
        _ensure_swarm_mode()
        sweep_orphans()
        _ensure_images()
        _ready = True


_OWNER = re.compile(r"^astest-(?:[a-z0-9]*[a-z][a-z0-9]*-)*?(\d+)(?=$|[-_])")
"""A test object's name carries the pid of the run that made it: ``astest-e2e-4242_autoscaler``,
``astest-remediation-4242-0f3a…``."""


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process: alive
        pass
    return True


def orphaned(names: list[str]) -> list[str]:
    """The names made by a test run that is no longer running (a reused pid counts as alive:
    a leftover then waits for a later sweep rather than break a run in progress)."""
    out = []
    for name in names:
        m = _OWNER.match(name)
        if m and not _alive(int(m.group(1))):
            out.append(name)
    return out


def sweep_orphans() -> list[str]:
    """Remove the stacks, services, containers, secrets and networks of test runs that died
    without cleaning up; returns what was removed. Another live run's objects are kept."""
    removed = []
    kinds = [  # (how to list the names, how to remove one)
        (("stack", "ls", "--format", "{{.Name}}"), ("stack", "rm")),
        (("service", "ls", "--format", "{{.Name}}"), ("service", "rm")),
        (("ps", "-a", "--format", "{{.Names}}"), ("rm", "-f")),
        (("secret", "ls", "--format", "{{.Name}}"), ("secret", "rm")),
        (("network", "ls", "--format", "{{.Name}}"), ("network", "rm")),
    ]
    for listing, remove in kinds:
        names = _run("docker", *listing).split()
        for name in orphaned(names):
            try:
                _run("docker", *remove, name)
            except HarnessError:
                continue  # gone already (a stack took it), or still in use: the next sweep
            removed.append(name)
    return removed


def remove_services(prefix: str) -> None:
    """Remove every swarm service whose name starts with ``prefix``."""
    names = _run("docker", "service", "ls", "--format", "{{.Name}}").split()
    doomed = [n for n in names if n.startswith(prefix)]
    if doomed:
        _run("docker", "service", "rm", *doomed)


# --- a unix-socket proxy that can play "dockerd is down" ------------------------------------


class SocketProxy:
    """Forwards connections on ``path`` to the real docker socket; ``stop()`` closes the
    listener and every open connection, ``start()`` listens again on the same path."""

    def __init__(self, path: str, upstream: str = DOCKER_SOCK) -> None:
        self.path = path
        self.upstream = upstream
        self._listener: socket.socket | None = None
        self._conns: set[socket.socket] = set()
        self._mu = threading.Lock()
        self._thread: threading.Thread | None = None
        self.withhold = threading.Event()
        """While set, dockerd's answers are dropped: requests still reach it, clients time
        out as if it hung after doing the work."""

    @property
    def base_url(self) -> str:
        return f"unix://{self.path}"

    @property
    def running(self) -> bool:
        return self._listener is not None

    def start(self) -> None:
        if self._listener is not None:
            return
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self.path)
        lst = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        lst.bind(self.path)
        lst.listen(64)
        self._listener = lst
        self._thread = threading.Thread(target=self._accept, args=(lst,), daemon=True)
        self._thread.start()

    def stop(self) -> None:
        lst, self._listener = self._listener, None
        if lst is None:
            return
        with contextlib.suppress(OSError):
            lst.shutdown(socket.SHUT_RDWR)
        lst.close()
        with self._mu:
            conns, self._conns = self._conns, set()
        for c in conns:
            with contextlib.suppress(OSError):
                c.shutdown(socket.SHUT_RDWR)
            c.close()
        if self._thread is not None:
            self._thread.join(timeout=5)
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self.path)

    def _accept(self, lst: socket.socket) -> None:
        while True:
            try:
                client, _ = lst.accept()
            except OSError:
                return
            try:
                server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
                server.connect(self.upstream)
            except OSError:
                client.close()
                continue
            with self._mu:
                if self._listener is not lst:
                    client.close()
                    server.close()
                    return
                self._conns.update((client, server))
            for a, b, answers in ((client, server, False), (server, client, True)):
                threading.Thread(target=self._pump, args=(a, b, answers), daemon=True).start()

    def _pump(self, src: socket.socket, dst: socket.socket, answers: bool) -> None:
        try:
            while data := src.recv(65536):
                if not (answers and self.withhold.is_set()):
                    dst.sendall(data)
        except OSError:
            pass
        finally:
            for s in (src, dst):
                with contextlib.suppress(OSError):
                    s.shutdown(socket.SHUT_RDWR)
                s.close()
            with self._mu:
                self._conns.discard(src)
                self._conns.discard(dst)
