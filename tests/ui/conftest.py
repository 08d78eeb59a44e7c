"""The real API (bin/api) serving a trained, promoted model, shared by this folder's tests, and
one serving nothing; AppTest runs the UI in-process against them."""

from __future__ import annotations

import subprocess
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import pandas as pd
import pytest

from readmission import registry, training
from readmission.config import Settings, get_settings
from readmission.data import ingestion, warehouse
from readmission.data.validation import validate
from readmission.monitoring import realized
from readmission.processes import free_port, running, wait_for
from readmission.schema import TARGET
from tests.conftest import TEST_RESAMPLES
from tests.services import ROOT, service_env

MAX_BATCH_ROWS = 8  # small, so a batch upload of a few rows already needs several requests
PRODUCTION_VERSION = "1"  # of two trained versions: the newest is not the production one


def ui_env(create_database: Callable[[], str], mlflow_server: str, home: Path) -> dict[str, str]:
    """The settings of one of this folder's platforms (its own database and model name), as the
    environment of its bin/api."""
    return {
        "DATABASE_URL": create_database(),
        "MLFLOW_TRACKING_URI": mlflow_server,
        "MODEL_NAME": f"readmission-ui-{uuid.uuid4().hex[:8]}",
        "BATCH_SIZE": "500",
        "MIN_BATCH_ROWS": "100",
        "BOOTSTRAP_RESAMPLES": str(TEST_RESAMPLES),
        "READMISSION_HOME": str(home),
    }


@contextmanager
def api_process(env: dict[str, str], log_dir: Path) -> Iterator[tuple[str, subprocess.Popen]]:
    """bin/api on a free port until the context ends, with its log printed if the body fails."""
    port = free_port()
    env = service_env(
        **env, API_PORT=str(port), MAX_BATCH_ROWS=str(MAX_BATCH_ROWS), MODEL_POLL_SECONDS="1"
    )
    with running([str(ROOT / "bin" / "api")], log_dir / f"api-{port}.log", env) as process:
        yield f"http://127.0.0.1:{port}", process


def train_and_promote(env: dict[str, str], sample: pd.DataFrame) -> None:
    """Two warm-start versions on the real MLflow server; version 1 promoted."""
    with pytest.MonkeyPatch.context() as patch:
        for key, value in env.items():
            patch.setenv(key, value)
        get_settings.cache_clear()
        settings = get_settings()
        ingestion.ingest(
            settings.warehouse_url, sample, settings.batch_size, settings.holdout_fraction, 2
        )
        training.train_pending(settings)
        registry.promote(settings, PRODUCTION_VERSION)
    get_settings.cache_clear()


def score_and_measure(
    env: dict[str, str], url: str, sample: pd.DataFrame, encounters: int = 200
) -> None:
    """Encounters the warehouse does not hold yet scored through the API in requests of
    MAX_BATCH_ROWS, then the rest of the extract ingested (their outcomes arrive) and the
    realized performance of the served version computed. (Stored encounters would not count:
    their outcomes were known when scored.)"""
    with pytest.MonkeyPatch.context() as patch:
        for key, value in env.items():
            patch.setenv(key, value)
        get_settings.cache_clear()
        settings = get_settings()
        clean = validate(sample).clean
        stored = warehouse.stored_encounter_ids(settings.warehouse_url)
        unseen = clean[~clean["encounter_id"].astype(str).isin(stored)].head(encounters)
        known = unseen.drop(columns=[TARGET]).to_dict("records")
        for start in range(0, len(known), MAX_BATCH_ROWS):
            chunk = known[start : start + MAX_BATCH_ROWS]
            httpx.post(f"{url}/predict/batch", json={"encounters": chunk}).raise_for_status()
        deadline = time.monotonic() + 60
        while "readmission_prediction_log_buffered 0.0" not in (
            httpx.get(f"{url}/metrics").text.splitlines()
        ):
            assert time.monotonic() < deadline, "the API never wrote its prediction log"
            time.sleep(0.2)
        ingestion.ingest(
            settings.warehouse_url, sample, settings.batch_size, settings.holdout_fraction
        )
        realized.compute(settings)
    get_settings.cache_clear()


@pytest.fixture(scope="package")
def served_url(
    create_database: Callable[[], str],
    mlflow_server: str,
    sample: pd.DataFrame,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[str]:
    """URL of bin/api serving the promoted version, with the realized performance of 200
    encounters it scored. The API starts while the model trains and picks the promotion up from
    the registry, as it does in production."""
    home = tmp_path_factory.mktemp("served")
    env = ui_env(create_database, mlflow_server, home / "home")
    with api_process(env, home) as (url, process):
        train_and_promote(env, sample)
        wait_for(f"{url}/ready", process, timeout=120)
        score_and_measure(env, url, sample)
        yield url


@pytest.fixture(scope="package")
def idle_url(
    create_database: Callable[[], str], mlflow_server: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[str]:
    """URL of bin/api for a model name with no version, once it has asked the registry."""
    home = tmp_path_factory.mktemp("idle")
    env = ui_env(create_database, mlflow_server, home / "home")
    with api_process(env, home) as (url, process):
        wait_for(f"{url}/health", process, timeout=120)
        deadline = time.monotonic() + 60
        while not httpx.get(f"{url}/model").json()["registry_reachable"]:
            assert time.monotonic() < deadline, "the API never reached the registry"
            time.sleep(0.2)
        yield url


@pytest.fixture
def ui_against(configure: Callable[..., Settings]) -> Callable[[str], Settings]:
    """Point the in-process UI (its settings) at an API URL."""

    def point(url: str) -> Settings:
        return configure(API_URL=url, MAX_BATCH_ROWS=str(MAX_BATCH_ROWS))

    return point


@pytest.fixture
def down_api_url() -> str:
    """An address where nothing listens."""
    return f"http://127.0.0.1:{free_port()}"
