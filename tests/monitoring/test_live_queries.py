"""End to end: the real API (bin/api) serving a promoted model, scraped every second by a real
Prometheus (bin/prometheus) loaded with the repo's rules, driven by a bounded Locust swarm. Then
every PromQL expression of every Grafana panel and every alert rule is evaluated through the
Prometheus HTTP API: each must parse and return data.

How expressions are evaluated:
- Grafana variables: `$__rate_interval` (and `$__interval`, `$__range`) become RATE_WINDOW, a
  window of 15 scrapes here, as Grafana would pick at least 4 scrape intervals.
- Alert rules and annotation queries are conditions (`x > 0.2`) that are empty on a healthy
  system: each is evaluated as written (it must parse), and as its series, with every comparison
  made a `bool` comparison (`x > bool 0.2`, see `as_series`), which must return data. A typo in a
  metric or label name therefore still shows as an empty result.
"""

from __future__ import annotations

import json
import secrets
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pandas as pd
import pytest
import sqlalchemy as sa
import yaml

from readmission import registry, training
from readmission.config import Settings
from readmission.data import database, ingestion, tables
from readmission.data.validation import validate
from readmission.monitoring import realized
from readmission.processes import free_port, running
from readmission.schema import TARGET, example_encounter
from tests.monitoring.monitoring_files import (
    PROMETHEUS_CONFIG,
    PROMETHEUS_DIR,
    alert_rules,
    annotation_queries,
    as_series,
    panel_queries,
    tool,
    with_grafana_variables,
)
from tests.services import ROOT, service_env

RATE_WINDOW = "15s"
DRIFT_WINDOW = 200
TOKEN = secrets.token_urlsafe(16)


def prometheus_config(directory: Path, api_address: str) -> Path:
    """The repo's prometheus.yml for this test: scrapes and rule evaluations every second, the
    repo's rules by absolute path, the API as the target of a target file of its own, and no
    Alertmanager (pending alerts are never sent anyway)."""
    config = yaml.safe_load(PROMETHEUS_CONFIG.read_text())
    config["global"].update(scrape_interval="1s", scrape_timeout="1s", evaluation_interval="1s")
    config["rule_files"] = [str(PROMETHEUS_DIR / pattern) for pattern in config["rule_files"]]
    del config["alerting"]
    groups = json.loads((PROMETHEUS_DIR / "targets" / "api.json").read_text())
    groups[0]["targets"] = [api_address]
    (directory / "api.json").write_text(json.dumps(groups))
    (job,) = [job for job in config["scrape_configs"] if job["job_name"] == "api"]
    job["file_sd_configs"] = [{"files": [str(directory / "api.json")]}]
    path = directory / "prometheus.yml"
    path.write_text(yaml.safe_dump(config))
    return path


class Prometheus:
    def __init__(self, url: str) -> None:
        self.url = url

    def query(self, expr: str) -> dict[str, Any]:
        """The /api/v1/query answer (status success or error) for `expr` at the current time."""
        return httpx.post(f"{self.url}/api/v1/query", data={"query": expr}, timeout=10).json()

    def has_data(self, expr: str) -> bool:
        answer = self.query(expr)
        return answer["status"] == "success" and bool(answer["data"]["result"])

    def rules(self) -> list[dict[str, Any]]:
        groups = httpx.get(f"{self.url}/api/v1/rules", timeout=10).json()["data"]["groups"]
        return [rule for group in groups for rule in group["rules"]]


def wait_until(condition: Callable[[], bool], what: str, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.5)


def locust_swarm(api_url: str) -> dict[str, Any]:
    """4 Locust users of locust_test/locustfile.py for 6 s, in library mode, in a subprocess."""
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "tests.monitoring.locust_swarm",
            "--host",
            api_url,
            "--users",
            "4",
            "--seconds",
            "6",
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        env=service_env(),
    )
    assert result.returncode == 0, result.stderr[-3000:]
    return json.loads(result.stdout.strip().splitlines()[-1])


@pytest.fixture
def two_versions_v1_promoted(platform: Settings, sample: pd.DataFrame) -> Settings:
    """Version 1 trained on one batch and promoted; version 2 a registered copy of it (the test
    needs a second version to swap to, not a better one)."""
    ingestion.ingest(
        platform.warehouse_url, sample, platform.batch_size, platform.holdout_fraction, 1
    )
    training.train_pending(platform)
    registry.connect(platform).copy_model_version(
        registry.model_uri(platform, 1), platform.model_name
    )
    registry.promote(platform, 1)
    return platform


@pytest.mark.slow
@pytest.mark.timeout(180)
def test_every_dashboard_query_and_alert_expression_returns_data_from_a_live_api(
    two_versions_v1_promoted: Settings, sample: pd.DataFrame, tmp_path: Path
) -> None:
    settings = two_versions_v1_promoted
    api_port, prometheus_port = free_port(), free_port()
    api_url, prometheus_url = f"http://127.0.0.1:{api_port}", f"http://127.0.0.1:{prometheus_port}"
    api_env = service_env(
        DATABASE_URL=settings.warehouse_url,
        MLFLOW_TRACKING_URI=settings.tracking_uri,
        MODEL_NAME=settings.model_name,
        API_PORT=str(api_port),
        API_RELOAD_TOKEN=TOKEN,
        MODEL_POLL_SECONDS="300",  # version 2 arrives through POST /model/reload, not the poller
        DRIFT_WINDOW=str(DRIFT_WINDOW),
        DRIFT_MIN_REQUESTS=str(DRIFT_WINDOW // 2),
        READMISSION_HOME=str(tmp_path / "home"),
        PERFORMANCE_POLL_SECONDS="1",
    )
    tool("prometheus")  # bin/prometheus runs the Debian binary from PATH
    prometheus_env = service_env(
        PROMETHEUS_CONFIG=str(prometheus_config(tmp_path, f"127.0.0.1:{api_port}")),
        PROMETHEUS_STORAGE=str(tmp_path / "tsdb"),
        PROMETHEUS_PORT=str(prometheus_port),
    )

    with (
        running([str(ROOT / "bin" / "api")], tmp_path / "api.log", api_env, f"{api_url}/ready"),
        running(
            [str(ROOT / "bin" / "prometheus")],
            tmp_path / "prometheus.log",
            prometheus_env,
            f"{prometheus_url}/-/ready",
        ),
    ):
        prometheus = Prometheus(prometheus_url)
        swarm = locust_swarm(api_url)
        assert swarm["requests"] > 0 and swarm["failures"] == 0, swarm

        invalid = httpx.post(f"{api_url}/predict", json={**example_encounter(), "race": "Martian"})
        assert invalid.status_code == 422
        skewed = [example_encounter()] * DRIFT_WINDOW  # one encounter repeated: maximal drift
        assert (
            httpx.post(
                f"{api_url}/predict/batch", json={"encounters": skewed}, timeout=30
            ).status_code
            == 200
        )
        registry.promote(settings, 2)
        # Version 1 in shadow from now on: the live comparison's panels need paired scores.
        registry.set_shadow(settings, 1)
        reload = httpx.post(
            f"{api_url}/model/reload", timeout=60, headers={"Authorization": f"Bearer {TOKEN}"}
        )
        assert reload.status_code == 200 and reload.json()["version"] == "2", reload.text

        wait_until(
            lambda: prometheus.has_data('readmission_model_version{job="api"} == 2'),
            "Prometheus to scrape the swap to version 2",
        )
        # The realized alert reads the served version only: version 2 scores what follows.
        # Encounters the warehouse does not hold yet (the extract's deferred rows) are scored,
        # then their outcomes arrive: their realized performance is exported. (Stored ones
        # would not count: their outcomes were known when scored.)
        clean = validate(sample).clean
        with database.engine_for(settings.warehouse_url).connect() as conn:
            stored = pd.read_sql(sa.select(tables.clean_encounters.c.encounter_id), conn)
        unseen = clean[~clean["encounter_id"].isin(stored["encounter_id"])]
        unseen = unseen.sort_values("encounter_id").head(1000).drop(columns=[TARGET])
        scored = httpx.post(
            f"{api_url}/predict/batch",
            json={"encounters": unseen.to_dict("records")},
            timeout=30,
        )
        assert scored.status_code == 200, scored.text
        wait_until(  # the API's own /metrics: the batch was enqueued before it answered
            lambda: (
                "readmission_prediction_log_buffered 0.0"
                in httpx.get(f"{api_url}/metrics").text.splitlines()
            ),
            "the prediction log to be written",
        )
        ingestion.ingest(  # the next batch of the extract: outcomes of scored encounters
            settings.warehouse_url, sample, settings.batch_size, settings.holdout_fraction, 1
        )
        realized.compute(settings)
        wait_until(
            lambda: prometheus.has_data('readmission_realized_roc_auc{version="2"}'),
            "Prometheus to scrape the realized performance",
        )
        wait_until(
            lambda: prometheus.has_data(  # enough samples for a rate over the window
                f"count_over_time(readmission_validation_errors_total[{RATE_WINDOW}]) >= 3"
            ),
            "three scrapes of the 422's series",
        )
        wait_until(
            lambda: prometheus.has_data(
                'ALERTS{alertname="InputDrift", alertstate="pending", job="api"}'
            ),
            "the skewed batch to put InputDrift into pending",
        )
        wait_until(
            lambda: all(rule["health"] == "ok" for rule in prometheus.rules()),
            "every rule to be evaluated",
        )

        problems = []
        for query in panel_queries():
            expr = with_grafana_variables(query.expr, RATE_WINDOW)
            if not prometheus.has_data(expr):
                problems.append(f"panel {query}: {expr} -> {prometheus.query(expr)}")
        for query in annotation_queries():
            expr = as_series(with_grafana_variables(query.expr, RATE_WINDOW))
            if not prometheus.has_data(expr):
                problems.append(f"{query}: {expr} -> {prometheus.query(expr)}")
        for rule in alert_rules():
            if prometheus.query(rule.expr)["status"] != "success":
                problems.append(f"alert {rule.name}: {rule.expr} -> {prometheus.query(rule.expr)}")
            if not prometheus.has_data(as_series(rule.expr)):
                problems.append(
                    f"alert {rule.name} as series: {as_series(rule.expr)} -> "
                    f"{prometheus.query(as_series(rule.expr))}"
                )
        assert problems == []
        loaded = {rule["name"] for rule in prometheus.rules() if rule["type"] == "alerting"}
        assert loaded == {rule.name for rule in alert_rules()}
