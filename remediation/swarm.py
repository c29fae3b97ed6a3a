"""Docker Swarm executor: scale, rolling restart and rollback of swarm services.

Every docker-py call runs in ``asyncio.to_thread`` (the loop never blocks) with the client's
socket timeout. The client negotiates the API version on first use, so the executor can be
built while dockerd is down.

Only services that opted in are touched: the label ``<prefix>.enable=true``. The labels
``<prefix>.min`` / ``<prefix>.max`` override the replica bounds given in config, and
``<prefix>.policy`` names the policy a discovered service wants. Any other
``<prefix>.<key>`` label is a target setting of a discovered service, spelled as in a
``[targets.NAME]`` table (``<prefix>.startup_delay=90s``,
``<prefix>.behavior.scale_down_window=10m``): the engine checks them like config.

Writes use the optimistic-concurrency protocol of the Engine API: read the service, send
the full spec back with the ``Version.Index`` that was read. A write that lost a race answers
HTTP 500 ``update out of sequence``; the executor re-reads and tries again a bounded number
of times. Rollback is the raw ``POST /services/{id}/update?version=V&rollback=previous``
(docker-py has no call for it); the server then restores ``PreviousSpec``.

Scale and restart wait while a rollout is in progress (``UpdateStatus.State`` ``updating``
or ``rollback_started``): a temporary error, so the bus retries later. Rollback does not
wait: rolling back a bad rollout while it runs is the point.

Errors map onto ``ExecutorError``: connection errors, timeouts, 5xx and version conflicts
are temporary; 4xx, an unknown or non-opted-in service, a global-mode service, replicas
outside the bounds and a rollback without a previous spec are permanent.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, TypeVar

import docker
import docker.errors
import docker.utils
import requests.exceptions

from policies.markers import Seconds
from policies.types import Action, Restart, Rollback, Scale, TargetState
from remediation.base import ExecutorError

log = logging.getLogger(__name__)

_T = TypeVar("_T")
_DEPLOYING = frozenset({"updating", "rollback_started"})


@dataclass(frozen=True, slots=True)
class SwarmSpec:
    """Config of a ``swarm`` executor."""

    base_url: str = "unix:///var/run/docker.sock"
    """Docker Engine address (``unix://`` socket or ``tcp://host:port``)."""
    timeout: Seconds = 10.0
    """Seconds one Engine API call may take."""
    api_version: str = "auto"
    """Engine API version; "auto" negotiates with the daemon on first use."""
    services: dict[str, str] = field(default_factory=dict)
    """Target name → swarm service name; a target not listed uses its own name."""
    label_prefix: str = "autoscaler"
    """Labels read from services: ``<prefix>.enable``, ``.min``, ``.max``, ``.policy``."""
    min_replicas: int = 1
    """Lower replica bound when neither the target nor a label gives one."""
    max_replicas: int = 10
    """Upper replica bound when neither the target nor a label gives one."""
    conflict_retries: int = 5
    """Re-reads after an ``update out of sequence`` answer before giving up (temporary)."""


@dataclass(frozen=True, slots=True)
class DiscoveredTarget:
    """A service that opted in with ``<prefix>.enable=true``, with its bounds and policy."""

    service: str
    min_replicas: int
    max_replicas: int
    policy: str = ""
    settings: Mapping[str, str] = field(default_factory=dict)
    """The other ``<prefix>.<key>`` labels, by key: target settings the engine reads."""


class _Conflict(Exception):
    """The write lost a race (HTTP 500 ``update out of sequence``)."""


def parse_time(text: object) -> float:
    """Epoch seconds from a Docker RFC 3339 timestamp (nanoseconds allowed); 0.0 if absent."""
    if not isinstance(text, str) or not text or text.startswith("0001-"):
        return 0.0
    s = text.strip().replace("Z", "+00:00")
    # Python parses at most microseconds: cut the fraction to six digits.
    if "." in s:
        head, rest = s.split(".", 1)
        digits = ""
        while rest and rest[0].isdigit():
            digits, rest = digits + rest[0], rest[1:]
        s = f"{head}.{digits[:6].ljust(6, '0')}{rest}"
    try:
        return datetime.fromisoformat(s).timestamp()
    except ValueError:
        return 0.0


class SwarmExecutor:
    """Acts on Docker Swarm services through the Engine API (docker-py)."""

    def __init__(
        self,
        name: str = "swarm",
        spec: SwarmSpec | None = None,
        *,
        bounds: Mapping[str, tuple[int, int]] | None = None,
        after_read: Callable[[str, Mapping[str, Any]], None] | None = None,
    ) -> None:
        """``bounds`` gives per-target (min, max) from config (labels still override).
        ``after_read`` is a seam for tests: it runs in the worker thread between reading a
        service and writing it back, so a test can provoke a real version conflict."""
        self.name = name
        self.spec = spec or SwarmSpec()
        self.bounds = dict(bounds or {})
        self.after_read = after_read
        self.conflicts = 0
        """Version conflicts seen (and retried) since start: for metrics and tests."""
        self._api: docker.APIClient | None = None
        self._api_lock = threading.Lock()

    # --- plumbing ---------------------------------------------------------------------

    def _client(self) -> docker.APIClient:
        with self._api_lock:
            if self._api is None:
                self._api = docker.APIClient(
                    base_url=self.spec.base_url,
                    version=self.spec.api_version,
                    timeout=self.spec.timeout,
                )
            return self._api

    async def _call(self, what: str, fn: Callable[[], _T]) -> _T:
        try:
            return await asyncio.to_thread(fn)
        except ExecutorError:
            raise
        except docker.errors.NotFound as exc:
            raise ExecutorError(f"{self.name}: {what}: not found ({_explain(exc)})") from exc
        except docker.errors.APIError as exc:
            status = exc.status_code or 0
            temporary = status >= 500 or status in (0, 408, 429)
            raise ExecutorError(
                f"{self.name}: {what}: HTTP {status or '?'} {_explain(exc)}", temporary=temporary
            ) from exc
        except (
            docker.errors.DockerException,
            requests.exceptions.RequestException,
            OSError,
        ) as exc:
            # Connection refused, socket timeouts, version negotiation against a dead daemon.
            raise ExecutorError(
                f"{self.name}: {what}: Docker Engine unreachable: {type(exc).__name__}: {exc}",
                temporary=True,
            ) from exc

    def _service_name(self, target: str) -> str:
        return self.spec.services.get(target, target)

    def _inspect(self, service: str) -> dict[str, Any]:
        result: dict[str, Any] = self._client().inspect_service(service)
        return result

    def _labels(self, svc: Mapping[str, Any]) -> Mapping[str, str]:
        labels = svc.get("Spec", {}).get("Labels") or {}
        return labels if isinstance(labels, dict) else {}

    def _opted_in(self, svc: Mapping[str, Any]) -> bool:
        value = self._labels(svc).get(f"{self.spec.label_prefix}.enable", "")
        return value.strip().lower() == "true"

    def _bounds_of(self, target: str, labels: Mapping[str, str]) -> tuple[int, int]:
        lo, hi = self.bounds.get(target, (self.spec.min_replicas, self.spec.max_replicas))
        p = self.spec.label_prefix
        lo = _int_label(labels, f"{p}.min", lo)
        hi = _int_label(labels, f"{p}.max", hi)
        return lo, hi

    def _write(
        self, svc: Mapping[str, Any], spec: Mapping[str, Any], *, rollback: bool = False
    ) -> None:
        api = self._client()
        params: dict[str, Any] = {"version": svc["Version"]["Index"]}
        if rollback:
            params["rollback"] = "previous"
        url = api._url("/services/{0}/update", svc["ID"])
        resp = api._post_json(url, data=spec, params=params)
        try:
            api._raise_for_status(resp)
        except docker.errors.APIError as exc:
            if exc.status_code == 500 and "update out of sequence" in _explain(exc):
                raise _Conflict(_explain(exc)) from exc
            raise
        finally:
            resp.close()

    def _read_modify_write(
        self,
        target: str,
        change: Callable[[str, dict[str, Any]], tuple[dict[str, Any], str] | str],
        *,
        rollback: bool = False,
    ) -> str:
        """Read the service, let ``change`` check it and return (new spec, detail) or just
        a detail (nothing to write), write it; on a version conflict re-read and retry."""
        service = self._service_name(target)
        conflicts = 0
        while True:
            svc = self._inspect(service)
            if not self._opted_in(svc):
                raise ExecutorError(
                    f"{self.name}: service {service!r} has not opted in "
                    f"(label {self.spec.label_prefix}.enable=true); not touching it"
                )
            result = change(service, svc)
            if isinstance(result, str):
                return result
            spec, detail = result
            if self.after_read is not None:
                self.after_read(service, svc)
            try:
                self._write(svc, spec, rollback=rollback)
            except _Conflict as exc:
                conflicts += 1
                self.conflicts += 1
                if conflicts > self.spec.conflict_retries:
                    raise ExecutorError(
                        f"{self.name}: {service!r}: still out of sequence after "
                        f"{conflicts} attempts ({exc})",
                        temporary=True,
                    ) from exc
                log.info("swarm version conflict on %s, re-reading (%d)", service, conflicts)
                continue
            if conflicts:
                detail += f" (after {conflicts} version conflict{'s' * (conflicts > 1)})"
            return detail

    # --- the executor protocol ----------------------------------------------------------

    async def execute(self, action: Action) -> str:
        if isinstance(action, Scale):
            return await self._call(
                f"scale {action.target}",
                lambda: self._read_modify_write(
                    action.target, lambda s, svc: self._scale_change(action, s, svc)
                ),
            )
        if isinstance(action, Restart):
            return await self._call(
                f"restart {action.target}",
                lambda: self._read_modify_write(action.target, self._restart_change),
            )
        if isinstance(action, Rollback):
            return await self._call(
                f"rollback {action.target}",
                lambda: self._read_modify_write(
                    action.target, lambda s, svc: self._rollback_change(action, s, svc),
                    rollback=True,
                ),
            )  # fmt: skip
        raise ExecutorError(f"{self.name}: cannot carry out {action.kind} actions")

    def _scale_change(
        self, action: Scale, service: str, svc: dict[str, Any]
    ) -> tuple[dict[str, Any], str] | str:
        spec = svc["Spec"]
        mode = spec.get("Mode") or {}
        if "Replicated" not in mode:
            kind = next(iter(mode), "unknown")
            raise ExecutorError(
                f"{self.name}: service {service!r} runs in {kind} mode; only replicated "
                "services can be scaled"
            )
        lo, hi = self._bounds_of(action.target, self._labels(svc))
        if not lo <= action.replicas <= hi:
            raise ExecutorError(
                f"{self.name}: {action.replicas} replicas for {service!r} is outside its "
                f"bounds [{lo}, {hi}]"
            )
        state = (svc.get("UpdateStatus") or {}).get("State", "")
        if state in _DEPLOYING:
            raise ExecutorError(
                f"{self.name}: {service!r} is deploying ({state}); not scaling during a rollout",
                temporary=True,
            )
        current = int(mode["Replicated"].get("Replicas", 0))
        if current == action.replicas:
            return f"already at {current} replicas"
        spec["Mode"] = {"Replicated": {"Replicas": action.replicas}}
        return spec, f"replicas {current} -> {action.replicas}"

    def _restart_change(self, service: str, svc: dict[str, Any]) -> tuple[dict[str, Any], str]:
        state = (svc.get("UpdateStatus") or {}).get("State", "")
        if state in _DEPLOYING:
            raise ExecutorError(
                f"{self.name}: {service!r} is deploying ({state}); not restarting during a rollout",
                temporary=True,
            )
        spec = svc["Spec"]
        template = spec.setdefault("TaskTemplate", {})
        n = int(template.get("ForceUpdate") or 0) + 1
        template["ForceUpdate"] = n
        return spec, f"rolling restart (ForceUpdate={n})"

    def _rollback_change(
        self, action: Rollback, service: str, svc: dict[str, Any]
    ) -> tuple[dict[str, Any], str]:
        if not svc.get("PreviousSpec"):
            raise ExecutorError(f"{self.name}: {service!r} has no previous spec to roll back to")
        current = _deploy_id(svc)
        if action.deploy_id and current and action.deploy_id != current:
            raise ExecutorError(
                f"{self.name}: {service!r}: deploy {action.deploy_id!r} is no longer the "
                f"latest ({current!r}); not rolling back a deploy nobody judged"
            )
        image = _image(svc["Spec"])
        previous = _image(svc["PreviousSpec"])
        return svc["Spec"], f"rollback {image or '?'} -> {previous or '?'}"

    async def states(self, targets: Sequence[str]) -> Mapping[str, TargetState]:
        services = await self._call("list services", self._list_services)
        by_name = {s.get("Spec", {}).get("Name", ""): s for s in services}
        out: dict[str, TargetState] = {}
        for target in targets:
            svc = by_name.get(self._service_name(target))
            if svc is not None:
                out[target] = _target_state(target, svc)
        return out

    def _list_services(self) -> list[dict[str, Any]]:
        api = self._client()
        # ServiceStatus needs API 1.41 (Engine 20.10); older daemons get task counts.
        with_status = docker.utils.version_gte(api.api_version, "1.41")
        result: list[dict[str, Any]] = api.services(status=True) if with_status else api.services()
        for svc in result:
            if "ServiceStatus" not in svc:  # API < 1.41: count running tasks instead
                svc["ServiceStatus"] = self._count_tasks(svc)
        return result

    def _count_tasks(self, svc: Mapping[str, Any]) -> dict[str, int]:
        tasks = self._client().tasks(filters={"service": svc["ID"], "desired-state": "running"})
        running = sum(1 for t in tasks if t.get("Status", {}).get("State") == "running")
        mode = svc.get("Spec", {}).get("Mode", {})
        desired = int(mode.get("Replicated", {}).get("Replicas", len(tasks)))
        return {"RunningTasks": running, "DesiredTasks": desired}

    async def discover(self) -> Mapping[str, DiscoveredTarget]:
        """Services that opted in, by service name, with bounds (labels over defaults)."""
        services = await self._call("list services", lambda: self._client().services())
        out: dict[str, DiscoveredTarget] = {}
        for svc in services:
            if not self._opted_in(svc):
                continue
            name = svc["Spec"]["Name"]
            labels = self._labels(svc)
            lo, hi = self._bounds_of(name, labels)
            p = f"{self.spec.label_prefix}."
            policy = labels.get(f"{p}policy", "")
            settings = {
                k[len(p) :]: v
                for k, v in labels.items()
                if k.startswith(p) and k[len(p) :] not in _OWN_LABELS
            }
            out[name] = DiscoveredTarget(name, lo, hi, policy, settings)
        return out

    async def aclose(self) -> None:
        api, self._api = self._api, None
        if api is not None:
            await asyncio.to_thread(api.close)


def _explain(exc: docker.errors.APIError) -> str:
    text = exc.explanation
    if isinstance(text, bytes):
        text = text.decode(errors="replace")
    return str(text or exc)


_OWN_LABELS = frozenset({"enable", "min", "max", "policy"})


def _int_label(labels: Mapping[str, str], key: str, default: int) -> int:
    raw = labels.get(key)
    if raw is None:
        return default
    try:
        return int(raw.strip())
    except ValueError:
        log.warning("ignoring label %s=%r: not an integer", key, raw)
        return default


def _image(spec: Mapping[str, Any]) -> str:
    image = spec.get("TaskTemplate", {}).get("ContainerSpec", {}).get("Image", "")
    return str(image)


def _deploy_id(svc: Mapping[str, Any]) -> str:
    """Identifies the last rollout: the service ID and when its update started."""
    started = (svc.get("UpdateStatus") or {}).get("StartedAt", "")
    return f"{svc['ID']}@{started}" if started else ""


def _target_state(target: str, svc: Mapping[str, Any]) -> TargetState:
    spec = svc.get("Spec", {})
    status = svc.get("ServiceStatus") or {}
    update = svc.get("UpdateStatus") or {}
    replicated = spec.get("Mode", {}).get("Replicated")
    desired = (
        int(replicated.get("Replicas", 0)) if replicated else int(status.get("DesiredTasks", 0))
    )
    return TargetState(
        target=target,
        desired_replicas=desired,
        running_replicas=int(status.get("RunningTasks", 0)),
        image=_image(spec),
        previous_image=_image(svc.get("PreviousSpec") or {}),
        updated_at=parse_time(update.get("StartedAt")),
        update_state=str(update.get("State", "")),
        deploy_id=_deploy_id(svc),
    )
