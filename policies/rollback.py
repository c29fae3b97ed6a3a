"""Rollback rule: undo a deploy that breaches its objectives soon after it started.

Within ``window`` seconds after a deploy (``TargetState.updated_at``/``deploy_id``), when
any breach holds for its ``for`` duration — the runbook: error rate > 5 % for 2 minutes or
P95 > 500 ms for 3 minutes — the rule asks for a ``Rollback`` of that deploy and a
``Notify``. The breach must lie entirely after the deploy started (older trouble is not
the deploy's fault), a deploy is rolled back at most once (remembered in ``ctx.memory``),
and a rollback is never itself rolled back. Stale data never triggers a rollback.

An update the orchestrator paused (Docker's ``paused``: swarm stops a rollout whose tasks
fail, the default ``failure_action``) is a failed deploy by the orchestrator's own
verdict: within the window it is rolled back, once, without waiting for a breach. Outside
the window the rule tells humans instead, once per deploy: scaling holds while an update is
paused (a swarm write would resume the failed rollout), so a paused update nobody rolls back
stops scaling for good. A paused rollback (``rollback_paused``) means the rollback itself
failed: it is never rolled back again; the rule tells humans instead, once per rollback.
"""

from __future__ import annotations

from collections.abc import MutableMapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from policies.base import Context
from policies.decisions import hold
from policies.evidence import held_for, read
from policies.markers import InvalidField, Seconds
from policies.types import Action, Decision, Notify, Rollback


@dataclass(frozen=True, slots=True)
class Breach:
    """A condition that condemns a deploy (``[[policies.NAME.breaches]]``)."""

    signal: str = "error_rate"
    """Signal name."""
    above: float = 0.05
    """Breached while the signal is above this value (unit of the signal)."""
    for_: Seconds = 120.0
    """Seconds the breach must hold continuously."""


@dataclass(frozen=True, slots=True)
class RollbackSpec:
    """Config of a ``rollback`` policy."""

    breaches: tuple[Breach, ...] = (
        Breach("error_rate", 0.05, 120.0),
        Breach("p95_latency_ms", 500.0, 180.0),
    )
    """Conditions, any of which rolls back a recent deploy."""
    window: Seconds = 1800.0
    """Seconds after a deploy started during which it may be rolled back."""
    severity: Literal["P0", "P1", "P2", "P3"] = "P1"
    """Severity of the ``Notify`` sent with a rollback."""
    targets: tuple[str, ...] = ()
    """Targets the rule applies to (empty: every target)."""

    def __post_init__(self) -> None:
        if not self.breaches:
            raise InvalidField("breaches", "needs at least one breach")
        if self.window <= 0:
            raise InvalidField("window", "must be > 0")

    def held(self) -> list[tuple[str, str, float]]:
        """``(key, signal, seconds)`` of each breach: the signal's window must cover it."""
        return [(f"breaches[{i}].for", b.signal, b.for_) for i, b in enumerate(self.breaches)]


@dataclass(slots=True)
class RollbackPolicy:
    """Roll back a bad deploy, once."""

    name: str
    spec: RollbackSpec
    targets: Sequence[str] = field(default=())

    def evaluate(self, ctx: Context) -> Sequence[Decision]:
        spec, state = self.spec, ctx.state
        inputs: dict[str, Any] = {"window": spec.window}
        if state is None:
            return [hold(self.name, ctx, "no orchestrator state for the target", inputs)]
        deploy = state.deploy_id
        inputs.update(
            deploy_id=deploy, updated_at=state.updated_at, update_state=state.update_state
        )
        if not deploy or state.updated_at <= 0:
            return [hold(self.name, ctx, "no deploy has been seen for the target", inputs)]
        if state.update_state == "rollback_paused":
            what = f"rollback {deploy} failed and is paused"
            return self._escalate(ctx, deploy, _failed_key(ctx.target, deploy), what, inputs)
        if state.update_state.startswith("rollback"):
            return [hold(self.name, ctx, f"deploy {deploy} is itself a rollback", inputs)]
        restored = ctx.memory.get("restored_image")
        if restored and state.image == restored and ctx.memory.get("rolled_back") != deploy:
            # an orchestrator that reports no rollback state (Fly) shows our rollback as a
            # new deploy of the previous image: rolling that back would restore the bad one
            reason = f"deploy {deploy} runs {restored}, the image a rollback restored"
            return [hold(self.name, ctx, f"{reason}: it is itself a rollback", inputs)]
        if ctx.memory.get("rolled_back") == deploy:
            return [hold(self.name, ctx, f"deploy {deploy} was already rolled back once", inputs)]
        age = ctx.now - state.updated_at
        if age > spec.window:
            reason = (
                f"deploy {deploy} started {age:.0f} s ago, outside the {spec.window:g} s window"
            )
            if state.update_state == "paused":
                # scaling holds until someone rolls it back or fixes it: say so, once
                what = (
                    f"update {deploy} is paused after failed tasks, outside the"
                    f" {spec.window:g} s window, so scaling waits"
                )
                return self._escalate(ctx, deploy, _paused_key(ctx.target, deploy), what, inputs)
            return [hold(self.name, ctx, reason, inputs)]
        if state.update_state == "paused":
            what = "the orchestrator paused the update after failed tasks"
            return self._roll_back(ctx, deploy, what, age, inputs)
        problems: list[str] = []
        checks: dict[str, Any] = {}
        for b in spec.breaches:
            reading = read(ctx, b.signal)
            checks[b.signal] = {
                "value": reading.value if reading.ok else None,
                "above": b.above,
                "for": b.for_,
            }
            if not reading.ok:
                problems.append(reading.problem)
                continue
            if (
                reading.value > b.above
                and age >= b.for_
                and held_for(ctx, b.signal, b.for_, op=">", threshold=b.above)
            ):
                inputs["checks"] = checks
                what = f"{b.signal} {reading.value:g} > {b.above:g} for {b.for_:g} s"
                return self._roll_back(ctx, deploy, what, age, inputs)
        inputs["checks"] = checks
        if problems:
            reason = f"stale: {'; '.join(problems)}, not judging deploy {deploy}"
            return [hold(self.name, ctx, reason, inputs)]
        return [hold(self.name, ctx, f"deploy {deploy} is within its objectives", inputs)]

    def not_carried_out(
        self, memory: MutableMapping[str, Any], action: Action, *, failed: bool
    ) -> None:
        """A rollback the bus skipped (the rollback cooldown after another deploy's, a
        pause) or that failed is not the deploy's one rollback: judge the deploy again.
        Likewise a notice of a failed rollback or a paused update that did not go out is sent
        again."""
        if isinstance(action, Rollback) and memory.get("rolled_back") == action.deploy_id:
            memory.pop("rolled_back")
        escalated = memory.get("escalated")
        if isinstance(action, Notify) and action.dedup_key in (
            _failed_key(action.target, escalated),
            _paused_key(action.target, escalated),
        ):
            memory.pop("escalated")

    def _escalate(
        self, ctx: Context, deploy: str, key: str, what: str, inputs: dict[str, Any]
    ) -> list[Decision]:
        """A paused rollout the rule does not roll back (a failed rollback, an update
        outside the window): tell humans, once per deploy (``key``: the dedup key)."""
        if ctx.memory.get("escalated") == deploy:
            return [hold(self.name, ctx, f"{what}, humans were told", inputs)]
        ctx.memory["escalated"] = deploy
        notify = Notify(
            target=ctx.target,
            severity=self.spec.severity,
            summary=f"{ctx.target}: {what}; it needs a human",
            dedup_key=key,
        )
        reason = f"{what}: not rolling back, tell humans"
        return [Decision(self.name, ctx.target, ctx.now, notify, reason, inputs)]

    def _roll_back(
        self,
        ctx: Context,
        deploy: str,
        what: str,
        age: float,
        inputs: dict[str, Any],
    ) -> list[Decision]:
        ctx.memory["rolled_back"] = deploy
        if ctx.state is not None and ctx.state.previous_image:
            ctx.memory["restored_image"] = ctx.state.previous_image
        reason = f"{what}, {age:.0f} s after deploy {deploy}: roll back"
        summary = f"{ctx.target}: rolling back deploy {deploy} ({what})"
        notify = Notify(
            target=ctx.target,
            severity=self.spec.severity,
            summary=summary,
            dedup_key=f"rollback:{ctx.target}:{deploy}",
        )
        return [
            Decision(
                self.name,
                ctx.target,
                ctx.now,
                Rollback(target=ctx.target, deploy_id=deploy),
                reason,
                inputs,
            ),
            Decision(self.name, ctx.target, ctx.now, notify, f"{reason} and tell humans", inputs),
        ]


def _failed_key(target: str, deploy: object) -> str:
    """Dedup key of the notice that a rollback failed."""
    return f"rollback-failed:{target}:{deploy}"


def _paused_key(target: str, deploy: object) -> str:
    """Dedup key of the notice that an update is paused outside the window."""
    return f"update-paused:{target}:{deploy}"
