"""Shared by the API and load tests: a model lineage trained once on the real MLflow server,
copies of it under model names of their own (so each test decides what is promoted), and the API
started with bin/api as a subprocess."""

from __future__ import annotations

import secrets
import subprocess
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pandas as pd
import pytest

from readmission import registry, training, warehouse
from readmission.config import Settings
from tests.services import ROOT, free_port, running, service_env

RELOAD_TOKEN = secrets.token_urlsafe(16)
TRAINED_VERSIONS = 3
MAX_BATCH_ROWS = 100
DRIFT_MIN_REQUESTS = 100


def platform_settings(database_url: str, tracking_uri: str, home: Path, **extra: str) -> Settings:
    """Settings of one test platform, independent of the process environment."""
    return Settings(
        DATABASE_URL=database_url,
        MLFLOW_TRACKING_URI=tracking_uri,
        MODEL_NAME=f"api-test-{uuid.uuid4().hex[:8]}",
        BATCH_SIZE=500,
        MIN_BATCH_ROWS=100,
        READMISSION_HOME=str(home),
        **extra,
    )  # type: ignore[call-arg]


def train_versions(settings: Settings, sample: pd.DataFrame, batches: int) -> None:
    warehouse.ingest(
        settings.warehouse_url, sample, settings.batch_size, settings.holdout_fraction, batches
    )
    training.train_pending(settings)


def copy_lineage(base: Settings, versions: int = TRAINED_VERSIONS) -> Settings:
    """Versions 1..`versions` of `base` registered again under a new model name, none promoted."""
    client = registry.connect(base)
    name = f"api-test-{uuid.uuid4().hex[:8]}"
    for version in range(1, versions + 1):
        client.copy_model_version(registry.model_uri(base, version), name)
    return base.model_copy(update={"model_name": name})


@dataclass(frozen=True)
class Api:
    """A running bin/api process."""

    url: str
    process: subprocess.Popen
    log: Path
    settings: Settings  # what it serves: its MODEL_NAME, registry and warehouse

    def get(self, path: str, **kwargs: Any) -> httpx.Response:
        return httpx.get(self.url + path, timeout=30, **kwargs)

    def post(self, path: str, **kwargs: Any) -> httpx.Response:
        return httpx.post(self.url + path, timeout=30, **kwargs)

    def served_version(self) -> str | None:
        return self.get("/model").json().get("version")

    def wait_until(self, condition: Callable[[], Any], what: str, timeout: float = 90) -> Any:
        """Poll `condition` until it returns something truthy; fail with `what` and the log."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            assert self.process.poll() is None, f"the API exited:\n{self.tail()}"
            if result := condition():
                return result
            time.sleep(0.2)
        raise AssertionError(f"timed out waiting for {what}\n{self.tail()}")

    def tail(self, chars: int = 4000) -> str:
        return self.log.read_text()[-chars:]


@contextmanager
def running_api(settings: Settings, log_dir: Path, **env: str) -> Iterator[Api]:
    """bin/api on a free port, configured like a deployment would be, stopped afterwards."""
    port = free_port()
    environment = service_env(
        **{
            "DATABASE_URL": settings.warehouse_url,
            "MLFLOW_TRACKING_URI": settings.tracking_uri,
            "MODEL_NAME": settings.model_name,
            "MODEL_ALIAS": settings.model_alias,
            "READMISSION_HOME": str(log_dir / "home"),
            "MODEL_POLL_SECONDS": "0.5",
            "API_RELOAD_TOKEN": RELOAD_TOKEN,
            "API_PORT": str(port),
            "MAX_BATCH_ROWS": str(MAX_BATCH_ROWS),
            "DRIFT_WINDOW": "500",
            "DRIFT_MIN_REQUESTS": str(DRIFT_MIN_REQUESTS),
            **env,
        }
    )
    log = log_dir / f"api-{port}.log"
    url = f"http://127.0.0.1:{port}"
    with running([str(ROOT / "bin" / "api")], log, environment, f"{url}/health") as process:
        yield Api(url, process, log, settings)


_LINEAGES: dict[str, Settings] = {}  # by MLflow server: tests/api and tests/load share one


@pytest.fixture(scope="session")
def trained_lineage(
    create_database: Callable[[], str],
    mlflow_server: str,
    sample: pd.DataFrame,
    tmp_path_factory: pytest.TempPathFactory,
) -> Settings:
    """Three warm-started versions on the shared MLflow server, trained once per session."""
    if mlflow_server not in _LINEAGES:
        settings = platform_settings(
            create_database(), mlflow_server, tmp_path_factory.mktemp("lineage")
        )
        train_versions(settings, sample, TRAINED_VERSIONS)
        _LINEAGES[mlflow_server] = settings
    return _LINEAGES[mlflow_server]
