"""Airflow for the DAG tests: a home and a PostgreSQL metadata database of the session's own.

Airflow reads AIRFLOW_HOME when first imported, so it is set here, when pytest imports this
file; the tests import Airflow lazily. The `airflow_db` fixture migrates a fresh database and
points Airflow's ORM at it, whatever imported Airflow first.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest

from readmission.config import Settings
from readmission.monitoring import prediction_log
from readmission.monitoring.prediction_log import LoggedPrediction
from readmission.schema import POSITIVE_LABEL, TARGET
from tests.conftest import mlflow_backend_uri
from tests.services import BIN, ROOT

DAGS = ROOT / "dags"
_HOME = tempfile.mkdtemp(prefix="readmission-airflow-")
os.environ["AIRFLOW_HOME"] = _HOME
os.environ["AIRFLOW__CORE__DAGS_FOLDER"] = str(DAGS)
os.environ["AIRFLOW__CORE__LOAD_EXAMPLES"] = "False"


# Airflow 3.3 reads .airflowignore with a pathspec pattern class pathspec deprecates: not ours.
AIRFLOWIGNORE_WARNING = "ignore:GitWildMatchPattern:DeprecationWarning"


def pytest_unconfigure() -> None:
    shutil.rmtree(_HOME, ignore_errors=True)


def airflow_url(database_url: str) -> str:
    """Airflow's metadata store on psycopg2, like MLflow's (see tests/conftest.py)."""
    return mlflow_backend_uri(database_url)


@pytest.fixture(scope="session")
def airflow_db(create_database: Callable[[], str]) -> Iterator[str]:
    """A migrated Airflow metadata database that this process's Airflow ORM uses."""
    url = airflow_url(create_database())
    os.environ["AIRFLOW__DATABASE__SQL_ALCHEMY_CONN"] = url
    subprocess.run(
        [str(BIN / "airflow"), "db", "migrate"], check=True, capture_output=True, timeout=300
    )
    from airflow import settings

    settings.configure_vars()
    settings.reconfigure_orm()
    yield url
    settings.dispose_orm()


def parse_dags() -> dict[str, Any]:
    """The DAGs of dags/, parsed as the dag-processor does (bundle folder on sys.path)."""
    from airflow.dag_processing.dagbag import BundleDagBag

    bag = BundleDagBag(dag_folder=DAGS, bundle_path=DAGS, bundle_name="dags-folder")
    assert bag.import_errors == {}
    return bag.dags


@pytest.fixture(scope="session")
def dags() -> dict[str, Any]:
    return parse_dags()


@pytest.fixture
def pipeline_env(
    platform: Settings, configure: Callable[..., Settings], sample_csv: Path
) -> Settings:
    """`platform` reading the synthetic sample, with a log-loss floor its 20% base rate meets and
    a calibration floor its small, over-confident models (slope ~0.6) meet."""
    return configure(
        DATA_SOURCE=str(sample_csv),
        DATA_SHA256="",
        MAX_LOG_LOSS="0.6",
        GATE_CALIBRATION_SLOPE_MIN="0.3",
    )


def log_predictions(settings: Settings, rows: pd.DataFrame, version: str) -> np.ndarray:
    """What the API logs when `version` scores `rows` before their outcome is known: one
    prediction each, informative about the outcome; the probabilities, in row order."""
    y = (rows[TARGET] == POSITIVE_LABEL).to_numpy()
    noise = np.random.default_rng(3).normal(0, 0.15, len(y))
    probability = np.clip(0.15 + 0.3 * y + noise, 0.01, 0.99)
    prediction_log.write(
        settings.warehouse_url,
        [
            LoggedPrediction(
                int(encounter),
                int(patient),
                settings.model_name,
                version,
                float(p),
                0.3,
                bool(p >= 0.3),
                "high" if p >= 0.3 else "low",
                datetime.now(UTC),
            )
            for encounter, patient, p in zip(
                rows["encounter_id"], rows["patient_nbr"], probability, strict=True
            )
        ],
    )
    return probability
