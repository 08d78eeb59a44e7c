"""The monitoring configuration as data: where the files are, the alert rules, the queries of the
Grafana dashboards, and the rewrites that make an expression evaluable on its own."""

from __future__ import annotations

import json
import re
import shutil
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
MONITORING = ROOT / "monitoring"
PROMETHEUS_DIR = MONITORING / "prometheus"
PROMETHEUS_CONFIG = PROMETHEUS_DIR / "prometheus.yml"
PROMETHEUS_K8S_CONFIG = PROMETHEUS_DIR / "prometheus-k8s.yml"
RULE_FILES = sorted((PROMETHEUS_DIR / "rules").glob("*.yml"))
RULE_TESTS = sorted((PROMETHEUS_DIR / "tests").glob("*.yml"))
ALERTMANAGER_CONFIG = MONITORING / "alertmanager" / "alertmanager.yml"
GRAFANA_DIR = MONITORING / "grafana"
DASHBOARDS = sorted((GRAFANA_DIR / "dashboards").glob("*.json"))
PROVISIONING = sorted((GRAFANA_DIR / "provisioning").rglob("*.yaml"))
RUNBOOK = ROOT / "docs" / "runbook.md"
DATASOURCE_UID = "prometheus"


def tool(name: str) -> str:
    """Path of a Debian monitoring tool the tests run for real."""
    path = shutil.which(name)
    if path is None:
        pytest.fail(
            f"{name} is not installed: run scripts/ensure-test-tools "
            f"(apt-get install prometheus prometheus-alertmanager)"
        )
    return path


@dataclass(frozen=True)
class AlertRule:
    group: str
    name: str
    expr: str
    for_: str
    labels: dict[str, str]
    annotations: dict[str, str]


def alert_rules() -> list[AlertRule]:
    rules: list[AlertRule] = []
    for path in RULE_FILES:
        for group in yaml.safe_load(path.read_text())["groups"]:
            rules.extend(
                AlertRule(
                    group["name"],
                    rule["alert"],
                    rule["expr"],
                    rule.get("for", ""),
                    rule.get("labels", {}),
                    rule.get("annotations", {}),
                )
                for rule in group["rules"]
                if "alert" in rule
            )
    return rules


@dataclass(frozen=True)
class Query:
    """One PromQL expression of a dashboard: a panel target or an annotation."""

    dashboard: str
    where: str
    expr: str
    datasource: dict[str, Any] | None

    def __str__(self) -> str:
        return f"{self.dashboard} / {self.where}"


def load_dashboard(path: Path) -> dict[str, Any]:
    return json.loads(path.read_text())


def panels(dashboard: dict[str, Any]) -> Iterator[dict[str, Any]]:
    """Every panel, including those collapsed inside rows."""
    for panel in dashboard.get("panels", []):
        yield panel
        yield from panel.get("panels", [])


def panel_queries() -> list[Query]:
    found = []
    for path in DASHBOARDS:
        board = load_dashboard(path)
        for panel in panels(board):
            for target in panel.get("targets", []):
                found.append(
                    Query(
                        board["uid"],
                        f"{panel['title']} [{target.get('refId')}]",
                        target.get("expr", ""),
                        target.get("datasource"),
                    )
                )
    return found


def annotation_queries() -> list[Query]:
    return [
        Query(board["uid"], f"annotation {a['name']}", a["expr"], a.get("datasource"))
        for board in map(load_dashboard, DASHBOARDS)
        for a in board["annotations"]["list"]
        if "expr" in a
    ]


def with_grafana_variables(expr: str, window: str) -> str:
    """Grafana's interval variables replaced by a concrete window; anything else is left as is
    (and then fails to parse in Prometheus, which the tests report)."""
    for variable in ("$__rate_interval", "$__interval", "$__range"):
        expr = expr.replace(variable, window)
    return expr


# Label matchers, range/subquery selectors and strings: where `=`, `!=`, `<`, `>` are no
# comparison operators.
_UNTOUCHED = re.compile(r'(\{[^}]*\}|\[[^\]]*\]|"(?:[^"\\]|\\.)*")')
_COMPARISON = re.compile(r"(==|!=|>=|<=|>|<)(?!\s*bool\b)")


def as_series(expr: str) -> str:
    """An alert condition as the series it tests: each comparison becomes a `bool` comparison,
    so `x > 0.5` yields 0 or 1 for every series of x instead of only those past the threshold.
    A healthy system then still returns data, and a wrong metric name or label still returns
    none."""
    parts = _UNTOUCHED.split(expr)
    return "".join(
        part if i % 2 else _COMPARISON.sub(r"\1 bool", part) for i, part in enumerate(parts)
    )


_DURATION = re.compile(r"(\d+)(ms|s|m|h|d|w|y)")
_UNIT_SECONDS = {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800, "y": 31536000}


def seconds(duration: str) -> float:
    """A Prometheus duration such as `1h5m` or `45s`, in seconds."""
    if not duration or _DURATION.sub("", duration):
        raise ValueError(f"not a Prometheus duration: {duration!r}")
    return sum(int(n) * _UNIT_SECONDS[unit] for n, unit in _DURATION.findall(duration))
