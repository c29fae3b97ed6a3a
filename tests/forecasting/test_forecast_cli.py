"""``autoscaler forecast``: rolling-origin forecasts over a recorded series."""

from __future__ import annotations

import argparse
import csv
import datetime as dt
from pathlib import Path

import numpy as np
import pytest
from forecast_data import DATA, nab_slice

from autoscaler import forecast_cli


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    parser = argparse.ArgumentParser(prog="autoscaler")
    forecast_cli.add_parser(parser.add_subparsers(dest="command"))
    code = forecast_cli.run(parser.parse_args(["forecast", *argv]))
    out, err = capsys.readouterr()
    return code, out, err


def write(path: Path, rows: list[list[object]], header: list[str] | None = None) -> Path:
    with path.open("w", newline="") as f:
        w = csv.writer(f)
        if header:
            w.writerow(header)
        w.writerows(rows)
    return path


def read(path: Path) -> list[dict[str, str]]:
    with path.open() as f:
        return list(csv.DictReader(f))


def nab_file(tmp_path: Path, length: int = 600) -> Path:
    times, values = nab_slice("realAWSCloudwatch/ec2_cpu_utilization_5f5533.csv", 0, length)
    stamps = [dt.datetime.fromtimestamp(t, dt.UTC).strftime("%Y-%m-%d %H:%M:%S") for t in times]
    return write(
        tmp_path / "cpu.csv",
        [list(r) for r in zip(stamps, values, strict=True)],
        ["timestamp", "value"],
    )


def test_writes_one_row_per_input_timestamp_with_a_summary(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    src = nab_file(tmp_path)
    code, out, err = run(
        capsys, "--series", str(src), "--horizon", "15m", "--out", str(tmp_path / "o.csv")
    )
    assert code == 0, err
    rows = read(tmp_path / "o.csv")
    assert list(rows[0]) == ["timestamp", "actual", "forecast", "lower", "upper", "model"]
    assert [r["timestamp"] for r in rows] == [r["timestamp"] for r in read(src)]
    assert rows[0]["forecast"] == "" and rows[2]["forecast"] == ""  # nothing before t - H
    done = [r for r in rows if r["forecast"]]
    assert len(done) >= 590
    assert all(float(r["lower"]) <= float(r["forecast"]) <= float(r["upper"]) for r in done)
    assert all(r["model"].startswith("auto:") for r in done)
    assert "MASE vs seasonal naive" in out and "vs persistence" in out
    assert "interval coverage" in out and "time per update" in out


def test_cli_forecasts_never_look_ahead(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    times = 1_600_000_000 + 60.0 * np.arange(300)
    values = 10 + np.sin(np.arange(300) / 10.0)
    h = 300.0  # five steps
    src = write(tmp_path / "a.csv", [[t, v] for t, v in zip(times, values, strict=True)])
    run(capsys, "--series", str(src), "--horizon", "5m", "--out", str(tmp_path / "a_out.csv"))
    cut = 200
    changed = values.copy()
    changed[times > times[cut] - h] += 1000.0  # every value after t - H
    src2 = write(tmp_path / "b.csv", [[t, v] for t, v in zip(times, changed, strict=True)])
    run(capsys, "--series", str(src2), "--horizon", "5m", "--out", str(tmp_path / "b_out.csv"))
    a, b = read(tmp_path / "a_out.csv"), read(tmp_path / "b_out.csv")
    for col in ("forecast", "lower", "upper"):
        assert [r[col] for r in a[: cut + 1]] == [r[col] for r in b[: cut + 1]]
    assert a[cut + 1]["forecast"] != b[cut + 1]["forecast"]


def test_irregular_samples_use_only_data_up_to_t_minus_h(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    rng = np.random.default_rng(0)
    times = np.cumsum(rng.uniform(40, 80, 300)) + 1e9
    values = rng.normal(5, 1, 300)
    src = write(tmp_path / "i.csv", [[t, v] for t, v in zip(times, values, strict=True)])
    run(capsys, "--series", str(src), "--horizon", "2m", "--out", str(tmp_path / "i_out.csv"))
    a = read(tmp_path / "i_out.csv")
    cut = 150
    changed = values.copy()
    changed[times > times[cut] - 120.0] = 99.0
    src = write(tmp_path / "j.csv", [[t, v] for t, v in zip(times, changed, strict=True)])
    run(capsys, "--series", str(src), "--horizon", "2m", "--out", str(tmp_path / "j_out.csv"))
    b = read(tmp_path / "j_out.csv")
    assert [r["forecast"] for r in a[: cut + 1]] == [r["forecast"] for r in b[: cut + 1]]


def test_long_format_picks_the_target_and_signal(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    rows = []
    for i in range(100):
        t = f"2024-01-01T00:{i // 60:02d}:{i % 60:02d}Z"
        rows += [[t, "api", "queue", i], [t, "api", "p95", 100 + i], [t, "ui", "queue", 5]]
    src = write(tmp_path / "long.csv", rows, ["timestamp", "target", "signal", "value"])
    code, _, err = run(
        capsys,
        "--series",
        str(src),
        "--horizon",
        "5s",
        "--target",
        "api",
        "--signal",
        "p95",
        "--out",
        str(tmp_path / "o.csv"),
    )
    assert code == 0, err
    out = read(tmp_path / "o.csv")
    assert len(out) == 100 and out[-1]["actual"] == "199"
    assert abs(float(out[-1]["forecast"]) - 199) < 5  # a clean ramp
    code, _, err = run(
        capsys, "--series", str(src), "--horizon", "5s", "--out", str(tmp_path / "o.csv")
    )
    assert code == 2 and "--target" in err


def test_counters_are_forecast_as_rates(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    counter = np.cumsum(np.full(200, 30.0))  # 30 per 15 s = 2 per second
    counter[100:] -= counter[99]  # a reset
    src = write(tmp_path / "c.csv", [[15.0 * i, c] for i, c in enumerate(counter)])
    code, _, err = run(
        capsys,
        "--series",
        str(src),
        "--horizon",
        "1m",
        "--kind",
        "counter",
        "--out",
        str(tmp_path / "o.csv"),
    )
    assert code == 0, err
    out = read(tmp_path / "o.csv")
    assert all(abs(float(r["forecast"]) - 2.0) < 1e-6 for r in out if r["forecast"])


def test_unix_and_iso_timestamps_give_the_same_forecasts(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    t = 1_404_172_800 + 300 * np.arange(100)  # 2014-07-01 00:00:00 UTC
    v = np.random.default_rng(1).normal(10, 1, 100)
    iso = [dt.datetime.fromtimestamp(x, dt.UTC).strftime("%Y-%m-%d %H:%M:%S") for x in t]
    assert iso[0] == "2014-07-01 00:00:00"
    write(tmp_path / "u.csv", [[int(x), y] for x, y in zip(t, v, strict=True)])
    write(tmp_path / "s.csv", [[x, y] for x, y in zip(iso, v, strict=True)])
    for name in ("u", "s"):
        run(
            capsys,
            "--series",
            str(tmp_path / f"{name}.csv"),
            "--horizon",
            "5m",
            "--model",
            "holt-winters",
            "--out",
            str(tmp_path / f"{name}_o.csv"),
        )
    a, b = read(tmp_path / "u_o.csv"), read(tmp_path / "s_o.csv")
    assert [r["forecast"] for r in a] == [r["forecast"] for r in b]


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("", "no data rows"),
        ("timestamp,value\n", "no data rows"),
        ("timestamp,value\n1,2\n2,abc\n", "not a number"),
        ("timestamp,value\n1,2\nyesterday,3\n", "not a timestamp"),
        ("timestamp,value\n1,2\n3,2\n2,2\n", "out of order"),
        ("timestamp,value\n1,2\n2,2\n2,3\n", "duplicate timestamp"),
        ("timestamp,value\n1,2,3\n", "expected timestamp,value"),
        ("1,2\n2,3,4\n", "expected 2 columns"),
        ("t,target,signal,value\n1,a,b,1\n", "no rows for target='x'"),
        # an unclosed quote: read as the value "3\n" (and no error) before
        ('timestamp,value\n1,2\n2,"3\n', "bad.csv:3: not a valid CSV file"),
        ('timestamp,value\n1,2\n2,"3"5\n', "bad.csv:3: not a valid CSV file"),
    ],
)
def test_bad_input_exits_2_with_a_clear_message(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], content: str, message: str
) -> None:
    src = tmp_path / "bad.csv"
    src.write_text(content)
    extra = ["--target", "x"] if "target" in content else []
    code, _, err = run(
        capsys, "--series", str(src), "--horizon", "5m", "--out", str(tmp_path / "o.csv"), *extra
    )
    assert code == 2
    assert message in err and "Traceback" not in err


def test_millisecond_timestamps_exit_2_not_forecasts_a_thousand_times_too_far_apart(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # read as seconds, a 30 s series had a grid step of 30000 s: every "5m ahead" forecast
    # was made one step (8 hours) ahead and scored as if it were the 5-minute one
    rows = [[(1_700_000_000 + 30 * i) * 1000, 50 + i % 7] for i in range(400)]
    src = write(tmp_path / "ms.csv", rows, ["timestamp", "value"])
    code, out, err = run(
        capsys, "--series", str(src), "--horizon", "5m", "--out", str(tmp_path / "o.csv")
    )
    assert code == 2, out
    assert f"{src}:2: timestamp '1700000000000' is not a time in unix seconds" in err
    assert not (tmp_path / "o.csv").exists()


def test_a_byte_that_is_not_utf8_far_into_the_file_names_its_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    rows = "".join(f"{1_700_000_000 + 60 * i},{i}\n" for i in range(3000))
    src = tmp_path / "bad.csv"
    src.write_bytes(b"timestamp,value\n" + rows.encode() + b"1800000000,\xff\n")
    code, _, err = run(
        capsys, "--series", str(src), "--horizon", "5m", "--out", str(tmp_path / "o")
    )
    assert code == 2
    assert f"{src}:3002: not a UTF-8 text file" in err and "Traceback" not in err


def test_a_byte_order_mark_is_not_part_of_the_header(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    rows = "".join(f"{1_700_000_000 + 60 * i},{i % 7}\n" for i in range(300))
    src = tmp_path / "excel.csv"
    src.write_bytes(b"\xef\xbb\xbftimestamp,value\n" + rows.encode())
    code, _, err = run(
        capsys, "--series", str(src), "--horizon", "5m", "--out", str(tmp_path / "o")
    )
    assert code == 0, err
    assert len(read(tmp_path / "o")) == 300


@pytest.mark.parametrize("horizon", ["soon", "0s", "-5m"])
def test_a_bad_horizon_exits_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], horizon: str
) -> None:
    src = write(tmp_path / "ok.csv", [[i, i] for i in range(10)])
    code, _, err = run(
        capsys, "--series", str(src), f"--horizon={horizon}", "--out", str(tmp_path / "o.csv")
    )
    assert code == 2 and "--horizon" in err


def test_an_out_that_is_the_series_file_exits_2_and_leaves_it_as_it_was(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    src = nab_file(tmp_path)
    before = src.read_bytes()
    code, _, err = run(capsys, "--series", str(src), "--horizon", "5m", "--out", str(src))
    assert code == 2 and "is the --series file" in err
    assert src.read_bytes() == before


def test_an_out_that_cannot_be_written_exits_2_before_the_series_is_even_read(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Checked first: a long computation must not end in "cannot write"."""
    missing = tmp_path / "nope.csv"
    code, _, err = run(capsys, "--series", str(missing), "--horizon", "5m", "--out", str(tmp_path))
    assert code == 2 and "cannot write" in err and "Is a directory" in err


def test_a_missing_file_exits_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = run(
        capsys,
        "--series",
        str(tmp_path / "nope.csv"),
        "--horizon",
        "5m",
        "--out",
        str(tmp_path / "o.csv"),
    )
    assert code == 2 and "cannot read" in err


@pytest.mark.parametrize("horizon", ["5m", "1000w"])
def test_a_horizon_longer_than_the_series_exits_2_before_building_a_model(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], horizon: str
) -> None:
    src = write(tmp_path / "s.csv", [[60 * i, i] for i in range(5)])  # spans 4 minutes
    code, out, err = run(
        capsys, "--series", str(src), "--horizon", horizon, "--out", str(tmp_path / "o.csv")
    )
    assert code == 2, out
    assert "is longer than the series (240s from first to last row)" in err
    assert "Traceback" not in err


def test_a_horizon_of_too_many_grid_steps_exits_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(forecast_cli, "MAX_HORIZON_STEPS", 10)  # the real limit costs ~0.6 GB
    src = write(tmp_path / "s.csv", [[60 * i, i] for i in range(30)])
    code, _, err = run(
        capsys, "--series", str(src), "--horizon", "15m", "--out", str(tmp_path / "o.csv")
    )
    assert code == 2
    assert "--horizon 900s is 15 grid steps of 60s; at most 10" in err


def test_a_horizon_as_long_as_the_series_is_accepted(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    src = write(tmp_path / "s.csv", [[60 * i, 7] for i in range(12)])
    code, out, err = run(
        capsys, "--series", str(src), "--horizon", "11m", "--out", str(tmp_path / "o.csv")
    )
    assert code == 0, err
    assert len(read(tmp_path / "o.csv")) == 12 and "horizon 660s" in out


def test_real_nyc_taxi_beats_persistence(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    src = DATA / "nab" / "data" / "realKnownCause" / "nyc_taxi.csv"
    nab_slice("realKnownCause/nyc_taxi.csv", 0, 1)  # skips or fails when the data is missing
    lines = src.read_text().splitlines()[: 1 + 48 * 14]
    short = tmp_path / "taxi.csv"
    short.write_text("\n".join(lines) + "\n")
    code, out, _ = run(
        capsys, "--series", str(short), "--horizon", "30m", "--out", str(tmp_path / "o.csv")
    )
    assert code == 0
    ratio = float(out.split("vs persistence ")[1].split()[0])
    assert ratio < 1.0


@pytest.mark.parametrize(
    "content",
    ["1700000000,5\n", "1,nan\n2,\n3,nan\n", "1,7\n2,7\n3,7\n4,7\n5,7\n6,7\n7,7\n8,7\n"],
)
def test_degenerate_series_give_rows_without_crashing(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], content: str
) -> None:
    src = tmp_path / "d.csv"
    src.write_text(content)
    code, out, err = run(
        capsys, "--series", str(src), "--horizon", "1s", "--out", str(tmp_path / "o.csv")
    )
    assert code == 0, err
    rows = read(tmp_path / "o.csv")
    assert len(rows) == len(content.splitlines())
    assert all(r["forecast"] in ("", "7") for r in rows)
    assert "time per update" in out
