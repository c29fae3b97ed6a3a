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

Our own writes hide the last deploy: swarmkit's UpdateService sets ``PreviousSpec`` to the
spec it replaces and drops ``UpdateStatus`` on every update that is not a rollback, so after
a scale the deploy (v1 → v2) is gone and ``rollback=previous`` would restore v2. So a scale,
restart or rollback also writes what is known of the last deploy into the service labels
``<prefix>.deploy.{id,started_at,state,previous_image}``, with ``<prefix>.deploy.template``,
a digest of the task template written, ``<prefix>.deploy.replaced``, a digest of the task
template the write replaced, and ``<prefix>.deploy.ours=rollback`` when the write was our
rollback. The labels tell the last deploy while the task template is still the one written
and ``PreviousSpec`` is the spec our write replaced (its template is ``replaced``) or a later
write that kept the template (a scale, ours or a human's, has the same template before and
after). Then a rollout under way is our own restart or rollback, and a rollback writes the
current spec with the recorded previous image (a rolling update; other changes the deploy
made stay) instead of ``rollback=previous``. Any other change of the task template is a new
deploy, and so is a return to the template we wrote (v3 → v2 after our scale on v2: its
``PreviousSpec`` is v3): the labels no longer apply, ``UpdateStatus``/``PreviousSpec`` do.
What swarm keeps cannot tell two human sequences from our writes, and the labels are trusted
again after them: a return to our template followed by a scale (the same spec, previous
spec and no update status as a scale after ours; swarm itself has forgotten that deploy),
and a deploy of the exact template our write replaced followed by a return to ours.

Scale and restart wait while a rollout is in progress (``UpdateStatus.State`` ``updating``
or ``rollback_started``): a temporary error, so the bus retries later. They are refused for
good while an update is ``paused`` or ``rollback_paused`` (swarm stopped it after tasks
failed): any write but a rollback drops the pause and lets the failed rollout go on, and a
restart would roll the failed spec out to every task. Rollback does not wait: rolling back a
bad rollout while it runs is the point. Scaling stays held until someone rolls a paused
update back or fixes it: the rollback policy does, or tells humans; ``states`` logs a
warning once per paused update, for a target that no rollback policy covers.

Errors map onto ``ExecutorError``: connection errors, timeouts, 5xx and version conflicts
are temporary; a restart or rollback whose write got no answer in time is also
``uncertain`` (dockerd may have done it: a retry would roll every task again, so the bus
does not retry it and it keeps its cooldown); 4xx, an unknown or non-opted-in service,
a global-mode service, replicas outside the bounds, a restart of a job (``ReplicatedJob``/
``GlobalJob`` mode: it would run the job again), a paused update, a rollback without a
previous spec (or previous image), a rollback to a previous spec with the same task template
(a write by hand during the rollout restarts it as a deploy of its own) and a rollback of a
deploy that is no longer the latest (or that a later write by hand made swarm forget) are
permanent.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import threading
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime
from typing import Any, NamedTuple, TypeVar

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
_PAUSED = frozenset({"paused", "rollback_paused"})


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


class _Write(NamedTuple):
    """What a change wants written: the spec, the detail to report, whether it is the
    server-side ``rollback=previous`` (which ignores the spec), and whether it starts a
    rollout (done twice, it would roll every task twice)."""

    spec: dict[str, Any]
    detail: str
    rollback: bool = False
    rollout: bool = False


@dataclass(frozen=True, slots=True)
class _Deploy:
    """The last deploy of a service, as ``TargetState`` reports it."""

    id: str = ""
    started_at: str = ""
    state: str = ""
    previous_image: str = ""
    recorded: bool = False
    """From our labels: ``PreviousSpec`` is not the spec before this deploy."""


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
        self._paused: dict[str, str] = {}
        """Target → the paused deploy already logged: one warning per paused deploy."""

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
        self, target: str, change: Callable[[str, dict[str, Any]], _Write | str]
    ) -> str:
        """Read the service, let ``change`` check it and return what to write or just a
        detail (nothing to write), write it; on a version conflict re-read and retry."""
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
            spec, detail, rollback, rollout = result
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
            except requests.exceptions.ReadTimeout as exc:
                if not rollout:
                    raise  # a scale written twice is the same scale: try again
                raise ExecutorError(
                    f"{self.name}: {service!r}: no answer to the write within "
                    f"{self.spec.timeout:g} s; it may have been carried out, so it is not "
                    f"retried ({detail})",
                    temporary=True,  # (a hung dockerd counts toward the executor's breaker)
                    uncertain=True,
                ) from exc
            if conflicts:
                detail += f" (after {conflicts} version conflict{'s' * (conflicts > 1)})"
            return detail

    def _refuse_while_busy(self, what: str, service: str, svc: Mapping[str, Any]) -> None:
        state = (svc.get("UpdateStatus") or {}).get("State", "")
        if state in _DEPLOYING:
            raise ExecutorError(
                f"{self.name}: {service!r} is deploying ({state}); not {what} during a rollout",
                temporary=True,
            )
        if state in _PAUSED:
            # any write but a rollback drops the pause: the failed rollout would go on
            raise ExecutorError(
                f"{self.name}: {service!r}: swarm paused its update after failures ({state}); "
                f"not {what}, which would resume the failed rollout: roll back or fix it first"
            )

    def _record(
        self,
        spec: dict[str, Any],
        deploy: _Deploy,
        *,
        replaced: str,
        rollout: bool,
        ours: str,
    ) -> None:
        """Write ``deploy`` into the labels of ``spec``, bound to its task template and to
        ``replaced``, the digest of the task template the write replaces, so it survives the
        write (which drops ``UpdateStatus`` and replaces ``PreviousSpec``). ``ours``:
        "rollback" when the rollout the write starts is our rollback."""
        labels = spec.get("Labels")
        if not isinstance(labels, dict):
            labels = spec["Labels"] = {}
        p = f"{self.spec.label_prefix}.deploy."
        if not deploy.id and not rollout and p + "template" not in labels:
            return  # nothing to keep, and no rollout of ours to tell from a deploy
        labels.update(
            {
                p + "id": deploy.id,
                p + "started_at": deploy.started_at,
                p + "state": deploy.state,
                p + "previous_image": deploy.previous_image,
                p + "template": _template_digest(spec),
                p + "replaced": replaced,
                p + "ours": ours,
            }
        )

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
                    action.target, lambda s, svc: self._rollback_change(action, s, svc)
                ),
            )
        raise ExecutorError(f"{self.name}: cannot carry out {action.kind} actions")

    def _scale_change(self, action: Scale, service: str, svc: dict[str, Any]) -> _Write | str:
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
        current = int(mode["Replicated"].get("Replicas", 0))
        if current == action.replicas:
            return f"already at {current} replicas"  # no write: nothing a rollout could mind
        self._refuse_while_busy("scaling", service, svc)
        deploy = _deploy(svc, self.spec.label_prefix)
        replaced = _template_digest(spec)
        spec["Mode"] = {"Replicated": {"Replicas": action.replicas}}
        self._record(spec, deploy, replaced=replaced, rollout=False, ours="")
        return _Write(spec, f"replicas {current} -> {action.replicas}")

    def _restart_change(self, service: str, svc: dict[str, Any]) -> _Write:
        kind = next(iter(svc["Spec"].get("Mode") or {}), "")
        if kind.endswith("Job"):
            # ForceUpdate starts a new job iteration: its completed work would run again
            raise ExecutorError(
                f"{self.name}: service {service!r} runs in {kind} mode (it runs to "
                "completion); a restart would run the job again"
            )
        self._refuse_while_busy("restarting", service, svc)
        deploy = _deploy(svc, self.spec.label_prefix)
        spec = svc["Spec"]
        replaced = _template_digest(spec)
        template = spec.setdefault("TaskTemplate", {})
        n = int(template.get("ForceUpdate") or 0) + 1
        template["ForceUpdate"] = n
        self._record(spec, deploy, replaced=replaced, rollout=True, ours="")
        return _Write(spec, f"rolling restart (ForceUpdate={n})", rollout=True)

    def _rollback_change(self, action: Rollback, service: str, svc: dict[str, Any]) -> _Write:
        deploy = _deploy(svc, self.spec.label_prefix)
        if action.deploy_id and action.deploy_id != deploy.id:
            # swarm showing no deploy is no exception: a human's write since (a scale, a
            # label) dropped it, and rollback=previous would only undo that write
            latest = repr(deploy.id) if deploy.id else "swarm shows none since a later write"
            raise ExecutorError(
                f"{self.name}: {service!r}: deploy {action.deploy_id!r} is no longer the "
                f"latest ({latest}); not rolling back a deploy nobody judged"
            )
        spec = svc["Spec"]
        image = _image(spec)
        if not deploy.recorded:
            if not svc.get("PreviousSpec"):
                raise ExecutorError(
                    f"{self.name}: {service!r} has no previous spec to roll back to"
                )
            if _template_digest(svc["PreviousSpec"]) == _template_digest(spec):
                # a write by hand during the rollout (a label, a scale) made swarm restart
                # it as a deploy of its own: the spec before the deploy is lost
                raise ExecutorError(
                    f"{self.name}: {service!r}: the previous spec has the same task template "
                    f"({image or '?'}): a write by hand since the deploy made swarm forget "
                    "the one before it; nothing to roll back to, roll back by hand"
                )
            previous = _image(svc["PreviousSpec"])
            return _Write(
                spec, f"rollback {image or '?'} -> {previous or '?'}", rollback=True, rollout=True
            )
        # A write of ours came after the deploy: PreviousSpec is the spec before that
        # write (the bad image), so restore the recorded image with a rolling update.
        if not deploy.previous_image:
            raise ExecutorError(
                f"{self.name}: {service!r}: no previous image is recorded for the last "
                "deploy; nothing to roll back to"
            )
        replaced = _template_digest(spec)
        spec.setdefault("TaskTemplate", {}).setdefault("ContainerSpec", {})["Image"] = (
            deploy.previous_image
        )
        self._record(
            spec, _Deploy(previous_image=image), replaced=replaced, rollout=True, ours="rollback"
        )
        return _Write(
            spec, f"rollback {image or '?'} -> {deploy.previous_image} (image only)", rollout=True
        )

    async def states(self, targets: Sequence[str]) -> Mapping[str, TargetState]:
        services = await self._call("list services", self._list_services)
        by_name = {s.get("Spec", {}).get("Name", ""): s for s in services}
        out: dict[str, TargetState] = {}
        for target in targets:
            svc = by_name.get(self._service_name(target))
            if svc is not None:
                out[target] = st = _target_state(target, svc, self.spec.label_prefix)
                self._warn_paused(st)
        return out

    def _warn_paused(self, st: TargetState) -> None:
        """Log a paused update once: scaling holds until it is rolled back or fixed, and
        only a rollback policy rolls it back or tells humans (the log is for a target that
        none covers)."""
        if st.update_state not in _PAUSED:
            self._paused.pop(st.target, None)
            return
        if self._paused.get(st.target) == st.deploy_id:
            return
        self._paused[st.target] = st.deploy_id
        log.warning(
            "swarm paused the %s of %s (deploy %s) after failed tasks: scaling and restarts "
            "wait until it is rolled back or fixed",
            "rollback" if st.update_state == "rollback_paused" else "update",
            st.target,
            st.deploy_id,
        )

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
                if k.startswith(p)
                and k[len(p) :] not in _OWN_LABELS
                and not k.startswith(f"{p}deploy.")  # our deploy record, not a setting
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


def _template_digest(spec: Mapping[str, Any]) -> str:
    """Identifies a task template: swarm starts a rollout exactly when it changes."""
    text = json.dumps(spec.get("TaskTemplate") or {}, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()[:16]


_ROLLBACK_STATE = {"updating": "rollback_started", "paused": "rollback_paused"}


def _deploy(svc: Mapping[str, Any], prefix: str = "autoscaler") -> _Deploy:
    """The last deploy: from ``UpdateStatus``/``PreviousSpec``, unless our labels recorded
    it, the task template is still the one we wrote and ``PreviousSpec`` is the spec our
    write replaced or kept its template (see the module docstring)."""
    update = svc.get("UpdateStatus") or {}
    live = _Deploy(
        id=_deploy_id(svc),
        started_at=str(update.get("StartedAt", "")),
        state=str(update.get("State", "")),
        previous_image=_image(svc.get("PreviousSpec") or {}),
    )
    spec = svc.get("Spec") or {}
    labels = spec.get("Labels") or {}
    p = f"{prefix}.deploy."
    if not isinstance(labels, dict) or labels.get(p + "template") != _template_digest(spec):
        return live  # nothing recorded, or the tasks changed since our write: a new deploy
    previous = svc.get("PreviousSpec")
    if not previous or _template_digest(previous) not in (
        labels.get(p + "template"),
        labels.get(p + "replaced"),
    ):
        # the template came back after another one (our template redeployed by a human):
        # a new deploy, whose previous spec swarm knows
        return live
    recorded = _Deploy(
        id=str(labels.get(p + "id", "")),
        started_at=str(labels.get(p + "started_at", "")),
        state=str(labels.get(p + "state", "")),
        previous_image=str(labels.get(p + "previous_image", "")),
        recorded=True,
    )
    if not live.state:  # our write dropped UpdateStatus
        return recorded
    if labels.get(p + "ours") == "rollback":
        # the rollout is our rollback: a deploy of its own, as swarm's rollback would be
        state = _ROLLBACK_STATE.get(live.state, f"rollback_{live.state}")
        return replace(live, state=state, previous_image=recorded.previous_image, recorded=True)
    if live.state.startswith("rollback"):
        return live  # someone's rollback=previous: PreviousSpec is the truth again
    # the rollout is our restart: the deploy is still the recorded one, and it shows
    # while the restart runs or is paused (a paused restart is a failing image)
    if live.state in ("updating", "paused"):
        return replace(recorded, state=live.state)
    return recorded


def _target_state(target: str, svc: Mapping[str, Any], prefix: str = "autoscaler") -> TargetState:
    spec = svc.get("Spec", {})
    status = svc.get("ServiceStatus") or {}
    replicated = spec.get("Mode", {}).get("Replicated")
    desired = (
        int(replicated.get("Replicas", 0)) if replicated else int(status.get("DesiredTasks", 0))
    )
    deploy = _deploy(svc, prefix)
    return TargetState(
        target=target,
        desired_replicas=desired,
        running_replicas=int(status.get("RunningTasks", 0)),
        image=_image(spec),
        previous_image=deploy.previous_image,
        updated_at=parse_time(deploy.started_at),
        update_state=deploy.state,
        deploy_id=deploy.id,
    )
