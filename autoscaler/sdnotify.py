"""The systemd notify protocol (``sd_notify(3)``), in pure Python, without libsystemd.

Under ``Type=notify`` systemd passes ``NOTIFY_SOCKET`` (an AF_UNIX datagram socket: a path,
or ``@name`` for an abstract one) and, with ``WatchdogSec=``, ``WATCHDOG_USEC`` and
``WATCHDOG_PID``. Each message is one datagram of newline-separated ``KEY=VALUE`` lines.
Without ``NOTIFY_SOCKET`` the service is not supervised and every call here is a no-op
(libsystemd returns 0 in that case too), so the same code runs in a container or a shell.

Three layers, each usable alone:

- :func:`notify_address` and :func:`watchdog_interval` read an environment *mapping passed in*
  (never ``os.environ`` at import time);
- :class:`Notifier` sends ``READY=1``, ``WATCHDOG=1``, ``STATUS=...``, ``STOPPING=1``;
- :class:`WatchdogPolicy` decides *when* the live driver sends them: ``READY=1`` after the
  first tick that ran to completion, ``WATCHDOG=1`` at half the watchdog interval but only
  while the last completed tick is recent (a hung or crashing loop stops pinging, so systemd
  restarts it), ``STATUS=`` with a one-line summary, ``STOPPING=1`` on shutdown;
  :func:`tick_hook` adapts it to the live driver's ``on_tick`` hooks, and :func:`keepalive`
  is the small async loop that pings between ticks.

Sends never block the event loop: the socket is non-blocking, and a datagram systemd cannot
take right now is dropped and logged (the next ping follows at half the interval anyway).
"""

from __future__ import annotations

import asyncio
import logging
import socket
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import TypeVar

log = logging.getLogger(__name__)

_Report = TypeVar("_Report")

# STATUS= is shown by `systemctl status` on one line; longer text is cut with an ellipsis.
STATUS_MAX_CHARS = 200


def notify_address(env: Mapping[str, str]) -> str | None:
    """The socket address from ``NOTIFY_SOCKET`` in ``env``, or None when not supervised.

    ``/path`` is returned as is; ``@name`` becomes ``"\\0name"`` (Linux abstract namespace).
    Other schemes (``vsock:``, newer systemd) are not supported: they are logged and treated
    as unsupervised rather than failing the service.
    """
    raw = env.get("NOTIFY_SOCKET", "")
    if not raw:
        return None
    if raw.startswith("/"):
        return raw
    if raw.startswith("@") and len(raw) > 1:
        return "\0" + raw[1:]
    log.warning("NOTIFY_SOCKET=%r is not a unix socket address; systemd notify disabled", raw)
    return None


def watchdog_interval(env: Mapping[str, str], pid: int) -> float | None:
    """The systemd watchdog timeout in seconds, or None when the watchdog is off for us.

    From ``WATCHDOG_USEC``; honoured only if ``WATCHDOG_PID`` is unset or equals ``pid``
    (the variables may have been inherited by a child that systemd does not watch). Ping at
    half this interval (:attr:`WatchdogPolicy.ping_every`).
    """
    usec_text = env.get("WATCHDOG_USEC", "")
    if not usec_text:
        return None
    try:
        usec = int(usec_text)
    except ValueError:
        log.warning("WATCHDOG_USEC=%r is not an integer; watchdog disabled", usec_text)
        return None
    if usec <= 0:
        return None
    pid_text = env.get("WATCHDOG_PID", "")
    if pid_text:
        try:
            watched = int(pid_text)
        except ValueError:
            log.warning("WATCHDOG_PID=%r is not an integer; watchdog disabled", pid_text)
            return None
        if watched != pid:
            return None
    return usec / 1_000_000


def one_line(text: str, *, limit: int = STATUS_MAX_CHARS) -> str:
    """``text`` on a single line (newlines and runs of spaces folded), at most ``limit``."""
    flat = " ".join(text.split())
    if len(flat) > limit:
        flat = flat[: limit - 1] + "…"
    return flat


class Notifier:
    """Sends notify datagrams to one socket address; a no-op without one.

    Every method returns True when the datagram was handed to the kernel, False when there
    is no socket (not supervised) or the send failed (logged; never raised, because a
    service must not die for failing to tell systemd it is alive).
    """

    def __init__(self, address: str | None) -> None:
        self.address = address

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> Notifier:
        """A notifier for ``NOTIFY_SOCKET`` in ``env`` (pass ``os.environ`` from the CLI)."""
        return cls(notify_address(env))

    @property
    def enabled(self) -> bool:
        """Whether a notify socket is configured."""
        return self.address is not None

    def send(self, *lines: str) -> bool:
        """Send ``KEY=VALUE`` lines as one datagram."""
        if self.address is None:
            return False
        payload = "\n".join(lines).encode()
        try:
            # A fresh socket per message, as libsystemd does: nothing to close or leak, and
            # a few datagrams a minute cost nothing.
            with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as sock:
                sock.setblocking(False)
                sock.sendto(payload, self.address)
        except OSError as exc:
            log.warning("systemd notify to %r failed: %s", self.address.lstrip("\0"), exc)
            return False
        return True

    def ready(self, status: str | None = None) -> bool:
        """``READY=1``: start-up finished (optionally with a ``STATUS=`` in the same datagram)."""
        return self.send("READY=1", *self._status(status))

    def watchdog(self) -> bool:
        """``WATCHDOG=1``: keep-alive ping."""
        return self.send("WATCHDOG=1")

    def status(self, line: str) -> bool:
        """``STATUS=<line>``: free-form state shown by ``systemctl status``."""
        return self.send(*self._status(line))

    def stopping(self, status: str | None = None) -> bool:
        """``STOPPING=1``: shutdown has begun."""
        return self.send("STOPPING=1", *self._status(status))

    @staticmethod
    def _status(line: str | None) -> tuple[str, ...]:
        return () if line is None else (f"STATUS={one_line(line)}",)


@dataclass
class WatchdogPolicy:
    """When the live driver tells systemd what: pure, driven by ``now`` values passed in.

    ``now`` is any monotonic clock in seconds (the driver's); nothing here reads a clock.
    A tick *succeeded* when ``Engine.tick`` returned (a source that failed inside it is
    reported in the status line, not as a failed tick: restarting would not bring it back).
    """

    notifier: Notifier
    ping_every: float | None
    """Seconds between ``WATCHDOG=1`` pings (half the systemd timeout); None: no watchdog."""
    stale_after: float
    """A last successful tick older than this (seconds) stops the pings."""
    ready_sent: bool = field(default=False, init=False)
    last_ok: float | None = field(default=None, init=False)
    last_ping: float | None = field(default=None, init=False)

    @classmethod
    def from_env(
        cls,
        env: Mapping[str, str],
        *,
        pid: int,
        stale_after: float,
        notifier: Notifier | None = None,
    ) -> WatchdogPolicy:
        """The policy for this process: ``env`` is ``os.environ``, ``pid`` is ``os.getpid()``.

        ``stale_after`` should match the health check (``/healthz`` fails after three tick
        intervals by default), so systemd and the HTTP probe agree on "stuck".
        """
        timeout = watchdog_interval(env, pid)
        return cls(
            notifier=notifier if notifier is not None else Notifier.from_env(env),
            ping_every=None if timeout is None else timeout / 2,
            stale_after=stale_after,
        )

    def tick_succeeded(self, now: float, status: str | None = None) -> None:
        """Record a completed tick; the first one sends ``READY=1`` (with its status)."""
        self.last_ok = now
        if not self.ready_sent:
            self.ready_sent = True
            self.notifier.ready(status)
            # The watchdog starts counting at READY=1: this is also the first ping's baseline.
            self.last_ping = now
        elif status is not None:
            self.notifier.status(status)
        self.maybe_ping(now)

    def tick_failed(self, now: float, status: str | None = None) -> None:
        """Record a tick that raised: only the status changes; pings stop once stale."""
        del now  # kept for symmetry: a failed tick does not refresh anything
        if status is not None:
            self.notifier.status(status)

    def healthy(self, now: float) -> bool:
        """Whether the last successful tick is recent enough to vouch for the loop."""
        return self.last_ok is not None and now - self.last_ok <= self.stale_after

    def maybe_ping(self, now: float) -> bool:
        """Send ``WATCHDOG=1`` if a ping is due and the loop is healthy; True if sent."""
        if self.ping_every is None or not self.ready_sent or not self.healthy(now):
            return False
        if self.last_ping is not None and now - self.last_ping < self.ping_every:
            return False
        self.last_ping = now
        return self.notifier.watchdog()

    def next_ping_in(self, now: float) -> float | None:
        """Seconds until the next ping is due (0 when overdue); None without a watchdog."""
        if self.ping_every is None:
            return None
        if self.last_ping is None:
            return self.ping_every
        return max(0.0, self.last_ping + self.ping_every - now)

    def stopping(self, status: str | None = None) -> None:
        """Send ``STOPPING=1`` (call once, when shutdown begins)."""
        self.notifier.stopping(status)


async def keepalive(
    policy: WatchdogPolicy, *, clock: Callable[[], float], stop: asyncio.Event
) -> None:
    """Ping between ticks until ``stop`` is set; returns at once without a watchdog.

    Needed when the tick interval is longer than half the watchdog timeout: pings then
    cannot ride on ticks. Run it as a root task beside the scheduler; ``clock`` is the same
    monotonic clock the driver passes to :meth:`WatchdogPolicy.tick_succeeded`.
    """
    if policy.ping_every is None:
        return
    while not stop.is_set():
        policy.maybe_ping(clock())
        delay = policy.next_ping_in(clock())
        # Re-check at least every ping interval: a tick may move last_ping meanwhile.
        wait = policy.ping_every if not delay else min(delay, policy.ping_every)
        try:
            await asyncio.wait_for(stop.wait(), timeout=wait)
        except TimeoutError:
            continue


def tick_hook(
    policy: WatchdogPolicy, *, clock: Callable[[], float], summary: Callable[[_Report], str]
) -> Callable[[_Report | None, BaseException | None], None]:
    """A live-driver tick hook ``(report, error)`` feeding ``policy``.

    ``summary`` turns a report into the ``STATUS=`` line; a raised tick shows as
    ``tick failed: <error>``. ``clock`` must be the one given to :func:`keepalive`.
    """

    def hook(report: _Report | None, error: BaseException | None) -> None:
        now = clock()
        if error is None and report is not None:
            policy.tick_succeeded(now, summary(report))
        else:
            policy.tick_failed(now, f"tick failed: {error}")

    return hook
