"""Fly Machines executor: scale, restart and roll back the machines of one process group.

A target is one process group (default ``app``) of a Fly app. Its replicas are its started
machines. Scaling follows superfly/fly-autoscaler's reconciler: start stopped machines
first, create clones of an existing machine (its config with ``image`` set to the machine's
full image ref, in its region) when there are not enough, stop started machines to scale in
(newest first; never one still ``starting`` or ``restarting``, which the API would refuse: if
only such machines are left to stop, the action fails as temporary and is retried once they
have started), and destroy stopped machines beyond ``max_replicas``. It never goes below one
machine (the last one is what new ones are cloned from).

Nothing is done while a deploy is running: the GraphQL ``currentReleaseUnprocessed.status``
is ``running``, or a machine of the group is ``updating``/``replacing`` (a temporary error,
so the action is retried later). Restart is ``POST /machines/{id}/restart`` on each started
machine in turn; a retry of a restart that failed or timed out part-way restarts only the
machines not restarted yet. Rollback updates every machine whose image differs from the
previous image (read from ``GET /machines/{id}/versions``) with its full config and that
image, passing ``current_version`` (the machine's ``instance_id``) so a concurrent change is
not clobbered, and ``skip_launch`` for a machine that is not running (stopped, suspended,
created): an update starts a machine otherwise, and a rollback must not wake, and bill,
machines scaled to zero.

Tokens: a token that already starts with ``FlyV1 `` (``fly tokens create``) is sent as is,
any other as ``Bearer <token>``. Errors: connection errors, timeouts, 408, 409 (leased),
412 (version changed), 429 (rate limited; retried ``retries`` times here after its
``Retry-After``, in seconds or an HTTP date, else with backoff; then not again by the bus,
which waits out a ``Retry-After``), 5xx and ``insufficient_capacity``
are temporary; 400, 401, 403, 404 and 422 are permanent. A ``Retry-After`` (or backoff)
longer than ``max_delay`` is not slept here: the action fails at once, temporary, with the
server's delay, and the bus defers the executor's next call until then (a pass must not
sleep an hour on one machine).

This adapter is contract-tested against a local server that implements the documented
Machines API (tests/remediation/fly_contract.py); it has not been run against live Fly.io.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections import Counter
from collections.abc import Awaitable, Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import aiohttp

from policies.markers import InvalidField, Seconds, Secret
from policies.types import Action, Restart, Rollback, Scale, TargetState
from remediation.base import ExecutorError, parse_retry_after

log = logging.getLogger(__name__)

Sleep = Callable[[float], Awaitable[None]]
Machine = dict[str, Any]

_GONE = frozenset({"destroying", "destroyed", "replaced", "migrated", "launch_failed"})
_UP = frozenset({"started", "starting", "restarting"})
_DOWN = frozenset({"stopped", "suspended", "created", "stopping", "suspending"})
_STARTABLE = frozenset({"stopped", "suspended", "created"})
"""Down and settled: the API starts these (one still stopping or suspending it refuses)."""
_DEPLOYING = frozenset({"updating", "replacing"})
_RELEASE_QUERY = (
    "query($appName: String!) { app(name: $appName) "
    "{ currentReleaseUnprocessed { id version status imageRef createdAt } } }"
)


@dataclass(frozen=True, slots=True)
class FlySpec:
    """Config of a ``fly`` executor."""

    app: str = ""
    """Fly app whose machines are managed (for targets not listed in ``apps``)."""
    apps: dict[str, str] = field(default_factory=dict)
    """Target name → Fly app name, when targets live in different apps."""
    token: Secret = field(default_factory=Secret)
    """API token: ``"${FLY_API_TOKEN}"`` or token_file. ``FlyV1 …`` tokens are sent as is."""
    base_url: str = "https://api.machines.dev"
    """Machines API (inside Fly's network: ``http://_api.internal:4280``)."""
    graphql_url: str = "https://api.fly.io/graphql"
    """GraphQL endpoint used only to see whether a deploy is running ("" skips the check)."""
    process_group: str = "app"
    """Process group whose machines are the target's replicas."""
    min_replicas: int = 1
    """Fewest started machines (never below 1)."""
    max_replicas: int = 10
    """Most machines, started or not."""
    timeout: Seconds = 10.0
    """Seconds one API request may take (below ``bus.executor_timeout``, which bounds the
    whole call: a hung request then fails with what the call had done so far)."""
    retries: int = 2
    """Retries of a request answered 429 (rate limited) before a temporary error."""
    backoff: Seconds = 1.0
    """First delay after a 429 when it has no Retry-After; doubles each retry."""
    max_delay: Seconds = 10.0
    """Longest wait before retrying a 429; a longer Retry-After fails the action at once
    (temporary), and the bus makes no call for that target before it."""

    def missing(self) -> Iterator[InvalidField]:
        """Keys it cannot work without (``policies.markers``); a target with no app of
        its own when ``app`` is unset is checked with the targets (``autoscaler.config``)."""
        if not self.token:
            yield InvalidField("token", 'required: an API token ("${FLY_API_TOKEN}" or token_file)')
        if not self.app and not self.apps:
            yield InvalidField("app", "required: the Fly app (or apps, one per target)")

    def app_of(self, target: str) -> str:
        """The Fly app of ``target`` ("" when neither ``apps`` nor ``app`` names one)."""
        return self.apps.get(target, self.app)


def auth_header(token: str) -> str:
    """``FlyV1 …`` tokens unchanged, any other token as ``Bearer <token>``."""
    token = token.strip()
    return token if token.startswith("FlyV1 ") else f"Bearer {token}"


def full_image_ref(machine: Mapping[str, Any]) -> str:
    """``registry/repository[:tag][@digest]`` of a machine, else its ``config.image``."""
    ref = machine.get("image_ref") or {}
    repo = ref.get("repository", "")
    if not repo:
        return _config_image(machine)
    image = f"{ref['registry']}/{repo}" if ref.get("registry") else repo
    if ref.get("tag"):
        image += f":{ref['tag']}"
    if ref.get("digest"):
        image += f"@{ref['digest']}"
    return image


def process_group(machine: Mapping[str, Any]) -> str:
    meta = (machine.get("config") or {}).get("metadata") or {}
    return str(meta.get("fly_process_group") or meta.get("process_group") or "")


class FlyExecutor:
    """Acts on Fly Machines through the Machines REST API (aiohttp)."""

    cancellable = True  # aiohttp only: a call that timed out stops when cancelled
    retry_after_per_target = True  # Fly limits per action and machine, and an app's
    # machines are its own: one app's 429 says nothing of another's

    def __init__(
        self,
        name: str = "fly",
        spec: FlySpec | None = None,
        *,
        bounds: Mapping[str, tuple[int, int]] | None = None,
        sleep: Sleep = asyncio.sleep,
    ) -> None:
        """``bounds`` gives per-target (min, max) from config, over the spec's defaults.
        ``sleep`` waits between retries of a 429; tests pass one that does not sleep."""
        self.name = name
        self.spec = spec or FlySpec()
        self.bounds = dict(bounds or {})
        self.sleep = sleep
        self._session: aiohttp.ClientSession | None = None
        self._rollbacks: dict[str, tuple[str, str, str]] = {}
        """By app, the rollback begun last: ``(deploy_id, from image, to image)``."""
        self._restarts: dict[str, tuple[Restart, list[str]]] = {}
        """By app, the restart under way: the action and the machines it restarted so far."""

    # --- HTTP -------------------------------------------------------------------------

    def _app(self, target: str) -> str:
        app = self.spec.app_of(target)
        if not app:
            raise ExecutorError(f"{self.name}: no Fly app configured for target {target!r}")
        return app

    def _headers(self) -> dict[str, str]:
        if not self.spec.token:
            raise ExecutorError(f"{self.name}: no API token configured")
        return {"Authorization": auth_header(self.spec.token.get())}

    async def _request(
        self,
        method: str,
        url: str,
        *,
        what: str,
        body: Mapping[str, Any] | None = None,
        params: Mapping[str, str] | None = None,
    ) -> Any:
        if self._session is None:
            self._session = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(self.spec.timeout))
        headers = self._headers()
        attempt = 0
        while True:
            try:
                async with self._session.request(
                    method, url, json=body, params=params, headers=headers
                ) as resp:
                    status, text = resp.status, await resp.text()
                    request_id = resp.headers.get("fly-request-id", "")
                    told = parse_retry_after(
                        resp.headers.get("Retry-After"), date=resp.headers.get("Date")
                    )
            except (aiohttp.ClientError, TimeoutError) as exc:
                raise ExecutorError(
                    f"{self.name}: {what}: Fly API unreachable: {type(exc).__name__}: {exc}",
                    temporary=True,
                ) from exc
            if 200 <= status < 300:
                try:
                    return json.loads(text) if text.strip() else None
                except ValueError as exc:
                    raise ExecutorError(
                        f"{self.name}: {what}: HTTP {status} with a body that is not JSON",
                        temporary=True,
                    ) from exc
            if status == 429:
                delay = self.spec.backoff * 2**attempt if told is None else told
                if attempt < self.spec.retries and delay <= self.spec.max_delay:
                    attempt += 1
                    await self.sleep(delay)
                    continue
                # Retried here as far as it goes, or asked to wait longer than a pass should
                # sleep: the bus does not retry it, and makes no call before the Retry-After.
                raise self._error(what, status, text, request_id, delay=told or 0.0, retried=True)
            raise self._error(what, status, text, request_id)

    def _error(
        self,
        what: str,
        status: int,
        text: str,
        request_id: str,
        *,
        delay: float = 0.0,
        retried: bool = False,
    ) -> ExecutorError:
        message, code = text.strip()[:200], ""
        try:
            data = json.loads(text)
        except ValueError:
            data = None
        if isinstance(data, dict):
            message = str(data.get("error") or data.get("message") or message)
            code = str(data.get("status") or "")
        temporary = (
            status in (408, 409, 412, 429) or status >= 500 or code == "insufficient_capacity"
        )
        suffix = f" [{code}]" if code else ""
        rid = f" (fly-request-id {request_id})" if request_id else ""
        wait = f" (Retry-After {delay:g} s)" if delay else ""
        return ExecutorError(
            f"{self.name}: {what}: HTTP {status} {message}{suffix}{rid}{wait}",
            temporary=temporary,
            delay=delay,
            retried=retried,
        )

    def _machines_url(self, app: str, *parts: str) -> str:
        tail = "".join(f"/{p}" for p in parts)
        return f"{self.spec.base_url.rstrip('/')}/v1/apps/{app}/machines{tail}"

    # --- reading ------------------------------------------------------------------------

    async def _group(self, app: str) -> list[Machine]:
        """The process group's live machines on healthy hosts, in ID order."""
        machines = await self._request("GET", self._machines_url(app), what=f"list {app}")
        if not isinstance(machines, list):
            raise ExecutorError(f"{self.name}: list {app}: unexpected answer", temporary=True)
        group = [
            m
            for m in machines
            if isinstance(m, dict)
            and m.get("state") not in _GONE
            and m.get("host_status", "ok") == "ok"
            and process_group(m) == self.spec.process_group
        ]
        return sorted(group, key=lambda m: str(m.get("id", "")))

    async def _release_status(self, app: str) -> str:
        """The current release's status ("running" while a deploy is in progress)."""
        if not self.spec.graphql_url:
            return ""
        try:
            data = await self._request(
                "POST",
                self.spec.graphql_url,
                what=f"release status of {app}",
                body={"query": _RELEASE_QUERY, "variables": {"appName": app}},
            )
            release = ((data or {}).get("data") or {}).get("app") or {}
            return str((release.get("currentReleaseUnprocessed") or {}).get("status") or "")
        except (ExecutorError, AttributeError) as exc:
            # GraphQL is internal and unstable at Fly; machine states still show deploys.
            log.warning("fly: release status of %s unknown: %s", app, exc)
            return ""

    async def _refuse_during_deploy(self, app: str, group: Sequence[Machine], doing: str) -> None:
        busy = [m["id"] for m in group if m.get("state") in _DEPLOYING]
        if busy:
            raise ExecutorError(
                f"{self.name}: {app}: machines {', '.join(busy)} are updating; not {doing} "
                "during a deploy",
                temporary=True,
            )
        if await self._release_status(app) == "running":
            raise ExecutorError(
                f"{self.name}: {app}: a release is being deployed; not {doing} during a deploy",
                temporary=True,
            )

    def _bounds_of(self, target: str) -> tuple[int, int]:
        lo, hi = self.bounds.get(target, (self.spec.min_replicas, self.spec.max_replicas))
        return max(lo, 1), hi

    # --- the executor protocol ------------------------------------------------------------

    async def execute(self, action: Action) -> str:
        if isinstance(action, Scale):
            return await self._scale(action)
        if isinstance(action, Restart):
            return await self._restart(action)
        if isinstance(action, Rollback):
            return await self._rollback(action)
        raise ExecutorError(f"{self.name}: cannot carry out {action.kind} actions")

    async def _scale(self, action: Scale) -> str:
        app = self._app(action.target)
        lo, hi = self._bounds_of(action.target)
        n = action.replicas
        if not lo <= n <= hi:
            raise ExecutorError(
                f"{self.name}: {n} started machines for {app} is outside its bounds [{lo}, {hi}]"
            )
        group = await self._group(app)
        if not group:
            raise ExecutorError(
                f"{self.name}: {app} has no machines in process group "
                f"{self.spec.process_group!r} to scale or clone"
            )
        await self._refuse_during_deploy(app, group, "scaling")
        up = [m for m in group if m.get("state") in _UP]
        down = [m for m in group if m.get("state") in _DOWN]
        started: list[str] = []
        created: list[str] = []
        stopped: list[str] = []
        destroyed: list[str] = []

        def progress() -> str:
            parts = [
                f"{verb} {', '.join(ids)}"
                for verb, ids in (
                    ("started", started), ("created", created),
                    ("stopped", stopped), ("destroyed", destroyed),
                )
                if ids
            ]  # fmt: skip
            return "; ".join(parts)

        try:
            if n > len(up):
                need = n - len(up)
                for m in [m for m in down if m.get("state") in _STARTABLE][:need]:
                    await self._post(app, m["id"], "start")
                    started.append(m["id"])
                source = up[0] if up else group[0]
                room = hi - len(group)
                for _ in range(min(n - len(up) - len(started), room)):
                    created.append(await self._create_clone(app, source))
                short = n - len(up) - len(started) - len(created)
                if short > 0:
                    raise ExecutorError(
                        f"{self.name}: {app}: {short} more started machines needed but "
                        f"{hi} machines exist already (some may still be stopping or suspending)",
                        temporary=True,
                    )
            elif n < len(up):
                # Newest first, started ones only: a machine still starting or restarting
                # cannot be stopped yet (the API refuses it), and will be once it has started.
                settled = [m for m in reversed(up) if m.get("state") == "started"]
                for m in settled[: len(up) - n]:
                    await self._post(app, m["id"], "stop")
                    stopped.append(m["id"])
                short = len(up) - n - len(stopped)
                if short > 0:
                    busy = ", ".join(
                        f"{m['id']} ({m.get('state')})" for m in up if m.get("state") != "started"
                    )
                    raise ExecutorError(
                        f"{self.name}: {app}: {short} more machines to stop but {busy} have "
                        "not started yet; not stopping a machine mid-transition",
                        temporary=True,
                    )
            # Machines beyond the maximum are destroyed; never a started one.
            surplus = len(group) + len(created) - hi
            if surplus > 0:
                idle = [m["id"] for m in down if m["id"] not in started] + stopped
                for machine_id in idle[:surplus]:
                    await self._request(
                        "DELETE",
                        self._machines_url(app, machine_id),
                        params={"force": "true"},
                        what=f"destroy {machine_id}",
                    )
                    destroyed.append(machine_id)
        except ExecutorError as exc:
            if progress():
                raise _after(exc, progress()) from exc
            raise
        done = progress()
        if not done:
            return f"already at {len(up)} started machines"
        return f"started machines {len(up)} -> {n}: {done}"

    async def _post(self, app: str, machine_id: str, verb: str) -> None:
        await self._request(
            "POST", self._machines_url(app, machine_id, verb), what=f"{verb} {machine_id}"
        )

    async def _create_clone(self, app: str, source: Machine) -> str:
        config = dict(source.get("config") or {})
        config["image"] = full_image_ref(source)
        body: dict[str, Any] = {"config": config}
        if source.get("region"):
            body["region"] = source["region"]
        created = await self._request(
            "POST", self._machines_url(app), body=body, what=f"create a clone of {source['id']}"
        )
        return str((created or {}).get("id", "?"))

    async def _restart(self, action: Restart) -> str:
        """Every started machine in turn. A retry of the same action (the bus's, after a
        failure or a timeout part-way) restarts only the machines the earlier tries did not:
        restarting the others again would take them down twice for one restart."""
        app = self._app(action.target)
        group = await self._group(app)
        await self._refuse_during_deploy(app, group, "restarting")
        begun = self._restarts.get(app)
        done = begun[1] if begun is not None and begun[0] is action else []
        self._restarts[app] = (action, done)  # kept up to date, even if cancelled midway
        started = [m for m in group if m.get("state") == "started" and m["id"] not in done]
        if not started and not done:
            raise ExecutorError(f"{self.name}: {app} has no started machines to restart")
        try:
            for m in started:  # one after the other: a rolling restart
                await self._post(app, m["id"], "restart")
                done.append(m["id"])
        except ExecutorError as exc:
            if done:
                raise _after(exc, f"restarted {', '.join(done)}") from exc
            raise
        del self._restarts[app]
        return f"restarted {len(done)} machines: {', '.join(done)}"

    async def _previous_image(self, app: str, machine: Machine) -> str:
        """The newest earlier config's image that differs from the current one."""
        current = _config_image(machine)
        versions = await self._request(
            "GET", self._machines_url(app, machine["id"], "versions"), what="versions"
        )
        for v in versions if isinstance(versions, list) else []:
            image = str(((v or {}).get("user_config") or {}).get("image", ""))
            if image and image != current:
                return image
        return ""

    async def _rollback(self, action: Rollback) -> str:
        """Every machine to the image before the deploy. The images are chosen once per
        deploy: a retry of a rollback that failed part-way finishes it, where choosing again
        would see the good image on most machines and take them back to the bad one."""
        app = self._app(action.target)
        group = await self._group(app)
        if not group:
            raise ExecutorError(f"{self.name}: {app} has no machines to roll back")
        await self._refuse_during_deploy(app, group, "rolling back")
        begun = self._rollbacks.get(app)
        if begun is not None and action.deploy_id and begun[0] == action.deploy_id:
            _, current, previous = begun
        else:
            current = _main_image(group)
            if action.deploy_id and action.deploy_id != _deploy_id(app, group):
                raise ExecutorError(
                    f"{self.name}: {app}: deploy {action.deploy_id!r} is no longer the latest;"
                    " not rolling back a deploy nobody judged"
                )
            source = next(m for m in group if _config_image(m) == current)
            previous = await self._previous_image(app, source)
            if not previous:
                raise ExecutorError(f"{self.name}: {app} has no previous image to roll back to")
            self._rollbacks[app] = (action.deploy_id, current, previous)
        updated: list[str] = []
        try:
            for m in group:
                if await self._roll_back_machine(app, m["id"], previous):
                    updated.append(m["id"])
        except ExecutorError as exc:
            if updated:
                raise _after(exc, f"rolled back {', '.join(updated)}") from exc
            raise
        return f"rollback {current} -> {previous} on {len(updated)} machines"

    async def _roll_back_machine(self, app: str, machine_id: str, previous: str) -> bool:
        """Update one machine to ``previous`` from its config of now; False when it runs
        that image already (a retried rollback)."""
        url = self._machines_url(app, machine_id)
        machine = await self._request("GET", url, what=f"get {machine_id}")
        config = machine.get("config") if isinstance(machine, dict) else None
        if not isinstance(config, dict):
            raise ExecutorError(
                f"{self.name}: get {machine_id}: the answer has no config object", temporary=True
            )
        if config.get("image") == previous:
            return False
        body: dict[str, Any] = {
            "config": {**config, "image": previous},
            "current_version": machine.get("instance_id", ""),
        }
        if machine.get("state") not in _UP:
            body["skip_launch"] = True  # an update starts a stopped machine: keep it so
        await self._request("POST", url, body=body, what=f"update {machine_id}")
        return True

    async def states(self, targets: Sequence[str]) -> Mapping[str, TargetState]:
        out: dict[str, TargetState] = {}
        for target in targets:
            app = self.spec.app_of(target)
            if not app:
                continue
            group = await self._group(app)
            if not group:
                continue
            image = _main_image(group)
            source = next(m for m in group if _config_image(m) == image)
            busy = any(m.get("state") in _DEPLOYING for m in group)
            release = "running" if busy else await self._release_status(app)
            out[target] = TargetState(
                target=target,
                desired_replicas=sum(1 for m in group if m.get("state") in _UP),
                running_replicas=sum(1 for m in group if m.get("state") == "started"),
                image=image,
                previous_image=await self._previous_image(app, source),
                updated_at=_last_update(group),
                update_state="running" if release == "running" else "",
                deploy_id=_deploy_id(app, group),
            )
        return out

    async def aclose(self) -> None:
        session, self._session = self._session, None
        if session is not None:
            await session.close()


def _after(exc: ExecutorError, done: str) -> ExecutorError:
    """``exc`` saying what the call had done before it failed, its retry hints kept."""
    return ExecutorError(
        f"{exc} (after: {done})", temporary=exc.temporary, delay=exc.delay, retried=exc.retried
    )


def _config_image(machine: Mapping[str, Any]) -> str:
    """A machine's ``config.image`` ("" when its config or image is missing or null)."""
    return str((machine.get("config") or {}).get("image") or "")


def _main_image(group: Sequence[Machine]) -> str:
    """The image most machines of the group run (config.image)."""
    counts = Counter(_config_image(m) for m in group)
    return counts.most_common(1)[0][0] if counts else ""


def _deploy_id(app: str, group: Sequence[Machine]) -> str:
    """The release the group runs: ``fly_release_version`` metadata, else its image."""
    for m in group:
        meta = (m.get("config") or {}).get("metadata") or {}
        if meta.get("fly_release_version"):
            return f"{app}@v{meta['fly_release_version']}"
    image = _main_image(group)
    return f"{app}@{image}" if image else ""


def _last_update(group: Sequence[Machine]) -> float:
    """Epoch seconds of the newest ``update`` event of any machine (0 if none)."""
    stamps = [
        float(e.get("timestamp", 0)) / 1000.0
        for m in group
        for e in m.get("events") or []
        if isinstance(e, dict) and e.get("type") == "update"
    ]
    return max(stamps, default=0.0)
