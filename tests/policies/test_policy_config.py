"""The reference config's policies region: every type registered, the runbook numbers."""

from __future__ import annotations

from pathlib import Path

import policy_runbook as runbook
import pytest
from policy_kit import ctx

from autoscaler.config import from_mapping, load
from autoscaler.errors import ConfigError
from policies.registry import POLICY_TYPES

CONFIG = Path(__file__).resolve().parents[2] / "config.toml"


def test_every_policy_type_is_registered_and_builds_from_its_defaults():
    assert set(POLICY_TYPES) == {
        "step",
        "target_tracking",
        "predictive",
        "schedule",
        "restart",
        "rollback",
        "circuit_breaker",
        "degradation",
    }
    for name, kind in POLICY_TYPES.items():
        if name == "predictive":
            spec = kind.spec(above=5.0)  # a predictive rule needs a threshold or target
        else:
            spec = kind.spec()
        policy = kind.build(name, spec)
        assert policy.name == name
        assert tuple(policy.targets) == ()
        decisions = policy.evaluate(ctx())
        assert decisions
        assert all(d.policy == name and d.target == "api" for d in decisions)


def test_the_reference_config_holds_the_runbook():
    settings = load(CONFIG)
    p = settings.policies
    assert p["queue"].spec == runbook.QUEUE
    assert p["backlog"].spec == runbook.BACKLOG
    assert p["latency"].spec == runbook.LATENCY
    assert p["restart"].spec == runbook.RESTART
    assert p["rollback"].spec == runbook.ROLLBACK
    assert p["vector_store_breaker"].spec == runbook.VECTOR_STORE
    assert p["gpu_breaker"].spec.failure_threshold == 5
    assert p["degradation"].spec.levels == {"gpu": 2, "vector_store": 3}
    for name, comp in p.items():
        policy = POLICY_TYPES[comp.type].build(name, comp.spec)
        assert set(policy.targets) <= set(settings.targets), name
        for signal in _signals(comp.spec):
            assert signal in settings.signals, f"{name}: no [signals.{signal}] table"


def _signals(spec: object) -> list[str]:
    out = [getattr(spec, "signal", "")]
    out += [m.signal for m in getattr(spec, "metrics", ())]
    out += [b.signal for b in getattr(spec, "breaches", ())]
    return [s for s in out if s]


@pytest.mark.parametrize(
    ("table", "path"),
    [
        ({"type": "step", "above": 1, "below": 5}, "policies.bad.below"),
        ({"type": "step", "scale_down_step": 0}, "policies.bad.scale_down_step"),
        ({"type": "predictive", "mode": "track"}, "policies.bad.target"),
        ({"type": "predictive", "lead_time": -5}, "policies.bad.lead_time"),
        ({"type": "predictive", "max_age": 0}, "policies.bad.max_age"),
        ({"type": "predictive", "fallback_replicas": -1}, "policies.bad.fallback_replicas"),
        ({"type": "predictive", "fallback_after": 0}, "policies.bad.fallback_after"),
        (
            {"type": "schedule", "windows": [{"cron": "99 * * * *"}]},
            "policies.bad.windows[0].cron",
        ),
        ({"type": "schedule", "timezone": "Mars/Olympus"}, "policies.bad.timezone"),
        (
            {"type": "target_tracking", "metrics": [{"per_target": {"api": -1.0}}]},
            "policies.bad.metrics[0].per_target.api",
        ),
        ({"type": "degradation", "levels": {"gpu": 7}}, "policies.bad.levels.gpu"),
        ({"type": "circuit_breaker", "half_open_trials": 0}, "policies.bad.half_open_trials"),
        ({"type": "circuit_breaker", "targets": ["a", "b"]}, "policies.bad.targets"),
        (  # fail_below keeps its default 0.5: no error ratio could be healthy
            {"type": "circuit_breaker", "signal": "error_ratio", "fail_above": 0.05},
            "policies.bad.fail_above",
        ),
        ({"type": "restart", "backoff": ["soon"]}, "policies.bad.backoff[0]"),
        ({"type": "restart", "signal": "", "alerts": []}, "policies.bad"),
        (
            {"type": "rollback", "breaches": [{"signal": "x", "for": "2q"}]},
            "policies.bad.breaches[0].for",
        ),
    ],
)
def test_invalid_policy_tables_are_reported_with_their_key_path(table, path):
    with pytest.raises(ConfigError) as err:
        from_mapping({"policies": {"bad": table}})
    assert any(p.startswith(f"{path}: ") for p in err.value.problems), err.value.problems
