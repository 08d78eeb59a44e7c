"""Subprocesses started by tests inherit no service address from the pytest process."""

from __future__ import annotations

import pytest

from tests.services import BIN, service_env


def test_fixture_exports_do_not_reach_a_subprocess(monkeypatch: pytest.MonkeyPatch) -> None:
    leaked = {
        "AIRFLOW_HOME": "/tmp/other-test/airflow",
        "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": "postgresql+psycopg2://postgres@127.0.0.1/other",
        "MLFLOW_TRACKING_URI": "http://127.0.0.1:5999",
        "MLFLOW_S3_ENDPOINT_URL": "http://127.0.0.1:5998",
        "DATABASE_URL": "postgresql+psycopg://postgres@127.0.0.1/other",
        "MODEL_NAME": "another-tests-model",
    }
    for key, value in leaked.items():
        monkeypatch.setenv(key, value)
    env = service_env(MODEL_NAME="mine")
    assert not set(leaked) - {"MODEL_NAME"} & set(env)
    assert env["MODEL_NAME"] == "mine"
    assert env["PATH"].startswith(str(BIN))
