"""Fixtures of the load tests: the trained lineage and an MLflow server a test may stop."""

from __future__ import annotations

import subprocess
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.api.serving import trained_lineage as trained_lineage  # a session fixture
from tests.conftest import ROOT, free_port, mlflow_backend_uri, service_env, stop, wait_for


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
    log = tmp_path / "mlflow.log"
    with log.open("w") as out:
        process = subprocess.Popen(
            [str(ROOT / "bin" / "mlflow-server")],
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    server = MlflowServer(f"http://127.0.0.1:{port}", process)
    try:
        wait_for(f"{server.url}/health", process)
        yield server
    except BaseException:
        print(log.read_text()[-4000:])
        raise
    finally:
        server.stop()
