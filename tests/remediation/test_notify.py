"""Slack, PagerDuty and webhook notifiers against local servers that check the payloads."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest
from aiohttp.test_utils import TestServer

from autoscaler.bus import ActionBus
from autoscaler.config import BusSettings
from policies.markers import Secret
from policies.types import Action, Notify, Restart, Scale
from remediation.base import ExecutorError
from remediation.notify import (
    PagerDutyNotifier,
    PagerDutySpec,
    SlackNotifier,
    SlackSpec,
    WebhookNotifier,
    WebhookSpec,
    dedup_key,
)
from tests.remediation.notify_contract import (
    PagerDutyServer,
    Scripted,
    SlackServer,
    WebhookServer,
)

ROUTING_KEY = "R0123456789abcdef0123456789abcde"  # 32 characters, like a real integration key
assert len(ROUTING_KEY) == 32


class Sleeps:
    """An injectable sleep that records the delays and returns at once."""

    def __init__(self) -> None:
        self.delays: list[float] = []

    async def __call__(self, seconds: float) -> None:
        self.delays.append(seconds)


@pytest.fixture
async def slack() -> AsyncIterator[tuple[SlackServer, TestServer]]:
    contract = SlackServer()
    server = TestServer(contract.app)
    await server.start_server()
    yield contract, server
    await server.close()


@pytest.fixture
async def pagerduty() -> AsyncIterator[tuple[PagerDutyServer, TestServer]]:
    contract = PagerDutyServer(ROUTING_KEY)
    server = TestServer(contract.app)
    await server.start_server()
    yield contract, server
    await server.close()


@pytest.fixture
async def hook() -> AsyncIterator[tuple[WebhookServer, TestServer]]:
    contract = WebhookServer()
    server = TestServer(contract.app)
    await server.start_server()
    yield contract, server
    await server.close()


def slack_notifier(server: TestServer, sleeps: Sleeps, **kw: float) -> SlackNotifier:
    url = Secret(str(server.make_url(SlackServer.path)))
    return SlackNotifier("slack", SlackSpec(url=url, **kw), sleep=sleeps)  # type: ignore[arg-type]


def pd_notifier(server: TestServer, sleeps: Sleeps, key: str = ROUTING_KEY) -> PagerDutyNotifier:
    spec = PagerDutySpec(routing_key=Secret(key), url=str(server.make_url(PagerDutyServer.path)))
    return PagerDutyNotifier("pagerduty", spec, sleep=sleeps)


async def test_slack_message_is_accepted_and_carries_severity_target_and_summary(
    slack: tuple[SlackServer, TestServer],
) -> None:
    contract, server = slack
    n = slack_notifier(server, Sleeps())
    try:
        detail = await n.execute(Notify("api", severity="P1", summary="p95 above 150 ms"))
        assert detail == "posted to slack (P1)"
        [body] = contract.received
        assert body["text"] == "[P1] api: p95 above 150 ms"
        assert body["blocks"][0]["text"]["type"] == "mrkdwn"
        assert contract.headers[0]["Content-Type"].startswith("application/json")
        assert await n.states(["api"]) == {}
    finally:
        await n.aclose()


async def test_a_resolved_notification_says_so_in_slack(
    slack: tuple[SlackServer, TestServer],
) -> None:
    contract, server = slack
    n = slack_notifier(server, Sleeps())
    try:
        await n.execute(Notify("api", severity="P0", summary="error rate back", resolve=True))
        assert contract.received[0]["text"] == "[RESOLVED] api: error rate back"
    finally:
        await n.aclose()


async def test_slack_control_characters_in_a_summary_are_escaped_not_parsed(
    slack: tuple[SlackServer, TestServer],
) -> None:
    # a summary built from alert labels: <!here> would ping the channel, <a|b> be a link
    contract, server = slack
    n = slack_notifier(server, Sleeps())
    try:
        await n.execute(Notify("api", severity="P2", summary="<!here> p95 > 150 & <a|b>"))
        [body] = contract.received
        escaped = "[P2] api: &lt;!here&gt; p95 &gt; 150 &amp; &lt;a|b&gt;"
        assert body["text"] == escaped
        assert body["blocks"][0]["text"]["text"] == f"*P2* {escaped}"
    finally:
        await n.aclose()


async def test_slack_retries_429_and_5xx_with_backoff_then_succeeds(
    slack: tuple[SlackServer, TestServer],
) -> None:
    contract, server = slack
    contract.fail_next(
        Scripted(429, "rate_limited", {"Retry-After": "3"}), Scripted(500, "rollup_error")
    )
    sleeps = Sleeps()
    n = slack_notifier(server, sleeps)
    try:
        assert await n.execute(Notify("api", summary="x")) == "posted to slack (P2)"
        assert sleeps.delays == [3.0, 2.0]  # Retry-After, then backoff 1 s * 2**1
        assert len(contract.headers) == 3 and len(contract.received) == 1
    finally:
        await n.aclose()


async def test_a_retry_after_given_as_an_http_date_is_waited_out_by_the_servers_clock(
    slack: tuple[SlackServer, TestServer],
) -> None:
    """RFC 9110 allows ``Retry-After: <HTTP-date>``: it is counted from the answer's
    ``Date`` (the server's clock), and a date already past means now, not our backoff."""
    contract, server = slack
    sent = "Wed, 21 Oct 2015 07:28:00 GMT"
    in_3s, past = "Wed, 21 Oct 2015 07:28:03 GMT", "Wed, 21 Oct 2015 07:27:00 GMT"
    contract.fail_next(
        Scripted(429, "rate_limited", {"Date": sent, "Retry-After": in_3s}),
        Scripted(503, "unavailable", {"Date": sent, "Retry-After": past}),
    )
    sleeps = Sleeps()
    n = slack_notifier(server, sleeps)
    try:
        assert await n.execute(Notify("api", summary="x")) == "posted to slack (P2)"
        assert sleeps.delays == [3.0, 0.0]  # was [1.0, 2.0]: our backoff, the dates ignored
        assert len(contract.headers) == 3
    finally:
        await n.aclose()


async def test_a_retry_after_date_beyond_max_delay_gives_up_with_that_delay(
    slack: tuple[SlackServer, TestServer],
) -> None:
    contract, server = slack
    headers = {"Date": "Wed, 21 Oct 2015 07:28:00 GMT"}
    headers["Retry-After"] = "Wed, 21 Oct 2015 08:28:00 GMT"  # an hour later
    contract.fail_next(Scripted(429, "rate_limited", headers))
    sleeps = Sleeps()
    n = slack_notifier(server, sleeps)
    try:
        with pytest.raises(ExecutorError) as err:
            await n.execute(Notify("api", summary="x"))
        assert err.value.temporary and err.value.delay == 3600.0  # the bus waits it out
        assert sleeps.delays == []
    finally:
        await n.aclose()


async def test_slack_gives_up_after_the_retries_with_a_temporary_error(
    slack: tuple[SlackServer, TestServer],
) -> None:
    contract, server = slack
    contract.fail_next(*[Scripted(503, "unavailable")] * 5)
    sleeps = Sleeps()
    n = slack_notifier(server, sleeps)
    try:
        with pytest.raises(ExecutorError, match="HTTP 503") as err:
            await n.execute(Notify("api", summary="x"))
        assert err.value.temporary
        assert sleeps.delays == [1.0, 2.0]  # two retries, no storm
        assert len(contract.headers) == 3
    finally:
        await n.aclose()


@pytest.mark.parametrize(
    ("status", "body"),
    [(400, "invalid_payload"), (403, "action_prohibited"), (404, "channel_not_found"),
     (410, "channel_is_archived")],
)  # fmt: skip
async def test_slack_client_errors_are_permanent_and_not_retried(
    slack: tuple[SlackServer, TestServer], status: int, body: str
) -> None:
    contract, server = slack
    contract.fail_next(Scripted(status, body))
    sleeps = Sleeps()
    n = slack_notifier(server, sleeps)
    try:
        with pytest.raises(ExecutorError, match=body) as err:
            await n.execute(Notify("api", summary="x"))
        assert not err.value.temporary
        assert sleeps.delays == []
    finally:
        await n.aclose()


async def test_slack_200_without_ok_body_is_not_success(
    slack: tuple[SlackServer, TestServer],
) -> None:
    contract, server = slack
    contract.fail_next(Scripted(200, "<html>login</html>"))
    n = slack_notifier(server, Sleeps())
    try:
        with pytest.raises(ExecutorError, match="HTTP 200"):
            await n.execute(Notify("api", summary="x"))
    finally:
        await n.aclose()


async def test_a_retry_after_longer_than_max_delay_gives_up_with_that_delay(
    slack: tuple[SlackServer, TestServer],
) -> None:
    contract, server = slack
    contract.fail_next(Scripted(429, "rate_limited", {"Retry-After": "120"}))
    sleeps = Sleeps()
    n = slack_notifier(server, sleeps)
    try:
        with pytest.raises(ExecutorError) as err:
            await n.execute(Notify("api", summary="x"))
        assert err.value.temporary and err.value.delay == 120.0
        assert sleeps.delays == []
    finally:
        await n.aclose()


async def test_an_unreachable_slack_is_a_temporary_error(unused_tcp_port: int) -> None:
    sleeps = Sleeps()
    spec = SlackSpec(url=Secret(f"http://127.0.0.1:{unused_tcp_port}/services/x"))
    n = SlackNotifier("slack", spec, sleep=sleeps)
    try:
        with pytest.raises(ExecutorError, match="POST failed") as err:
            await n.execute(Notify("api", summary="x"))
        assert err.value.temporary and sleeps.delays == [1.0, 2.0]
    finally:
        await n.aclose()


async def test_notifiers_without_credentials_fail_permanently_without_posting() -> None:
    for n in (SlackNotifier(), PagerDutyNotifier(), WebhookNotifier()):
        with pytest.raises(ExecutorError, match="configured") as err:
            await n.execute(Notify("api", summary="x"))
        assert not err.value.temporary
        await n.aclose()


async def test_the_secret_never_shows_in_the_spec_repr() -> None:
    spec = PagerDutySpec(routing_key=Secret(ROUTING_KEY))
    assert ROUTING_KEY not in repr(spec)
    assert ROUTING_KEY not in repr(SlackSpec(url=Secret("https://hooks.slack.com/x")))


@pytest.mark.parametrize(
    ("severity", "expected"),
    [("P0", "critical"), ("P1", "error"), ("P2", "warning"), ("P3", "info")],
)
async def test_pagerduty_trigger_maps_severity_and_is_accepted(
    pagerduty: tuple[PagerDutyServer, TestServer], severity: str, expected: str
) -> None:
    contract, server = pagerduty
    n = pd_notifier(server, Sleeps())
    try:
        action = Notify("api", severity=severity, summary="api down", dedup_key="api-down")  # type: ignore[arg-type]
        assert await n.execute(action) == "pagerduty trigger api-down"
        [event] = contract.received
        assert event["payload"]["severity"] == expected
        assert event["payload"]["summary"] == "api down"
        assert event["payload"]["source"] == "autoscaler"
        assert event["payload"]["component"] == "api"
        assert set(contract.open) == {"api-down"}
    finally:
        await n.aclose()


async def test_pagerduty_resolve_closes_the_incident_with_the_same_stable_dedup_key(
    pagerduty: tuple[PagerDutyServer, TestServer],
) -> None:
    contract, server = pagerduty
    n = pd_notifier(server, Sleeps())
    try:
        trigger = Notify("api", severity="P0", summary="error rate 5%")
        await n.execute(trigger)
        await n.execute(trigger)  # a repeat is deduplicated by PagerDuty, same key
        resolve = Notify("api", severity="P0", summary="error rate 5%", resolve=True)
        detail = await n.execute(resolve)
        key = dedup_key(trigger)
        assert detail == f"pagerduty resolve {key}"
        assert [e["dedup_key"] for e in contract.received] == [key] * 3
        assert "payload" not in contract.received[2]
        assert contract.open == {} and contract.resolved == [key]
    finally:
        await n.aclose()


async def test_pagerduty_rejects_a_wrong_routing_key_permanently(
    pagerduty: tuple[PagerDutyServer, TestServer],
) -> None:
    _, server = pagerduty
    sleeps = Sleeps()
    n = pd_notifier(server, sleeps, key="not-the-key")
    try:
        with pytest.raises(ExecutorError, match="routing_key") as err:
            await n.execute(Notify("api", summary="x"))
        assert not err.value.temporary and sleeps.delays == []
    finally:
        await n.aclose()


async def test_pagerduty_429_is_retried(pagerduty: tuple[PagerDutyServer, TestServer]) -> None:
    contract, server = pagerduty
    contract.fail_next(Scripted(429, '{"status":"throttled"}'))
    sleeps = Sleeps()
    n = pd_notifier(server, sleeps)
    try:
        await n.execute(Notify("api", summary="x"))
        assert sleeps.delays == [1.0] and len(contract.open) == 1
    finally:
        await n.aclose()


async def test_a_long_summary_is_cut_to_the_pagerduty_limit(
    pagerduty: tuple[PagerDutyServer, TestServer],
) -> None:
    contract, server = pagerduty
    n = pd_notifier(server, Sleeps())
    try:
        await n.execute(Notify("api", summary="x" * 5000))
        assert len(contract.received[0]["payload"]["summary"]) == 1024
    finally:
        await n.aclose()


async def test_the_webhook_posts_any_action_as_json_with_the_bearer_token(
    hook: tuple[WebhookServer, TestServer],
) -> None:
    contract, server = hook
    spec = WebhookSpec(url=str(server.make_url(WebhookServer.path)), token=Secret("s3cret"))
    n = WebhookNotifier("webhook", spec, sleep=Sleeps())
    try:
        assert await n.execute(Scale("api", replicas=4, current=2)) == "webhook answered 204"
        assert contract.received == [
            {
                "source": "autoscaler",
                "kind": "scale",
                "target": "api",
                "key": "scale:api:from=2,replicas=4",
                "params": {"replicas": 4, "from": 2},
            }
        ]
        assert contract.headers[0]["Authorization"] == "Bearer s3cret"
    finally:
        await n.aclose()


async def test_slack_and_pagerduty_refuse_non_notify_actions() -> None:
    for n in (SlackNotifier(), PagerDutyNotifier()):
        with pytest.raises(ExecutorError, match="cannot carry out scale"):
            await n.execute(Scale("api", replicas=2, current=1))
        await n.aclose()


async def test_error_texts_leave_the_webhook_url_out(unused_tcp_port: int) -> None:
    """The URL is the credential: errors go to the journal and the logs without it, and a
    URL that cannot be valid is a permanent error (retrying cannot fix config)."""
    secret = "/services/T1/B1/XXXXSECRETXXXX"
    for url, temporary in [
        (f"http://127.0.0.1:{unused_tcp_port}{secret}", True),
        (f"hooks.slack.com{secret}", False),  # pasted without its scheme
        (f"https://hooks.slack.com:99999{secret}", False),
    ]:
        n = SlackNotifier("slack", SlackSpec(url=Secret(url), retries=0), sleep=Sleeps())
        try:
            with pytest.raises(ExecutorError) as err:
                await n.execute(Notify("api", summary="x"))
            assert "SECRET" not in str(err.value), url
            assert err.value.temporary is temporary, url
        finally:
            await n.aclose()


async def cut_once_not_retried(
    bus: ActionBus,
    action: Action,
    contract: SlackServer | WebhookServer,
    n: SlackNotifier | WebhookNotifier,
    bus_sleeps: Sleeps,
) -> None:
    """Submit ``action`` while ``contract``'s server hangs: the call is cut at the bus's
    0.5 s timeout after the executor's own tries (``n``), and the bus does not retry it."""
    loop = asyncio.get_running_loop()
    started = loop.time()
    try:
        (outcome,) = await bus.submit([action], 0.0)
    finally:
        contract.hang = False
        await n.aclose()
    assert (outcome.status, outcome.detail) == ("failed", "temporary: timed out after 0.5 s")
    assert bus_sleeps.delays == []  # the bus did not retry the call
    assert 1 <= len(contract.headers) <= 3  # the executor's own tries within 0.5 s
    assert loop.time() - started < 1.0


async def test_a_hung_notifier_holds_a_pass_one_executor_timeout_and_is_not_retried_by_the_bus(
    slack: tuple[SlackServer, TestServer],
) -> None:
    """Slack never answers: the notifier retries each timed-out post itself until the bus's
    executor timeout cancels the call. The bus does not retry the notice again: each of its
    retries would post up to ``retries + 1`` times more and hold the pass for another
    executor timeout (with the defaults 9 posts and 90 s instead of 3 and 30 s)."""
    contract, server = slack
    contract.hang = True
    notifier_sleeps, bus_sleeps = Sleeps(), Sleeps()
    n = slack_notifier(server, notifier_sleeps, timeout=0.2, retries=5)
    bus = ActionBus(
        settings=BusSettings(executor_timeout=0.5, retries=2, notify=("slack",)),
        executors={"slack": n},
        route=lambda a: [],
        sleep=bus_sleeps,
    )
    await cut_once_not_retried(bus, Notify("api", "P1", "queue long"), contract, n, bus_sleeps)


@pytest.mark.parametrize(
    "action",
    [Scale("api", replicas=3, current=2), Restart("api", attempt=1)],
    ids=["scale", "restart"],
)
async def test_a_hung_webhook_as_a_targets_executor_is_not_retried_by_the_bus_either(
    hook: tuple[WebhookServer, TestServer], action: Scale | Restart
) -> None:
    """The webhook retries every action it posts within its call, not only notices: the
    bus's retries after its timeout would post up to ``retries + 1`` times more each, and
    hold the pass another executor timeout each (with the defaults 9 posts and 90 s)."""
    contract, server = hook
    contract.hang = True
    notifier_sleeps, bus_sleeps = Sleeps(), Sleeps()
    spec = WebhookSpec(url=str(server.make_url(WebhookServer.path)), timeout=0.2, retries=5)
    n = WebhookNotifier("hook", spec, sleep=notifier_sleeps)
    bus = ActionBus(
        settings=BusSettings(executor_timeout=0.5, retries=2),
        executors={"hook": n},
        route=lambda a: ["hook"],
        sleep=bus_sleeps,
    )
    await cut_once_not_retried(bus, action, contract, n, bus_sleeps)
