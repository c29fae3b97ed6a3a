"""A local server that follows the documented Fly Machines API contract (CONTRACTS.md §1).

Fly.io cannot be reached from here, so the Fly executor is tested against this. It keeps
machines with their states, ``instance_id`` versions (a new one on every update),
``image_ref``, ``config`` and ``events``; ``/versions`` history; an update starts a
machine that is not running unless it carries ``skip_launch``; optional leases (mutations
of a leased machine without the ``fly-machine-lease-nonce`` header are refused with 409);
the error body ``{"error", "status"}`` with a ``fly-request-id`` header; a ``Date`` header
from the server's clock (a ``Retry-After`` may be an HTTP-date); and the documented
rate limits (per action and machine: 1 req/s with bursts of 3; Get Machine 5 req/s with
bursts of 10), answered with 429. Time is the server's own ``now`` (advanced by the tests'
sleep), so nothing waits for real. The GraphQL endpoint answers the current release status.

Unconfirmed points of the contract are choices made here and named so: the 429 status for
rate limiting, 409 for a leased machine, 412 for a stale ``current_version`` or a start/stop
from the wrong state, and 422 for ``insufficient_capacity``.
"""

from __future__ import annotations

import asyncio
import copy
import secrets
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from email.utils import format_datetime
from typing import Any

from aiohttp import web

APP = "astest-app"
TOKEN = "fo1_test-token"  # sent as "Bearer fo1_test-token"


@dataclass
class Failure:
    """A scripted answer for the next request whose "METHOD /path" contains ``match``."""

    status: int
    error: str = "scripted failure"
    code: str = ""
    match: str = ""
    raw: bool = False
    """Answer ``error`` as a plain-text body instead of Fly's JSON error object."""
    retry_after: float | None = None
    """A ``Retry-After`` header (seconds) on the answer."""
    as_date: bool = False
    """Send ``retry_after`` as an HTTP-date (the server's ``now`` plus it) instead."""


def http_date(epoch: float) -> str:
    """``epoch`` as an IMF-fixdate (``Sun, 06 Nov 1994 08:49:37 GMT``)."""
    return format_datetime(datetime.fromtimestamp(epoch, UTC), usegmt=True)


def _ulid() -> str:
    return secrets.token_hex(13).upper()


def image_ref(image: str) -> dict[str, Any]:
    """Split ``registry/repository:tag@digest`` the way Fly reports it."""
    digest = ""
    if "@" in image:
        image, digest = image.split("@", 1)
    tag = ""
    if ":" in image.rsplit("/", 1)[-1]:
        image, tag = image.rsplit(":", 1)
    registry, _, repository = image.partition("/")
    if not repository:
        registry, repository = "registry-1.docker.io", image
    return {"registry": registry, "repository": repository, "tag": tag, "digest": digest}


class FlyContract:
    """In-memory Fly Machines API for one app (others answer 404)."""

    # Get Machine: 5 req/s, bursts of 10 (documented); listing is given the same here.
    RATES = {"get": (5.0, 10.0), "list": (5.0, 10.0)}
    DEFAULT_RATE = (1.0, 3.0)

    def __init__(self, *, app: str = APP, authorization: str = f"Bearer {TOKEN}") -> None:
        self.app_name = app
        self.authorization = authorization
        self.now = 1_700_000_000.0
        self.machines: dict[str, dict[str, Any]] = {}
        self.versions: dict[str, list[dict[str, Any]]] = {}
        self.leases: dict[str, str] = {}
        self.release_status = "complete"
        self.release_version = 1
        self.capacity = 1000
        self.failures: deque[Failure] = deque()
        self.requests: list[str] = []
        self.rate_limited = 0
        self.after_get: Callable[[str], None] | None = None
        """Called after a Get Machine answer is built (to race a client's read-modify-write)."""
        self.hang = ""
        """Requests whose "METHOD /path" contains this are never answered (a hung API)."""
        self._buckets: dict[tuple[str, str], tuple[float, float]] = {}
        self.app = web.Application(middlewares=[self._middleware])
        r = self.app.router
        base = "/v1/apps/{app}/machines"
        r.add_get(base, self.list_machines)
        r.add_post(base, self.create)
        r.add_get(base + "/{id}", self.get)
        r.add_post(base + "/{id}", self.update)
        r.add_delete(base + "/{id}", self.destroy)
        r.add_post(base + "/{id}/start", self.start)
        r.add_post(base + "/{id}/stop", self.stop)
        r.add_post(base + "/{id}/restart", self.restart)
        r.add_get(base + "/{id}/versions", self.get_versions)
        r.add_post(base + "/{id}/lease", self.lease)
        r.add_post("/graphql", self.graphql)

    # --- test controls ----------------------------------------------------------------

    async def sleep(self, seconds: float) -> None:
        """An injectable sleep: advances the server's clock instead of waiting."""
        self.now += seconds

    def fail_next(self, *failures: Failure) -> None:
        self.failures.extend(failures)

    def add_machine(
        self,
        *,
        image: str = "registry.fly.io/astest-app:deployment-v1",
        state: str = "started",
        group: str = "app",
        region: str = "ord",
    ) -> str:
        mid = secrets.token_hex(7)
        config = {
            "image": image,
            "guest": {"cpu_kind": "shared", "cpus": 1, "memory_mb": 256},
            "metadata": {"fly_process_group": group, "fly_platform_version": "v2"},
            "services": [{"internal_port": 8080, "protocol": "tcp"}],
        }
        self._put(mid, config, state=state, region=region, event="launch")
        return mid

    def live(self, group: str = "app") -> list[dict[str, Any]]:
        return [
            m
            for m in self.machines.values()
            if m["state"] != "destroyed" and m["config"]["metadata"]["fly_process_group"] == group
        ]

    def started(self, group: str = "app") -> int:
        return sum(1 for m in self.live(group) if m["state"] == "started")

    def deploy(self, image: str) -> None:
        """What ``fly deploy`` does to each machine: an update to a new image (stopped
        machines are updated with ``skip_launch``, so they stay stopped)."""
        self.release_version += 1
        for m in self.live():
            config = copy.deepcopy(m["config"])
            config["image"] = image
            config["metadata"]["fly_release_version"] = str(self.release_version)
            self._update(m, config, skip_launch=m["state"] != "started")

    # --- plumbing ---------------------------------------------------------------------

    def _put(
        self, mid: str, config: dict[str, Any], *, state: str, region: str, event: str
    ) -> None:
        instance = _ulid()
        self.machines[mid] = {
            "id": mid,
            "name": f"machine-{mid[:6]}",
            "state": state,
            "region": region,
            "instance_id": instance,
            "version": instance,
            "private_ip": "fdaa::1",
            "config": config,
            "image_ref": image_ref(config["image"]),
            "created_at": "2024-01-01T00:00:00Z",
            "updated_at": "2024-01-01T00:00:00Z",
            "events": [self._event(event, state)],
            "checks": [],
            "host_status": "ok",
        }
        self.versions[mid] = [{"version": instance, "user_config": copy.deepcopy(config)}]

    def _event(self, type_: str, status: str) -> dict[str, Any]:
        return {
            "type": type_,
            "status": status,
            "source": "user",
            "timestamp": int(self.now * 1000),
        }

    def _update(self, m: dict[str, Any], config: dict[str, Any], *, skip_launch: bool) -> None:
        """A running machine reboots into the new version; any other is started by the
        update unless ``skip_launch`` is set (CONTRACTS.md §1.3, §1.5)."""
        m["config"] = config
        m["image_ref"] = image_ref(config["image"])
        m["instance_id"] = m["version"] = _ulid()
        if not skip_launch:
            m["state"] = "started"
        m["events"].append(self._event("update", m["state"]))
        self.versions[m["id"]].insert(
            0, {"version": m["instance_id"], "user_config": copy.deepcopy(config)}
        )

    @staticmethod
    def _error(status: int, error: str, code: str = "") -> web.Response:
        body: dict[str, Any] = {"error": error}
        if code:
            body["status"] = code
        return web.json_response(
            body, status=status, headers={"fly-request-id": secrets.token_hex(8)}
        )

    def _take(self, action: str, ident: str) -> bool:
        rate, burst = self.RATES.get(action, self.DEFAULT_RATE)
        tokens, last = self._buckets.get((action, ident), (burst, self.now))
        tokens = min(burst, tokens + (self.now - last) * rate)
        if tokens < 1.0:
            self._buckets[(action, ident)] = (tokens, self.now)
            return False
        self._buckets[(action, ident)] = (tokens - 1.0, self.now)
        return True

    @web.middleware
    async def _middleware(self, request: web.Request, handler: Any) -> web.StreamResponse:
        response = await self._answer(request, handler)
        response.headers["Date"] = http_date(self.now)  # the server's clock, not the host's
        return response

    async def _answer(self, request: web.Request, handler: Any) -> web.StreamResponse:
        line = f"{request.method} {request.path}"
        self.requests.append(line)
        if request.headers.get("Authorization") != self.authorization:
            return self._error(401, "unauthorized")
        if self.hang and self.hang in line:
            await asyncio.Event().wait()  # cancelled when the client gives up
        for f in list(self.failures):
            if f.match in line:
                self.failures.remove(f)
                if f.raw:
                    return web.Response(status=f.status, text=f.error)
                response = self._error(f.status, f.error, f.code)
                if f.retry_after is not None:
                    response.headers["Retry-After"] = (
                        http_date(self.now + f.retry_after) if f.as_date else f"{f.retry_after:g}"
                    )
                return response
        if request.path.startswith("/v1/"):
            if request.match_info.get("app") != self.app_name:
                return self._error(404, "app not found")
            mid = request.match_info.get("id")
            tail = "" if mid is None or request.path.endswith(mid) else request.path.rsplit("/")[-1]
            if request.method == "GET":
                action = "get" if mid is not None else "list"
            else:
                action = f"{request.method} {tail}"
            ident = request.match_info.get("id", self.app_name)
            if not self._take(action, ident):
                self.rate_limited += 1
                return self._error(429, "rate limit exceeded")
            mid = request.match_info.get("id")
            if mid is not None:
                m = self.machines.get(mid)
                if m is None:
                    return self._error(404, "machine not found")
                nonce = self.leases.get(mid)
                if (
                    nonce
                    and request.method in ("POST", "DELETE")
                    and not request.path.endswith("/lease")
                    and request.headers.get("fly-machine-lease-nonce") != nonce
                ):
                    return self._error(409, "machine is leased by another client")
        result: web.StreamResponse = await handler(request)
        return result

    def _m(self, request: web.Request) -> dict[str, Any]:
        return self.machines[request.match_info["id"]]

    # --- handlers -----------------------------------------------------------------------

    async def list_machines(self, request: web.Request) -> web.Response:
        deleted = request.query.get("include_deleted") == "true"
        ms = [m for m in self.machines.values() if deleted or m["state"] != "destroyed"]
        return web.json_response(ms)

    async def get(self, request: web.Request) -> web.Response:
        response = web.json_response(self._m(request))
        if self.after_get is not None:
            self.after_get(request.match_info["id"])
        return response

    async def create(self, request: web.Request) -> web.Response:
        body = await request.json()
        config = body.get("config") or {}
        if not config.get("image"):
            return self._error(422, "config.image is required")
        live = [m for m in self.machines.values() if m["state"] != "destroyed"]
        if len(live) >= self.capacity:
            return self._error(
                422, "insufficient resources to create machine", "insufficient_capacity"
            )
        mid = secrets.token_hex(7)
        state = "created" if body.get("skip_launch") else "started"
        self._put(
            mid,
            copy.deepcopy(config),
            state=state,
            region=body.get("region", "ord"),
            event="launch",
        )
        return web.json_response(self.machines[mid])

    async def update(self, request: web.Request) -> web.Response:
        m = self._m(request)
        body = await request.json()
        config = body.get("config")
        if not isinstance(config, dict) or not config.get("image"):
            return self._error(400, "a full config with an image is required")
        current = body.get("current_version")
        if current and current != m["instance_id"]:
            return self._error(412, f"machine version {m['instance_id']} is not {current}")
        if m["state"] in ("destroyed", "destroying"):
            return self._error(412, f"unable to update machine in state {m['state']!r}")
        self._update(m, copy.deepcopy(config), skip_launch=body.get("skip_launch") is True)
        return web.json_response(m)

    async def start(self, request: web.Request) -> web.Response:
        m = self._m(request)
        previous = m["state"]
        if previous not in ("stopped", "created", "suspended"):
            return self._error(412, f"unable to start machine from current state: {previous!r}")
        m["state"] = "started"
        m["events"].append(self._event("start", "started"))
        return web.json_response({"previous_state": previous, "migrated": False, "new_host": ""})

    async def stop(self, request: web.Request) -> web.Response:
        m = self._m(request)
        if m["state"] != "started":
            return self._error(412, f"unable to stop machine from current state: {m['state']!r}")
        m["state"] = "stopped"
        m["events"].append(self._event("stop", "stopped"))
        return web.json_response({"ok": True})

    async def restart(self, request: web.Request) -> web.Response:
        m = self._m(request)
        if m["state"] != "started":
            return self._error(412, f"unable to restart machine in state {m['state']!r}")
        m["events"].append(self._event("restart", "started"))
        return web.json_response({"ok": True})

    async def destroy(self, request: web.Request) -> web.Response:
        m = self._m(request)
        force = request.query.get("force") == "true" or request.query.get("kill") == "true"
        if m["state"] == "started" and not force:
            return self._error(412, "machine is started; stop it or pass force=true")
        m["state"] = "destroyed"
        m["events"].append(self._event("destroy", "destroyed"))
        return web.json_response({"ok": True})

    async def get_versions(self, request: web.Request) -> web.Response:
        return web.json_response(self.versions[request.match_info["id"]])

    async def lease(self, request: web.Request) -> web.Response:
        mid = request.match_info["id"]
        if mid in self.leases:
            return self._error(409, "machine is already leased")
        nonce = secrets.token_hex(8)
        self.leases[mid] = nonce
        data = {"nonce": nonce, "expires_at": int(self.now) + 30, "owner": "someone@example.com",
                "description": "", "version": self.machines[mid]["instance_id"]}  # fmt: skip
        return web.json_response({"status": "success", "data": data}, status=201)

    async def graphql(self, request: web.Request) -> web.Response:
        body = await request.json()
        if body.get("variables", {}).get("appName") != self.app_name:
            return web.json_response(
                {"data": {"app": None}, "errors": [{"message": "Could not find App"}]}
            )
        release = {"id": f"rel{self.release_version}", "version": self.release_version,
                   "status": self.release_status, "imageRef": "", "createdAt": ""}  # fmt: skip
        return web.json_response({"data": {"app": {"currentReleaseUnprocessed": release}}})
