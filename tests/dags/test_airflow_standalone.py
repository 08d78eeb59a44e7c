"""bin/airflow-standalone (real scheduler, dag-processor, triggerer, API server on PostgreSQL),
driven through readmission.airflow_runs: an ingest run's Asset events start training, whose
Asset event starts evaluation, and the realized performance, also after an ingest of outcomes
only."""

from __future__ import annotations

import shutil
import subprocess
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
import pytest

from readmission import airflow_runs, holdout, performance, registry
from readmission.config import Settings
from tests.dags.conftest import airflow_url, log_predictions
from tests.services import ROOT, free_port, service_env, stop, wait_for

pytestmark = pytest.mark.slow
PIPELINE = ["01_ingest_data", "02_warm_start_training", "03_evaluate_and_promote"]


@dataclass(frozen=True)
class Airflow:
    url: str
    home: Path
    settings: Settings  # what the DAGs' tasks see


@pytest.fixture(scope="module")
def airflow(
    create_database: Callable[[], str],
    mlflow_server: str,
    sample_csv: Path,
    tmp_path_factory: pytest.TempPathFactory,
    artifacts_dir: Path,
) -> Iterator[Airflow]:
    """bin/airflow-standalone on a fresh metadata database, its tasks on a fresh warehouse."""
    tmp = tmp_path_factory.mktemp("airflow-standalone")
    platform = {
        "DATABASE_URL": create_database(),
        "MLFLOW_TRACKING_URI": mlflow_server,
        "MODEL_NAME": f"readmission-test-{uuid.uuid4().hex[:8]}",
        "BATCH_SIZE": "500",
        "MIN_BATCH_ROWS": "100",
        "READMISSION_HOME": str(tmp / "readmission"),
        "DATA_SOURCE": str(sample_csv),
        "DATA_SHA256": "",
        "MAX_LOG_LOSS": "0.6",
        "GATE_CALIBRATION_SLOPE_MIN": "0.3",  # small synthetic models are over-confident
        "AUTO_PROMOTE": "true",
    }
    port, home, log_path = free_port(), tmp / "airflow", tmp / "airflow.log"
    env = service_env(
        **platform,
        AIRFLOW_HOME=str(home),
        AIRFLOW_PORT=str(port),
        AIRFLOW__DATABASE__SQL_ALCHEMY_CONN=airflow_url(create_database()),
    )
    with log_path.open("w") as log:
        process = subprocess.Popen(
            [str(ROOT / "bin" / "airflow-standalone")],
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    url = f"http://127.0.0.1:{port}"
    try:
        wait_for(f"{url}/api/v2/monitor/health", process, timeout=300)
        yield Airflow(url, home, Settings(**platform))
    finally:
        stop(process)
        shutil.copy(log_path, artifacts_dir / "airflow-standalone.log")


@pytest.fixture(autouse=True)
def client_of(airflow: Airflow, monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Point readmission.airflow_runs at the server, signed in with the generated password."""
    monkeypatch.setenv("AIRFLOW_URL", airflow.url)
    monkeypatch.setenv("AIRFLOW_HOME", str(airflow.home))
    monkeypatch.delenv("AIRFLOW_ADMIN_PASSWORD", raising=False)
    monkeypatch.delenv("AIRFLOW_ADMIN_USER", raising=False)
    airflow_runs.client.cache_clear()
    yield
    if airflow_runs.client.cache_info().currsize:  # a test signed in: end its session
        airflow_runs.client().close()
    airflow_runs.client.cache_clear()


def test_an_ingest_run_starts_training_evaluation_and_realized_performance_through_assets(
    airflow: Airflow,
) -> None:
    ingest = airflow_runs.wait(
        "01_ingest_data", airflow_runs.trigger("01_ingest_data", {"batches": 2}), 300
    )
    training = airflow_runs.wait(
        "02_warm_start_training",
        airflow_runs.wait_for_asset_run("02_warm_start_training", ingest),
        600,
    )
    evaluation = airflow_runs.wait(
        "03_evaluate_and_promote",
        airflow_runs.wait_for_asset_run("03_evaluate_and_promote", training),
        300,
    )

    realized = airflow_runs.wait(
        "04_realized_performance",
        airflow_runs.wait_for_asset_run("04_realized_performance", ingest),
        300,
    )

    assert ingest["run_type"] == "manual"
    assert training["run_type"] == evaluation["run_type"] == "asset_triggered"
    assert realized["run_type"] == "asset_triggered"
    assert [v.batch_id for v in registry.version_summaries(airflow.settings)] == ["1", "2"]
    # Evaluation ran with its params' defaults, read from the settings: AUTO_PROMOTE=true.
    assert registry.production_version(airflow.settings).version == "2"


def test_a_queued_foreign_asset_event_is_reported_and_never_taken_for_ours(
    airflow: Airflow,
) -> None:
    """A stale event (as a DAG test or another user leaves) starts a 02 run of its own; ours
    follows the event of our own 01 run, and says what else was there."""
    clean_encounters = "x-readmission://warehouse/clean_encounters"
    asset = airflow_runs.client().request(
        "GET", "/assets", params={"uri_pattern": clean_encounters}
    )["assets"][0]
    foreign = airflow_runs.client().request(
        "POST", "/assets/events", json={"asset_id": asset["id"], "extra": {"from": "elsewhere"}}
    )
    assert any("02_warm_start_training" in line for line in airflow_runs.other_work(PIPELINE))

    heard: list[str] = []
    ingest = airflow_runs.wait(
        "01_ingest_data", airflow_runs.trigger("01_ingest_data", {"batches": 1}), 300
    )
    ours = airflow_runs.wait_for_asset_run("02_warm_start_training", ingest, report=heard.append)
    training = airflow_runs.wait("02_warm_start_training", ours, 600)

    foreign_runs = {
        run["run_id"]
        for event in airflow_runs.client().request(
            "GET", "/assets/events", params={"asset_id": asset["id"]}
        )["asset_events"]
        if event["id"] == foreign["id"]
        for run in event["created_dagruns"]
    }
    assert ours not in foreign_runs  # the foreign event's run trained nothing of ours
    assert training["state"] == "success"
    assert "3" in [v.batch_id for v in registry.version_summaries(airflow.settings)]
    if heard:  # our run may have had to wait behind the foreign one: then we were told
        assert all("02_warm_start_training" in line for line in heard)


def test_a_run_that_announced_nothing_is_an_error_at_once_not_a_wait() -> None:
    idle = airflow_runs.wait(
        "02_warm_start_training", airflow_runs.trigger("02_warm_start_training"), 300
    )  # every ingested batch is trained: nothing to announce
    with pytest.raises(airflow_runs.AirflowError, match="without an Asset event"):
        airflow_runs.wait_for_asset_run("03_evaluate_and_promote", idle, timeout=600)


def test_an_extract_of_outcomes_only_starts_realized_performance_and_no_training(
    airflow: Airflow, sample: pd.DataFrame, tmp_path: Path
) -> None:
    """Holdout patients came back: their new encounters, scored when they left hospital, arrive
    later in an extract of their own. No training batch, yet their outcomes must reach the
    realized performance (and RealizedAucBelowMinimum, fed by it)."""
    settings = airflow.settings
    holdout_patients = holdout.in_holdout(sample["patient_nbr"], settings.holdout_fraction)
    returning = sample[holdout_patients.to_numpy()].head(200)
    new_ids = returning["encounter_id"].astype("int64") + 1_000_000  # the sample's are below
    returning = returning.assign(encounter_id=new_ids.astype(str))
    log_predictions(settings, returning, "1")
    path = tmp_path / "outcomes.csv"
    returning.to_csv(path, index=False)

    ingest = airflow_runs.wait(
        "01_ingest_data", airflow_runs.trigger("01_ingest_data", {"source": str(path)}), 300
    )
    realized = airflow_runs.wait(
        "04_realized_performance",
        airflow_runs.wait_for_asset_run("04_realized_performance", ingest),
        300,
    )

    assert realized["run_type"] == "asset_triggered"
    events = airflow_runs.client().request(
        "GET",
        "/assets/events",
        params={"source_dag_id": "01_ingest_data", "source_run_id": ingest["dag_run_id"]},
    )["asset_events"]
    assert [(e["uri"], [r["dag_id"] for r in e["created_dagruns"]]) for e in events] == [
        ("x-readmission://warehouse/changes", ["04_realized_performance"])
    ]
    # Waiting on it for training is an error at once, naming the Asset it did not announce.
    with pytest.raises(airflow_runs.AirflowError, match="without an Asset event on x-readmission"):
        airflow_runs.wait_for_asset_run("02_warm_start_training", ingest, timeout=600)
    report = performance.latest(settings.warehouse_url, settings.model_name)
    assert report is not None
    (version,) = [v for v in report["versions"] if v["version"] == "1"]
    assert (version["scored"], version["n"], version["pending"]) == (200, 200, 0)


def test_a_failed_run_is_reported_with_the_task_that_failed(tmp_path: Path) -> None:
    run_id = airflow_runs.trigger("01_ingest_data", {"source": str(tmp_path / "missing.csv")})
    with pytest.raises(airflow_runs.DagRunFailed, match="failed tasks: ingest"):
        airflow_runs.wait("01_ingest_data", run_id, 300)


def test_a_bad_param_is_refused_at_trigger_time_naming_it() -> None:
    with pytest.raises(airflow_runs.AirflowError, match="param batches") as refused:
        airflow_runs.trigger("01_ingest_data", {"batches": -1})
    assert refused.value.status == 400


def test_a_wrong_password_is_refused_clearly(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AIRFLOW_ADMIN_PASSWORD", "not-the-password")
    with pytest.raises(airflow_runs.AirflowError, match="refused user admin"):
        airflow_runs.client()


def test_an_unreachable_server_says_how_to_start_one(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AIRFLOW_URL", f"http://127.0.0.1:{free_port()}")
    with pytest.raises(airflow_runs.AirflowError, match="bin/airflow-standalone"):
        airflow_runs.client()


def test_without_a_password_it_says_where_to_put_one(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("AIRFLOW_HOME", str(tmp_path))  # no generated password file there
    with pytest.raises(airflow_runs.AirflowError, match="set AIRFLOW_ADMIN_PASSWORD"):
        airflow_runs.client()
