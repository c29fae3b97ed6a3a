"""The ``autoscaler`` command line.

Exit codes: 0 success; 1 runtime failure; 2 invalid usage or configuration, including a
``run`` that cannot start on what the configuration names (a ``service.state_path`` that
cannot be opened, an ``http.host``/``http.port`` that cannot be listened on): one line
naming the key, no traceback.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import errno
import importlib
import json
import logging
import math
import os
import socket
import sqlite3
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol, TextIO

from autoscaler import __version__
from autoscaler.config import (
    HttpSettings,
    Settings,
    config_warnings,
    load,
    parse_duration,
    read_toml,
    stale_after,
)
from autoscaler.errors import ConfigError

if TYPE_CHECKING:
    from autoscaler.engine import TickReport
    from autoscaler.journal import SQLiteStore
    from autoscaler.live import LiveDriver

EXIT_USAGE = 2


class CommandModule(Protocol):
    """A module adding one subcommand (``add_parser``) and running it (``run``)."""

    def add_parser(self, sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None: ...

    def run(self, args: argparse.Namespace) -> int: ...


log = logging.getLogger(__name__)

# Subcommands implemented in their own modules, imported when the parser is built.
COMMAND_MODULES: tuple[str, ...] = (
    "autoscaler.record_cli",
    "autoscaler.replay_cli",
    "autoscaler.backtest_cli",
    "autoscaler.forecast_cli",
)


def duration_arg(text: str) -> float:
    """An argparse type: seconds from a duration such as ``60s``, ``5m``."""
    try:
        return parse_duration(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f'expected a duration like "60s", got {text!r}') from None


def output_dir(path: Path) -> str | None:
    """Make ``path`` a directory the run can write its files into, before the run: the
    problem as a line to print, or ``None``. (A long replay or backtest must not find out
    at its end that it cannot save what it did.)"""
    try:
        path.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=path):
            pass
    except OSError as exc:
        return f"error: {path}: {exc.strerror or exc}"
    return None


def output_file(path: Path) -> str | None:
    """Whether ``path`` can be written, checked before a run that writes it at its end: the
    reason it cannot (``Is a directory``), or ``None``. The file is left as it is: an old
    one is replaced only when the run has something to put in its place."""
    try:
        if path.is_dir():
            return os.strerror(errno.EISDIR)
        if path.exists():
            with path.open("a"):  # appends nothing: the contents stay
                pass
        else:
            with tempfile.TemporaryFile(dir=path.parent):
                pass
    except OSError as exc:
        return exc.strerror or str(exc)
    return None


@contextlib.contextmanager
def replacing(path: Path) -> Iterator[TextIO]:
    """A text file to write ``path``'s new contents to: a temporary file beside it that
    replaces it once written in full, so a failure part-way (a full disk) leaves an old
    file as it was rather than cut short. The new file gets the mode a new one would."""
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        umask = os.umask(0)
        os.umask(umask)
        os.fchmod(fd, 0o666 & ~umask)
        with os.fdopen(fd, "w", newline="", encoding="utf-8") as f:
            yield f
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


def load_settings(path: str) -> Settings | None:
    """The settings in ``path`` (secrets from the process environment), or None after every
    problem was printed to stderr: the caller exits with ``EXIT_USAGE``."""
    try:
        return load(path, env=os.environ)
    except ConfigError as exc:
        print(str(exc), file=sys.stderr)
        return None


def cmd_check(args: argparse.Namespace) -> int:
    if args.backtest:
        from autoscaler.backtest import overlay_settings, signal_warnings

        try:
            interval = 15.0 if args.interval is None else args.interval
            overlay = overlay_settings(read_toml(args.config), interval=interval)
        except ConfigError as exc:
            print(str(exc), file=sys.stderr)
            return EXIT_USAGE
        except ValueError as exc:  # the interval
            print(f"error: --interval: {exc}", file=sys.stderr)
            return EXIT_USAGE
        for warning in signal_warnings(overlay):
            print(f"warning: {warning}", file=sys.stderr)
        n = len(overlay.policies)
        print(
            f"{args.config}: ok as a backtest --config ({n} {'policy' if n == 1 else 'policies'})"
        )
        return 0
    if args.interval is not None:
        print(
            "error: --interval is the backtest's, for --backtest only: a config ticks at its"
            " service.interval",
            file=sys.stderr,
        )
        return EXIT_USAGE
    s = load_settings(args.config)
    if s is None:
        if _overlay_like(args.config):
            print(
                f"hint: {args.config} has [policies] but no [targets]: if it is a"
                " `backtest --config` overlay, check it with --backtest",
                file=sys.stderr,
            )
        return EXIT_USAGE
    print(
        f"{args.config}: ok ({len(s.targets)} targets, {len(s.sources)} sources, "
        f"{len(s.executors)} executors, {len(s.policies)} policies)"
    )
    for warning in config_warnings(s):
        print(f"warning: {warning}", file=sys.stderr)
    return 0


def _overlay_like(path: str) -> bool:
    """Whether the TOML at ``path`` looks like a ``backtest --config`` overlay."""
    try:
        doc = read_toml(path)
    except ConfigError:
        return False
    return "policies" in doc and "targets" not in doc


def cmd_eval(args: argparse.Namespace) -> int:
    from autoscaler.journal import MemoryStore
    from autoscaler.logs import configure
    from autoscaler.service import build_engine

    settings = load_settings(args.config)
    if settings is None:
        return EXIT_USAGE
    # The pass's warnings (a source failing) as `run` logs them, with their fields; not the
    # bare message Python prints for a log record when nothing is configured.
    configure("warning", settings.service.log_format)

    async def one_pass() -> list[dict[str, Any]]:
        engine = build_engine(settings, dry_run=True, state_store=MemoryStore())
        try:
            report = await engine.tick(time.time())
        finally:
            for ex in engine.executors.values():
                await ex.aclose()
            for src in engine.sources:
                await src.aclose()
        rows = []
        for d in report.decisions:
            rows.append(
                {
                    "at": d.at,
                    "policy": d.policy,
                    "target": d.target,
                    "kind": d.action.kind if d.action else "hold",
                    "params": d.action.params() if d.action else {},
                    "reason": d.reason,
                    "inputs": _finite(d.inputs),
                }
            )
        if report.source_errors:
            print(json.dumps({"source_errors": report.source_errors}), file=sys.stderr)
        return rows

    print(json.dumps(asyncio.run(one_pass()), indent=2))
    return 0


def _finite(value: Any) -> Any:
    """JSON has no NaN/Infinity: write them as null."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_finite(v) for v in value]
    return value


def cmd_run(args: argparse.Namespace) -> int:
    from autoscaler.live import LiveDriver
    from autoscaler.logs import configure
    from autoscaler.sdnotify import WatchdogPolicy, keepalive, tick_hook
    from autoscaler.service import build_engine, component_routes

    settings = load_settings(args.config)
    if settings is None:
        return EXIT_USAGE
    configure(args.log_level or settings.service.log_level, settings.service.log_format)
    for warning in config_warnings(settings):
        log.warning("config: %s", warning)
    store = open_state_store(settings)
    if store is None:
        return EXIT_USAGE
    drivers: list[LiveDriver] = []

    async def serve() -> None:
        engine = build_engine(settings, dry_run=True if args.dry_run else None, state_store=store)
        driver = LiveDriver(engine=engine, settings=settings, extra_routes=component_routes(engine))
        drivers.append(driver)
        # systemd: READY=1 after the first good pass, WATCHDOG=1 while passes succeed,
        # STATUS= a one-line summary, STOPPING=1 on shutdown. No-op without NOTIFY_SOCKET.
        watchdog = WatchdogPolicy.from_env(
            os.environ, pid=os.getpid(), stale_after=stale_after(settings)
        )
        driver.on_tick.append(tick_hook(watchdog, clock=time.monotonic, summary=status_line))
        driver.on_stop.append(lambda: watchdog.stopping("stopping"))
        async with asyncio.TaskGroup() as tg:
            tg.create_task(keepalive(watchdog, clock=time.monotonic, stop=driver.stop_event))
            await driver.run()

    try:
        asyncio.run(serve())
    except (OSError, ExceptionGroup) as exc:
        leaves = _leaves(exc)
        listening = not drivers or drivers[0].port is not None
        if listening or not settings.http.enabled:
            raise
        oserrors = [e for e in leaves if isinstance(e, OSError)]
        if len(oserrors) != len(leaves):
            raise
        store.close()
        print(listen_problem(settings.http, oserrors[0]), file=sys.stderr)
        return EXIT_USAGE
    return 0


def open_state_store(settings: Settings) -> SQLiteStore | None:
    """The journal and state file of ``run``, or None after printing why it cannot be
    opened (a read-only directory, or a missing one that cannot be created; not an SQLite
    file, tables with other columns, or a state table that cannot be read): exit
    ``EXIT_USAGE``."""
    from autoscaler.journal import SQLiteStore

    path = settings.service.state_path
    store: SQLiteStore | None = None
    try:
        store = SQLiteStore(path, retention=settings.service.journal_retention)
        store.load_state()  # a damaged file fails here, not in the first pass's set-up
        return store
    except (sqlite3.Error, OSError) as exc:
        if store is not None:
            store.close()
        why = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
        if isinstance(exc, OSError) and exc.filename not in (None, path):
            why += f" ({exc.filename})"  # the missing or unwritable directory
        print(f"service.state_path: cannot open {path!r}: {why}", file=sys.stderr)
        return None


def listen_problem(http: HttpSettings, exc: OSError) -> str:
    """One line naming the key at fault when the HTTP server cannot listen."""
    if isinstance(exc, socket.gaierror):
        return f"http.host: cannot resolve {http.host!r}: {exc.strerror or exc}"
    # an address this host does not have is the host's fault; in use or privileged, the port's
    key = "http.host" if exc.errno == errno.EADDRNOTAVAIL else "http.port"
    why = os.strerror(exc.errno).lower() if exc.errno else str(exc)
    return f"{key}: cannot listen on {http.host}:{http.port}: {why}"


def _leaves(exc: BaseException) -> list[BaseException]:
    """The exceptions inside (nested) exception groups, or ``exc`` itself."""
    if isinstance(exc, BaseExceptionGroup):
        return [leaf for sub in exc.exceptions for leaf in _leaves(sub)]
    return [exc]


def status_line(report: TickReport) -> str:
    """The one-line ``STATUS=`` summary systemd shows for a pass."""
    acted = sum(1 for o in report.outcomes if o.status in ("done", "dry-run"))
    failing = ", ".join(sorted(report.source_errors)) or "none"
    return (
        f"last pass {report.duration * 1000:.0f} ms: {len(report.decisions)} decisions, "
        f"{acted} actions; failing sources: {failing}"
    )


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="autoscaler",
        description="Metrics-driven autoscaler and auto-remediation service.",
    )
    parser.add_argument("--version", action="version", version=f"autoscaler {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    p = sub.add_parser(
        "run",
        help="run the service",
        description=(
            "Run the service: one pass every service.interval, HTTP on http.host:http.port, "
            "journal and state in service.state_path. Stops cleanly on SIGTERM/SIGINT "
            "(exit 0). Exit 2 when the configuration is invalid, service.state_path cannot "
            "be opened or http.host:http.port cannot be listened on (one line naming the "
            "key); exit 1 on any other failure."
        ),
    )
    p.add_argument("--config", required=True, metavar="FILE", help="TOML configuration file")
    p.add_argument(
        "--dry-run", action="store_true", help="decide and journal as usual, never call executors"
    )
    p.add_argument(
        "--log-level",
        choices=["debug", "info", "warning", "error"],
        help="override service.log_level",
    )
    p.set_defaults(func=cmd_run)

    p = sub.add_parser(
        "check",
        help="validate a configuration file",
        description=(
            "Validate a configuration file. Exit 0 when valid; exit 2 listing every problem "
            "with its key path. With --backtest, FILE is checked as a `backtest --config`: "
            "merged over the backtest's built-in settings, as the backtest merges it."
        ),
    )
    p.add_argument("config", metavar="FILE", help="TOML configuration file")
    p.add_argument(
        "--backtest",
        action="store_true",
        help="check FILE as a `backtest --config` (e.g. examples/backtest.toml)",
    )
    p.add_argument(
        "--interval",
        type=duration_arg,
        metavar="D",
        help=(
            "with --backtest only: the backtest's --interval (default 15s); forecast horizons"
            " and windows are limited in ticks of it"
        ),
    )
    p.set_defaults(func=cmd_check)

    p = sub.add_parser(
        "eval",
        help="one pass, decisions as JSON, nothing executed",
        description=(
            "Run one pass against the configured sources and print every decision as JSON. "
            "Executors are never called; no state is written."
        ),
    )
    p.add_argument("--config", required=True, metavar="FILE", help="TOML configuration file")
    p.set_defaults(func=cmd_eval)

    for name in COMMAND_MODULES:
        module: CommandModule = importlib.import_module(name)
        before = set(sub.choices)
        module.add_parser(sub)
        for added in set(sub.choices) - before:
            sub.choices[added].set_defaults(func=module.run)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    code: int = args.func(args)
    return code


if __name__ == "__main__":
    sys.exit(main())
