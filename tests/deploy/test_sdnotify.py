"""The systemd notify protocol against a real unix datagram socket, as systemd binds it."""

from __future__ import annotations

import asyncio
import os
import socket
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from autoscaler.sdnotify import (
    Notifier,
    WatchdogPolicy,
    keepalive,
    notify_address,
    one_line,
    tick_hook,
    watchdog_interval,
)


class Listener:
    """The systemd side: a bound AF_UNIX datagram socket."""

    def __init__(self, sock: socket.socket, env_value: str) -> None:
        self.sock = sock
        self.env = {"NOTIFY_SOCKET": env_value}

    def recv(self) -> str:
        """The next datagram (waits at most 5 s, so a missing one fails the test)."""
        self.sock.settimeout(5)
        return self.sock.recv(65536).decode()

    def drain(self) -> list[str]:
        """Every datagram already queued, without waiting."""
        self.sock.setblocking(False)
        out = []
        while True:
            try:
                out.append(self.sock.recv(65536).decode())
            except BlockingIOError:
                return out


@pytest.fixture
def listener() -> Iterator[Listener]:
    # A short directory: AF_UNIX paths are limited to 107 bytes, pytest's tmp_path is long.
    with tempfile.TemporaryDirectory(prefix="sdn-") as d:
        path = str(Path(d) / "notify")
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        sock.bind(path)
        try:
            yield Listener(sock, path)
        finally:
            sock.close()


@pytest.fixture
def abstract_listener() -> Iterator[Listener]:
    name = f"autoscaler-test-{os.getpid()}-{time.monotonic_ns()}"
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind("\0" + name)
    try:
        yield Listener(sock, "@" + name)
    finally:
        sock.close()


def test_ready_sends_exactly_ready_1_to_a_path_socket(listener: Listener) -> None:
    notifier = Notifier.from_env(listener.env)
    assert notifier.enabled
    assert notifier.ready()
    assert listener.recv() == "READY=1"


def test_each_call_is_one_datagram_of_newline_separated_lines(listener: Listener) -> None:
    notifier = Notifier.from_env(listener.env)
    notifier.ready("1 targets, 0 actions")
    notifier.watchdog()
    notifier.status("degraded: prometheus down")
    notifier.stopping("shutting down")
    assert [listener.recv() for _ in range(4)] == [
        "READY=1\nSTATUS=1 targets, 0 actions",
        "WATCHDOG=1",
        "STATUS=degraded: prometheus down",
        "STOPPING=1\nSTATUS=shutting down",
    ]


def test_abstract_socket_address_with_leading_at(abstract_listener: Listener) -> None:
    notifier = Notifier.from_env(abstract_listener.env)
    assert notifier.address is not None and notifier.address.startswith("\0")
    assert notifier.watchdog()
    assert abstract_listener.recv() == "WATCHDOG=1"


def test_unset_notify_socket_is_a_noop() -> None:
    notifier = Notifier.from_env({})
    assert not notifier.enabled
    assert notifier.ready() is False
    assert notifier.watchdog() is False
    assert notifier.status("x") is False
    assert notifier.stopping() is False


def test_empty_notify_socket_counts_as_unset() -> None:
    assert notify_address({"NOTIFY_SOCKET": ""}) is None


def test_unsupported_address_scheme_disables_notify(caplog: pytest.LogCaptureFixture) -> None:
    assert notify_address({"NOTIFY_SOCKET": "vsock:2:1234"}) is None
    assert "not a unix socket address" in caplog.text


def test_process_environment_is_not_read_behind_our_back(
    listener: Listener, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("NOTIFY_SOCKET", listener.env["NOTIFY_SOCKET"])
    assert not Notifier.from_env({}).enabled
    assert listener.drain() == []


def test_send_to_a_vanished_socket_returns_false_without_raising(
    caplog: pytest.LogCaptureFixture,
) -> None:
    with tempfile.TemporaryDirectory(prefix="sdn-") as d:
        notifier = Notifier(str(Path(d) / "gone"))
        assert notifier.ready() is False
    assert "systemd notify" in caplog.text


def test_status_is_folded_onto_one_line(listener: Listener) -> None:
    Notifier.from_env(listener.env).status("tick failed:\n  Traceback\tline 2\n")
    assert listener.recv() == "STATUS=tick failed: Traceback line 2"


def test_long_status_is_cut_with_an_ellipsis() -> None:
    line = one_line("x" * 500, limit=20)
    assert len(line) == 20 and line.endswith("…")


def test_watchdog_interval_from_usec_when_pid_is_unset() -> None:
    assert watchdog_interval({"WATCHDOG_USEC": "60000000"}, 1234) == 60.0


def test_watchdog_interval_when_pid_is_ours() -> None:
    env = {"WATCHDOG_USEC": "30000000", "WATCHDOG_PID": "1234"}
    assert watchdog_interval(env, 1234) == 30.0


def test_watchdog_pid_mismatch_disables_the_watchdog() -> None:
    env = {"WATCHDOG_USEC": "30000000", "WATCHDOG_PID": "999"}
    assert watchdog_interval(env, 1234) is None


@pytest.mark.parametrize("usec", ["", "0", "-5", "soon"])
def test_missing_or_invalid_watchdog_usec_disables_the_watchdog(usec: str) -> None:
    assert watchdog_interval({"WATCHDOG_USEC": usec}, 1) is None


def test_invalid_watchdog_pid_disables_the_watchdog() -> None:
    assert watchdog_interval({"WATCHDOG_USEC": "1000000", "WATCHDOG_PID": "me"}, 1) is None


def test_policy_pings_at_half_the_watchdog_interval() -> None:
    env = {"WATCHDOG_USEC": "60000000", "WATCHDOG_PID": "42"}
    assert WatchdogPolicy.from_env(env, pid=42, stale_after=45).ping_every == 30.0
    assert WatchdogPolicy.from_env(env, pid=7, stale_after=45).ping_every is None


def test_policy_sequence_ready_ping_silence_and_stop(listener: Listener) -> None:
    env = {**listener.env, "WATCHDOG_USEC": "20000000"}  # 20 s: ping every 10 s
    policy = WatchdogPolicy.from_env(env, pid=os.getpid(), stale_after=30)

    policy.tick_failed(0.0, "starting: prometheus down")
    assert not policy.maybe_ping(0.0), "no ping before the first good tick"
    assert listener.drain() == ["STATUS=starting: prometheus down"]

    policy.tick_succeeded(5.0, "ok: 3 targets")
    assert listener.drain() == ["READY=1\nSTATUS=ok: 3 targets"]

    assert not policy.maybe_ping(14.9)  # READY=1 started the watchdog at 5.0
    assert policy.maybe_ping(15.0)
    assert not policy.maybe_ping(20.0)
    assert listener.drain() == ["WATCHDOG=1"]

    # The loop hangs: the last good tick is at 5.0; pings go on until it is 30 s old...
    assert policy.maybe_ping(25.0)
    assert policy.maybe_ping(35.0)
    # ...then stop, so systemd's watchdog fires.
    assert not policy.maybe_ping(45.0)
    assert not policy.maybe_ping(60.0)
    assert listener.drain() == ["WATCHDOG=1", "WATCHDOG=1"]

    # Ticks come back: the next good tick pings at once, it is overdue.
    policy.tick_succeeded(61.0, "ok: recovered")
    assert listener.drain() == ["STATUS=ok: recovered", "WATCHDOG=1"]

    policy.stopping("stopping: SIGTERM")
    assert listener.drain() == ["STOPPING=1\nSTATUS=stopping: SIGTERM"]


def test_policy_without_watchdog_sends_ready_and_status_but_never_pings(
    listener: Listener,
) -> None:
    policy = WatchdogPolicy.from_env(listener.env, pid=os.getpid(), stale_after=30)
    policy.tick_succeeded(0.0, "ok")
    assert not policy.maybe_ping(1000.0)
    assert policy.next_ping_in(1000.0) is None
    assert listener.drain() == ["READY=1\nSTATUS=ok"]


def test_failed_ticks_never_send_ready(listener: Listener) -> None:
    policy = WatchdogPolicy.from_env(
        {**listener.env, "WATCHDOG_USEC": "2000000"}, pid=os.getpid(), stale_after=30
    )
    for t in range(5):
        policy.tick_failed(float(t))
        policy.maybe_ping(float(t))
    assert listener.drain() == []


class Recorder(Notifier):
    """Keeps what would have been sent, for the property test (the socket is tested above)."""

    def __init__(self) -> None:
        super().__init__("/unused")
        self.sent: list[tuple[str, ...]] = []

    def send(self, *lines: str) -> bool:
        self.sent.append(lines)
        return True


events = st.lists(
    st.tuples(st.sampled_from(["ok", "fail", "ping"]), st.floats(0, 50, allow_nan=False)),
    max_size=60,
)


@given(events=events, ping_every=st.floats(0.5, 20), stale_after=st.floats(1, 60))
def test_pings_only_after_ready_while_fresh_and_never_too_often(
    events: list[tuple[str, float]], ping_every: float, stale_after: float
) -> None:
    rec = Recorder()
    policy = WatchdogPolicy(notifier=rec, ping_every=ping_every, stale_after=stale_after)
    now = 0.0
    last_ok: float | None = None
    last_ping: float | None = None
    for kind, step in events:
        now += step
        before = len(rec.sent)
        if kind == "ok":
            policy.tick_succeeded(now)
            last_ok = now
        elif kind == "fail":
            policy.tick_failed(now)
        else:
            policy.maybe_ping(now)
        for lines in rec.sent[before:]:
            if lines == ("READY=1",):
                last_ping = now
            if lines == ("WATCHDOG=1",):
                assert last_ok is not None and now - last_ok <= stale_after
                assert last_ping is not None and now - last_ping >= ping_every
                last_ping = now
    ready = [i for i, lines in enumerate(rec.sent) if lines[0] == "READY=1"]
    assert ready in ([], [0]), "READY=1 once, and before anything else"


async def test_keepalive_pings_between_ticks_until_stopped(listener: Listener) -> None:
    env = {**listener.env, "WATCHDOG_USEC": "20000"}  # 20 ms: a ping every 10 ms
    policy = WatchdogPolicy.from_env(env, pid=os.getpid(), stale_after=3600)
    policy.tick_succeeded(time.monotonic())
    stop = asyncio.Event()
    task = asyncio.create_task(keepalive(policy, clock=time.monotonic, stop=stop))
    loop = asyncio.get_running_loop()
    listener.sock.setblocking(False)
    got = [(await loop.sock_recv(listener.sock, 1024)).decode() for _ in range(3)]
    stop.set()
    await asyncio.wait_for(task, 5)
    assert got == ["READY=1", "WATCHDOG=1", "WATCHDOG=1"]


async def test_keepalive_returns_at_once_without_a_watchdog(listener: Listener) -> None:
    policy = WatchdogPolicy.from_env(listener.env, pid=os.getpid(), stale_after=30)
    await asyncio.wait_for(keepalive(policy, clock=time.monotonic, stop=asyncio.Event()), 5)


def test_tick_hook_reports_completed_and_raised_ticks(listener: Listener) -> None:
    env = {**listener.env, "WATCHDOG_USEC": "20000000"}
    policy = WatchdogPolicy.from_env(env, pid=os.getpid(), stale_after=30)
    times = iter([0.0, 5.0, 15.0])  # pings every 10 s from READY=1 at 5.0
    hook = tick_hook(policy, clock=lambda: next(times), summary=lambda n: f"ok: {n} actions")
    hook(None, RuntimeError("prometheus: timeout"))
    hook(3, None)
    hook(4, None)
    assert listener.drain() == [
        "STATUS=tick failed: prometheus: timeout",
        "READY=1\nSTATUS=ok: 3 actions",
        "STATUS=ok: 4 actions",
        "WATCHDOG=1",
    ]
