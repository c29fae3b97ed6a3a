"""Building decisions: holds, scale actions, and the shared handling of missing data.

Every scaling rule votes (``Decision.recommendation``): when it cannot see its inputs it
votes for the current replica count, so missing data can never let another rule scale in.
After ``fallback_after`` consecutive evaluations without usable data a rule may ask for
``fallback_replicas`` (as KEDA does), but only upwards.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from policies.base import Context
from policies.types import Decision, Scale

_FAILED = "failed_evaluations"


def hold(
    policy: str,
    ctx: Context,
    reason: str,
    inputs: Mapping[str, Any],
    *,
    recommendation: int | None = None,
) -> Decision:
    """A hold (no action), with the replica count it votes for, if any."""
    return Decision(policy, ctx.target, ctx.now, None, reason, dict(inputs), recommendation)


def scale(
    policy: str,
    ctx: Context,
    *,
    replicas: int,
    current: int,
    reason: str,
    inputs: Mapping[str, Any],
) -> Decision:
    """A scale action from ``current`` to ``replicas``."""
    action = Scale(target=ctx.target, replicas=replicas, current=current)
    return Decision(policy, ctx.target, ctx.now, action, reason, dict(inputs), replicas)


def clamp(replicas: int, ctx: Context) -> int:
    """``replicas`` within the target's bounds."""
    return ctx.bounds.clamp(replicas)


def preamble(
    policy: str, ctx: Context, inputs: dict[str, Any]
) -> tuple[int | None, Decision | None]:
    """The current replica count, or the hold to return when a scaling rule cannot act at
    all (no replica count known, or a deploy in progress)."""
    current = ctx.current_replicas()
    if current is None:
        return None, hold(policy, ctx, "no replica count is known for the target, holding", inputs)
    inputs["replicas"] = current
    if ctx.state is not None and ctx.state.deploying:
        reason = f"a deploy is in progress ({ctx.state.update_state}), holding {current} replicas"
        return current, hold(policy, ctx, reason, inputs, recommendation=current)
    return current, None


def fresh(ctx: Context) -> None:
    """Note a successful evaluation: the count of consecutive failed ones starts over."""
    if ctx.memory.get(_FAILED):  # absent means 0: a healthy rule writes nothing
        ctx.memory[_FAILED] = 0


def stale(
    policy: str,
    ctx: Context,
    problem: str,
    inputs: Mapping[str, Any],
    *,
    current: int,
    fallback_replicas: int,
    fallback_after: int,
) -> Decision:
    """Hold on missing or stale data (voting for ``current``), or, after
    ``fallback_after`` consecutive such evaluations, raise to ``fallback_replicas``."""
    failed = int(ctx.memory.get(_FAILED, 0)) + 1
    ctx.memory[_FAILED] = failed
    info = {**inputs, "failed_evaluations": failed}
    if fallback_replicas > 0 and failed >= fallback_after:
        want = clamp(fallback_replicas, ctx)
        if want > current:
            reason = (
                f"stale: {problem} for {failed} evaluations, "
                f"falling back to {want} replicas (from {current})"
            )
            return scale(policy, ctx, replicas=want, current=current, reason=reason, inputs=info)
    reason = f"stale: {problem}, holding {current} replicas"
    return hold(policy, ctx, reason, info, recommendation=current)
