"""Notifiers: Slack incoming webhooks, PagerDuty Events API v2 and a generic JSON webhook.

Each is an executor that receives ``Notify`` actions (the action bus routes them to the
executors named in ``bus.notify``); the generic webhook also accepts any other action and
posts it as JSON. Credentials are ``Secret`` fields, so they come from the environment or
a file, never from the config file itself.

Delivery follows each service's documented contract:

- Slack: success is HTTP 200 with the plain-text body ``ok``; 4xx (``invalid_payload``,
  ``channel_not_found``, ...) are permanent.
- PagerDuty: 2xx (202 ``{"status": "success", ...}``) is success; 400 is permanent. A
  ``trigger`` and its ``resolve`` share a stable ``dedup_key`` (the action's, or one derived
  from target and summary). Severities: P0→critical, P1→error, P2→warning, P3→info.
- 429 and 5xx (and connection errors, timeouts) are retried here with exponential
  backoff, honouring ``Retry-After`` (seconds or an HTTP date); the bus does not retry
  them again, and waits out a ``Retry-After`` too long to wait here. All tries share the
  bus's ``executor_timeout``: the bus cancels the call then, and does not retry one that
  timed out either (``retries_in_call``; the webhook's other actions too). The defaults
  (5 s a try, 2 retries, backoff 1 then 2 s: 18 s against a hung server) end well within
  the default 30 s, and ``check`` warns of a spec whose ``worst_case`` does not. The sleep is
  injectable so tests never sleep for real. Error texts leave the URL's path out: a
  webhook URL is the credential.

These adapters are contract-tested against local aiohttp servers that implement the
documented behaviour; they have not been run against the live Slack or PagerDuty APIs.
"""

from __future__ import annotations

import asyncio
import hashlib
import math
from collections.abc import Awaitable, Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar, Generic, Protocol, TypeVar
from urllib.parse import quote, urlsplit

import aiohttp

from policies.markers import InvalidField, Seconds, Secret
from policies.types import Action, Notify, TargetState
from remediation.base import ExecutorError, parse_retry_after

Sleep = Callable[[float], Awaitable[None]]

PD_SEVERITY = {"P0": "critical", "P1": "error", "P2": "warning", "P3": "info"}
PD_ENQUEUE = "https://events.pagerduty.com/v2/enqueue"


@dataclass(frozen=True, slots=True)
class SlackSpec:
    """Config of a ``slack`` executor (incoming webhook)."""

    url: Secret = field(default_factory=Secret)
    """The incoming-webhook URL (it is the credential): ``"${SLACK_WEBHOOK_URL}"`` or url_file."""
    timeout: Seconds = 5.0
    """Seconds one POST may take. All tries (``worst_case``) must end within
    ``bus.executor_timeout`` (check warns otherwise)."""
    retries: int = 2
    """Retries after a 429, a 5xx or a connection error."""
    backoff: Seconds = 1.0
    """First retry delay in seconds; doubles each retry (``Retry-After`` wins when given)."""
    max_delay: Seconds = 10.0
    """Longest wait between two tries; a longer ``Retry-After`` gives up (temporary)."""

    def worst_case(self) -> float:
        """Seconds a call may take against a server that never answers (module's
        ``worst_case``)."""
        return worst_case(self)

    def missing(self) -> Iterator[InvalidField]:
        """Keys it cannot work without (``policies.markers``)."""
        if not self.url:
            yield InvalidField(
                "url", 'required: the incoming-webhook URL ("${SLACK_WEBHOOK_URL}" or url_file)'
            )


@dataclass(frozen=True, slots=True)
class PagerDutySpec:
    """Config of a ``pagerduty`` executor (Events API v2)."""

    routing_key: Secret = field(default_factory=Secret)
    """The 32-character integration key: ``"${PAGERDUTY_ROUTING_KEY}"`` or routing_key_file."""
    url: str = PD_ENQUEUE
    """Events API v2 enqueue endpoint."""
    source: str = "autoscaler"
    """``payload.source``: the system the events come from."""
    timeout: Seconds = 5.0
    """Seconds one POST may take. All tries (``worst_case``) must end within
    ``bus.executor_timeout`` (check warns otherwise)."""
    retries: int = 2
    """Retries after a 429, a 5xx or a connection error."""
    backoff: Seconds = 1.0
    """First retry delay in seconds; doubles each retry (``Retry-After`` wins when given)."""
    max_delay: Seconds = 10.0
    """Longest wait between two tries; a longer ``Retry-After`` gives up (temporary)."""

    def worst_case(self) -> float:
        """Seconds a call may take against a server that never answers (module's
        ``worst_case``)."""
        return worst_case(self)

    def missing(self) -> Iterator[InvalidField]:
        """Keys it cannot work without (``policies.markers``)."""
        if not self.routing_key:
            yield InvalidField(
                "routing_key",
                'required: the integration key ("${PAGERDUTY_ROUTING_KEY}" or routing_key_file)',
            )


@dataclass(frozen=True, slots=True)
class WebhookSpec:
    """Config of a ``webhook`` executor: every action it receives is POSTed as JSON."""

    url: str = ""
    """Where to POST."""
    token: Secret = field(default_factory=Secret)
    """Optional bearer token (``"${ENV}"`` or token_file); unset sends no Authorization."""
    timeout: Seconds = 5.0
    """Seconds one POST may take. All tries (``worst_case``) must end within
    ``bus.executor_timeout`` (check warns otherwise)."""
    retries: int = 2
    """Retries after a 429, a 5xx or a connection error."""
    backoff: Seconds = 1.0
    """First retry delay in seconds; doubles each retry (``Retry-After`` wins when given)."""
    max_delay: Seconds = 10.0
    """Longest wait between two tries; a longer ``Retry-After`` gives up (temporary)."""

    def worst_case(self) -> float:
        """Seconds a call may take against a server that never answers (module's
        ``worst_case``)."""
        return worst_case(self)

    def missing(self) -> Iterator[InvalidField]:
        """Keys it cannot work without (``policies.markers``)."""
        if not self.url:
            yield InvalidField("url", "required: where to POST")


def dedup_key(action: Notify) -> str:
    """The action's dedup key, or a stable one derived from its target and summary."""
    if action.dedup_key:
        return action.dedup_key[:255]
    digest = hashlib.sha256(f"{action.target}\0{action.summary}".encode()).hexdigest()[:16]
    return f"autoscaler/{action.target}/{digest}"[:255]


class _Poster:
    """POSTs JSON with bounded retries on 429/5xx/connection errors."""

    def __init__(
        self,
        name: str,
        *,
        timeout: float,
        retries: int,
        backoff: float,
        max_delay: float,
        sleep: Sleep,
    ) -> None:
        self.name = name
        self.timeout = timeout
        self.retries = retries
        self.backoff = backoff
        self.max_delay = max_delay
        self.sleep = sleep
        self._session: aiohttp.ClientSession | None = None

    async def post(
        self,
        url: str,
        payload: Mapping[str, Any],
        *,
        accept: Callable[[int, str], bool],
        headers: Mapping[str, str] | None = None,
    ) -> tuple[int, str]:
        """POST ``payload``; return (status, body) once ``accept`` says it succeeded."""
        if self._session is None:
            self._session = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(self.timeout))
        attempt = 0
        while True:
            retry_after: float | None = None
            try:
                async with self._session.post(url, json=payload, headers=headers) as resp:
                    status, body = resp.status, await resp.text()
                    retry_after = parse_retry_after(
                        resp.headers.get("Retry-After"), date=resp.headers.get("Date")
                    )
            except aiohttp.InvalidURL:
                # its text is the URL, and a webhook URL is the credential
                raise ExecutorError(f"{self.name}: the configured URL is not valid") from None
            except (aiohttp.ClientError, TimeoutError) as exc:
                error = ExecutorError(
                    f"{self.name}: POST failed: {_without(str(exc), url)}",
                    temporary=True,
                    retried=True,
                )
            else:
                if accept(status, body):
                    return status, body
                temporary = status == 429 or status >= 500
                error = ExecutorError(
                    f"{self.name}: HTTP {status}: {_without(body.strip()[:200], url)}",
                    temporary=temporary,
                    delay=retry_after or 0.0,
                    retried=True,
                )
                if not temporary:
                    raise error
            if attempt >= self.retries:
                raise error
            delay = self.backoff * 2**attempt if retry_after is None else retry_after
            if delay > self.max_delay:
                raise error
            attempt += 1
            await self.sleep(delay)

    async def aclose(self) -> None:
        session, self._session = self._session, None
        if session is not None:
            await session.close()


def _without(text: str, url: str) -> str:
    """``text`` with the URL's path and query left out: a webhook URL is a credential, and
    error texts (a connection error, a proxy's error page) may quote it."""
    split = urlsplit(url)
    secret = split.path + (f"?{split.query}" if split.query else "")
    if len(secret) <= 1:
        return text
    return text.replace(secret, "/…").replace(quote(secret, safe="/?=&"), "/…")


class _RetrySpec(Protocol):
    """What every notifier spec has: its HTTP timeout and retry settings."""

    @property
    def timeout(self) -> float: ...
    @property
    def retries(self) -> int: ...
    @property
    def backoff(self) -> float: ...
    @property
    def max_delay(self) -> float: ...


def worst_case(spec: _RetrySpec) -> float:
    """Seconds a call may take against a server that never answers: every try times out,
    with the backoff sleeps between them; a sleep longer than ``max_delay`` is not slept
    (the call gives up there). Infinite with no timeout (0). A ``Retry-After`` (each at
    most ``max_delay``) may stretch a call to a server that does answer beyond this."""
    if spec.timeout <= 0:  # aiohttp reads 0 as no timeout
        return math.inf
    tries = max(0, spec.retries) + 1
    if spec.backoff <= 0:
        return spec.timeout * tries
    total, delay = spec.timeout, spec.backoff
    for _ in range(tries - 1):
        if delay > spec.max_delay:
            break
        total += delay + spec.timeout
        delay *= 2
    return total


_S = TypeVar("_S", bound=_RetrySpec)


class _Notifier(Generic[_S]):
    """Shared parts: construction from a spec, no target state, a poster, a close."""

    cancellable = True  # aiohttp only: a post that timed out is cancelled, not doubled
    retries_in_call = True  # a call the bus's timeout cut is not retried by the bus again

    default_name: ClassVar[str]
    spec_type: Callable[[], _S]

    def __init__(
        self, name: str | None = None, spec: _S | None = None, *, sleep: Sleep = asyncio.sleep
    ) -> None:
        self.name = name or self.default_name
        self.spec: _S = spec if spec is not None else self.spec_type()
        s = self.spec
        self._poster = _Poster(
            self.name, timeout=s.timeout, retries=s.retries, backoff=s.backoff,
            max_delay=s.max_delay, sleep=sleep,
        )  # fmt: skip

    async def states(self, targets: Sequence[str]) -> Mapping[str, TargetState]:
        return {}

    async def aclose(self) -> None:
        await self._poster.aclose()


class SlackNotifier(_Notifier[SlackSpec]):
    """Posts Notify actions to a Slack incoming webhook."""

    default_name = "slack"
    spec_type = SlackSpec

    async def execute(self, action: Action) -> str:
        if not isinstance(action, Notify):
            raise ExecutorError(f"{self.name}: cannot carry out {action.kind} actions")
        if not self.spec.url:
            raise ExecutorError(f"{self.name}: no webhook url configured")
        await self._poster.post(
            self.spec.url.get(),
            slack_message(action),
            accept=lambda status, body: status == 200 and body.strip() == "ok",
        )
        return f"posted to slack ({action.severity})"


def slack_escape(text: str) -> str:
    """``&``, ``<`` and ``>`` as the HTML entities Slack asks for (and only those): they are
    its control characters, so a summary built from alert labels that holds ``<!here>``
    would otherwise ping the whole channel, and ``a<b`` could vanish as a malformed link."""
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def slack_message(action: Notify) -> dict[str, Any]:
    """The incoming-webhook body: a plain ``text`` line plus one mrkdwn section."""
    head = "RESOLVED" if action.resolve else action.severity
    text = slack_escape(f"[{head}] {action.target}: {action.summary}")
    return {
        "text": text,
        "blocks": [{"type": "section", "text": {"type": "mrkdwn", "text": f"*{head}* {text}"}}],
    }


class PagerDutyNotifier(_Notifier[PagerDutySpec]):
    """Triggers and resolves PagerDuty incidents through the Events API v2."""

    default_name = "pagerduty"
    spec_type = PagerDutySpec

    async def execute(self, action: Action) -> str:
        if not isinstance(action, Notify):
            raise ExecutorError(f"{self.name}: cannot carry out {action.kind} actions")
        if not self.spec.routing_key:
            raise ExecutorError(f"{self.name}: no routing_key configured")
        event = pagerduty_event(action, routing_key=self.spec.routing_key, source=self.spec.source)
        await self._poster.post(
            self.spec.url, event, accept=lambda status, body: 200 <= status < 300
        )
        return f"pagerduty {event['event_action']} {event['dedup_key']}"


def pagerduty_event(action: Notify, *, routing_key: Secret, source: str) -> dict[str, Any]:
    """The Events API v2 body for ``action`` (trigger, or resolve when ``action.resolve``)."""
    event: dict[str, Any] = {
        "routing_key": routing_key.get(),
        "dedup_key": dedup_key(action),
        "event_action": "resolve" if action.resolve else "trigger",
    }
    if not action.resolve:
        event["client"] = "autoscaler"
        event["payload"] = {
            "summary": (action.summary or f"{action.target} needs attention")[:1024],
            "source": source,
            "severity": PD_SEVERITY.get(action.severity, "warning"),
            "component": action.target,
            "custom_details": {"priority": action.severity},
        }
    return event


class WebhookNotifier(_Notifier[WebhookSpec]):
    """POSTs every action it receives as one JSON object to a URL."""

    default_name = "webhook"
    spec_type = WebhookSpec

    async def execute(self, action: Action) -> str:
        if not self.spec.url:
            raise ExecutorError(f"{self.name}: no url configured")
        headers = {"Authorization": f"Bearer {self.spec.token.get()}"} if self.spec.token else {}
        body: dict[str, Any] = {
            "source": "autoscaler",
            "kind": action.kind,
            "target": action.target,
            "key": action.key,
            "params": action.params(),
        }
        status, _ = await self._poster.post(
            self.spec.url, body, headers=headers, accept=lambda status, _b: 200 <= status < 300
        )
        return f"webhook answered {status}"
