"""bin/airflow-standalone (real scheduler, dag-processor, triggerer, API server on PostgreSQL),
driven through scripts/airflow_runs.py: an ingest run's Asset event starts training, whose
Asset event starts evaluation."""

from __future__ import annotations

import shutil
import subprocess
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from readmission import registry
from readmission.config import Settings
from scripts import airflow_runs
from tests.conftest import ROOT, free_port, service_env, stop, wait_for
from tests.dags.conftest import airflow_url

pytestmark = pytest.mark.slow


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
        "READMISSION_HOME": str(tmp / "readmission"),
        "DATA_SOURCE": str(sample_csv),
        "DATA_SHA256": "",
        "MAX_LOG_LOSS": "0.6",
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
    """Point scripts/airflow_runs at the server, signing in with the generated admin password."""
    monkeypatch.setenv("AIRFLOW_URL", airflow.url)
    monkeypatch.setenv("AIRFLOW_HOME", str(airflow.home))
    monkeypatch.delenv("AIRFLOW_ADMIN_PASSWORD", raising=False)
    monkeypatch.delenv("AIRFLOW_ADMIN_USER", raising=False)
    airflow_runs.client.cache_clear()
    yield
    airflow_runs.client.cache_clear()


def test_an_ingest_run_starts_training_then_evaluation_through_their_assets(
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

    assert ingest["run_type"] == "manual"
    assert training["run_type"] == evaluation["run_type"] == "asset_triggered"
    assert [v.batch_id for v in registry.version_summaries(airflow.settings)] == ["1", "2"]
    # Evaluation ran with its params' defaults, read from the settings: AUTO_PROMOTE=true.
    assert registry.production_version(airflow.settings).version == "2"


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
