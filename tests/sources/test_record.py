"""``autoscaler record`` against a real Prometheus holding backfilled history, read back
with ``autoscaler.dataset``."""

from __future__ import annotations

import time
from collections import defaultdict
from collections.abc import Callable
from pathlib import Path

import pytest

from autoscaler.cli import main
from autoscaler.dataset import read_dataset, read_long_csv, read_record_json
from autoscaler.sources.base import Sample
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


def by_series(samples: list[Sample]) -> dict[tuple[str, str], list[Sample]]:
    out: dict[tuple[str, str], list[Sample]] = defaultdict(list)
    for s in samples:
        out[(s.target, s.signal)].append(s)
    return out


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

    samples = read_long_csv(out_csv)
    series = by_series(samples)
    assert set(series) == {
        ("api", "queue_length"),
        ("worker", "queue_length"),
        ("api", "queue_doubled"),
        ("worker", "queue_doubled"),
    }
    # 2 days at 15 s is 11,521 points: more than one query may return, so it was chunked.
    n = SPAN // 15 + 1
    assert n > 11000
    for key, rows in series.items():
        times = [s.at for s in rows]
        assert times == [START + 15 * i for i in range(n)], key
    for s in samples:
        expect = api_value(s.at) if s.target == "api" else worker_value(s.at)
        if s.signal == "queue_doubled":
            expect *= 2
        assert s.value == expect, s

    from_json = read_record_json(out_json)
    assert sorted(from_json, key=lambda s: (s.at, s.target, s.signal)) == sorted(
        samples, key=lambda s: (s.at, s.target, s.signal)
    )
    assert len(read_dataset(out_json)) == len(read_dataset(out_csv))


def test_record_needs_a_prometheus_source(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    cfg = tmp_path / "cfg.toml"
    cfg.write_text('[sources.demo]\ntype = "static"\n')
    assert main(["record", "--config", str(cfg), "--out", str(tmp_path / "x.csv")]) == 2
    assert "no prometheus source" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--since", "forever"], "bad --since"),
        (["--step", "0s"], "greater than zero"),
        (["--source", "nope"], "no prometheus source named nope"),
    ],
)
def test_record_rejects_bad_arguments_with_exit_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], args: list[str], message: str
) -> None:
    cfg = write_config(tmp_path / "cfg.toml", "http://127.0.0.1:9")
    code = main(["record", "--config", str(cfg), "--out", str(tmp_path / "x.csv"), *args])
    assert code == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err


def test_record_reports_an_unreachable_prometheus_without_a_traceback(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    cfg = write_config(tmp_path / "cfg.toml", "http://127.0.0.1:9")
    assert main(["record", "--config", str(cfg), "--out", str(tmp_path / "x.csv")]) == 1
    err = capsys.readouterr().err
    assert "range query failed" in err and "Traceback" not in err
    assert not (tmp_path / "x.csv").exists()
