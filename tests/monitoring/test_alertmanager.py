"""The Alertmanager configuration: valid for amtool, and each alert routed by its severity."""

from __future__ import annotations

import subprocess

import pytest
import yaml

from tests.monitoring.monitoring_files import ALERTMANAGER_CONFIG, alert_rules, tool


def amtool(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([tool("amtool"), *args], capture_output=True, text=True, timeout=60)


def receiver_for(*labels: str) -> str:
    result = amtool("config", "routes", "test", f"--config.file={ALERTMANAGER_CONFIG}", *labels)
    assert result.returncode == 0, result.stdout + result.stderr
    return result.stdout.strip()


def test_amtool_accepts_the_config() -> None:
    result = amtool("check-config", str(ALERTMANAGER_CONFIG))
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS" in result.stdout


@pytest.mark.parametrize("rule", alert_rules(), ids=lambda r: r.name)
def test_each_alert_reaches_the_webhook_of_its_severity(rule) -> None:
    severity = rule.labels["severity"]
    assert (
        receiver_for(f"alertname={rule.name}", f"severity={severity}", "job=api")
        == f"{severity}-webhook"
    )


def test_an_alert_without_severity_goes_to_the_null_receiver() -> None:
    assert receiver_for("alertname=Unknown") == "null"


def test_webhooks_point_at_a_local_address_and_hold_no_credentials() -> None:
    config = yaml.safe_load(ALERTMANAGER_CONFIG.read_text())
    hooks = [
        hook for receiver in config["receivers"] for hook in receiver.get("webhook_configs", [])
    ]
    assert hooks
    assert all(hook["url"].startswith("http://127.0.0.1:") for hook in hooks)
    assert all("http_config" not in hook for hook in hooks)


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
