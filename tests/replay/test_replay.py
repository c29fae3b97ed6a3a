"""Replay: a recorded dataset through the engine, compared with a checked-in journal and
with a live engine driven tick by tick on the same inputs."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest

from autoscaler.cli import main
from autoscaler.config import load
from autoscaler.journal import MemoryStore
from autoscaler.replay import ReplaySource, Series, read_metrics, replay, tick_grid
from autoscaler.service import build_engine
from autoscaler.sources.base import MemorySource
from remediation.recording import RecordingExecutor

DATA = Path(__file__).parent / "data"
CONFIG = DATA / "golden.toml"
METRICS = DATA / "golden_metrics.csv"
GOLDEN = DATA / "golden_journal.jsonl"
REGENERATE = "AUTOSCALER_REGENERATE_GOLDEN"


def _lines(path: Path) -> list[dict[str, object]]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line]


def test_golden_replay_matches_the_checked_in_journal(tmp_path: Path) -> None:
    out = tmp_path / "out"
    code = main(["replay", "--config", str(CONFIG), "--metrics", str(METRICS), "--out", str(out)])
    assert code == 0
    produced = _lines(out / "journal.jsonl")
    if os.environ.get(REGENERATE) == "1":
        # Deliberate only: `AUTOSCALER_REGENERATE_GOLDEN=1 pytest tests/replay`, then review
        # the diff of the golden file before committing it.
        GOLDEN.write_text((out / "journal.jsonl").read_text(encoding="utf-8"), encoding="utf-8")
    assert GOLDEN.exists(), f"no golden journal; create it with {REGENERATE}=1"
    assert produced == _lines(GOLDEN)


def test_golden_journal_shows_a_second_breach_skipped_by_the_cooldown() -> None:
    actions = [r for r in _lines(GOLDEN) if r["kind"] == "scale"]
    first_up = next(a for a in actions if a["status"] == "done")
    assert first_up["params"] == {"from": 2, "replicas": 4}
    # the queue breaches again two minutes later, inside the 5-minute scale_up cooldown
    second = [a for a in actions if a["at"] > first_up["at"] and a["status"] != "done"]
    assert second and second[0]["status"] == "skipped-cooldown"
    assert "scale_up cooldown" in str(second[0]["detail"])
    # the next scale-up only happens after the cooldown ran out
    later = [a for a in actions if a["status"] == "done" and a["at"] > first_up["at"]]
    assert later[0]["at"] - first_up["at"] >= 300


def test_golden_journal_holds_while_the_recording_has_a_gap() -> None:
    holds = [r for r in _lines(GOLDEN) if r["kind"] == "hold"]
    assert any("stale" in str(h["reason"]) for h in holds)


def test_replay_writes_every_output(tmp_path: Path) -> None:
    out = tmp_path / "out"
    assert (
        main(["replay", "--config", str(CONFIG), "--metrics", str(METRICS), "--out", str(out)]) == 0
    )
    actions = _lines(out / "actions.jsonl")
    assert actions and all(
        {"at", "target", "kind", "params", "policy", "reason", "status"} <= a.keys()
        for a in actions
    )
    header = (out / "timeline.csv").read_text(encoding="utf-8").splitlines()[0]
    assert header.startswith("timestamp,target,desired_replicas")
    summary = json.loads((out / "summary.json").read_text(encoding="utf-8"))
    assert summary["targets"]["api"]["max_replicas"] == 6
    assert summary["actions"]["by_status"]["skipped-cooldown"] > 0
    page = (out / "report.html").read_text(encoding="utf-8")
    assert (
        "<svg" in page
        and "<script" not in page
        and "http://" not in page.replace('xmlns="http://www.w3.org/2000/svg"', "")
    )


async def test_replay_and_a_live_engine_make_the_same_decisions() -> None:
    settings = load(CONFIG)
    series = read_metrics([METRICS])
    result = await replay(settings, series)

    # The live way: a MemorySource set tick by tick to the latest recorded sample (with
    # its own sample time), default wiring (commit in a worker thread), one tick at a time.
    source = MemorySource()
    rec = RecordingExecutor("rec")
    store = MemoryStore()
    engine = build_engine(
        settings, dry_run=False, state_store=store, executors={"rec": rec}, sources=[source]
    )
    start = min(float(s.times[0]) for s in series)
    end = max(float(s.times[-1]) for s in series)
    for now in tick_grid(start, end, settings.service.interval).tolist():
        for s in series:
            i = int(np.searchsorted(s.times, now, side="right")) - 1
            if i >= 0:
                source.set(s.target, s.signal, float(s.values[i]), at=float(s.times[i]))
        await engine.tick(now)

    assert [r.to_dict() for r in store.records] == [r.to_dict() for r in result.records]
    assert rec.replicas["api"] == int(result.replicas[-1, 0])


async def test_replay_source_reports_each_sample_once_as_of_the_tick() -> None:
    s = Series("api", "q", np.array([10.0, 20.0, 25.0]), np.array([1.0, 2.0, 3.0]))
    src = ReplaySource([s])
    assert await src.collect(5.0) == []
    first = await src.collect(15.0)
    assert [(x.value, x.at) for x in first] == [(1.0, 10.0)]
    assert await src.collect(16.0) == []
    latest = await src.collect(30.0)
    assert [(x.value, x.at) for x in latest] == [(3.0, 25.0)]


def test_tick_grid_is_aligned_to_the_interval() -> None:
    assert tick_grid(7.0, 50.0, 15.0).tolist() == [15.0, 30.0, 45.0]


def test_speed_factor_is_validated(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    with pytest.raises(SystemExit) as exc:
        main(
            [
                "replay",
                "--config",
                str(CONFIG),
                "--metrics",
                str(METRICS),
                "--out",
                str(tmp_path),
                "--speed",
                "fast",
            ]
        )
    assert exc.value.code == 2
    assert "expected 'max' or a number" in capsys.readouterr().err


def test_replay_replaces_real_executors_with_the_recorder(tmp_path: Path) -> None:
    # A swarm executor on a socket that does not exist: a replay must never reach it.
    text = CONFIG.read_text(encoding="utf-8").replace(
        'type = "recording"\ninitial_replicas = 2',
        'type = "swarm"\nbase_url = "unix:///nonexistent/docker.sock"',
    )
    assert 'type = "swarm"' in text
    config = tmp_path / "swarm.toml"
    config.write_text(text, encoding="utf-8")
    out = tmp_path / "out"
    code = main(["replay", "--config", str(config), "--metrics", str(METRICS), "--out", str(out)])
    assert code == 0
    actions = _lines(out / "actions.jsonl")
    # same decisions as with the recording executor (targets start at min_replicas = 2)
    golden = [r for r in _lines(GOLDEN) if r["kind"] != "hold"]
    assert [(a["at"], a["params"], a["status"]) for a in actions] == [
        (g["at"], g["params"], g["status"]) for g in golden
    ]


def test_progress_bar_redraws_once_per_percent_and_ends_the_line() -> None:
    import io

    from autoscaler.replay import Progress

    stream = io.StringIO()
    bar = Progress(200, enabled=True, stream=stream)
    for i in range(1, 201):
        bar.update(i)
    text = stream.getvalue()
    assert text.count("\r") == 101  # 0 % .. 100 %, drawn once each
    assert text.endswith("\n") and "100% 200/200 ticks" in text
    quiet = io.StringIO()
    Progress(10, enabled=False, stream=quiet).update(10)
    assert quiet.getvalue() == ""


def test_timeline_timestamps_keep_every_digit_with_a_fractional_interval(tmp_path: Path) -> None:
    cfg = tmp_path / "c.toml"
    cfg.write_text(CONFIG.read_text().replace('interval = "15s"', 'interval = "1500ms"'))
    metrics = tmp_path / "m.csv"
    start = 1_700_000_001.5
    rows = "".join(f"{start + 1.5 * k!r},api,queue_length,1\n" for k in range(40))
    metrics.write_text("timestamp,target,signal,value\n" + rows)
    out = tmp_path / "o"
    assert main(["replay", "--config", str(cfg), "--metrics", str(metrics), "--out", str(out)]) == 0
    lines = (out / "timeline.csv").read_text().splitlines()[1:]
    times = [float(line.split(",")[0]) for line in lines]
    assert times == tick_grid(start, start + 1.5 * 39, 1.5).tolist()


def test_timeline_values_are_the_observed_ones_to_every_digit(tmp_path: Path) -> None:
    # they were written to 6 digits: 8589934592.5 bytes read 8.58993e+09
    values = [1234.5678, 8589934592.5, 0.1, 7.0]
    rows = "".join(f"{15 * (k + 1)},api,queue_length,{v!r}\n" for k, v in enumerate(values))
    metrics = tmp_path / "m.csv"
    metrics.write_text("timestamp,target,signal,value\n" + rows)
    out = tmp_path / "o"
    args = ["--config", str(CONFIG), "--metrics", str(metrics), "--out", str(out)]
    assert main(["replay", *args]) == 0
    lines = (out / "timeline.csv").read_text().splitlines()
    column = lines[0].split(",").index("queue_length")
    cells = [line.split(",")[column] for line in lines[1:]]
    assert [float(c) for c in cells] == values and cells[-1] == "7"
