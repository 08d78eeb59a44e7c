"""The Prometheus alert rules: valid for promtool, documented, and unit-tested with promtool so
that each alert fires on synthetic failing series, not before its `for`, and never when healthy."""

from __future__ import annotations

import re
import subprocess
from collections import defaultdict
from pathlib import Path

import pytest
import yaml

from tests.monitoring.monitoring_files import (
    RULE_FILES,
    RULE_TESTS,
    RUNBOOK,
    alert_rules,
    as_series,
    seconds,
    tool,
)

REQUIRED_ALERTS = {
    "HighP95Latency",
    "HighErrorRate",
    "NoModelLoaded",
    "RegistryUnreachable",
    "ModelReloadFailures",
    "StaleModel",
    "InputDrift",
    "APIDown",
}


def promtool(*args: str | Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [tool("promtool"), *map(str, args)], capture_output=True, text=True, timeout=120
    )


@pytest.mark.slow
def test_promtool_accepts_every_rule_file() -> None:
    result = promtool("check", "rules", *RULE_FILES)
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.count("SUCCESS") == len(RULE_FILES)


@pytest.mark.slow
@pytest.mark.parametrize("unit_tests", RULE_TESTS, ids=lambda p: p.name)
def test_promtool_unit_tests_pass(unit_tests: Path) -> None:
    result = promtool("test", "rules", unit_tests)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS" in result.stdout


def test_every_required_alert_exists_once_in_a_group_named_after_its_area() -> None:
    rules = alert_rules()
    names = [rule.name for rule in rules]
    assert set(names) >= REQUIRED_ALERTS
    assert len(names) == len(set(names))
    assert all(re.fullmatch(r"[a-z]+\.rules", rule.group) for rule in rules)


@pytest.mark.parametrize("rule", alert_rules(), ids=lambda r: r.name)
def test_each_alert_has_a_for_window_a_severity_and_templated_annotations(rule) -> None:
    assert seconds(rule.for_) > 0
    assert rule.labels.get("severity") in ("critical", "warning")
    assert rule.annotations.get("summary")
    assert "{{" in rule.annotations.get("description", "")


@pytest.mark.parametrize("rule", alert_rules(), ids=lambda r: r.name)
def test_each_runbook_url_points_at_a_section_of_the_runbook(rule) -> None:
    path, _, anchor = rule.annotations["runbook_url"].partition("#")
    headings = {
        re.sub(r"[^a-z0-9 -]", "", line.lstrip("#").strip().lower()).replace(" ", "-")
        for line in RUNBOOK.read_text().splitlines()
        if line.startswith("## ")
    }
    assert path == "docs/runbook.md"
    assert anchor in headings


def unit_test_checks() -> dict[str, list[tuple[str, float, bool]]]:
    """Alert name -> (test case, eval time in s, fires?) for every check of the promtool tests."""
    checks = defaultdict(list)
    for path in RULE_TESTS:
        for case in yaml.safe_load(path.read_text())["tests"]:
            for check in case.get("alert_rule_test", []):
                checks[check["alertname"]].append(
                    (
                        f"{path.name}: {case['name']}",
                        seconds(check["eval_time"]),
                        bool(check.get("exp_alerts")),
                    )
                )
    return checks


@pytest.mark.parametrize("rule", alert_rules(), ids=lambda r: r.name)
def test_each_alert_is_unit_tested_firing_silent_before_for_and_silent_when_healthy(rule) -> None:
    checks = unit_test_checks()[rule.name]
    by_case = defaultdict(list)
    for case, at, fires in checks:
        by_case[case].append((at, fires))
    window = seconds(rule.for_)

    fires_after_for = [
        case
        for case, evals in by_case.items()
        if any(fires for _, fires in evals)
        and any(not fires and at < window for at, _ in evals)
        and all(at >= window for at, fires in evals if fires)
    ]
    healthy = [
        case
        for case, evals in by_case.items()
        if not any(fires for _, fires in evals) and max(at for at, _ in evals) > window
    ]
    assert fires_after_for, f"no promtool test fires {rule.name} after {rule.for_} but not before"
    assert healthy, f"no promtool test keeps {rule.name} silent on healthy series"


@pytest.mark.parametrize(
    ("condition", "series"),
    [
        ('up{job="api"} == 0', 'up{job="api"} == bool 0'),
        ('max by (f) (psi{job="api"}) > 0.2', 'max by (f) (psi{job="api"}) > bool 0.2'),
        ('rate(x{s=~"5..", h!="/ready"}[5m]) >= 1', 'rate(x{s=~"5..", h!="/ready"}[5m]) >= bool 1'),
        ("a > bool 1 and on (job) b <= 2", "a > bool 1 and on (job) b <= bool 2"),
        ('absent(up{job="api"})', 'absent(up{job="api"})'),
    ],
)
def test_as_series_turns_comparisons_into_bool_but_leaves_matchers_alone(
    condition: str, series: str
) -> None:
    assert as_series(condition) == series


@pytest.mark.slow
def test_as_series_of_every_alert_rule_still_passes_promtool(tmp_path: Path) -> None:
    rules = [
        {"record": f"test:{rule.name}", "expr": as_series(rule.expr)} for rule in alert_rules()
    ]
    path = tmp_path / "series.yml"
    path.write_text(yaml.safe_dump({"groups": [{"name": "series.rules", "rules": rules}]}))
    result = promtool("check", "rules", path)
    assert result.returncode == 0, result.stdout + result.stderr
