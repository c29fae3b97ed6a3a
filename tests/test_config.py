"""Configuration: the reference file is valid; every problem is reported with its path."""

from __future__ import annotations

import copy
import dataclasses
import datetime
import functools
import math
import re
import subprocess
import sys
import tomllib
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from autoscaler.config import (
    BreakerSettings,
    BusSettings,
    ForecastSettings,
    HttpSettings,
    ServiceSettings,
    SignalSettings,
    TargetSettings,
    config_warnings,
    from_mapping,
    load,
    parse_duration,
    registries,
    rollback_warnings,
    signal_warnings,
    stale_after,
)
from autoscaler.errors import ConfigError
from policies.markers import Secret
from policies.scaling import ScaleBehavior
from policies.types import Notify, Restart, Rollback, Scale, TripBreaker

ROOT = Path(__file__).resolve().parents[1]


def run_cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "autoscaler", *args], capture_output=True, text=True, cwd=ROOT
    )


def test_reference_config_passes_check() -> None:
    result = run_cli("check", "config.toml")
    assert result.returncode == 0, result.stderr
    assert "ok" in result.stdout
    assert result.stderr == ""  # every signal a rule reads is produced by its demo source


def reference_keys() -> dict[str, dict[str, Any]]:
    """config.toml with its commented keys uncommented (``# key = ...``, and the
    ``# ## key = ...`` of secrets); ``<secret>_file`` alternatives left out."""
    lines = []
    for line in (ROOT / "config.toml").read_text(encoding="utf-8").splitlines():
        m = re.match(r"^# (?:## )?(\[.*|[a-z_]+ = .*)$", line)
        line = re.sub(r"\s+##.*$", "", m.group(1)) if m else line
        if not re.match(r"^[a-z_]+_file = ", line):
            lines.append(line)
    return tomllib.loads("\n".join(lines))


def keys_of(cls: type[Any]) -> set[str]:
    return {f.name.removesuffix("_") for f in dataclasses.fields(cls)}


REFERENCE_TABLES: dict[str, type[Any]] = {
    "service": ServiceSettings,
    "http": HttpSettings,
    "bus": BusSettings,
    "bus.breaker": BreakerSettings,
    "forecasting": ForecastSettings,
    "signals.queue_length": SignalSettings,
    "targets.api": TargetSettings,
    "targets.api.behavior": ScaleBehavior,
}
"""The settings tables config.toml shows, by their path in it (one target, one signal)."""


def test_the_reference_config_shows_every_key_of_every_table_and_component_type() -> None:
    # "every key, its unit and default" (README): a key left out is one operators never see
    doc = reference_keys()
    missing = {}
    for path, cls in REFERENCE_TABLES.items():
        table = functools.reduce(lambda t, k: t.get(k, {}), path.split("."), doc)
        missing[path] = keys_of(cls) - set(table)
    for kind, registry in registries().items():
        shown: dict[str, set[str]] = {}
        for table in doc[kind].values():
            shown.setdefault(table["type"], set()).update(table)
        for type_ in registry:
            missing[f"{kind} of type {type_}"] = keys_of(registry[type_].spec) - shown[type_]
    assert {path: keys for path, keys in missing.items() if keys} == {}


# Keys config.toml shows with an example value rather than the default ("with the value the
# platform runbooks use"); policies are the runbook itself and are not compared.
EXAMPLE_VALUES = {
    "signals.queue_length.forecast",
    "targets.api.executor",
    "targets.api.service",
    "sources.prom.url",
    "sources.fly.url",
    "sources.fly.target_label",
    "sources.fly.timeout",
    "sources.fly.retries",
    "sources.dcgm.url",
    "sources.dcgm.target_label",
    "sources.alerts.url",
    "sources.alerts.receiver",
    "executors.fly.app",
    "executors.webhook.url",
    "executors.breakers.names",
}


def test_the_reference_config_shows_each_default_as_the_default() -> None:
    # "Every key is shown with its default" (config.toml): a default changed in the code and
    # not in the file (a notifier's timeout) tells operators a value they do not get
    doc = reference_keys()
    tables: list[tuple[str, type[Any], dict[str, Any]]] = [
        (path, cls, functools.reduce(lambda t, k: t.get(k, {}), path.split("."), doc))
        for path, cls in REFERENCE_TABLES.items()
    ]
    for kind in ("sources", "executors"):
        registry = registries()[kind]
        for name, table in doc[kind].items():
            tables.append((f"{kind}.{name}", registry[table["type"]].spec, table))
    wrong: dict[str, tuple[Any, Any]] = {}
    for path, cls, table in tables:
        for f in dataclasses.fields(cls):
            key = f.name.removesuffix("_")
            if (
                key not in table
                or isinstance(table[key], dict)
                or f"{path}.{key}" in EXAMPLE_VALUES
            ):
                continue  # not shown, a table (examples of its own), or an example value
            default = _default(f)
            if isinstance(default, Secret):
                continue  # shown as its ${ENV} reference
            shown = _shown(table[key])
            if shown != (list(default) if isinstance(default, tuple) else default):
                wrong[f"{path}.{key}"] = (table[key], default)
    for kind, value in doc["bus"]["cooldowns"].items():  # rollback: the runbook's 10m
        if kind != "rollback" and parse_duration(value) != BusSettings().cooldown_of(kind):
            wrong[f"bus.cooldowns.{kind}"] = (value, BusSettings().cooldown_of(kind))
    assert wrong == {}


def _default(f: dataclasses.Field[Any]) -> Any:
    if f.default_factory is not dataclasses.MISSING:
        return f.default_factory()
    return f.default


def _shown(value: Any) -> Any:
    """A value as config.toml writes it, in the unit of its field (durations in seconds)."""
    if isinstance(value, list):
        return [_shown(v) for v in value]
    if isinstance(value, str):
        try:
            return parse_duration(value)
        except ValueError:
            return value
    return value


def test_unknown_key_and_bad_duration_exit_2_naming_both_paths(tmp_path: Path) -> None:
    cfg = tmp_path / "bad.toml"
    cfg.write_text('[service]\ninterval = "soon"\n\n[bus]\ncooldwn = "5m"\n')
    result = run_cli("check", str(cfg))
    assert result.returncode == 2
    assert 'service.interval: expected a duration like "30s"' in result.stderr
    assert "bus.cooldwn: unknown key" in result.stderr
    assert "Traceback" not in result.stderr


def test_missing_secret_file_names_key_and_path_without_traceback(tmp_path: Path) -> None:
    cfg = tmp_path / "c.toml"
    cfg.write_text('[http]\ntoken_file = "/nonexistent/token"\n')
    result = run_cli("check", str(cfg))
    assert result.returncode == 2
    assert "http.token_file: cannot read secret file '/nonexistent/token'" in result.stderr
    assert "Traceback" not in result.stderr


def test_a_value_a_spec_rejects_is_reported_at_its_key_path_and_exits_2(tmp_path: Path) -> None:
    cfg = tmp_path / "c.toml"
    cfg.write_text(
        "[forecasting]\nclip = -1\n\n"
        '[targets.api]\nexecutor = "rec"\n\n'
        '[executors.rec]\ntype = "recording"\n\n'
        '[policies.cpu]\ntype = "target_tracking"\ntolerance = 1.5\n'
    )
    result = run_cli("check", str(cfg))
    assert result.returncode == 2
    assert "forecasting.clip: must be in [0, 1e+06] (0 turns outlier clipping off)" in result.stderr
    assert "policies.cpu.tolerance: must be in [0, 1)" in result.stderr
    assert "Traceback" not in result.stderr


def test_a_clip_so_large_that_its_bound_overflows_is_refused() -> None:
    with pytest.raises(ConfigError, match=r"forecasting.clip: must be in \[0, 1e\+06\]"):
        from_mapping({"forecasting": {"clip": 1e308}})
    assert from_mapping({"forecasting": {"clip": 1e6}}).forecasting.clip == 1e6


def test_a_relation_between_keys_is_reported_at_the_table() -> None:
    with pytest.raises(ConfigError) as err:
        from_mapping({"policies": {"r": {"type": "restart", "signal": ""}}})
    assert err.value.problems == ["policies.r: set a signal, alerts, or both"]


def test_a_bad_value_is_not_reported_again_by_the_check_of_its_spec() -> None:
    with pytest.raises(ConfigError) as err:
        from_mapping({"policies": {"b": {"type": "circuit_breaker", "failure_threshold": "5"}}})
    assert err.value.problems == ["policies.b.failure_threshold: expected an integer, got '5'"]


def predictive_doc(**rule: object) -> dict[str, object]:
    return {
        "forecasting": {"horizon": "5m"},
        "signals": {"queue_length": {"forecast": True}, "cpu": {}},
        "targets": {
            "api": {"executor": "rec", "startup_delay": "2m"},
            "gpu": {"executor": "rec", "startup_delay": "10m"},
        },
        "executors": {"rec": {"type": "recording"}},
        "policies": {"ahead": {"type": "predictive", "signal": "queue_length", **rule}},
    }


def test_a_forecast_rule_on_a_signal_without_forecasts_is_refused() -> None:
    with pytest.raises(ConfigError) as err:
        from_mapping(predictive_doc(signal="cpu", targets=["api"]))
    assert err.value.problems == [
        "policies.ahead.signal: 'cpu' is not forecast: set forecast = true in [signals.cpu]"
    ]


def test_a_forecast_rule_must_not_look_beyond_the_horizon() -> None:
    from_mapping(predictive_doc(targets=["api"]))  # 2 min ahead, 5 min forecast: fine
    with pytest.raises(ConfigError) as err:
        from_mapping(predictive_doc())  # also applies to gpu: its start-up takes 10 min
    assert err.value.problems == [
        (
            "targets.gpu.startup_delay: 600 s, the lead time of policies.ahead, is beyond"
            " forecasting.horizon (300 s): raise the horizon"
        )
    ]
    with pytest.raises(ConfigError) as err:
        from_mapping(predictive_doc(lead_time="6m"))
    assert err.value.problems == [
        "policies.ahead.lead_time: 360 s is beyond forecasting.horizon (300 s)"
    ]


HUNG = "a call against a hung server can take"
AND_THEN = (
    "(each try timing out, with the backoff sleeps between them), not below"
    " bus.executor_timeout"
    ' (30 s): the bus cancels it first, its last tries never happen and it reads "timed'
    ' out"; lower timeout or retries, or raise bus.executor_timeout'
)
NOTIFIERS = {
    "slack": {"type": "slack", "url": "${URL}"},
    "pd": {"type": "pagerduty", "routing_key": "${URL}"},
    "hook": {"type": "webhook", "url": "http://ops.example/hook"},
}


@pytest.mark.parametrize("name", NOTIFIERS)
def test_a_notifier_whose_tries_outlast_the_executor_timeout_is_warned_of(name: str) -> None:
    # 10 s per try, 2 retries, backoff 1 + 2 s: 33 s, and the bus cancels the call at 30 s;
    # a slow server's third try is cut and reads "timed out"
    env = {"URL": "https://hooks.example/x"}
    doc: dict[str, Any] = {"executors": {name: {**NOTIFIERS[name], "timeout": "10s"}}}
    assert config_warnings(from_mapping(doc, env=env)) == [
        f"executors.{name}.timeout: {HUNG} 33 s {AND_THEN}"
    ]
    doc["executors"][name]["timeout"] = "9s"  # 27 + 3: ends with the bus's timeout, not before
    assert config_warnings(from_mapping(doc, env=env)) == [
        f"executors.{name}.timeout: {HUNG} 30 s {AND_THEN}"
    ]
    doc["executors"][name]["timeout"] = "8s"
    assert config_warnings(from_mapping(doc, env=env)) == []
    doc["bus"] = {"executor_timeout": "40s"}  # or give the calls more time
    doc["executors"][name]["timeout"] = "10s"
    assert config_warnings(from_mapping(doc, env=env)) == []


def test_the_notifier_defaults_fit_the_executor_timeout_and_max_delay_ends_the_backoff() -> None:
    env = {"URL": "https://hooks.example/x"}
    assert config_warnings(from_mapping({"executors": NOTIFIERS}, env=env)) == []
    # backoff 1, 2, 4, 8 s: the 8 s sleep is beyond max_delay, so the call gives up after
    # 4 tries (4 x 5 s + 7 s), however many retries are allowed
    hook = {**NOTIFIERS["hook"], "retries": 1000, "max_delay": "5s"}
    assert config_warnings(from_mapping({"executors": {"hook": hook}})) == []
    doc: dict[str, Any] = {"executors": {"hook": hook}, "bus": {"executor_timeout": "27s"}}
    assert config_warnings(from_mapping(doc)) == [
        f"executors.hook.timeout: {HUNG} 27 s {AND_THEN}".replace("(30 s)", "(27 s)")
    ]
    doc["bus"]["executor_timeout"] = "28s"
    assert config_warnings(from_mapping(doc)) == []
    # no timeout at all: aiohttp reads 0 so, and a hung post never ends
    doc = {"executors": {"hook": {**NOTIFIERS["hook"], "timeout": 0}}}
    no_timeout = (
        "executors.hook.timeout: 0 is no timeout: a post to a hung server never ends nor is"
        " retried; the bus cancels the call at bus.executor_timeout (30 s) and it reads"
        ' "timed out": set a timeout'
    )
    assert config_warnings(from_mapping(doc)) == [no_timeout]


def test_a_notify_cooldown_of_zero_is_warned_of_when_notices_go_somewhere() -> None:
    # the dedupe window no longer holds notices: with no cooldown a breaker flapping
    # open / half-open every reset_timeout would page on every transition
    tail = (
        ": 0 paces no notice (the dedupe window does not apply to notices): each one a rule"
        " asks for goes out, a notice for every change of a flapping breaker or degradation"
        ' level; set a notify cooldown ("5m" by default)'
    )
    rec = {"rec": {"type": "recording"}}
    doc: dict[str, Any] = {
        "executors": rec, "bus": {"notify": ["rec"], "cooldowns": {"notify": "0s"}},
    }  # fmt: skip
    assert config_warnings(from_mapping(doc)) == [f"bus.cooldowns.notify{tail}"]
    doc["bus"] = {"notify": ["rec"], "cooldown": 0}  # the default cooldown, not overridden
    assert config_warnings(from_mapping(doc)) == [f"bus.cooldown{tail}"]
    doc["bus"]["cooldowns"] = {"notify": "1m"}
    assert config_warnings(from_mapping(doc)) == []
    # no notifier: nothing is sent, nothing to pace
    assert config_warnings(from_mapping({"bus": {"cooldowns": {"notify": "0s"}}})) == []
    assert config_warnings(from_mapping({"executors": rec, "bus": {"notify": ["rec"]}})) == []


@pytest.mark.parametrize("timeout", [0, "0s"])
def test_an_executor_timeout_of_zero_is_refused(timeout: object) -> None:
    # it passed check, then every executor call that awaited anything failed at once:
    # "temporary: timed out after 0 s"
    with pytest.raises(ConfigError) as err:
        from_mapping({"bus": {"executor_timeout": timeout}})
    assert err.value.problems == ["bus.executor_timeout: must be greater than zero"]
    from_mapping({"bus": {"executor_timeout": "250ms"}})


SOURCES_AND_RULES = """
[sources.prom]
type = "prometheus"
queries = { queue_length = "sum by (service) (queue)", p95_latency_ms = "..." }
[sources.health]
type = "probe"
[targets.api]
executor = "rec"
[executors.rec]
type = "recording"
[policies.cpu]
type = "target_tracking"
metrics = [{ signal = "queue_length", target = 5 }, { signal = "queue_lenght", target = 5 }]
[policies.bad_deploys]
type = "rollback"
breaches = [{ signal = "error_rate", above = 0.05 }]
[policies.restart]
type = "restart"
signal = "probe_failures"
"""


def test_check_warns_of_signals_no_source_produces_and_still_passes(tmp_path: Path) -> None:
    cfg = tmp_path / "c.toml"
    cfg.write_text(SOURCES_AND_RULES)
    result = run_cli("check", str(cfg))
    assert result.returncode == 0, result.stderr
    warnings = [line for line in result.stderr.splitlines() if line.startswith("warning: ")]
    produced = "p95_latency_ms, probe_failures, probe_latency_ms, probe_up, queue_length"
    assert warnings == [
        f"warning: {path}: no source produces {signal!r} (produced: {produced})"
        for path, signal in [
            ("policies.cpu.metrics[1].signal", "queue_lenght"),
            ("policies.bad_deploys.breaches[0].signal", "error_rate"),
        ]
    ]


SWARM_TARGETS = """
[executors.swarm]
type = "swarm"
[executors.rec]
type = "recording"
[targets.api]
executor = "swarm"
[targets.web]
executor = "swarm"
[targets.batch]
executor = "rec"
[policies.bad_deploys]
type = "rollback"
targets = ["web"]
"""


def test_check_warns_of_swarm_targets_no_rollback_policy_covers(tmp_path: Path) -> None:
    # a paused swarm update holds scaling until someone rolls it back: only a rollback
    # policy does, or tells humans
    cfg = tmp_path / "c.toml"
    cfg.write_text(SWARM_TARGETS)
    result = run_cli("check", str(cfg))
    assert result.returncode == 0, result.stderr
    (warning,) = result.stderr.splitlines()  # web is covered, batch is not on swarm
    assert warning == (
        "warning: targets.api: no rollback policy covers it: an update swarm pauses after"
        " failed tasks would hold its scaling until someone rolls it back, and nobody would"
        " be told"
    )
    every = SWARM_TARGETS.replace('targets = ["web"]\n', "")  # a rule for every target
    assert rollback_warnings(from_mapping(tomllib.loads(every))) == []


def test_without_sources_signals_are_not_checked() -> None:
    # replays and backtests bring their own series
    settings = from_mapping(
        {"policies": {"q": {"type": "step", "signal": "anything", "above": 5, "below": 1}}}
    )
    assert signal_warnings(settings) == []


def test_invalid_toml_is_a_config_error(tmp_path: Path) -> None:
    cfg = tmp_path / "c.toml"
    cfg.write_text("[service\n")
    with pytest.raises(ConfigError, match="not valid TOML"):
        load(cfg)


def test_secret_from_env_reference_is_resolved_and_never_shown() -> None:
    s = from_mapping({"http": {"token": "${TOK}"}}, env={"TOK": "s3cret"})
    assert s.http.token.get() == "s3cret"
    assert "s3cret" not in repr(s)


def test_secret_written_in_the_file_is_refused() -> None:
    with pytest.raises(ConfigError, match=r"http.token: secrets may not be written"):
        from_mapping({"http": {"token": "s3cret"}})


def test_secret_from_unset_env_var_is_an_error() -> None:
    with pytest.raises(ConfigError, match=r"http\.token: environment variable NOPE is not set"):
        from_mapping({"http": {"token": "${NOPE}"}}, env={})


def test_secret_file_is_read_relative_to_the_config(tmp_path: Path) -> None:
    (tmp_path / "tok").write_text("abc\n")
    cfg = tmp_path / "c.toml"
    cfg.write_text('[http]\ntoken_file = "tok"\n')
    assert load(cfg).http.token == Secret("abc")


def test_a_component_without_a_key_it_cannot_work_without_is_refused_at_that_key() -> None:
    # each of these used to pass check and fail every action it was given at run time
    doc = {
        "executors": {
            "chat": {"type": "slack"},
            "pager": {"type": "pagerduty", "source": "gpu-host"},
            "hook": {"type": "webhook", "token": "${TOK}"},
            "fly": {"type": "fly"},
        },
        "sources": {"health": {"type": "probe", "checks": {"api": {"timeout": "1s"}}}},
    }
    with pytest.raises(ConfigError) as err:
        from_mapping(doc, env={"TOK": "t"})
    assert [p.split(":")[0] for p in err.value.problems] == [
        "sources.health.checks.api",
        "executors.chat.url",
        "executors.pager.routing_key",
        "executors.hook.url",
        "executors.fly.token",
        "executors.fly.app",
    ]
    assert "executors.chat.url: required: the incoming-webhook URL" in err.value.problems[1]


def test_a_required_secret_whose_file_cannot_be_read_is_reported_once(tmp_path: Path) -> None:
    doc = {"executors": {"chat": {"type": "slack", "url_file": str(tmp_path / "none")}}}
    with pytest.raises(ConfigError) as err:
        from_mapping(doc)
    (problem,) = err.value.problems
    assert problem.startswith("executors.chat.url_file: cannot read secret file")


def test_every_target_of_a_fly_executor_needs_an_app() -> None:
    doc = {
        "targets": {"api": {"executor": "fly"}, "web": {"executor": "fly"}},
        "executors": {"fly": {"type": "fly", "token": "${T}", "apps": {"api": "api-prod"}}},
    }
    with pytest.raises(ConfigError) as err:
        from_mapping(doc, env={"T": "t"})
    assert err.value.problems == [
        "targets.web.executor: executor 'fly' has no Fly app for 'web': set its app, or apps.web"
    ]
    doc["executors"]["fly"]["app"] = "shared"
    assert from_mapping(doc, env={"T": "t"}).targets["web"].executor == "fly"


def test_every_problem_is_collected_at_once() -> None:
    doc = {
        "service": {"interval": -1, "log_level": "loud"},
        "targets": {"api": {"min_replicas": 5, "max_replicas": 2, "executor": "nope"}},
        "policies": {"p": {"type": "step", "above": "high", "targets": ["web"]}},
    }
    with pytest.raises(ConfigError) as err:
        from_mapping(doc)
    problems = "\n".join(err.value.problems)
    for path in (
        "service.interval",
        "service.log_level",
        "targets.api.max_replicas",
        "targets.api.executor",
        "policies.p.above",
        "policies.p.targets[0]",
    ):
        assert path in problems


def test_unknown_component_type_lists_the_known_ones() -> None:
    with pytest.raises(ConfigError, match=r"executors.x.type: expected one of .*recording"):
        from_mapping({"executors": {"x": {"type": "kubernetes"}}})


@pytest.mark.parametrize(
    ("text", "seconds"),
    [
        ("15s", 15),
        ("5m", 300),
        ("1h30m", 5400),
        ("250ms", 0.25),
        ("7d", 604800),
        (30, 30),
        ("2.5", 2.5),
    ],
)
def test_durations_parse(text: object, seconds: float) -> None:
    assert parse_duration(text) == seconds


@pytest.mark.parametrize("text", ["", "soon", "5 m", "-1s", "5x", True, None, "1s2"])
def test_bad_durations_are_refused(text: object) -> None:
    with pytest.raises(ValueError):
        parse_duration(text)


@given(st.integers(min_value=0, max_value=10**6), st.sampled_from(["s", "m", "h"]))
def test_duration_units_scale(n: int, unit: str) -> None:
    assert parse_duration(f"{n}{unit}") == n * {"s": 1, "m": 60, "h": 3600}[unit]


def test_a_circuit_rule_must_name_its_one_target() -> None:
    with pytest.raises(ConfigError) as err:
        from_mapping(
            {"targets": {"api": {}, "db": {}}, "policies": {"b": {"type": "circuit_breaker"}}}
        )
    assert [p.split(":")[0] for p in err.value.problems] == ["policies.b.targets"]


def test_an_unknown_cooldown_kind_exits_2_naming_its_key_path(tmp_path: Path) -> None:
    cfg = tmp_path / "c.toml"
    cfg.write_text('[bus.cooldowns]\nscale-down = "30m"\nscale_up = "1m"\n')
    result = run_cli("check", str(cfg))
    assert result.returncode == 2
    assert (
        "bus.cooldowns.scale-down: unknown cooldown kind (known: scale_up, scale_down, restart,"
        " rollback, notify)"
    ) in result.stderr
    assert "Traceback" not in result.stderr


def test_every_cooldown_kind_of_a_paced_action_is_a_known_key() -> None:
    from autoscaler.config import COOLDOWN_KINDS

    actions = [
        Scale(target="api", replicas=3, current=2),
        Scale(target="api", replicas=1, current=2),
        Restart(target="api"),
        Rollback(target="api"),
        Notify(target="api", summary="x"),
    ]
    kinds = {a.cooldown_kind for a in actions if a.paced}
    assert not TripBreaker.paced
    assert kinds == set(COOLDOWN_KINDS)
    s = from_mapping({"bus": {"cooldowns": {kind: "1m" for kind in COOLDOWN_KINDS}}})
    assert s.bus.cooldowns == dict.fromkeys(COOLDOWN_KINDS, 60.0)


@pytest.mark.parametrize(
    ("doc", "problem"),
    [
        ({"bus": {"rate_limit": 0}}, "bus.rate_limit: must be >= 1 (actions per minute)"),
        ({"bus": {"retries": -3}}, "bus.retries: must be >= 0"),
        (
            {"bus": {"breaker": {"failure_threshold": 0}}},
            "bus.breaker.failure_threshold: must be >= 1",
        ),
        (
            {"bus": {"breaker": {"half_open_trials": 0}}},
            "bus.breaker.half_open_trials: must be >= 1",
        ),
        (
            {"http": {"port": 70000}},
            "http.port: must lie in 0..65535 (0: any free port), got 70000",
        ),
        ({"http": {"port": -1}}, "http.port: must lie in 0..65535 (0: any free port), got -1"),
        (
            {"http": {"request_timeout": "0s"}},
            "http.request_timeout: must be a positive number of seconds",
        ),
        # these were taken as 1 or as "no season/limit" without a word
        ({"forecasting": {"min_history": 0}}, "forecasting.min_history: must be >= 1"),
        ({"forecasting": {"reselect_every": 0}}, "forecasting.reselect_every: must be >= 1"),
        (
            {"executors": {"rec": {"type": "recording", "initial_replicas": -2}}},
            "executors.rec.initial_replicas: must be >= 0",
        ),
        (
            {"executors": {"rec": {"type": "recording", "replicas": {"api": -1}}}},
            "executors.rec.replicas.api: must be >= 0",
        ),
    ],
)
def test_an_out_of_range_number_is_refused_at_its_key_path(
    doc: dict[str, object], problem: str
) -> None:
    with pytest.raises(ConfigError) as err:
        from_mapping(doc)
    assert err.value.problems == [problem]


@pytest.mark.parametrize("name", ["bounds", "breakers", "shutdown"])
def test_a_rule_may_not_take_a_name_the_service_journals_its_own_decisions_under(
    name: str,
) -> None:
    rule = {"type": "step", "signal": "queue_length", "above": 5}
    with pytest.raises(ConfigError) as err:
        from_mapping({"signals": {"queue_length": {}}, "policies": {name: rule}})
    (problem,) = err.value.problems
    assert problem.startswith(f"policies.{name}: {name!r} is the name the journal gives")


def test_the_edges_of_the_ranges_are_accepted() -> None:
    s = from_mapping(
        {
            "bus": {"rate_limit": 1, "retries": 0, "breaker": {"failure_threshold": 1}},
            "http": {"port": 65535},
        }
    )
    assert (s.bus.rate_limit, s.bus.retries, s.http.port) == (1, 0, 65535)
    assert from_mapping({"http": {"port": 0}}).http.port == 0


def test_a_counter_signal_of_a_prometheus_source_exits_2_suggesting_rate(tmp_path: Path) -> None:
    # instant queries are stamped at evaluation time, and a sum over replicas drops on
    # scale-in: the store's counter handling would report fake rates
    cfg = tmp_path / "c.toml"
    cfg.write_text(
        '[signals.requests]\nkind = "counter"\n\n'
        '[sources.prom]\ntype = "prometheus"\n'
        'queries = { requests = "sum by (service) (http_requests_total)" }\n'
    )
    result = run_cli("check", str(cfg))
    assert result.returncode == 2
    assert 'sources.prom.queries.requests: signals.requests.kind is "counter"' in result.stderr
    assert "rate(" in result.stderr and "Traceback" not in result.stderr
    # the same signal as a gauge of rate() is fine, and counters of other sources too
    from_mapping({"sources": {"prom": {"type": "prometheus", "queries": {"requests": "x"}}}})
    from_mapping(
        {
            "signals": {"requests": {"kind": "counter"}},
            "sources": {"demo": {"type": "static", "values": {"api": {"requests": 1.0}}}},
        }
    )


def prometheus_doc(tick_timeout: str, **source: object) -> dict[str, object]:
    queries = {f"q{i}": "up" for i in range(3)}
    return {
        "service": {"tick_timeout": tick_timeout},
        "sources": {"prom": {"type": "prometheus", "queries": queries, **source}},
    }


def test_a_prometheus_source_that_can_outlast_the_tick_timeout_is_refused(
    tmp_path: Path,
) -> None:
    # the engine would cancel the collect before the source counts its own failure
    from_mapping(prometheus_doc("10s"))  # the defaults fit the default tick_timeout
    with pytest.raises(ConfigError) as err:
        from_mapping(prometheus_doc("10s", timeout="5s"))  # 5 s x 2 + 0.2 s
    (problem,) = err.value.problems
    assert problem.startswith("sources.prom.timeout: a tick against a hung server can take 10.2 s")
    assert "service.tick_timeout (10 s)" in problem
    with pytest.raises(ConfigError):  # two rounds of queries: 2 x (4 s x 2 + 0.2 s)
        from_mapping(prometheus_doc("10s", concurrency=2))
    from_mapping(prometheus_doc("21s", timeout="5s", concurrency=2))
    cfg = tmp_path / "c.toml"
    cfg.write_text(
        '[service]\ntick_timeout = "5s"\n\n[sources.p]\ntype = "prometheus"\n'
        'queries = { q = "up" }\n'
    )
    result = run_cli("check", str(cfg))
    assert result.returncode == 2 and "sources.p.timeout: " in result.stderr


def test_a_healthz_max_age_a_pass_can_outlast_is_refused_and_the_default_covers_one() -> None:
    """Between two ticks the last one is up to an interval old, plus the next pass, which
    may wait tick_timeout for its sources: less than that fails /healthz and starves the
    systemd watchdog of a healthy service."""
    with pytest.raises(ConfigError, match=r"http.healthz_max_age: must be at least .* \(25 s\)"):
        from_mapping({"service": {"interval": "15s"}, "http": {"healthz_max_age": "20s"}})
    ok = from_mapping({"service": {"interval": "15s"}, "http": {"healthz_max_age": "25s"}})
    assert stale_after(ok) == 25.0
    assert stale_after(from_mapping({"service": {"interval": "15s"}})) == 45.0  # 3 intervals
    assert stale_after(from_mapping({"service": {"interval": "1s"}})) == 11.0  # 1 s + 10 s


def test_a_config_file_that_is_not_utf8_exits_2_without_traceback(tmp_path: Path) -> None:
    cfg = tmp_path / "c.toml"
    cfg.write_bytes(b'[service]\ninterval = "15s" # \xff\n')  # Latin-1, UTF-16, a binary
    result = run_cli("check", str(cfg))
    assert result.returncode == 2
    assert f"{cfg}: not UTF-8 text" in result.stderr
    assert "Traceback" not in result.stderr


def test_a_secret_file_path_with_a_nul_or_not_utf8_is_a_problem_at_its_key(
    tmp_path: Path,
) -> None:
    with pytest.raises(ConfigError) as err:
        from_mapping({"http": {"token_file": "a\x00b"}}, base_dir=tmp_path)
    (problem,) = err.value.problems
    assert problem.startswith("http.token_file: cannot read secret file")
    (tmp_path / "token").write_bytes(b"\xfftoken")
    with pytest.raises(ConfigError) as err:
        from_mapping({"http": {"token_file": "token"}}, base_dir=tmp_path)
    assert err.value.problems == [
        f"http.token_file: secret file '{tmp_path}/token' is not UTF-8 text"
    ]


def test_an_integer_beyond_any_float_is_a_problem_at_its_key(tmp_path: Path) -> None:
    huge = 10**400  # TOML integers have no limit, and tomllib reads this one
    with pytest.raises(ConfigError) as err:
        from_mapping({"service": {"interval": huge}, "forecasting": {"coverage": huge}})
    assert [p.split(":")[0] for p in err.value.problems] == [
        "service.interval",
        "forecasting.coverage",
    ]
    cfg = tmp_path / "c.toml"
    cfg.write_text(f"[bus]\ncooldown = {huge}\n")
    result = run_cli("check", str(cfg))
    assert result.returncode == 2 and "bus.cooldown: expected a duration" in result.stderr


@pytest.mark.parametrize(
    ("source", "problem"),
    [
        # 2**retries backoffs: the check itself took all memory and never ended
        ({"retries": 10**11}, "sources.prom.retries: must lie in 0..20"),
        ({"retries": -1}, "sources.prom.retries: must lie in 0..20"),
        # aiohttp reads a zero timeout as none: a hung server would hold every tick
        ({"timeout": "0s"}, "sources.prom.timeout: must be greater than zero"),
    ],
)
def test_a_prometheus_source_with_unbounded_retries_or_no_timeout_is_refused(
    source: dict[str, object], problem: str
) -> None:
    with pytest.raises(ConfigError) as err:
        from_mapping(prometheus_doc("10s", **source))
    assert err.value.problems == [problem]
    from_mapping(prometheus_doc("10s", retries=0, timeout="1s"))


def test_a_horizon_or_window_of_too_many_ticks_is_refused_before_it_exhausts_memory() -> None:
    # 1 s ticks: a 6 h horizon is 21,600 steps (the models' memory grows with their square,
    # ~15 GB for three targets); a window of 1e15 s would be a ring of 1e15 slots
    forecast = {"signals": {"q": {"forecast": True}}}
    with pytest.raises(ConfigError) as err:
        from_mapping({"service": {"interval": "1s"}, "forecasting": {"horizon": "6h"}, **forecast})
    (problem,) = err.value.problems
    assert problem.startswith("forecasting.horizon: 21600 s is 21600 ticks of service.interval")
    from_mapping({"service": {"interval": "1s"}, "forecasting": {"horizon": "1h"}, **forecast})
    with pytest.raises(ConfigError) as err:
        from_mapping({"signals": {"q": {"window": 1e15}}})
    (problem,) = err.value.problems
    assert problem.startswith("signals.q.window: a window of 1e+15 s is")
    with pytest.raises(ConfigError) as err:  # the default 6 h window of signals with no table
        from_mapping({"service": {"interval": "1ms"}})
    (problem,) = err.value.problems
    assert problem.startswith("service.interval: a window of 21600 s is 21600000 ticks")


NASTY_VALUES = [
    math.nan,
    math.inf,
    -1,
    0,
    10**30,
    10**400,
    "",
    "\x00",
    "é☃",
    "1e400s",
    "-5s",
    True,
    {},
    {"x": 1},
    [],
    [{}],
    datetime.date(2020, 1, 1),
]


def _key_paths(doc: object, path: tuple[object, ...] = ()) -> list[tuple[object, ...]]:
    if isinstance(doc, dict):
        items: list[tuple[object, object]] = list(doc.items())
    elif isinstance(doc, list):
        items = list(enumerate(doc))
    else:
        return []
    return [p for k, v in items for p in [(*path, k), *_key_paths(v, (*path, k))]]


REFERENCE = tomllib.loads((ROOT / "config.toml").read_text())
REFERENCE["sources"] |= {  # examples commented out in the file, with a check of their own
    "prom": {"type": "prometheus", "queries": {"queue_length": "q"}, "retries": 1},
    "deps": {"type": "probe", "timeout": "2s", "checks": {"api": {"url": "http://a:1/"}}},
}
REFERENCE_PATHS = _key_paths(REFERENCE)


@settings(derandomize=True, max_examples=300, deadline=None)
@given(
    st.lists(
        st.tuples(st.sampled_from(REFERENCE_PATHS), st.sampled_from(NASTY_VALUES)),
        min_size=1,
        max_size=3,
    )
)
def test_any_value_at_any_key_of_the_reference_config_is_accepted_or_a_config_error(
    changes: list[tuple[tuple[object, ...], object]],
) -> None:
    doc = copy.deepcopy(REFERENCE)
    for path, value in changes:
        node: Any = doc
        try:
            for key in path[:-1]:
                node = node[key]
            node[path[-1]] = copy.deepcopy(value)
        except (KeyError, IndexError, TypeError):  # an earlier change replaced a parent
            continue
    try:
        config_warnings(from_mapping(doc))
    except ConfigError:
        pass


@pytest.mark.parametrize(
    ("source", "key"),
    [
        ({"type": "alertmanager"}, "max_fingerprints"),  # was: every delivery a 400 (KeyError)
        ({"type": "alertmanager"}, "max_events"),  # was: every event dropped
        ({"type": "alertmanager"}, "max_body_bytes"),  # was: every delivery a 413
        ({"type": "probe"}, "max_events"),
        ({"type": "prometheus"}, "max_response_bytes"),  # was: every answer "too large"
    ],
)
@pytest.mark.parametrize("value", [0, -1])
def test_a_size_or_count_that_would_refuse_or_drop_everything_is_refused(
    source: dict[str, object], key: str, value: int
) -> None:
    with pytest.raises(ConfigError) as err:
        from_mapping({"sources": {"s": {**source, key: value}}})
    assert err.value.problems == [f"sources.s.{key}: must be at least 1"]
    from_mapping({"sources": {"s": {**source, key: 1}}})


def test_a_secret_from_env_is_stripped_as_one_from_a_file_is() -> None:
    # a value copied from a file (`kubectl create secret --from-file`) keeps its newline
    s = from_mapping({"http": {"token": "${TOK}"}}, env={"TOK": "s3cret\n"})
    assert s.http.token == Secret("s3cret")


@pytest.mark.parametrize("value", ["", " \n"])
def test_a_referenced_secret_that_is_empty_is_refused_at_its_key(
    tmp_path: Path, value: str
) -> None:
    # an empty webhook token would answer 403 to Alertmanager for ever: every alert lost
    with pytest.raises(ConfigError) as err:
        from_mapping({"http": {"token": "${TOK}"}}, env={"TOK": value})
    assert err.value.problems == [
        "http.token: environment variable TOK is empty (leave the key out to go without it)"
    ]
    (tmp_path / "tok").write_text(value)
    cfg = tmp_path / "c.toml"
    cfg.write_text('[http]\ntoken_file = "tok"\n')
    with pytest.raises(ConfigError) as err:
        load(cfg)
    empty = f"secret file '{tmp_path}/tok' is empty (leave the key out to go without it)"
    assert err.value.problems == [f"http.token_file: {empty}"]


def test_a_rule_that_must_hold_longer_than_its_signals_history_is_refused_at_its_key() -> None:
    # the window store keeps `window` of history: a `for` beyond it could never be seen
    # to hold, and the rule would never fire, silently (a replay showed no action at all)
    doc: dict[str, Any] = {
        "signals": {"queue_length": {"window": "1m"}, "error_rate": {"window": "90s"}},
        "policies": {
            "q": {"type": "step", "signal": "queue_length", "above": 10, "for": "2m",
                  "below": 1, "scale_down_for": "1m"},
            "rb": {"type": "rollback",
                   "breaches": [{"signal": "error_rate", "above": 0.05, "for": "1m"},
                                {"signal": "error_rate", "above": 0.2, "for": "5m"}]},
        },
    }  # fmt: skip
    with pytest.raises(ConfigError) as err:
        from_mapping(doc)
    tail = "the rule could never see it hold; raise the window"
    assert err.value.problems == [
        f"policies.{key}: {s} s is longer than the {w} s of history kept ({window}): {tail}"
        for key, s, w, window in [
            ("q.for", 120, 60, "signals.queue_length.window"),
            ("rb.breaches[1].for", 300, 90, "signals.error_rate.window"),
        ]
    ]
    doc["signals"]["queue_length"]["window"] = "2m"
    doc["signals"]["error_rate"]["window"] = "5m"
    from_mapping(doc)
    # a condition the rule does not have needs no history: no `above`, no `for` to hold
    only_down = {"type": "step", "below": 1, "scale_down_for": "1m"}
    from_mapping({"signals": {"queue_length": {"window": "1m"}}, "policies": {"q": only_down}})


@pytest.mark.parametrize("window", ["0s", 0])
def test_a_signal_window_of_zero_is_refused(window: object) -> None:
    with pytest.raises(ConfigError) as err:
        from_mapping({"signals": {"queue_length": {"window": window}}})
    assert err.value.problems == ["signals.queue_length.window: must be greater than zero"]


def test_a_restart_rule_whose_attempts_cannot_fit_its_window_is_warned_of() -> None:
    # a 5-minute restart cooldown lets 2 restarts into a 10-minute window, never 3: the rule
    # restarts every 5 minutes for ever and never pages anyone
    rule = {"type": "restart", "max_attempts": 3, "window": "10m", "backoff": ["2s", "4s"]}
    doc: dict[str, Any] = {"policies": {"r": rule}, "bus": {"cooldowns": {"restart": "5m"}}}
    never = (
        "policies.r: 3 restarts paced by its backoff and bus.cooldowns.restart (300 s) take at"
        " least 604 s, not within its window (600 s): it would restart for ever and never"
        " escalate"
    )
    assert config_warnings(from_mapping(doc)) == [never]
    doc["bus"]["cooldowns"]["restart"] = "4m"  # 240 + 240 + 4 s: escalates at 484 s
    assert config_warnings(from_mapping(doc)) == []
    # the backoff alone can do it too (its last value repeats)
    doc["policies"]["r"]["backoff"] = ["2s", "10m"]
    assert len(config_warnings(from_mapping(doc))) == 1
