"""`make demo`, reduced: the whole loop through real Airflow, MLflow, API, UI and Prometheus on
a small sample, ending with a served prediction and no process left behind."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from .conftest import ROOT, free_port


@pytest.mark.slow
def test_demo_trains_through_airflow_promotes_and_serves_a_prediction(
    sample_csv: Path, tmp_path: Path
) -> None:
    ports = {
        f"{name}_PORT": str(free_port())
        for name in ("MLFLOW", "AIRFLOW", "API", "UI", "PROMETHEUS")
    }
    env = {
        **os.environ,
        **ports,
        "READMISSION_HOME": str(tmp_path / "home"),
        "DATA_SOURCE": str(sample_csv),
        "DATA_SHA256": "",
        "BATCH_SIZE": "500",
        "DEMO_BATCHES": "2",
        "DEMO_EXIT": "1",
        "MAX_LOG_LOSS": "0.7",  # the synthetic sample's base rate is 21%: its log-loss is higher
        "DATABASE_URL": "",
        "MLFLOW_TRACKING_URI": "",
    }
    done = subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "demo.py")],
        env=env,
        capture_output=True,
        text=True,
        timeout=900,
        check=False,
    )
    output = done.stdout + done.stderr
    assert done.returncode == 0, output[-4000:]

    line = next(x for x in output.splitlines() if x.startswith("DEMO PREDICTION "))
    prediction = json.loads(line.removeprefix("DEMO PREDICTION "))
    assert 0 < prediction["probability"] < 1
    assert prediction["model_version"] == "2"  # both batches trained, the newest promoted
    assert "Airflow UI" in output and "simple_auth_manager_passwords.json.generated" in output
    leftovers = subprocess.run(["pgrep", "-f", str(tmp_path)], capture_output=True, text=True)
    assert leftovers.stdout == "", "demo left processes running"
