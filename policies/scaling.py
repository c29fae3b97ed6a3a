"""Combining the scale votes of several policies for one target, with stabilisation.

Every scaling rule votes (``Decision.recommendation``; a ``Scale`` action votes for its
replicas). Like Kubernetes HPA with several metrics, the **largest vote wins**: a rule that
holds, or cannot see its data, votes for the current count, so a target scales in only
when every rule agrees. Then, as the HPA's ``behavior`` does:

- **stabilisation**: scale-down goes to the *highest* combined vote of the last
  ``scale_down_window`` seconds (default 300 s), scale-up to the *lowest* of the last
  ``scale_up_window`` (default 0: immediate); a value that hovers at a threshold cannot
  flap the target, because one high vote holds scale-in for a whole window;
- **rate limits**: at most ``max_scale_up`` replicas added per ``scale_up_period`` and
  ``max_scale_down`` removed per ``scale_down_period``;
- **bounds**: the result is always clamped to ``[min, max]``, last, so nothing keeps a
  target outside its bounds.

The votes and moves are kept in ``memory`` (JSON-serialisable; the engine persists it per
target), so a restart does not shorten a window. Votes are kept as runs: ``[start, vote]``
when the combined vote changes, and a vote stands until a different one replaces it. A
target whose vote is steady therefore leaves its memory untouched (nothing to persist), and
a window counts a replaced vote until the moment it was replaced.
"""

from __future__ import annotations

from collections.abc import MutableMapping, Sequence
from dataclasses import dataclass
from itertools import pairwise
from typing import Any

from policies.base import Bounds
from policies.markers import InvalidField, Seconds
from policies.types import Decision, Scale


@dataclass(frozen=True, slots=True)
class ScaleBehavior:
    """How fast a target may scale (HPA ``behavior``); the default suits the runbook."""

    scale_down_window: Seconds = 300.0
    """Seconds of votes whose highest one a scale-down goes to."""
    scale_up_window: Seconds = 0.0
    """Seconds of votes whose lowest one a scale-up goes to (0: immediate)."""
    max_scale_up: int = 4
    """Most replicas added per ``scale_up_period`` (0: unlimited)."""
    scale_up_period: Seconds = 60.0
    """Seconds over which ``max_scale_up`` is counted."""
    max_scale_down: int = 1
    """Most replicas removed per ``scale_down_period`` (0: unlimited)."""
    scale_down_period: Seconds = 60.0
    """Seconds over which ``max_scale_down`` is counted."""

    def __post_init__(self) -> None:
        if self.max_scale_up < 0:
            raise InvalidField("max_scale_up", "must be >= 0")
        if self.max_scale_down < 0:
            raise InvalidField("max_scale_down", "must be >= 0")


_DEFAULT_BEHAVIOR = ScaleBehavior()


def vote(decision: Decision) -> int | None:
    """The replica count a decision votes for, if any."""
    if isinstance(decision.action, Scale):
        return decision.action.replicas
    return decision.recommendation


def combine_scale(
    target: str,
    decisions: Sequence[Decision],
    *,
    bounds: Bounds,
    current: int | None,
    now: float,
    memory: MutableMapping[str, Any] | None = None,
    behavior: ScaleBehavior | None = None,
) -> Decision | None:
    """One scale decision for ``target`` out of the policies' decisions (holds included:
    their votes count), or ``None`` when the current count is unknown, or no policy asked
    to scale and the target is within bounds. A returned decision with ``action=None`` is
    a hold that explains why a requested scale did not happen; a target outside its bounds
    is always brought back (policy ``"bounds"`` when no rule voted)."""
    if current is None:
        return None
    mem: MutableMapping[str, Any] = {} if memory is None else memory
    how = behavior or _DEFAULT_BEHAVIOR
    # Step limits count replica changes actually seen, not ones decided: a scale that
    # failed or was skipped (cooldown, breaker) must not use up the budget.
    # A change that matches the scale decided last pass is dated at that decision.
    last = mem.get("last_current")
    pending = mem.pop("pending") if "pending" in mem else None
    if last != current:
        if isinstance(last, int):
            at = float(pending[0]) if pending and int(pending[1]) == current else now
            keep = max(how.scale_up_period, how.scale_down_period)
            _remember(mem, "moves", at, current - last, keep=keep)
        mem["last_current"] = current
    votes: list[tuple[int, Decision]] = []
    asked = False
    top = 0  # the largest vote
    for d in decisions:
        if d.target != target:
            continue
        action = d.action  # vote(d), inline: for every rule of every target on every pass
        v = action.replicas if isinstance(action, Scale) else d.recommendation
        if v is None:
            continue
        if not votes or v > top:
            top = v
        votes.append((v, d))
        asked = asked or isinstance(action, Scale)
    if not votes:
        if bounds.clamp(current) == current:
            return None
        # No rule has an opinion, but the bounds are config too: enforce them (as the HPA
        # does for a target scaled by hand past its max).
        want = bounds.clamp(current)
        reason = (
            f"{current} replicas is outside [{bounds.min_replicas}, {bounds.max_replicas}]: "
            f"scale to {want}"
        )
        limits = {"min_replicas": bounds.min_replicas, "max_replicas": bounds.max_replicas}
        action = Scale(target=target, replicas=want, current=current)
        return Decision("bounds", target, now, action, reason, limits, want)
    raw = bounds.clamp(top)
    saved = mem.get("votes")
    # (any run in the past will do, and on nearly every pass the first one is)
    if not (saved and float(saved[0][0]) <= now) and not any(
        float(t) <= now for t, _ in saved or ()
    ):
        # the first vote (a start with no saved memory, a new target, a clock gone back):
        # the window opens with the current count, as the HPA's does, so a scale-in still
        # waits the window out instead of following the very first sample
        mem["votes"] = [[now, current]]
    _record_vote(mem, now, raw, keep=max(how.scale_down_window, how.scale_up_window))
    if not asked and bounds.min_replicas <= current <= bounds.max_replicas:
        return None  # the usual pass: every rule holds

    _, winner = max(votes, key=lambda vd: (vd[0], isinstance(vd[1].action, Scale)))
    runs = [(float(t), int(v)) for t, v in mem["votes"]]
    notes: list[str] = []
    want = current
    up_rec = min(_standing(runs, now, how.scale_up_window)) if how.scale_up_window > 0 else raw
    down_rec = max(_standing(runs, now, how.scale_down_window))
    if want < up_rec:
        want = up_rec
        if up_rec < raw:
            notes.append(f"held to {up_rec} by the {how.scale_up_window:g} s scale-up window")
    if want > down_rec:
        want = down_rec
    if raw < current and want > raw:
        notes.append(f"held at {want} by the highest vote of the last {how.scale_down_window:g} s")
    want = _rate_limit(mem, how, now=now, current=current, want=want, notes=notes)
    clamped = bounds.clamp(want)
    if clamped != want:
        notes.append(f"clamped to [{bounds.min_replicas}, {bounds.max_replicas}]")
        want = clamped

    inputs: dict[str, Any] = {
        "votes": {d.policy: v for v, d in votes},
        "combined": raw,
        "scale_down_floor": down_rec,
        "min_replicas": bounds.min_replicas,
        "max_replicas": bounds.max_replicas,
    }
    reason = winner.reason if not notes else f"{winner.reason}; {'; '.join(notes)}"
    if winner.is_hold and asked:
        reason = f"{winner.policy} votes for {top}: {reason}"
    if want == current:
        return Decision(winner.policy, target, now, None, reason, inputs, current)
    mem["pending"] = [now, want]
    action = Scale(target=target, replicas=want, current=current)
    return Decision(winner.policy, target, now, action, reason, inputs, want)


def _remember(
    mem: MutableMapping[str, Any], key: str, now: float, value: int, *, keep: float
) -> list[tuple[float, int]]:
    """Append ``(now, value)`` to ``mem[key]``, dropping entries older than ``keep``
    seconds (and any from the future: a clock that went back must not pin a window)."""
    old = [(float(t), int(v)) for t, v in mem.get(key, [])]
    kept = [(t, v) for t, v in old if now - keep - 1e-9 < t <= now]
    kept.append((now, value))
    mem[key] = [[t, v] for t, v in kept]
    return kept


def _record_vote(mem: MutableMapping[str, Any], now: float, vote: int, *, keep: float) -> None:
    """Record ``vote`` at ``now`` in the runs ``mem["votes"]`` (``[start, vote]``, a new run
    only when the vote changes), dropping runs replaced ``keep`` seconds ago or more and any
    from the future (a clock that went back must not pin a window)."""
    saved = mem.get("votes")
    if (  # the usual pass: the vote did not change and no run has left the window
        saved
        and saved[-1][1] == vote
        and saved[-1][0] <= now
        and (len(saved) == 1 or saved[1][0] > now - keep + 1e-9)
    ):
        return
    runs = [(float(t), int(v)) for t, v in saved or [] if float(t) <= now]
    if not runs or runs[-1][1] != vote:
        runs.append((now, vote))
    while len(runs) > 1 and runs[1][0] <= now - keep + 1e-9:
        del runs[0]
    mem["votes"] = [[t, v] for t, v in runs]


def _standing(runs: list[tuple[float, int]], now: float, seconds: float) -> list[int]:
    """The votes that stood at some moment of the last ``seconds``: a run counts until the
    next one starts, the last one until ``now``."""
    since = now - seconds + 1e-9
    return [v for (_, v), (end, _) in pairwise(runs) if end > since] + [runs[-1][1]]


def _rate_limit(
    mem: MutableMapping[str, Any],
    how: ScaleBehavior,
    *,
    now: float,
    current: int,
    want: int,
    notes: list[str],
) -> int:
    moves = [(float(t), int(d)) for t, d in mem.get("moves", []) if float(t) <= now]
    if want > current and how.max_scale_up > 0:
        used = sum(d for t, d in moves if d > 0 and t > now - how.scale_up_period)
        limit = current + max(0, how.max_scale_up - used)
        if want > limit:
            notes.append(
                f"limited to {limit} by max_scale_up {how.max_scale_up} per "
                f"{how.scale_up_period:g} s"
            )
            return limit
    if want < current and how.max_scale_down > 0:
        used = -sum(d for t, d in moves if d < 0 and t > now - how.scale_down_period)
        limit = current - max(0, how.max_scale_down - used)
        if want < limit:
            notes.append(
                f"limited to {limit} by max_scale_down {how.max_scale_down} per "
                f"{how.scale_down_period:g} s"
            )
            return limit
    return want
