"""deploy/grafana-dashboard.json parses, uses only the service's own metrics, and its
queries are valid PromQL (checked by promtool as recording rules)."""

from __future__ import annotations

import json
import re
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.deploy.helpers import DEPLOY, need_tool

# The service's metrics (autoscaler/metrics.py), as Prometheus exposes them.
METRICS = {
    "autoscaler_ticks_total",
    "autoscaler_tick_duration_seconds",
    "autoscaler_last_tick_timestamp_seconds",
    "autoscaler_decisions_total",
    "autoscaler_actions_total",
    "autoscaler_source_errors_total",
    "autoscaler_source_up",
    "autoscaler_executor_breaker_state",
    "autoscaler_dropped_samples_total",
    "autoscaler_paused",
    "autoscaler_breaker_state",
    "autoscaler_degradation_level",
}
HISTOGRAMS = {"autoscaler_tick_duration_seconds"}
EXPOSED = METRICS | {f"{h}_{s}" for h in HISTOGRAMS for s in ("bucket", "sum", "count")}

# Everything in a PromQL expression that is not a metric name.
PROMQL_WORDS = {
    "sum", "min", "max", "avg", "count", "stddev", "stdvar", "topk", "bottomk", "quantile",
    "count_values", "group", "by", "without", "on", "ignoring", "group_left", "group_right",
    "bool", "and", "or", "unless", "offset", "rate", "irate", "increase", "delta", "idelta",
    "deriv", "histogram_quantile", "time", "vector", "scalar", "abs", "clamp_min",
    "clamp_max", "max_over_time", "min_over_time", "avg_over_time", "label_values",
    "changes", "resets", "absent", "timestamp",
}  # fmt: skip

DASHBOARD = DEPLOY / "grafana-dashboard.json"


def load() -> dict[str, Any]:
    data = json.loads(DASHBOARD.read_text())
    assert isinstance(data, dict)
    return data


def walk(node: Any) -> Iterator[dict[str, Any]]:
    if isinstance(node, dict):
        yield node
        for value in node.values():
            yield from walk(value)
    elif isinstance(node, list):
        for value in node:
            yield from walk(value)


def queries(dashboard: dict[str, Any]) -> list[str]:
    """Every PromQL expression: panel targets and template variable queries."""
    found = [n["expr"] for n in walk(dashboard["panels"]) if isinstance(n.get("expr"), str)]
    for var in dashboard["templating"]["list"]:
        if var["type"] == "query":
            found.append(var["definition"])
    return found


def metric_names(expr: str) -> set[str]:
    """Identifiers in metric-name position: strings, label matchers, grouping clauses,
    durations and Grafana variables removed, PromQL words left out."""
    text = re.sub(r'"(?:[^"\\]|\\.)*"', '""', expr)
    text = re.sub(r"\{[^}]*\}", "", text)
    text = re.sub(r"\b(by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", "", text)
    text = re.sub(r"\[[^\]]*\]", "", text)
    text = re.sub(r"\$\w+", "", text)
    # label_values(metric, label): the label is not a metric.
    text = re.sub(r"label_values\(\s*([A-Za-z_:][\w:]*)\s*,\s*\w+\s*\)", r"\1", text)
    words = set(re.findall(r"[A-Za-z_:][\w:]*", text))
    return words - PROMQL_WORDS


def test_dashboard_json_parses_as_a_grafana_dashboard() -> None:
    dashboard = load()
    assert dashboard["uid"] and dashboard["title"]
    assert isinstance(dashboard["schemaVersion"], int)
    ids = [p["id"] for p in dashboard["panels"]]
    assert len(ids) == len(set(ids)), "panel ids must be unique"
    for panel in dashboard["panels"]:
        grid = panel["gridPos"]
        assert 0 <= grid["x"] and grid["x"] + grid["w"] <= 24, panel["title"]


def test_dashboard_references_only_the_service_metrics() -> None:
    used: set[str] = set()
    for expr in queries(load()):
        names = metric_names(expr)
        assert names, f"no metric found in {expr!r}"
        assert names <= EXPOSED, f"{expr!r} uses {sorted(names - EXPOSED)}"
        used |= names
    bases = {re.sub(r"_(bucket|sum|count)$", "", n) if n not in METRICS else n for n in used}
    assert bases == METRICS, f"not shown: {sorted(METRICS - bases)}"


def test_metric_name_extraction_sees_a_foreign_metric() -> None:
    expr = 'sum by (job) (rate(http_requests_total{job="a"}[5m])) / autoscaler_paused'
    assert metric_names(expr) == {"http_requests_total", "autoscaler_paused"}


def test_every_panel_query_is_valid_promql(tmp_path: Path) -> None:
    promtool = need_tool("promtool", apt_package="prometheus")
    exprs = queries(load())
    lines = ["groups:", "  - name: dashboard", "    rules:"]
    for i, expr in enumerate(e for e in exprs if not e.startswith("label_values(")):
        concrete = (
            expr.replace("$__rate_interval", "1m")
            .replace("$__range", "1h")
            .replace("$instance", ".*")
        )
        lines += [f"      - record: dashboard:q{i}", f"        expr: {json.dumps(concrete)}"]
    rules = tmp_path / "dashboard-rules.yml"
    rules.write_text("\n".join(lines) + "\n")
    result = subprocess.run(
        [promtool, "check", "rules", str(rules)], capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.parametrize("var", ["datasource", "instance"])
def test_dashboard_has_template_variable(var: str) -> None:
    assert var in {v["name"] for v in load()["templating"]["list"]}
