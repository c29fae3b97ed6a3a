"""The shipped examples load, and the bundled traces read cleanly."""

from __future__ import annotations

import tomllib
from pathlib import Path

import pytest

from autoscaler.backtest import CapacitySpec, engine_settings, policy_sets
from autoscaler.cli import main
from autoscaler.config import load
from autoscaler.replay import read_metrics, read_value_csv

EXAMPLES = Path(__file__).parents[2] / "examples"


def test_replay_example_config_is_valid() -> None:
    settings = load(EXAMPLES / "replay.toml")
    assert set(settings.targets) == {"api", "search"}
    series = read_metrics([EXAMPLES / "data" / "replay_metrics.csv"])
    assert {(s.target, s.signal) for s in series} <= {
        (t, sig) for t in settings.targets for sig in settings.signals
    }


def test_backtest_example_config_builds_an_engine_config() -> None:
    user = tomllib.loads((EXAMPLES / "backtest.toml").read_text(encoding="utf-8"))
    spec = CapacitySpec(capacity_per_replica=500.0, interval=60.0)
    settings = engine_settings(spec, {}, history=86400.0, user=user)
    assert {c.type for c in settings.policies.values()} == {"predictive"}


def test_bursty_example_narrows_the_interval_of_the_built_in_predictive_policy() -> None:
    user = tomllib.loads((EXAMPLES / "bursty.toml").read_text(encoding="utf-8"))
    spec = CapacitySpec(capacity_per_replica=5.0, interval=60.0, max_replicas=500)
    built_in = policy_sets(spec)["predictive"]
    settings = engine_settings(spec, built_in, history=2 * 86400.0, user=user)
    assert settings.forecasting.coverage == 0.8
    assert {c.type for c in settings.policies.values()} == {"predictive"}


@pytest.mark.parametrize("name", ["nyc_taxi_2w.csv", "tweets_amzn_2w.csv"])
def test_bundled_demand_trace_reads_and_covers_two_weeks(name: str) -> None:
    times, values = read_value_csv(EXAMPLES / "data" / name)
    assert 13 * 86400 < times[-1] - times[0] < 15 * 86400
    assert values.min() >= 0
    assert (
        (EXAMPLES / "data" / "NAB-LICENSE.txt").read_text(encoding="utf-8").startswith("Copyright")
    )


def test_check_backtest_validates_an_overlay_as_the_backtest_merges_it(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # On its own the overlay is no config: the backtest supplies the forecast signal.
    assert main(["check", str(EXAMPLES / "backtest.toml")]) == 2
    assert "policies.ahead.signal: 'demand' is not forecast" in capsys.readouterr().err
    for name in ("backtest.toml", "bursty.toml"):
        assert main(["check", "--backtest", str(EXAMPLES / name)]) == 0
        assert "ok as a backtest --config (1 policy)" in capsys.readouterr().out
    bad = tmp_path / "bad.toml"
    bad.write_text('[policies.up]\ntype = "predictive"\nsignal = "demand"\nlead_time = "-1m"\n')
    assert main(["check", "--backtest", str(bad)]) == 2
    assert "policies.up.lead_time" in capsys.readouterr().err
    bad.write_text("[policies]\nup = 5\n")
    assert main(["check", "--backtest", str(bad)]) == 2
    assert "policies.up: expected a table" in capsys.readouterr().err
    bad.write_text('[forcasting]\nmodel = "seasonal-change"\n')
    assert main(["check", "--backtest", str(bad)]) == 2
    assert "forcasting: unknown key" in capsys.readouterr().err
    # a whole config is an overlay too: the tables a backtest does not read are ignored
    assert main(["check", "--backtest", str(EXAMPLES.parent / "config.toml")]) == 0
