"""The Alertmanager configuration: valid for amtool, each alert routed by its severity, and the
receivers that render-config writes from the environment (what compose and Kubernetes run)."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest
import yaml

from tests.monitoring.monitoring_files import ALERTMANAGER_CONFIG, MONITORING, alert_rules, tool

RENDER_CONFIG = MONITORING / "alertmanager" / "render-config"


def amtool(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([tool("amtool"), *args], capture_output=True, text=True, timeout=60)


def receiver_for(*labels: str, config: Path = ALERTMANAGER_CONFIG) -> str:
    result = amtool("config", "routes", "test", f"--config.file={config}", *labels)
    assert result.returncode == 0, result.stdout + result.stderr
    return result.stdout.strip()


def render(tmp_path: Path, **env: str) -> subprocess.CompletedProcess[str]:
    """render-config as the containers run it: sh, with only these variables set."""
    return subprocess.run(
        ["sh", str(RENDER_CONFIG), str(ALERTMANAGER_CONFIG), str(tmp_path / "alertmanager.yml")],
        env={"PATH": "/usr/bin:/bin", **env},
        capture_output=True,
        text=True,
        timeout=30,
    )


def receivers(path: Path) -> dict[str, dict]:
    return {r["name"]: r for r in yaml.safe_load(path.read_text())["receivers"]}


@pytest.mark.slow
def test_amtool_accepts_the_config() -> None:
    result = amtool("check-config", str(ALERTMANAGER_CONFIG))
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS" in result.stdout


@pytest.mark.slow
@pytest.mark.parametrize("rule", alert_rules(), ids=lambda r: r.name)
def test_each_alert_reaches_the_receiver_of_its_severity(rule) -> None:
    severity = rule.labels["severity"]
    assert receiver_for(f"alertname={rule.name}", f"severity={severity}", "job=api") == severity


@pytest.mark.slow
def test_an_alert_without_severity_goes_to_the_null_receiver() -> None:
    assert receiver_for("alertname=Unknown") == "null"


def test_the_file_holds_no_address_and_no_credential() -> None:
    """Destinations come from the environment only: as written, nothing is sent (alerts stay in
    Alertmanager's UI and Grafana's alerts dashboard) and nothing fails to send."""
    config = yaml.safe_load(ALERTMANAGER_CONFIG.read_text())
    assert all(set(receiver) == {"name"} for receiver in config["receivers"])
    assert list(config)[-1] == "receivers", "render-config replaces the last section"


@pytest.mark.slow
def test_with_nothing_configured_the_rendered_config_sends_nothing(tmp_path: Path) -> None:
    result = render(tmp_path)
    assert result.returncode == 0, result.stderr
    assert receivers(tmp_path / "alertmanager.yml") == receivers(ALERTMANAGER_CONFIG)
    head = ALERTMANAGER_CONFIG.read_text().split("\nreceivers:")[0]
    assert (tmp_path / "alertmanager.yml").read_text().startswith(head)


@pytest.mark.slow
def test_every_destination_configured_reaches_both_severities(tmp_path: Path) -> None:
    tricky = 'p\\a"s#s: {x}'
    result = render(
        tmp_path,
        ALERT_WEBHOOK_URL="http://alert-sink:5001/alerts?token=a&b=c",
        ALERT_SLACK_WEBHOOK_URL="https://hooks.slack.com/services/T0/B0/XYZ",
        ALERT_SLACK_CHANNEL="#readmission",
        ALERT_EMAIL_TO="oncall@example.org",
        ALERT_SMTP_SMARTHOST="smtp.example.org:587",
        ALERT_SMTP_USERNAME="alerts",
        ALERT_SMTP_PASSWORD=tricky,
    )
    assert result.returncode == 0, result.stderr
    rendered = tmp_path / "alertmanager.yml"
    check = amtool("check-config", str(rendered))
    assert check.returncode == 0, check.stdout + check.stderr
    for severity in ("critical", "warning"):
        receiver = receivers(rendered)[severity]
        assert receiver["webhook_configs"] == [
            {"url": "http://alert-sink:5001/alerts?token=a&b=c", "send_resolved": True}
        ]
        assert receiver["slack_configs"][0]["channel"] == "#readmission"
        email = receiver["email_configs"][0]
        assert (email["to"], email["smarthost"], email["auth_password"]) == (
            "oncall@example.org",
            "smtp.example.org:587",
            tricky,
        )
        assert receiver_for("alertname=APIDown", f"severity={severity}", config=rendered) == (
            severity
        )


@pytest.mark.slow
def test_email_without_a_server_is_refused_by_name(tmp_path: Path) -> None:
    result = render(tmp_path, ALERT_EMAIL_TO="oncall@example.org")
    assert result.returncode != 0
    assert "ALERT_SMTP_SMARTHOST" in result.stderr
    assert not (tmp_path / "alertmanager.yml").exists()


def test_inhibit_rules_name_only_alerts_that_exist() -> None:
    names = {rule.name for rule in alert_rules()}
    config = yaml.safe_load(ALERTMANAGER_CONFIG.read_text())
    mentioned = set()
    for inhibit in config["inhibit_rules"]:
        for matcher in inhibit["source_matchers"] + inhibit["target_matchers"]:
            key, _, value = matcher.partition("=")
            if key.rstrip("!") == "alertname":
                mentioned.update(value.lstrip("~").strip('"').split("|"))
    assert mentioned
    assert mentioned <= names
