"""Fixtures of the load tests: the trained lineage and an MLflow server a test may stop."""

from __future__ import annotations

import subprocess
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from readmission.processes import free_port, running, stop
from tests.conftest import mlflow_backend_uri
from tests.services import ROOT, service_env


@dataclass(frozen=True)
class MlflowServer:
    url: str
    process: subprocess.Popen

    def stop(self) -> None:
        stop(self.process)


@pytest.fixture
def private_mlflow_server(
    create_database: Callable[[], str], s3_server: dict[str, str], tmp_path: Path
) -> Iterator[MlflowServer]:
    """An MLflow server of this test's own (its own database and artifact prefix), started like
    the shared one, so that stopping it leaves the other tests' registry alone."""
    port = free_port()
    env = service_env(
        **s3_server,
        MLFLOW_PORT=str(port),
        MLFLOW_BACKEND_STORE_URI=mlflow_backend_uri(create_database()),
        MLFLOW_ARTIFACTS_DESTINATION=f"s3://mlflow/private-{uuid.uuid4().hex[:8]}",
    )
    url = f"http://127.0.0.1:{port}"
    with running(
        [str(ROOT / "bin" / "mlflow-server")], tmp_path / "mlflow.log", env, f"{url}/health"
    ) as process:
        yield MlflowServer(url, process)
