"""``autoscaler record`` against a real Prometheus holding backfilled history, read back
the way replay reads recordings."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import numpy as np
import pytest

from autoscaler.cli import main
from autoscaler.replay import Series, read_metrics
from tests.harness.prometheus import PrometheusServer

STEP = 60  # backfilled sample interval, seconds
SPAN = 2 * 86400
END = (int(time.time()) - 3600) // 3600 * 3600  # an hour ago, on the hour
START = END - SPAN


def api_value(ts: float) -> float:
    return float((int(ts) // STEP) % 97)


def worker_value(ts: float) -> float:
    return 0.5 * ((int(ts) // STEP) % 13)


def openmetrics() -> str:
    lines = ["# TYPE queue_length gauge"]
    for service, fn in (("api", api_value), ("worker", worker_value)):
        for ts in range(START - 3600, END + 1, STEP):
            lines.append(f'queue_length{{service="{service}",instance="a"}} {fn(ts)} {ts}')
    return "\n".join([*lines, "# EOF", ""])


def write_config(path: Path, url: str) -> Path:
    path.write_text(
        f"""
[sources.prom]
type = "prometheus"
url = "{url}"

[sources.prom.queries]
queue_length = "sum by (service) (queue_length)"
queue_doubled = "2 * sum by (service) (queue_length)"
"""
    )
    return path


@pytest.fixture(scope="module")
def history(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("record")


def by_key(series: list[Series]) -> dict[tuple[str, str], Series]:
    return {(s.target, s.signal): s for s in series}


@pytest.mark.integration
def test_record_writes_a_dataset_that_reads_back_with_the_right_values(
    start_prometheus: Callable[..., PrometheusServer],
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    prom = start_prometheus(backfill=openmetrics())
    cfg = write_config(tmp_path / "cfg.toml", prom.url)
    out_csv, out_json = tmp_path / "rec.csv", tmp_path / "rec.json"
    common = ["--config", str(cfg), "--since", "2d", "--step", "15s", "--end", str(END)]
    assert main(["record", *common, "--out", str(out_csv)]) == 0
    assert main(["record", *common, "--out", str(out_json), "--format", "json"]) == 0
    assert "wrote" in capsys.readouterr().err

    series = by_key(read_metrics([out_csv]))
    assert set(series) == {
        ("api", "queue_length"),
        ("worker", "queue_length"),
        ("api", "queue_doubled"),
        ("worker", "queue_doubled"),
    }
    # 2 days at 15 s is 11,521 points: more than one query may return, so it was chunked.
    n = SPAN // 15 + 1
    assert n > 11000
    for (target, signal), s in series.items():
        assert s.times.tolist() == [START + 15 * i for i in range(n)], (target, signal)
        fn = api_value if target == "api" else worker_value
        expect = [fn(t) * (2 if signal == "queue_doubled" else 1) for t in s.times.tolist()]
        assert s.values.tolist() == expect, (target, signal)

    from_json = by_key(read_metrics([out_json]))
    assert set(from_json) == set(series)
    for key, s in series.items():
        np.testing.assert_array_equal(from_json[key].times, s.times)
        np.testing.assert_array_equal(from_json[key].values, s.values)


@pytest.mark.integration
def test_record_refuses_a_query_that_gives_a_target_two_values_at_once(
    start_prometheus: Callable[..., PrometheusServer],
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """``api`` has one instance, replaced by another halfway (10 minutes apart, more than
    Prometheus' 5-minute lookback): each instant has one series, so the recording keeps
    both. ``worker`` has two instances at once: the query does not aggregate, as the live
    source would refuse, and a file with two values per timestamp would fail replay."""
    mid = START + SPAN // 2
    lines = ["# TYPE queue_length gauge"]
    for ts in range(START - 3600, END + 1, STEP):
        if ts <= mid or ts >= mid + 600:
            instance = "a" if ts <= mid else "b"
            lines.append(
                f'queue_length{{service="api",instance="{instance}"}} {api_value(ts)} {ts}'
            )
        for instance in ("a", "b"):
            lines.append(f'queue_length{{service="worker",instance="{instance}"}} 1 {ts}')
    prom = start_prometheus(backfill="\n".join([*lines, "# EOF", ""]))
    common = ["--since", "2d", "--step", "60s", "--end", str(END), "--quiet"]

    def record(selector: str, out: Path) -> int:
        cfg = tmp_path / f"{out.stem}.toml"
        cfg.write_text(
            f'[sources.prom]\ntype = "prometheus"\nurl = "{prom.url}"\n'
            f"[sources.prom.queries]\nqueue_length = 'queue_length{{{selector}}}'\n"
        )
        return main(["record", "--config", str(cfg), *common, "--out", str(out)])

    assert record('service="api"', tmp_path / "api.csv") == 0
    api = by_key(read_metrics([tmp_path / "api.csv"]))[("api", "queue_length")]
    # No value once the lookback has lost "a" and before "b" starts (whether the instant
    # 5 minutes after "a" still sees it differs between Prometheus versions).
    grid = set(range(START, END + 1, STEP))
    assert grid - set(api.times.tolist()) - {mid + 300} == set(range(mid + 360, mid + 600, STEP))
    held = [api_value(mid if mid < t < mid + 600 else t) for t in api.times.tolist()]
    assert api.values.tolist() == held  # "a"'s last sample, through the lookback
    capsys.readouterr()

    assert record('service="worker"', tmp_path / "worker.csv") == 1
    err = capsys.readouterr().err
    assert "signal 'queue_length': several series for service='worker'" in err
    assert "by (service)" in err
    assert not (tmp_path / "worker.csv").exists()


@pytest.mark.parametrize(
    "result",
    [
        [{"values": [[1700000000, "1"]]}],  # no labels
        [{"metric": ["service", "api"], "values": []}],
        [{"metric": {"service": "api"}, "values": "1"}],
    ],
)
def test_a_malformed_answer_is_one_line_and_exit_1_not_a_traceback(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], result: list[object]
) -> None:
    # Prometheus never answers this: a proxy or another server behind the URL might
    body = json.dumps({"status": "success", "data": {"resultType": "matrix", "result": result}})

    class Answer(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.end_headers()
            self.wfile.write(body.encode())

        def log_message(self, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Answer)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        cfg = write_config(tmp_path / "c.toml", f"http://127.0.0.1:{server.server_port}")
        out = tmp_path / "out.csv"
        args = ["record", "--config", str(cfg), "--since", "1h", "--step", "60s", "--quiet"]
        code = main([*args, "--out", str(out)])
    finally:
        server.shutdown()
        server.server_close()
    err = capsys.readouterr().err
    assert code == 1, err
    assert "signal 'queue_length': malformed answer" in err and "Traceback" not in err
    assert not out.exists()


@pytest.fixture
def refusing() -> Iterator[tuple[str, list[str]]]:
    """A server that answers every query 400 (no retries), and the queries it was sent."""
    queries: list[str] = []

    class Refuse(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            queries.append(self.path)
            self.send_response(400)
            self.end_headers()

        def log_message(self, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Refuse)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_port}", queries
    server.shutdown()
    server.server_close()


@pytest.mark.parametrize("where", ["a directory", "a missing directory"])
def test_an_output_that_cannot_be_written_exits_2_before_any_query(
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    refusing: tuple[str, list[str]],
    where: str,
) -> None:
    # found out only after the last query, a day's recording was thrown away
    url, queries = refusing
    out = tmp_path if where == "a directory" else tmp_path / "nope" / "rec.csv"
    cfg = write_config(tmp_path / "c.toml", url)
    args = ["record", "--config", str(cfg), "--since", "1h", "--step", "60s", "--quiet"]
    code = main([*args, "--out", str(out)])
    err = capsys.readouterr().err
    assert code == 2, err
    assert f"autoscaler record: cannot write {str(out)!r}:" in err
    assert queries == []


def test_an_old_recording_is_left_as_it_was_when_the_queries_fail(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], refusing: tuple[str, list[str]]
) -> None:
    url, queries = refusing
    out = tmp_path / "rec.csv"
    out.write_text("timestamp,target,signal,value\n1700000000,api,q,1\n")
    cfg = write_config(tmp_path / "c.toml", url)
    args = ["record", "--config", str(cfg), "--since", "1h", "--step", "60s", "--quiet"]
    assert main([*args, "--out", str(out)]) == 1
    assert "range query failed" in capsys.readouterr().err and queries
    assert out.read_text() == "timestamp,target,signal,value\n1700000000,api,q,1\n"
