"""`make demo`, reduced: the whole loop through real Airflow, MLflow, API, UI and Prometheus on
a small sample, ending with a served prediction and no process left behind.

It lives beside the DAG tests and asks for their Airflow database on purpose: this pytest
process then exports AIRFLOW_HOME and AIRFLOW__DATABASE__SQL_ALCHEMY_CONN of the DAG tests, and
the demo must run on its own Airflow all the same (it once picked up their queued Asset events).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import sqlalchemy as sa

from readmission.processes import free_port
from tests.conftest import SUITE_PLAN
from tests.services import ROOT, service_env


def run_demo(tmp_path: Path, timeout: float, **env: str) -> subprocess.CompletedProcess[str]:
    ports = {
        f"{name}_PORT": str(free_port())
        for name in ("MLFLOW", "AIRFLOW", "API", "UI", "PROMETHEUS")
    }
    return subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "demo.py")],
        env=service_env(**ports, READMISSION_HOME=str(tmp_path / "home"), DEMO_EXIT="1", **env),
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def leftovers(tmp_path: Path) -> str:
    return subprocess.run(["pgrep", "-f", str(tmp_path)], capture_output=True, text=True).stdout


@pytest.mark.slow
def test_demo_trains_through_airflow_promotes_and_serves_a_prediction(
    airflow_db: str, sample_csv: Path, tmp_path: Path
) -> None:
    assert os.environ["AIRFLOW__DATABASE__SQL_ALCHEMY_CONN"] == airflow_db  # the trap is set
    dag_test_runs = sa.create_engine(airflow_db)
    with dag_test_runs.connect() as conn:
        runs_before = conn.execute(sa.text("SELECT count(*) FROM dag_run")).scalar_one()

    done = run_demo(
        tmp_path,
        900,
        DATA_SOURCE=str(sample_csv),
        DATA_SHA256="",
        BATCH_SIZE="500",
        MIN_BATCH_ROWS="100",
        MAX_LOG_LOSS="0.7",  # the synthetic sample's base rate is 21%: its log-loss is higher
        GATE_CALIBRATION_SLOPE_MIN="0.3",  # and its small models are over-confident
        # As the shipped plan, the first production version needs a person: the demo answers.
        CHANGE_CONTROL_PLAN=str(SUITE_PLAN.with_name("first_version_person.yaml")),
    )
    output = done.stdout + done.stderr
    assert done.returncode == 0, output[-4000:]
    assert "03_evaluate_and_promote asks a person: Promote " in output
    assert "The demo approves in their place" in output

    line = next(x for x in output.splitlines() if x.startswith("DEMO PREDICTION "))
    prediction = json.loads(line.removeprefix("DEMO PREDICTION "))
    assert 0 < prediction["probability"] < 1
    line = next(x for x in output.splitlines() if x.startswith("DEMO VERSIONS "))
    versions = json.loads(line.removeprefix("DEMO VERSIONS "))
    first, second = versions["first"], versions["second"]
    assert first and second  # the later extract kept the model learning
    assert second[0]["parent"] == first[-1]["version"]  # ... continuing the first one's lineage
    assert prediction["model_version"] in {v["version"] for v in first + second}
    # The next batch's encounters were scored by the served version, then ingested with outcomes.
    line = next(x for x in output.splitlines() if x.startswith("DEMO REALIZED "))
    realized = json.loads(line.removeprefix("DEMO REALIZED "))
    # The served version may have moved on since the first prediction: the second extract's
    # evaluate-and-promote can promote its version while the demo scores the next batch.
    assert realized["version"] in {v["version"] for v in first + second} and realized["n"] > 0
    assert 0 < realized["roc_auc"] < 1
    assert "Airflow UI" in output and "simple_auth_manager_passwords.json.generated" in output
    # promotions reach the API by MLflow's webhook, whose test delivery the API accepted
    assert "MLflow's registry webhook tells the API of each promotion at once" in output
    assert "note:" not in output  # its own Airflow: nothing else was queued there
    with dag_test_runs.connect() as conn:  # ... and none of its runs went to the DAG tests'
        assert conn.execute(sa.text("SELECT count(*) FROM dag_run")).scalar_one() == runs_before
    dag_test_runs.dispose()
    assert not (tmp_path / "home" / "demo.env").exists()  # the CLI is not sent to dead services
    assert leftovers(tmp_path) == "", "demo left processes running"


@pytest.mark.slow
def test_demo_with_a_missing_data_source_fails_fast_naming_it(tmp_path: Path) -> None:
    done = run_demo(tmp_path, 120, DATA_SOURCE=str(tmp_path / "nonexistent.zip"))
    assert done.returncode == 2
    output = done.stdout + done.stderr
    assert "DATA_SOURCE" in output and "Traceback" not in output
    assert "started" not in output  # no service was started
    assert leftovers(tmp_path) == ""
