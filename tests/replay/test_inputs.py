"""Bad recorded inputs end in a clear message naming file and line, exit code 2."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from autoscaler.cli import main
from autoscaler.replay import InputError, read_long_csv, read_metrics, read_value_csv

CONFIG = Path(__file__).parent / "data" / "golden.toml"
HEADER = "timestamp,target,signal,value\n"


def replay_with(tmp_path: Path, text: str, capsys: pytest.CaptureFixture[str]) -> tuple[int, str]:
    path = tmp_path / "metrics.csv"
    path.write_text(text, encoding="utf-8")
    code = main(
        ["replay", "--config", str(CONFIG), "--metrics", str(path), "--out", str(tmp_path / "o")]
    )
    return code, capsys.readouterr().err


def backtest_with(tmp_path: Path, text: str, capsys: pytest.CaptureFixture[str]) -> tuple[int, str]:
    path = tmp_path / "demand.csv"
    path.write_text(text, encoding="utf-8")
    code = main(
        [
            "backtest",
            "--demand",
            str(path),
            "--capacity-per-replica",
            "10",
            "--out",
            str(tmp_path / "o"),
        ]
    )
    return code, capsys.readouterr().err


@pytest.mark.parametrize(
    ("body", "line", "words"),
    [
        ("30,api,q,1\n15,api,q,2\n", 3, "out of order"),
        ("15,api,q,1\n15,api,q,2\n", 3, "duplicate timestamp"),
        ("15,api,q,1\n30,api,q,lots\n", 3, "'lots' is not a number"),
        ("15,api,q,1\nyesterday,api,q,2\n", 3, "neither unix seconds nor ISO-8601"),
        ("15,api,q,1\n30,api\n", 3, "expected 4 columns"),
        ("15,api,q,\n", 2, "'' is not a number"),
        ("15,api,q,1\n1700000000000,api,q,2\n", 3, "is not a time (unix seconds expected)"),
        ("15,api,q,1\ninf,api,q,2\n", 3, "neither unix seconds nor ISO-8601"),
    ],
)
def test_bad_rows_name_file_and_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], body: str, line: int, words: str
) -> None:
    code, err = replay_with(tmp_path, HEADER + body, capsys)
    assert code == 2
    assert f"metrics.csv:{line}:" in err and words in err
    assert "Traceback" not in err


def test_empty_file_is_an_error(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, err = replay_with(tmp_path, "", capsys)
    assert code == 2 and "metrics.csv: empty file" in err


def test_header_only_is_an_error(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, err = replay_with(tmp_path, HEADER, capsys)
    assert code == 2 and "no samples" in err


def test_missing_header_columns_are_named(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, err = replay_with(tmp_path, "time,value\n1,2\n", capsys)
    assert code == 2 and "metrics.csv:1:" in err and "missing timestamp,target,signal" in err


def test_missing_file_is_an_error(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code = main(
        [
            "replay",
            "--config",
            str(CONFIG),
            "--metrics",
            str(tmp_path / "nope.csv"),
            "--out",
            str(tmp_path / "o"),
        ]
    )
    assert code == 2 and "nope.csv: cannot read" in capsys.readouterr().err


def test_gaps_are_kept_and_nan_values_accepted(tmp_path: Path) -> None:
    path = tmp_path / "m.csv"
    path.write_text(HEADER + "0,api,q,1\n15,api,q,NaN\n600,api,q,3\n", encoding="utf-8")
    (s,) = read_long_csv(path)
    assert s.times.tolist() == [0.0, 15.0, 600.0]  # no filling: the engine sees staleness


def test_iso_and_unix_timestamps_mix(tmp_path: Path) -> None:
    path = tmp_path / "m.csv"
    path.write_text(
        HEADER + "2014-07-01 00:00:00,api,q,1\n1404173100,api,q,2\n2014-07-01T00:10:00Z,api,q,3\n",
        encoding="utf-8",
    )
    (s,) = read_long_csv(path)
    assert s.times.tolist() == [1404172800.0, 1404173100.0, 1404173400.0]


def test_the_same_series_in_two_files_is_an_error(tmp_path: Path) -> None:
    a, b = tmp_path / "a.csv", tmp_path / "b.csv"
    a.write_text(HEADER + "0,api,q,1\n", encoding="utf-8")
    b.write_text(HEADER + "15,api,q,1\n", encoding="utf-8")
    with pytest.raises(InputError, match="also in"):
        read_metrics([a, b])


def test_prometheus_dump_is_read_and_its_errors_located(tmp_path: Path) -> None:
    path = tmp_path / "dump.json"
    path.write_text(
        '{"status":"success","data":{"resultType":"matrix","result":['
        '{"metric":{"__name__":"queue_length","app":"api"},"values":[[15,"1"],[30,"NaN"]]}]}}',
        encoding="utf-8",
    )
    (s,) = read_metrics([path])
    assert (s.target, s.signal, s.times.tolist()) == ("api", "queue_length", [15.0, 30.0])
    path.write_text(
        '{"status":"success","data":{"resultType":"matrix","result":['
        '{"metric":{"signal":"q","target":"api"},"values":[[15,"1"],[30,"x"]]}]}}',
        encoding="utf-8",
    )
    with pytest.raises(InputError, match=r"dump.json:data.result\[0\].values\[1\]"):
        read_metrics([path])
    path.write_text('{"status": "success",\n "data": ', encoding="utf-8")
    with pytest.raises(InputError, match=r"dump\.json:2: not valid JSON"):
        read_metrics([path])


def test_prometheus_series_that_take_turns_are_one_series_whatever_their_label_order(
    tmp_path: Path,
) -> None:
    # instance "b" replaced "a" (Prometheus orders results by labels, not time): each
    # instant has one value, as the live source accepts; this was "timestamp out of order"
    def result(instance: str, times: list[int]) -> str:
        labels = {"app": "api", "instance": instance, "__name__": "q"}
        return json.dumps({"metric": labels, "values": [[t, str(t // 15)] for t in times]})

    path = tmp_path / "dump.json"
    head = '{"status":"success","data":{"resultType":"matrix","result":['
    path.write_text(head + result("a", [75, 90]) + "," + result("b", [15, 30, 45]) + "]}}")
    (s,) = read_metrics([path])
    assert s.times.tolist() == [15.0, 30.0, 45.0, 75.0, 90.0]
    assert s.values.tolist() == [1.0, 2.0, 3.0, 5.0, 6.0]
    # at the same instant they are two values: refused, with where the second one is
    path.write_text(head + result("a", [45, 60]) + "," + result("b", [15, 30, 45]) + "]}}")
    with pytest.raises(InputError, match=r"result\[0\].values\[0\]: duplicate timestamp"):
        read_metrics([path])


@pytest.mark.parametrize(
    ("body", "words"),
    [
        ("timestamp,value\n", "no samples"),
        (
            "timestamp,value\n2014-07-01 00:30:00,5\n2014-07-01 00:00:00,6\n",
            ":3: timestamp out of order",
        ),
        (
            "timestamp,value\n2014-07-01 00:00:00,5\n2014-07-01 00:00:00,6\n",
            ":3: duplicate timestamp",
        ),
        ("timestamp,value\n2014-07-01 00:00:00,-5\n", ":2: demand must be a finite number >= 0"),
        ("timestamp,value\n2014-07-01 00:00:00,five\n", ":2: value 'five' is not a number"),
        ("timestamp,value\n2014-07-01 00:00:00,5\n", "spans less than two ticks"),
        ("timestamp,value\n1700000000,5\n1700000060000,6\n", ":3: timestamp 1700000060000"),
        # a typo in the year: a century of 15 s ticks is not a recording
        ("timestamp,value\n2024-07-01 00:00:00,5\n2124-07-01 00:00:00,6\n", "more than the"),
    ],
)
def test_bad_demand_files_exit_2_with_the_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], body: str, words: str
) -> None:
    code, err = backtest_with(tmp_path, body, capsys)
    assert code == 2 and words in err and "demand.csv" in err and "Traceback" not in err


def test_demand_gaps_are_held_constant(tmp_path: Path) -> None:
    path = tmp_path / "d.csv"
    path.write_text("timestamp,value\n0,5\n3600,7\n", encoding="utf-8")
    times, values = read_value_csv(path)
    assert times.tolist() == [0.0, 3600.0] and values.tolist() == [5.0, 7.0]


def test_an_autoscaler_record_dump_is_read_as_series(tmp_path: Path) -> None:
    pytest.importorskip("autoscaler.dataset")
    path = tmp_path / "rec.json"
    path.write_text(
        '{"format": "autoscaler-record/1", "start": 0, "end": 30, "step": 15, "signals": '
        '{"queue_length": {"source": "prom", "query": "q", "target_label": "service", '
        '"targets": {"platform_api": "api"}, "data": {"resultType": "matrix", "result": '
        '[{"metric": {"service": "platform_api"}, "values": [[15, "1"], [30, "2"]]}]}}}}',
        encoding="utf-8",
    )
    (s,) = read_metrics([path])
    assert (s.target, s.signal, s.values.tolist()) == ("api", "queue_length", [1.0, 2.0])


@pytest.mark.parametrize(
    ("config", "words"),
    [
        ('[forecasting]\nmodel = "bogus"\n', "forecasting.model: unknown model 'bogus'"),
        ("[policies]\nx = 5\n", "policies.x: expected a table"),
        ("policies = [1, 2]\n", "policies: expected a table"),
        ("[signals]\ndemand = 3\n", "signals.demand: expected a table"),
        # misspelt tables: not ignored while the built-in policy is measured in their place
        ('[forcasting]\nmodel = "seasonal-change"\n', "forcasting: unknown key"),
        ('[policy.up]\ntype = "predictive"\nsignal = "demand"\n', "policy: unknown key"),
    ],
)
def test_a_bad_backtest_config_exits_2_with_its_key(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], config: str, words: str
) -> None:
    cfg = tmp_path / "c.toml"
    cfg.write_text(config, encoding="utf-8")
    demand = tmp_path / "demand.csv"
    demand.write_text("timestamp,value\n0,5\n60,6\n120,7\n", encoding="utf-8")
    out = str(tmp_path / "o")
    args = ["--demand", str(demand), "--capacity-per-replica", "10", "--out", out]
    code = main(["backtest", *args, "--config", str(cfg)])
    err = capsys.readouterr().err
    assert code == 2 and words in err and "Traceback" not in err


def test_a_backtest_policy_on_a_signal_the_model_does_not_have_is_named(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # it held on every tick: scored as a policy that never scales, and no word of why
    cfg = tmp_path / "c.toml"
    cfg.write_text('[policies.up]\ntype = "target_tracking"\nmetrics = [{signal = "cpu"}]\n')
    demand = tmp_path / "demand.csv"
    demand.write_text("timestamp,value\n0,5\n60,6\n120,7\n", encoding="utf-8")
    out = str(tmp_path / "o")
    args = ["--demand", str(demand), "--capacity-per-replica", "10", "--out", out]
    warning = (
        "warning: policies.up.metrics[0].signal: 'cpu' is not a signal of the backtest"
        " (demand, utilization, queue_length, p95_latency_ms)"
    )
    assert main(["backtest", *args, "--config", str(cfg)]) == 0
    assert warning in capsys.readouterr().err
    assert main(["check", "--backtest", str(cfg)]) == 0
    assert warning in capsys.readouterr().err
    cfg.write_text('[policies.up]\ntype = "target_tracking"\nmetrics = [{signal = "demand"}]\n')
    assert main(["backtest", *args, "--config", str(cfg)]) == 0
    assert main(["check", "--backtest", str(cfg)]) == 0
    assert "warning" not in capsys.readouterr().err


@pytest.mark.parametrize("history", ["0s", "0"])
def test_a_backtest_with_no_history_exits_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], history: str
) -> None:
    demand = tmp_path / "demand.csv"
    demand.write_text("timestamp,value\n0,5\n60,6\n120,7\n", encoding="utf-8")
    args = ["--demand", str(demand), "--capacity-per-replica", "10", "--out", str(tmp_path)]
    assert main(["backtest", *args, "--history", history]) == 2
    assert "--history must be greater than zero" in capsys.readouterr().err


def test_target_names_are_escaped_in_the_replay_report(tmp_path: Path) -> None:
    cfg = tmp_path / "c.toml"
    cfg.write_text(
        CONFIG.read_text(encoding="utf-8")
        .replace("[targets.api]", '[targets."<b>api"]')
        .replace('targets = ["api"]', 'targets = ["<b>api"]'),
        encoding="utf-8",
    )
    metrics = tmp_path / "m.csv"
    rows = "".join(f"{15 * k},<b>api,queue_length,1\n" for k in range(1, 5))
    metrics.write_text(HEADER + rows, encoding="utf-8")
    args = ["--config", str(cfg), "--metrics", str(metrics), "--out", str(tmp_path / "o")]
    assert main(["replay", *args]) == 0
    page = (tmp_path / "o" / "report.html").read_text(encoding="utf-8")
    assert "&lt;b&gt;api" in page and "<b>api" not in page


def test_a_csv_or_json_with_a_byte_order_mark_is_read(tmp_path: Path) -> None:
    csv_file = tmp_path / "m.csv"
    csv_file.write_text("\ufeff" + HEADER + "15,api,q,1\n30,api,q,2\n", encoding="utf-8")
    json_file = tmp_path / "m.json"
    doc = '{"status":"success","data":{"resultType":"matrix","result":[{"metric":'
    doc += '{"__name__":"r","target":"web"},"values":[[15,"1"],[30,"2"]]}]}}'
    json_file.write_text("\ufeff" + doc, encoding="utf-8")
    series = read_metrics([csv_file, json_file])
    assert {(s.target, s.signal) for s in series} == {("api", "q"), ("web", "r")}
    demand = tmp_path / "d.csv"
    demand.write_text("\ufefftimestamp,value\n0,5\n60,6\n", encoding="utf-8")
    assert read_value_csv(demand)[1].tolist() == [5.0, 6.0]


@pytest.mark.parametrize(
    "args",
    [
        ["backtest", "--capacity-per-replica", "10", "--price-per-replica-hour", "nan"],
        ["backtest", "--capacity-per-replica", "10", "--price-per-replica-hour", "-1"],
        ["replay", "--config", str(CONFIG), "--initial-replicas", "-3"],
    ],
)
def test_bad_numbers_on_the_command_line_exit_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], args: list[str]
) -> None:
    data = tmp_path / "data.csv"
    if args[0] == "backtest":
        data.write_text("timestamp,value\n0,5\n60,6\n120,7\n", encoding="utf-8")
        args = [*args, "--demand", str(data)]
    else:
        data.write_text(HEADER + "15,api,queue_length,1\n", encoding="utf-8")
        args = [*args, "--metrics", str(data)]
    try:
        code = main([*args, "--out", str(tmp_path / "o")])
    except SystemExit as exc:  # argparse's own usage errors
        code = int(exc.code or 0)
    err = capsys.readouterr().err
    assert code == 2 and "Traceback" not in err and err.strip()


def test_targets_missing_from_the_config_are_named_and_no_tick_is_an_error(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, err = replay_with(tmp_path, HEADER + "15,api,q,1\n30,ghost,q,1\n", capsys)
    assert code == 0 and "1 recorded target(s) not in" in err and "ghost" in err
    code, err = replay_with(tmp_path, HEADER + "16,api,q,1\n", capsys)  # between two ticks
    assert code == 2 and "covers no tick of the 15 s grid" in err


def test_a_signal_a_rule_reads_that_the_recording_lacks_is_named(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # the rule then holds on every tick: a misspelt signal gave a replay of holds and no word
    code, err = replay_with(tmp_path, HEADER + "15,api,queue_len,9\n30,api,queue_len,9\n", capsys)
    assert code == 0
    assert (
        "warning: policies.queue.signal: 'queue_length' is not in the recording"
        " (recorded: queue_len)"
    ) in err
    code, err = replay_with(tmp_path, HEADER + "15,api,queue_length,9\n", capsys)
    assert code == 0 and "warning" not in err


@pytest.mark.parametrize("command", ["replay", "backtest"])
def test_outputs_that_cannot_be_written_end_in_one_line_not_a_traceback(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], command: str
) -> None:
    (tmp_path / "o" / "report.html").mkdir(parents=True)  # in the way of the report
    if command == "replay":
        rows = "".join(f"{15 * k},api,queue_length,1\n" for k in range(1, 5))
        code, err = replay_with(tmp_path, HEADER + rows, capsys)
    else:
        code, err = backtest_with(tmp_path, "timestamp,value\n0,5\n60,6\n120,7\n", capsys)
    assert code == 1, err
    assert f"error: cannot write to {tmp_path / 'o'}" in err and "Traceback" not in err


def test_bytes_that_are_not_utf8_far_into_a_file_name_their_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # text is decoded a block ahead of the CSV reader: past the first block this was a
    # traceback, and within it the error named line 1
    rows = "".join(f"{15 * i},api,q,1\n" for i in range(1, 2001))
    path = tmp_path / "metrics.csv"
    path.write_bytes((HEADER + rows).encode() + b"30015,api,q,\xff\n")
    code = main(
        ["replay", "--config", str(CONFIG), "--metrics", str(path), "--out", str(tmp_path / "o")]
    )
    err = capsys.readouterr().err
    assert code == 2 and "metrics.csv:2002: not a CSV text file" in err
    path.write_bytes(b"timestamp,value\n0,5\n60,\xff\n")
    with pytest.raises(InputError, match=r"metrics\.csv:3: not a CSV text file"):
        read_value_csv(path)


def test_a_field_over_the_csv_limit_names_its_line(tmp_path: Path) -> None:
    path = tmp_path / "metrics.csv"
    path.write_text(HEADER + "15,api,q,1\n30,api,q," + "1" * 200_000 + "\n", encoding="utf-8")
    with pytest.raises(InputError, match=r"metrics\.csv:3: not a CSV text file: field larger"):
        read_long_csv(path)


@pytest.mark.parametrize(
    ("rows", "line", "words"),
    [
        ('15,api,q,1\n30,api,q,"2', 3, "unexpected end of data"),  # unclosed at the end
        ('15,api,q,1\n30,api,q,"2"5\n45,api,q,3\n', 3, "',' expected after '\"'"),
    ],
)
def test_a_stray_or_unclosed_quote_names_its_line(
    tmp_path: Path, rows: str, line: int, words: str
) -> None:
    # the unclosed one was read as the value 2, the stray one as 25
    path = tmp_path / "metrics.csv"
    path.write_text(HEADER + rows, encoding="utf-8")
    with pytest.raises(InputError) as err:
        read_long_csv(path)
    assert str(err.value) == f"{path}:{line}: not a CSV text file: {words}"


def test_a_timestamp_before_1970_is_refused_not_a_crash_of_the_report(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # year 1 at +01:00 is year 0 in UTC: the report's time axis could not show it
    code, err = replay_with(tmp_path, HEADER + "0001-01-01T00:00:00+01:00,api,q,1\n", capsys)
    assert code == 2 and "metrics.csv:2: timestamp -62135600400.0 is not a time" in err


@pytest.mark.parametrize(
    ("doc", "words"),
    [
        ("[" * 100_000, "dump.json: not usable JSON"),
        (
            (
                '{"data":{"resultType":"matrix","result":[{"metric":{"target":"a","signal":"q"},'
                f'"values":[[{"9" * 400},"1"]]}}]}}}}'
            ),
            r"dump.json:data.result\[0\].values\[0\]: expected \[time",
        ),
        (
            '{"data":{"resultType":"matrix","result":[{"metric":["a"],"values":[[1,"1"]]}]}}',
            r"dump.json:data.result\[0\]: series has no target",
        ),
        ('{"data":{"resultType":"matrix","result":5}}', r"dump.json:data.result: expected a list"),
        (
            (
                '{"data":{"resultType":"matrix","result":[{"metric":{"target":"a","signal":"q"},'
                '"values":5}]}}'
            ),
            r"dump.json:data.result\[0\].values: expected a list",
        ),
        (
            (
                '{"format":"autoscaler-record/1","signals":{"q":{"targets":{"a":5},"data":'
                '{"resultType":"matrix","result":[{"metric":{"service":"a"},"values":[[1,"1"]]}]}}}}'
            ),
            "dump.json: signals.q: bad target_label or targets",
        ),
        (
            (
                '{"format":"autoscaler-record/1","signals":{"q":{"data":{"resultType":"matrix",'
                f'"result":[{{"metric":{{"service":"a"}},"values":[[{"9" * 400},"1"]]}}]}}}}}}}}'
            ),
            "dump.json: signals.q: signal 'q': malformed matrix sample",
        ),
    ],
)
def test_malformed_json_dumps_are_input_errors_not_tracebacks(
    tmp_path: Path, doc: str, words: str
) -> None:
    path = tmp_path / "dump.json"
    path.write_text(doc, encoding="utf-8")
    with pytest.raises(InputError, match=words):
        read_metrics([path])
