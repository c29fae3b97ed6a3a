"""Combining the scale recommendations of several policies for one target.

Like Kubernetes HPA with several metrics, the largest recommendation wins; the result is
always clamped to ``[min, max]``.
"""

from __future__ import annotations

from collections.abc import Sequence

from policies.base import Bounds
from policies.types import Decision, Scale


def combine_scale(
    target: str, decisions: Sequence[Decision], *, bounds: Bounds, current: int | None, now: float
) -> Decision | None:
    """One scale decision for ``target`` out of the policies' decisions, or ``None`` when
    no policy asked to scale. The largest recommendation wins and is clamped."""
    scales = [d for d in decisions if isinstance(d.action, Scale)]
    if not scales or current is None:
        return None
    best = max(scales, key=lambda d: d.action.replicas if isinstance(d.action, Scale) else 0)
    assert isinstance(best.action, Scale)
    want = min(max(best.action.replicas, bounds.min_replicas), bounds.max_replicas)
    if want == current:
        return Decision(best.policy, target, now, None, f"{best.reason} (already at {want})",
                        best.inputs)
    action = Scale(target=target, replicas=want, current=current)
    return Decision(best.policy, target, now, action, best.reason, best.inputs)
