"""Locust against bin/api on 127.0.0.1: promotions and a registry outage under load, and the
headless command as a user types it. Every run is bounded in users and seconds."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
import sqlalchemy as sa

from readmission import registry
from readmission.config import Settings
from readmission.data.database import engine_for
from readmission.data.tables import prediction_log_table
from tests.api.serving import Api, running_api, scrape
from tests.conftest import copy_lineage, platform_settings, train_versions
from tests.load.conftest import MlflowServer
from tests.services import BIN, ROOT, service_env

pytestmark = pytest.mark.slow

USERS = 20
LOAD_SECONDS = 60  # at most: the tests stop the swarm once they have seen what they watch for
# Prediction requests answered after the event a test watches for, before it stops the swarm.
# Counted in requests, the unit of the tests' floor: a batch request makes up to 25 predictions,
# so a count of predictions let a swarm stop below the floor (255 requests for 500 predictions).
AFTERWARDS = 300


def start_locust_library(api: Api) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "tests.load.locust_library", api.url, str(USERS), str(LOAD_SECONDS)],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )


def summary(locust: subprocess.Popen, api: Api) -> dict[str, Any]:
    """Once AFTERWARDS more prediction requests are answered, stop the swarm: its summary."""
    answered = prediction_requests_answered(api)
    api.wait_until(
        lambda: prediction_requests_answered(api) >= answered + AFTERWARDS, "load to go on"
    )
    locust.terminate()
    out, err = locust.communicate(timeout=120)
    assert locust.returncode == 0, err[-3000:]
    return json.loads(out.strip().splitlines()[-1])


def prediction_requests_answered(api: Api) -> float:
    """POST /predict and /predict/batch requests answered, of any status (the test's own polls
    are GETs)."""
    return sum(
        value
        for labels, value in scrape(api).get("http_requests_total", [])
        if labels["method"] == "POST"
    )


def predictions_served(api: Api) -> float:
    return sum(value for _, value in scrape(api).get("readmission_predictions_total", []))


def test_a_promotion_during_load_switches_the_served_version_with_no_failed_request(
    trained_lineage: Settings, tmp_path: Path
) -> None:
    settings = copy_lineage(trained_lineage, versions=2)
    registry.promote(settings, 1)
    with running_api(settings, tmp_path) as api:
        api.wait_until(lambda: api.served_version() == "1", "version 1 to be served")
        locust = start_locust_library(api)
        try:
            api.wait_until(lambda: predictions_served(api) >= 200, "load to build up")
            registry.promote(settings, 2)
            api.wait_until(lambda: api.served_version() == "2", "version 2 to be served")
            result = summary(locust, api)
        finally:
            locust.kill()

    assert result["failures"] == 0, result["errors"]
    assert result["versions"] == ["1", "2"]
    assert result["requests"] > 300
    assert set(result["by_name"]) == {
        "/predict",
        "/predict?explain=true",
        "/predict/batch",
        "/model",
    }
    assert result["exit_code"] == 0


def test_the_api_keeps_serving_when_the_registry_goes_down_under_load(
    private_mlflow_server: MlflowServer, create_database: Any, sample: pd.DataFrame, tmp_path: Path
) -> None:
    settings = platform_settings(create_database(), private_mlflow_server.url, tmp_path / "home")
    train_versions(settings, sample, batches=1)
    registry.promote(settings, 1)
    with running_api(settings, tmp_path) as api:
        api.wait_until(lambda: api.served_version() == "1", "version 1 to be served")
        locust = start_locust_library(api)
        try:
            api.wait_until(lambda: predictions_served(api) >= 200, "load to build up")
            private_mlflow_server.stop()
            down = api.wait_until(
                lambda: (body := api.get("/model").json())["registry_reachable"] is False and body,
                "the API to notice the registry is down",
            )
            ready = api.get("/ready")
            metrics = api.get("/metrics").text
            result = summary(locust, api)
        finally:
            locust.kill()

    assert result["failures"] == 0, result["errors"]
    assert result["versions"] == ["1"]
    assert result["requests"] > 300
    assert down["version"] == "1"
    assert "model registry unreachable" in down["last_error"]
    assert ready.status_code == 200
    assert "readmission_registry_up 0.0" in metrics.splitlines()


@pytest.fixture(scope="module")
def load_api(
    trained_lineage: Settings,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[Api]:
    settings = copy_lineage(trained_lineage, versions=1)
    registry.promote(settings, 1)
    with running_api(settings, tmp_path_factory.mktemp("api")) as api:
        api.wait_until(lambda: api.served_version() == "1", "version 1 to be served")
        yield api


def headless_locust(api: Api, seconds: int, **thresholds: str) -> subprocess.CompletedProcess:
    """The documented command, as a user types it from the repository root."""
    command = [
        str(BIN / "locust"),
        "-f",
        "locust_test/locustfile.py",
        "--headless",
        "-u",
        str(USERS),
        "-r",
        "10",
        "-t",
        f"{seconds}s",
        "--host",
        api.url,
    ]
    env = service_env(**thresholds)
    return subprocess.run(
        command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=seconds + 120
    )


def test_the_headless_command_meets_its_thresholds_and_prints_a_summary(load_api: Api) -> None:
    run = headless_locust(load_api, seconds=5)
    output = run.stdout + run.stderr
    print(output[-4000:])

    assert run.returncode == 0, output[-4000:]
    assert "load test passed" in output
    summary_lines = [line for line in output.splitlines() if "Aggregated" in line]
    assert summary_lines, "locust printed no summary table"
    assert any("/predict/batch" in line for line in output.splitlines())


def test_the_headless_command_fails_when_a_threshold_is_impossible(load_api: Api) -> None:
    run = headless_locust(load_api, seconds=5, LOCUST_MAX_P95_MS="0.001")
    output = run.stdout + run.stderr

    assert run.returncode == 1, output[-4000:]
    assert "load test failed" in output and "p95" in output


def test_given_a_csv_of_the_data_set_locust_sends_its_real_encounters(
    load_api: Api, sample_csv: Path
) -> None:
    started = datetime.now(UTC)
    run = headless_locust(load_api, seconds=5, LOCUST_ENCOUNTERS_CSV=str(sample_csv))
    assert run.returncode == 0, (run.stdout + run.stderr)[-4000:]
    load_api.wait_until(
        lambda: (
            "readmission_prediction_log_buffered 0.0" in load_api.get("/metrics").text.splitlines()
        ),
        "the prediction log to be written",
    )
    query = sa.select(prediction_log_table.c.encounter_id).where(
        prediction_log_table.c.model_name == load_api.settings.model_name,
        prediction_log_table.c.scored_at >= started,
    )
    with engine_for(load_api.settings.warehouse_url).connect() as conn:
        sent = set(conn.execute(query).scalars())

    real = set(pd.read_csv(sample_csv)["encounter_id"])
    assert len(sent) > 10
    assert sent <= real
