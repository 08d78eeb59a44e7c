"""Shared by the API and load tests: the API started with bin/api as a subprocess, or built with
create_app in this process, serving a copy of the session's trained lineage (tests/conftest.py)."""

from __future__ import annotations

import secrets
import subprocess
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
from fastapi.testclient import TestClient
from prometheus_client import CollectorRegistry
from prometheus_client.parser import text_string_to_metric_families

from readmission.config import Settings
from readmission.processes import free_port, running
from tests.services import ROOT, service_env

RELOAD_TOKEN = secrets.token_urlsafe(16)
MAX_BATCH_ROWS = 100
DRIFT_MIN_REQUESTS = 100


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


def serving_env(settings: Settings, home: Path, **env: str) -> dict[str, str]:
    """The API's settings as a deployment gives them: what `settings` serves, test-sized
    limits and windows, then `env`."""
    return {
        "DATABASE_URL": settings.warehouse_url,
        "MLFLOW_TRACKING_URI": settings.tracking_uri,
        "MODEL_NAME": settings.model_name,
        "MODEL_ALIAS": settings.model_alias,
        "READMISSION_HOME": str(home),
        "MODEL_POLL_SECONDS": "0.5",
        "API_RELOAD_TOKEN": RELOAD_TOKEN,
        "MAX_BATCH_ROWS": str(MAX_BATCH_ROWS),
        "DRIFT_WINDOW": "500",
        "DRIFT_MIN_REQUESTS": str(DRIFT_MIN_REQUESTS),
        **env,
    }


@contextmanager
def running_api(settings: Settings, log_dir: Path, **env: str) -> Iterator[Api]:
    """bin/api on a free port, configured like a deployment would be, stopped afterwards."""
    port = free_port()
    environment = service_env(**serving_env(settings, log_dir / "home", API_PORT=str(port), **env))
    log = log_dir / f"api-{port}.log"
    url = f"http://127.0.0.1:{port}"
    with running([str(ROOT / "bin" / "api")], log, environment, f"{url}/health") as process:
        yield Api(url, process, log, settings)


@dataclass(frozen=True)
class AppApi:
    """`create_app(settings)` served in this process by Starlette's TestClient, lifespan and
    background tasks included: for what the app answers (validation, scoring, metrics, the
    prediction log), not for what the server does (start-up, signals, spill, hot swap)."""

    client: TestClient
    settings: Settings

    def get(self, path: str, **kwargs: Any) -> httpx.Response:
        return self.client.get(path, **kwargs)

    def post(self, path: str, **kwargs: Any) -> httpx.Response:
        return self.client.post(path, **kwargs)

    def served_version(self) -> str | None:
        return self.get("/model").json().get("version")

    def wait_until(self, condition: Callable[[], Any], what: str, timeout: float = 90) -> Any:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if result := condition():
                return result
            time.sleep(0.2)
        raise AssertionError(f"timed out waiting for {what}")


@contextmanager
def app_api(settings: Settings, home: Path, **env: str) -> Iterator[AppApi]:
    """`create_app` with the settings bin/api would get from `running_api`, in this process."""
    from api.main import create_app

    # pydantic-settings' __init__ also takes its source options (_cli_*, ...) as keywords: mypy
    # cannot tell that a **dict[str, str] fills none of them.
    served = Settings(_env_file=None, **serving_env(settings, home, **env))  # type: ignore[arg-type]
    with TestClient(create_app(served, CollectorRegistry())) as client:
        yield AppApi(client, settings)


def scrape(api: Api | AppApi) -> dict[str, list[tuple[dict[str, str], float]]]:
    """Sample name -> [(labels, value)] from GET /metrics."""
    samples: dict[str, list[tuple[dict[str, str], float]]] = {}
    for family in text_string_to_metric_families(api.get("/metrics").text):
        for sample in family.samples:
            samples.setdefault(sample.name, []).append((sample.labels, sample.value))
    return samples
