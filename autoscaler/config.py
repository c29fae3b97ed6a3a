"""Configuration: ``config.toml`` → ``tomllib`` → frozen, typed settings.

Every table maps onto a frozen dataclass (here, or the spec of a source, executor or
policy type in its own package). The loader walks the dataclass fields, so a spec only has
to declare typed fields with defaults:

- unknown keys are errors; every problem is collected and reported with its key path
  (``policies.api.scale_down_for: expected a duration like "30s", got "soon"``);
- ``Seconds`` fields accept ``"15s"``, ``"5m"``, ``"1h30m"``, ``"250ms"`` or a number;
- ``Secret`` fields accept only a ``"${ENV_VAR}"`` reference or a sibling ``<key>_file``
  path (Docker secrets); a missing variable or file is an error naming key and path, and
  so is an empty one (the value is stripped of surrounding whitespace, a file's newline);
- a field named ``for_`` is spelled ``for`` in TOML;
- a spec's ``__post_init__`` checks values: an ``InvalidField`` is reported at its key's
  path, a plain ``ValueError`` (a relation between keys) at the table's path;
- ``sources``, ``executors`` and ``policies`` are tables of named components whose ``type``
  selects the spec dataclass from the registry of their package.

Settings are passed in explicitly; nothing here reads the environment except through the
``env`` mapping given to ``load``.
"""

from __future__ import annotations

import dataclasses
import math
import re
import tomllib
import types
import typing
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, TypeVar

from autoscaler.errors import ConfigError
from forecasting.registry import MODEL_TYPES
from policies.markers import InvalidField, Seconds, Secret
from policies.scaling import ScaleBehavior

# --- settings grouped by concern --------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ServiceSettings:
    """``[service]``: the loop itself."""

    interval: Seconds = 15.0
    """Seconds between ticks."""
    dry_run: bool = False
    """Decide and journal as usual, but never call executors."""
    state_path: str = "autoscaler.db"
    """SQLite file holding the journal and all state that changes behaviour."""
    journal_retention: Seconds = 30 * 86400.0
    """Journal rows older than this are deleted, hourly (0: keep them all). State is kept."""
    tick_timeout: Seconds = 10.0
    """Seconds a source may take to answer within one tick."""
    shutdown_timeout: Seconds = 10.0
    """Seconds in-flight actions get to finish on SIGTERM/SIGINT."""
    journal_holds: Literal["changes", "all", "none"] = "changes"
    """Which hold decisions to journal: "changes" (when the reason changes, numbers aside),
    "all", or "none"."""
    log_level: Literal["debug", "info", "warning", "error"] = "info"
    """Log level of the service."""
    log_format: Literal["json", "text"] = "json"
    """One JSON object per line, or human-readable text."""


@dataclass(frozen=True, slots=True)
class HttpSettings:
    """``[http]``: health, readiness, metrics and the control API."""

    enabled: bool = True
    """Serve HTTP at all."""
    host: str = "127.0.0.1"
    """Address to bind; loopback by default."""
    port: int = 8080
    """Port to bind."""
    token: Secret = field(default_factory=Secret)
    """Bearer token for POST /v1/pause and /v1/resume; unset disables them. (The Alertmanager
    webhook checks its own ``sources.<name>.token``.)"""
    healthz_max_age: Seconds = 0.0
    """/healthz fails (and the systemd watchdog stops being pinged) when the last tick is
    older than this; 0: three intervals, at least an interval plus ``tick_timeout``."""
    request_timeout: Seconds = 30.0
    """Seconds a client has to send a request's headers (and the Alertmanager webhook's
    body); also how long an idle keep-alive connection is kept. A stalled or trickling
    client is cut off then, so it cannot hold connections open (slowloris)."""

    def __post_init__(self) -> None:
        if not 0 <= self.port <= 65535:
            raise InvalidField("port", f"must lie in 0..65535 (0: any free port), got {self.port}")
        if not 0 < self.request_timeout < math.inf:
            raise InvalidField("request_timeout", "must be a positive number of seconds")


@dataclass(frozen=True, slots=True)
class BreakerSettings:
    """``[bus.breaker]``: the circuit breaker in front of every executor."""

    failure_threshold: int = 5
    """Consecutive failures that open the breaker."""
    reset_timeout: Seconds = 30.0
    """Seconds the breaker stays open before half-open trials."""
    half_open_trials: int = 3
    """Successful trial calls that close it again."""

    def __post_init__(self) -> None:
        if self.failure_threshold < 1:
            raise InvalidField("failure_threshold", "must be >= 1")
        if self.half_open_trials < 1:
            raise InvalidField("half_open_trials", "must be >= 1")


COOLDOWN_KINDS = ("scale_up", "scale_down", "restart", "rollback", "notify")
"""The keys of ``[bus.cooldowns]``: the cooldown kinds of paced actions (``TripBreaker`` is
not paced)."""


@dataclass(frozen=True, slots=True)
class BusSettings:
    """``[bus]``: how actions reach executors."""

    cooldown: Seconds = 300.0
    """Default seconds between two actions of the same kind on the same target (restarts
    excepted: see ``cooldown_of``)."""
    cooldowns: dict[str, Seconds] = field(default_factory=dict)
    """Per action kind overrides of ``cooldown``: scale_up, scale_down, restart, rollback,
    notify."""
    rate_limit: int = 30
    """Most actions executed per minute across all targets."""
    executor_timeout: Seconds = 30.0
    """Seconds one executor call may take (above 0)."""
    retries: int = 2
    """Retries of a temporary executor failure within a tick."""
    retry_backoff: Seconds = 1.0
    """First retry delay in seconds; doubles each retry, with jitter."""
    dedupe_window: Seconds = 300.0
    """Seconds an identical action (same idempotency key) is not repeated."""
    notify: tuple[str, ...] = ()
    """Executors that receive Notify actions (for example ["slack", "pagerduty"])."""
    breakers: str = ""
    """Executor that publishes TripBreaker actions (empty: recorded only)."""
    breaker: BreakerSettings = field(default_factory=BreakerSettings)

    def __post_init__(self) -> None:
        for kind in self.cooldowns:
            if kind not in COOLDOWN_KINDS:
                raise InvalidField(
                    f"cooldowns.{kind}",
                    f"unknown cooldown kind (known: {', '.join(COOLDOWN_KINDS)})",
                )
        if self.rate_limit < 1:
            raise InvalidField("rate_limit", "must be >= 1 (actions per minute)")
        if self.executor_timeout <= 0:  # every call that awaits anything would time out
            raise InvalidField("executor_timeout", "must be greater than zero")
        if self.retries < 0:
            raise InvalidField("retries", "must be >= 0")

    def cooldown_of(self, kind: str) -> float:
        """The cooldown of an action kind: ``cooldowns[kind]``, else ``cooldown``, except
        that restarts have none unless ``cooldowns.restart`` is set: the restart rule paces
        them (backoff 2, 4, 8, 16 s, then escalation), and a 5-minute cooldown would hold
        its second and third attempts back that long (skipped, they are asked for again)."""
        if kind in self.cooldowns:
            return self.cooldowns[kind]
        return 0.0 if kind == "restart" else self.cooldown


@dataclass(frozen=True, slots=True)
class SignalSettings:
    """``[signals.NAME]``: how a signal is stored and judged."""

    max_age: Seconds = 60.0
    """A sample older than this is stale: policies hold instead of acting."""
    kind: Literal["gauge", "counter"] = "gauge"
    """Counters are turned into per-second rates before storing and forecasting. Not for
    a signal of a ``prometheus`` source (check refuses it): query ``rate()`` there."""
    forecast: bool = False
    """Forecast this signal every tick (needed by predictive rules)."""
    window: Seconds = 21600.0
    """Seconds of history kept per target (ring buffer on the tick grid); a target with no
    sample for longer than this plus ``max_age`` is forgotten."""


@dataclass(frozen=True, slots=True)
class TargetSettings:
    """``[targets.NAME]``: a service the autoscaler manages."""

    executor: str = ""
    """Executor that acts on this target (a key of [executors])."""
    service: str = ""
    """Name of the service in the orchestrator; defaults to the target name."""
    min_replicas: int = 2
    """Never fewer replicas than this."""
    max_replicas: int = 10
    """Never more replicas than this."""
    startup_delay: Seconds = 60.0
    """Seconds a new replica needs to become ready; the lead time of predictive rules."""
    behavior: ScaleBehavior = field(default_factory=ScaleBehavior)
    """``[targets.NAME.behavior]``: stabilisation windows and step limits (HPA behavior)."""


MAX_CLIP = 1e6
"""Largest ``forecasting.clip``: a million typical errors already clips nothing."""


@dataclass(frozen=True, slots=True)
class ForecastSettings:
    """``[forecasting]``: the models behind predictive rules."""

    model: str = "auto"
    """Model for every forecast signal: auto, persistence, seasonal-naive, seasonal-change,
    holt-winters, robust-trend."""
    horizon: Seconds = 300.0
    """How far ahead forecasts reach (at least the longest startup_delay)."""
    coverage: float = 0.9
    """Nominal coverage of the prediction interval (0.9: the 5th to 95th percentile)."""
    season: Seconds = 86400.0
    """Seasonal cycle (daily); seasonal models use it once two cycles have been seen.
    0: ``holt-winters`` has none; the models that need one (``auto`` among them) keep a
    daily cycle."""
    nonnegative: bool = True
    """Negative samples are treated as missing and forecasts are clipped at zero."""
    min_history: int = 8
    """Valid samples a target needs before it gets a forecast."""
    max_gap: Seconds = 300.0
    """No forecast for a target whose last valid sample is older than this (0: no limit)."""
    reselect_every: int = 40
    """Ticks between two choices of model per target by `auto` (not on every tick)."""
    clip: float = 5.0
    """A sample further than this many typical errors from its forecast is clipped as an
    outlier (its first sample only: a run in one direction is a level shift); 0: off."""

    def __post_init__(self) -> None:
        if self.model not in MODEL_TYPES:
            raise InvalidField(
                "model", f"unknown model {self.model!r} (known: {', '.join(MODEL_TYPES)})"
            )
        if not 0 < self.coverage < 1:
            raise InvalidField("coverage", "must lie between 0 and 1 (0.9: a 90 % interval)")
        if not 0 <= self.clip <= MAX_CLIP:
            # (beyond, the clipping bound overflows to inf and numpy warns of it every pass)
            raise InvalidField(
                "clip", f"must be in [0, {MAX_CLIP:g}] (0 turns outlier clipping off)"
            )
        if self.min_history < 1:
            raise InvalidField("min_history", "must be >= 1")
        if self.reselect_every < 1:
            raise InvalidField("reselect_every", "must be >= 1")


@dataclass(frozen=True, slots=True)
class Component:
    """A named source, executor or policy: its ``type`` and its parsed spec."""

    type: str
    spec: Any


@dataclass(frozen=True, slots=True)
class Settings:
    """The whole configuration."""

    service: ServiceSettings = field(default_factory=ServiceSettings)
    http: HttpSettings = field(default_factory=HttpSettings)
    bus: BusSettings = field(default_factory=BusSettings)
    forecasting: ForecastSettings = field(default_factory=ForecastSettings)
    signals: dict[str, SignalSettings] = field(default_factory=dict)
    targets: dict[str, TargetSettings] = field(default_factory=dict)
    sources: dict[str, Component] = field(default_factory=dict)
    executors: dict[str, Component] = field(default_factory=dict)
    policies: dict[str, Component] = field(default_factory=dict)

    def signal(self, name: str) -> SignalSettings:
        """Settings of a signal (defaults when it has no table)."""
        return self.signals.get(name) or SignalSettings()


# --- durations --------------------------------------------------------------------------

_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0, "w": 604800.0}
_DURATION = re.compile(r"(\d+(?:\.\d+)?)(ms|s|m|h|d|w)")


def parse_duration(value: object) -> float:
    """Seconds from ``"15s"``, ``"5m"``, ``"1h30m"``, ``"250ms"``, ``"7d"`` or a number.

    Raises ``ValueError`` for anything else, including negative or non-finite values.
    """
    if isinstance(value, bool):
        raise ValueError("expected a duration")
    if isinstance(value, int | float):
        try:
            seconds = float(value)
        except OverflowError:  # an integer beyond any float (TOML integers have no limit)
            raise ValueError("expected a duration") from None
    elif isinstance(value, str):
        text = value.strip()
        try:
            seconds = float(text)
        except ValueError:
            pos, seconds = 0, 0.0
            for m in _DURATION.finditer(text):
                if m.start() != pos:
                    break
                seconds += float(m.group(1)) * _UNITS[m.group(2)]
                pos = m.end()
            if pos != len(text) or not text:
                raise ValueError("expected a duration") from None
    else:
        raise ValueError("expected a duration")
    if not math.isfinite(seconds) or seconds < 0:
        raise ValueError("expected a duration")
    return seconds


# --- the generic loader -----------------------------------------------------------------

_ENV_REF = re.compile(r"^\$\{([A-Za-z_][A-Za-z0-9_]*)\}$")
_LEAVE_OUT = " (leave the key out to go without it)"
"""A secret that is referenced but empty is refused: an empty token would quietly turn an
endpoint off (403 to every caller) where the operator meant to protect it."""
_COMPONENT_TABLES = ("sources", "executors", "policies")


class _Loader:
    def __init__(self, env: Mapping[str, str], base_dir: Path) -> None:
        self.env = env
        self.base_dir = base_dir
        self.problems: list[str] = []

    def problem(self, path: str, message: str) -> None:
        if not self.clean(path):
            # One message per key: a bad value is not reported again by cross-checks, nor a
            # table whose bad key left a default in its place (a check with neither url nor
            # tcp after a bad url).
            return
        self.problems.append(f"{path}: {message}" if path else message)

    def clean(self, path: str) -> bool:
        """No problem at or under ``path`` (a table that failed to parse holds defaults)."""
        return not any(p.startswith((f"{path}: ", f"{path}.", f"{path}[")) for p in self.problems)

    def dataclass_(self, cls: type[Any], data: object, path: str) -> Any:
        if not isinstance(data, dict):
            self.problem(path, f"expected a table, got {_show(data)}")
            return cls()
        hints = typing.get_type_hints(cls, include_extras=True)
        fields = {f.name: f for f in dataclasses.fields(cls)}
        keys = {_toml_key(name): name for name in fields}
        secret_files = {f"{_toml_key(n)}_file": n for n in fields if _is_secret(hints[n])}
        values: dict[str, Any] = {}
        for key, raw in data.items():
            sub = f"{path}.{key}" if path else key
            if key in keys:
                name = keys[key]
                values[name] = self.value(hints[name], raw, sub)
            elif key in secret_files:
                name = secret_files[key]
                values[name] = self.secret_file(raw, sub)
            else:
                self.problem(sub, "unknown key")
        try:
            spec = cls(**values)
        except InvalidField as exc:
            self.problem(f"{path}.{exc.key}" if path else exc.key, exc.message)
            return cls()
        except (TypeError, ValueError) as exc:
            self.problem(path, str(exc))
            return cls()
        missing = getattr(spec, "missing", None)
        for unset in missing() if callable(missing) else ():
            key = f"{path}.{unset.key}" if path else unset.key
            if self.clean(key) and self.clean(f"{key}_file"):  # not a value that failed
                self.problem(key, unset.message)
        return spec

    def value(self, hint: Any, raw: object, path: str) -> Any:
        origin = typing.get_origin(hint)
        args = typing.get_args(hint)
        if origin is typing.Annotated:
            base, *meta = args
            if "seconds" in meta:
                try:
                    return parse_duration(raw)
                except ValueError:
                    self.problem(path, f'expected a duration like "30s" or "5m", got {_show(raw)}')
                    return 0.0
            return self.value(base, raw, path)
        if hint is Secret:
            return self.secret(raw, path)
        if origin is Literal:
            if raw in args:
                return raw
            choices = ", ".join(repr(a) for a in args)
            self.problem(path, f"expected one of {choices}, got {_show(raw)}")
            return args[0]
        if origin in (types.UnionType, typing.Union):
            if raw is None and type(None) in args:
                return None
            inner = [a for a in args if a is not type(None)]
            return self.value(inner[0], raw, path)
        if hint is bool:
            if isinstance(raw, bool):
                return raw
            self.problem(path, f"expected true or false, got {_show(raw)}")
            return False
        if hint is int:
            if isinstance(raw, int) and not isinstance(raw, bool):
                return raw
            self.problem(path, f"expected an integer, got {_show(raw)}")
            return 0
        if hint is float:
            if isinstance(raw, int | float) and not isinstance(raw, bool) and _finite(raw):
                return float(raw)
            self.problem(path, f"expected a number, got {_show(raw)}")
            return 0.0
        if hint is str:
            if isinstance(raw, str):
                return raw
            self.problem(path, f"expected a string, got {_show(raw)}")
            return ""
        if origin in (tuple, list):
            if not isinstance(raw, list):
                self.problem(path, f"expected a list, got {_show(raw)}")
                return ()
            item = args[0] if args else Any
            items = [self.value(item, v, f"{path}[{i}]") for i, v in enumerate(raw)]
            return tuple(items) if origin is tuple else items
        if origin is dict:
            if not isinstance(raw, dict):
                self.problem(path, f"expected a table, got {_show(raw)}")
                return {}
            return {k: self.value(args[1], v, f"{path}.{k}") for k, v in raw.items()}
        if dataclasses.is_dataclass(hint) and isinstance(hint, type):
            return self.dataclass_(hint, raw, path)
        if hint is Any or hint is object:
            return raw
        self.problem(path, f"unsupported setting type {hint!r}")
        return raw

    def secret(self, raw: object, path: str) -> Secret:
        if not isinstance(raw, str):
            self.problem(path, f"expected a string, got {_show(raw)}")
            return Secret()
        m = _ENV_REF.match(raw)
        if not m:
            self.problem(
                path,
                'secrets may not be written in the file: use "${ENV_VAR}" or '
                f"{path.rsplit('.', 1)[-1]}_file",
            )
            return Secret()
        if m.group(1) not in self.env:
            self.problem(path, f"environment variable {m.group(1)} is not set")
            return Secret()
        # stripped as a file is: a value copied from a file keeps its trailing newline
        value = self.env[m.group(1)].strip()
        if not value:
            self.problem(path, f"environment variable {m.group(1)} is empty{_LEAVE_OUT}")
        return Secret(value)

    def secret_file(self, raw: object, path: str) -> Secret:
        if not isinstance(raw, str) or not raw:
            self.problem(path, f"expected a file path, got {_show(raw)}")
            return Secret()
        p = Path(raw) if Path(raw).is_absolute() else self.base_dir / raw
        try:
            value = p.read_text(encoding="utf-8").strip()
        except OSError as exc:
            self.problem(path, f"cannot read secret file {str(p)!r}: {exc.strerror or exc}")
        except UnicodeDecodeError:
            self.problem(path, f"secret file {str(p)!r} is not UTF-8 text")
        except ValueError as exc:  # a NUL in the path
            self.problem(path, f"cannot read secret file {str(p)!r}: {exc}")
        else:
            if not value:
                self.problem(path, f"secret file {str(p)!r} is empty{_LEAVE_OUT}")
            return Secret(value)
        return Secret()

    def components(self, kind: str, data: object, registry: Mapping[str, Any]) -> dict[str, Any]:
        if not isinstance(data, dict):
            self.problem(kind, f"expected a table, got {_show(data)}")
            return {}
        out: dict[str, Component] = {}
        for name, table in data.items():
            path = f"{kind}.{name}"
            if not isinstance(table, dict):
                self.problem(path, f"expected a table, got {_show(table)}")
                continue
            body = dict(table)
            type_ = body.pop("type", None)
            if not isinstance(type_, str) or type_ not in registry:
                known = ", ".join(sorted(registry))
                self.problem(f"{path}.type", f"expected one of {known}, got {_show(type_)}")
                continue
            try:
                entry = registry[type_]
            except KeyError as exc:  # a plugin that is there but cannot be used
                cause = exc.__cause__
                why = "; ".join(cause.problems) if isinstance(cause, ConfigError) else str(exc)
                self.problem(f"{path}.type", why)
                continue
            spec = self.dataclass_(entry.spec, body, path)
            out[name] = Component(type=type_, spec=spec)
        return out


def _toml_key(name: str) -> str:
    return name[:-1] if name.endswith("_") else name


def _is_secret(hint: Any) -> bool:
    return hint is Secret


def _finite(number: float) -> bool:
    """A finite float, or an integer a float can hold (TOML integers have no limit)."""
    try:
        return math.isfinite(number)
    except OverflowError:
        return False


def _show(value: object) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def registries() -> dict[str, Mapping[str, Any]]:
    """The component registries, by top-level table."""
    from autoscaler.plugins import ExecutorRegistry
    from autoscaler.sources import SOURCE_TYPES
    from policies.registry import POLICY_TYPES

    return {"sources": SOURCE_TYPES, "executors": ExecutorRegistry(), "policies": POLICY_TYPES}


def from_mapping(
    data: Mapping[str, Any], *, env: Mapping[str, str] | None = None, base_dir: Path | None = None
) -> Settings:
    """Settings from an already parsed TOML document. Raises ``ConfigError`` listing every
    problem with its key path."""
    loader = _Loader(env or {}, base_dir or Path.cwd())
    plain = {k: v for k, v in data.items() if k not in _COMPONENT_TABLES}
    settings: Settings = loader.dataclass_(Settings, plain, "")
    regs = registries()
    comps = {
        kind: loader.components(kind, data[kind], regs[kind])
        for kind in _COMPONENT_TABLES
        if kind in data
    }
    settings = dataclasses.replace(
        settings,
        sources=comps.get("sources", {}),
        executors=comps.get("executors", {}),
        policies=comps.get("policies", {}),
    )
    _cross_check(settings, loader, regs["policies"])
    if loader.problems:
        raise ConfigError(loader.problems)
    return settings


T = TypeVar("T")


def table_of(cls: type[T], data: Mapping[str, Any], path: str) -> T:
    """One settings dataclass from a TOML-shaped mapping that did not come from the config
    file (a service's labels). Raises ``ConfigError`` listing every problem, each under
    ``path``."""
    loader = _Loader({}, Path.cwd())
    value: T = loader.dataclass_(cls, dict(data), path)
    if loader.problems:
        raise ConfigError(loader.problems)
    return value


MAX_HORIZON_STEPS = 5000
"""Longest forecast horizon in ticks (the models' memory grows with its square: ~1 GB for
three targets here)."""

MAX_WINDOW_TICKS = 1_000_000
"""Longest history a signal may keep, in ticks (the window store allocates all of it:
16 bytes a tick per target; 173 days of 15 s ticks)."""


def _cross_check(s: Settings, loader: _Loader, policy_types: Mapping[str, Any]) -> None:
    """Relations between tables that no single field can check."""
    if s.service.interval <= 0:
        loader.problem("service.interval", "must be greater than zero")
    else:
        _check_ticks(s, loader)
    floor = s.service.interval + s.service.tick_timeout
    if 0 < s.http.healthz_max_age < floor:
        loader.problem(
            "http.healthz_max_age",
            f"must be at least service.interval + service.tick_timeout ({floor:g} s): between"
            " two ticks /healthz would fail and the systemd watchdog go unpinged (0: default)",
        )
    for name, sig in s.signals.items():
        if sig.window <= 0:
            loader.problem(f"signals.{name}.window", "must be greater than zero")
    for name, t in s.targets.items():
        path = f"targets.{name}"
        if t.min_replicas < 0:
            loader.problem(f"{path}.min_replicas", "must be >= 0")
        if t.max_replicas < t.min_replicas:
            loader.problem(f"{path}.max_replicas", "must be >= min_replicas")
        if t.executor and t.executor not in s.executors:
            loader.problem(f"{path}.executor", f"no executor named {t.executor!r}")
        comp = s.executors.get(t.executor)
        app_of = getattr(comp and comp.spec, "app_of", None)  # a fly executor: the target's app
        if callable(app_of) and not app_of(name) and loader.clean(f"executors.{t.executor}"):
            loader.problem(
                f"{path}.executor",
                f"executor {t.executor!r} has no Fly app for {name!r}: set its app, or apps.{name}",
            )
    for name, comp in s.policies.items():
        if name in _RESERVED_POLICIES:
            loader.problem(
                f"policies.{name}",
                f"{name!r} is the name the journal gives {_RESERVED_POLICIES[name]}:"
                " choose another name",
            )
        for i, target in enumerate(getattr(comp.spec, "targets", ())):
            if target not in s.targets:
                loader.problem(f"policies.{name}.targets[{i}]", f"no target named {target!r}")
        if getattr(policy_types.get(comp.type), "forecasts", False):
            _check_forecast_rule(s, loader, f"policies.{name}", comp.spec)
        held = getattr(comp.spec, "held", None)
        for key, signal, seconds in held() if callable(held) else ():
            window = s.signal(signal).window
            if seconds > window:
                loader.problem(
                    f"policies.{name}.{key}",
                    f"{seconds:g} s is longer than the {window:g} s of history kept"
                    f" (signals.{signal}.window): the rule could never see it hold;"
                    f" raise the window",
                )
        if (
            comp.type == "circuit_breaker"
            and not comp.spec.targets
            and loader.clean(f"policies.{name}")
        ):
            loader.problem(
                f"policies.{name}.targets",
                "name the one target whose signal drives the breaker (every target would"
                " drive the same breaker, discovered ones included)",
            )
    for name, comp in s.sources.items():
        _check_source(s, loader, f"sources.{name}", comp)
    for i, ex in enumerate(s.bus.notify):
        if ex not in s.executors:
            loader.problem(f"bus.notify[{i}]", f"no executor named {ex!r}")
    if s.bus.breakers and s.bus.breakers not in s.executors:
        loader.problem("bus.breakers", f"no executor named {s.bus.breakers!r}")


def _check_ticks(s: Settings, loader: _Loader) -> None:
    """Spans the service turns into arrays of one slot per tick: a typo in a unit (or an
    interval of a millisecond) would exhaust memory at the first pass."""
    interval = s.service.interval
    steps = s.forecasting.horizon / interval
    if steps > MAX_HORIZON_STEPS and any(sig.forecast for sig in s.signals.values()):
        loader.problem(
            "forecasting.horizon",
            f"{s.forecasting.horizon:g} s is {steps:.0f} ticks of service.interval"
            f" ({interval:g} s); at most {MAX_HORIZON_STEPS} (forecast memory grows with"
            " their square)",
        )
    windows = {f"signals.{name}.window": sig.window for name, sig in s.signals.items()}
    windows["service.interval"] = SignalSettings().window  # signals with no table
    for path, window in windows.items():
        ticks = window / interval
        if ticks > MAX_WINDOW_TICKS:
            loader.problem(
                path,
                f"a window of {window:g} s is {ticks:.0f} ticks of service.interval"
                f" ({interval:g} s); at most {MAX_WINDOW_TICKS} (the window store keeps every"
                " tick)",
            )


def _check_source(s: Settings, loader: _Loader, path: str, comp: Component) -> None:
    """A source whose worst case outlasts the tick is cancelled before it can count its
    own failure (its breaker and error counters never see a hung server; a probe source
    never reports the hung dependency down); a counter fed by PromQL instant queries gives
    wrong rates."""
    worst_case = getattr(comp.spec, "worst_case", None)
    tick = s.service.tick_timeout
    if callable(worst_case) and loader.clean(path) and loader.clean("service.tick_timeout"):
        worst = float(worst_case())
        if worst >= tick and comp.type == "alertmanager":
            loader.problem(
                f"{path}.timeout",
                f"{worst:g} s, the longest the request to url may hold a tick, is not below"
                f" service.tick_timeout ({tick:g} s): lower it or raise service.tick_timeout",
            )
        elif worst >= tick and comp.type == "probe":
            loader.problem(
                _probe_timeout_key(path, comp.spec, tick),
                f"a tick where every dependency hangs can take {worst:g} s (each probe's"
                " timeout, `concurrency` probes at a time), not below service.tick_timeout"
                f" ({tick:g} s): the whole source would fail that tick and its targets hold,"
                " a hung dependency never seen down: lower the timeouts, raise concurrency,"
                " or raise service.tick_timeout",
            )
        elif worst >= tick:
            loader.problem(
                f"{path}.timeout",
                f"a tick against a hung server can take {worst:g} s (timeout x (retries + 1)"
                f" plus backoff, per round of `concurrency` queries), not below"
                f" service.tick_timeout ({tick:g} s): lower timeout or retries, raise"
                " concurrency (fewer rounds), or raise service.tick_timeout",
            )
    if comp.type != "prometheus":
        return
    for signal in comp.spec.queries:
        if s.signal(signal).kind == "counter":
            loader.problem(
                f"{path}.queries.{signal}",
                f'signals.{signal}.kind is "counter", but an instant query gives the value'
                " at the evaluation time, not the scrape time, and a sum over replicas drops"
                " when one goes away (wrong rates, fake resets): query"
                f" rate(...[1m]) in PromQL and keep [signals.{signal}] a gauge",
            )


def _probe_timeout_key(path: str, spec: Any, tick: float) -> str:
    """The key to blame for a probe source that can outlast the tick: a check's own timeout
    that alone does, else the source's ``timeout``."""
    for target, check in spec.checks.items():
        if check.timeout >= tick:
            return f"{path}.checks.{target}.timeout"
    return f"{path}.timeout"


def _check_forecast_rule(s: Settings, loader: _Loader, path: str, spec: Any) -> None:
    """A rule that reads forecasts holds forever (journalling why) when its signal is not
    forecast or the horizon ends before its lead time: say so before it runs."""
    signal = spec.signal
    if not s.signal(signal).forecast:
        loader.problem(
            f"{path}.signal",
            f"{signal!r} is not forecast: set forecast = true in [signals.{signal}]",
        )
        return
    horizon = s.forecasting.horizon
    if spec.lead_time > 0:
        if spec.lead_time > horizon:
            loader.problem(
                f"{path}.lead_time",
                f"{spec.lead_time:g} s is beyond forecasting.horizon ({horizon:g} s)",
            )
        return
    for target in spec.targets or s.targets:
        t = s.targets.get(target)
        if t is not None and t.startup_delay > horizon:
            loader.problem(
                f"targets.{target}.startup_delay",
                f"{t.startup_delay:g} s, the lead time of {path}, is beyond"
                f" forecasting.horizon ({horizon:g} s): raise the horizon",
            )


def stale_after(s: Settings) -> float:
    """Age of the last tick beyond which the service is unhealthy (``/healthz`` 503, no
    systemd watchdog pings): ``http.healthz_max_age``, or three intervals but at least an
    interval plus ``tick_timeout`` (a pass may wait that long for its sources)."""
    floor = s.service.interval + s.service.tick_timeout
    return s.http.healthz_max_age or max(3 * s.service.interval, floor)


_RESERVED_POLICIES = {
    "bounds": "to a scale that brings a target back within its bounds",
    "breakers": "to the breaker board's notices",
    "shutdown": "to actions cut short by a stop",
}
"""Policy names the service uses for decisions of its own; a rule named so would be taken
for them (a rule named ``breakers`` would have its notices taken for the board's)."""


def signal_warnings(s: Settings) -> list[str]:
    """Signals that policies read but no configured source produces (a misspelt name holds
    its rule on every pass), with their key paths. Nothing when there are no sources:
    replays and backtests bring their own series."""
    if not s.sources:
        return []
    source_types = registries()["sources"]
    produced: set[str] = set()
    for comp in s.sources.values():
        produced.update(source_types[comp.type].signals(comp.spec))
    known = ", ".join(sorted(produced)) or "none"
    return [
        f"{path}: no source produces {signal!r} (produced: {known})"
        for path, signal in policy_signals(s)
        if signal not in produced
    ]


def policy_signals(s: Settings) -> list[tuple[str, str]]:
    """Every signal the policies read, with its key path (``policies.up.signal``)."""
    return [
        pair
        for name, comp in s.policies.items()
        for pair in _signal_fields(comp.spec, f"policies.{name}")
    ]


def rollback_warnings(s: Settings) -> list[str]:
    """Swarm targets that no rollback policy covers. Swarm pauses an update whose tasks fail;
    scaling then holds (a write would resume the failed rollout) until the update is rolled
    back or fixed, and only a rollback policy rolls it back or tells humans."""
    swarm = {name for name, comp in s.executors.items() if comp.type == "swarm"}
    rules = [comp.spec for comp in s.policies.values() if comp.type == "rollback"]
    return [
        f"targets.{name}: no rollback policy covers it: an update swarm pauses after failed"
        " tasks would hold its scaling until someone rolls it back, and nobody would be told"
        for name, t in s.targets.items()
        if t.executor in swarm and not any(not r.targets or name in r.targets for r in rules)
    ]


def _signal_fields(value: Any, path: str) -> list[tuple[str, str]]:
    """Every non-empty ``signal`` field in a spec, nested specs and lists included."""
    out: list[tuple[str, str]] = []
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        for f in dataclasses.fields(value):
            item = getattr(value, f.name)
            sub = f"{path}.{_toml_key(f.name)}"
            if f.name == "signal" and isinstance(item, str):
                if item:
                    out.append((sub, item))
            else:
                out.extend(_signal_fields(item, sub))
    elif isinstance(value, list | tuple):
        for i, item in enumerate(value):
            out.extend(_signal_fields(item, f"{path}[{i}]"))
    return out


def read_toml(path: str | Path) -> dict[str, Any]:
    """The tables of a TOML file; ``ConfigError`` when it cannot be read or parsed."""
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError([f"cannot read {str(p)!r}: {exc.strerror or exc}"]) from exc
    except UnicodeDecodeError as exc:
        raise ConfigError([f"{p}: not UTF-8 text (TOML is UTF-8): {exc}"]) from None
    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError([f"{p}: not valid TOML: {exc}"]) from exc


def load(path: str | Path, *, env: Mapping[str, str] | None = None) -> Settings:
    """Read and validate a TOML config file."""
    p = Path(path)
    return from_mapping(read_toml(p), env=env, base_dir=p.parent.resolve())


def config_warnings(s: Settings) -> list[str]:
    """What ``check`` warns of and ``run`` logs: signals no source produces, swarm targets
    no rollback rule covers, restart rules that can never escalate, executors whose own
    tries outlast ``bus.executor_timeout``, notices nothing paces."""
    return [
        *signal_warnings(s),
        *rollback_warnings(s),
        *restart_warnings(s),
        *executor_warnings(s),
        *notice_warnings(s),
    ]


def notice_warnings(s: Settings) -> list[str]:
    """A notify cooldown of 0 while notices have somewhere to go: nothing paces them then
    (the dedupe window does not apply to notices), so every notice a rule asks for goes
    out, one per change of a flapping breaker or degradation level."""
    if not s.bus.notify or s.bus.cooldown_of("notify") > 0:
        return []
    path = "bus.cooldowns.notify" if "notify" in s.bus.cooldowns else "bus.cooldown"
    warning = (
        f"{path}: 0 paces no notice (the dedupe window does not apply to notices): each one"
        " a rule asks for goes out, a notice for every change of a flapping breaker or"
        ' degradation level; set a notify cooldown ("5m" by default)'
    )
    return [warning]


def executor_warnings(s: Settings) -> list[str]:
    """Executors that retry within a call (the notifiers) whose tries against a hung server
    (``worst_case``: every try timing out, with the backoff sleeps between them) do not end
    below ``bus.executor_timeout``: the bus cancels the call first, so their last tries
    never happen, and the failure reads "timed out" instead of the server's error."""
    limit = s.bus.executor_timeout
    out = []
    for name, comp in s.executors.items():
        worst_case = getattr(comp.spec, "worst_case", None)
        if not callable(worst_case):
            continue
        worst = float(worst_case())
        path = f"executors.{name}.timeout"
        if math.isinf(worst):
            out.append(
                f"{path}: 0 is no timeout: a post to a hung server never ends nor is retried;"
                f" the bus cancels the call at bus.executor_timeout ({limit:g} s) and it reads"
                ' "timed out": set a timeout'
            )
        elif worst >= limit:
            out.append(
                f"{path}: a call against a hung server can take {worst:g} s (each try"
                " timing out, with the backoff sleeps between them), not below"
                " bus.executor_timeout"
                f" ({limit:g} s): the bus cancels it first, its last tries never happen and it"
                ' reads "timed out"; lower timeout or retries, or raise bus.executor_timeout'
            )
    return out


def restart_warnings(s: Settings) -> list[str]:
    """Restart rules whose ``max_attempts`` restarts, paced by their backoff and the bus's
    restart cooldown, cannot fit in their ``window``: such a rule restarts for ever and
    never tells a human."""
    cooldown = s.bus.cooldown_of("restart")
    out = []
    for name, comp in s.policies.items():
        span = getattr(comp.spec, "escalation_span", None)
        if comp.type != "restart" or not callable(span):
            continue
        least, window = float(span(cooldown)), comp.spec.window
        if least >= window:
            out.append(
                f"policies.{name}: {comp.spec.max_attempts} restarts paced by its backoff and"
                f" bus.cooldowns.restart ({cooldown:g} s) take at least {least:g} s, not"
                f" within its window ({window:g} s): it would restart for ever and never"
                " escalate"
            )
    return out
