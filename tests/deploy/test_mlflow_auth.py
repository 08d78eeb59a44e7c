"""MLflow behind its login, as compose and Kubernetes run it: a real auth-enabled server started
with bin/mlflow-server (PostgreSQL store, artifacts in S3), the API's read-only user created by
bin/mlflow-users, a version trained and promoted by the admin as the Airflow tasks do, and read,
never changed, by the read-only user. Also: the logged model pins the numpy, scipy, scikit-learn
and pandas that the serving image installs (one resolution in uv.lock)."""

from __future__ import annotations

import subprocess
import tomllib
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import mlflow
import pandas as pd
import pytest
from mlflow.exceptions import MlflowException

from readmission import registry, training, warehouse
from readmission.config import Settings
from readmission.schema import example_encounter
from tests.api.serving import running_api
from tests.conftest import mlflow_backend_uri, running_mlflow_server, service_env

from .conftest import ROOT

ADMIN = ("admin", f"admin-{uuid.uuid4().hex}")
READER = ("readmission-api", f"reader-{uuid.uuid4().hex}")
# What a model needs to load and score as it was trained: the compiled, pickled part of the stack.
SCIENTIFIC_STACK = ("numpy", "scipy", "scikit-learn", "pandas", "mlflow")


@pytest.fixture(scope="module")
def auth_server(
    create_database: Callable[[], str],
    s3_server: dict[str, str],
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[str]:
    """bin/mlflow-server with the login on, as docker-compose.yaml configures it."""
    with running_mlflow_server(
        tmp_path_factory.mktemp("mlflow-auth"),
        s3_server,
        MLFLOW_WORKERS="2",
        MLFLOW_BACKEND_STORE_URI=mlflow_backend_uri(create_database()),
        MLFLOW_ARTIFACTS_DESTINATION="s3://mlflow/auth-artifacts",
        MLFLOW_AUTH_ADMIN_USERNAME=ADMIN[0],
        MLFLOW_AUTH_ADMIN_PASSWORD=ADMIN[1],
        MLFLOW_FLASK_SERVER_SECRET_KEY=uuid.uuid4().hex,
    ) as url:
        yield url


def mlflow_users(server: str, admin: tuple[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(ROOT / "bin" / "mlflow-users")],
        env=service_env(
            MLFLOW_TRACKING_URI=server,
            MLFLOW_TRACKING_USERNAME=admin[0],
            MLFLOW_TRACKING_PASSWORD=admin[1],
            MLFLOW_READER_USERNAME=READER[0],
            MLFLOW_READER_PASSWORD=READER[1],
        ),
        capture_output=True,
        text=True,
        timeout=120,
    )


@pytest.fixture(scope="module")
def reader(auth_server: str) -> tuple[str, str]:
    result = mlflow_users(auth_server, ADMIN)
    assert result.returncode == 0, result.stderr
    assert "created" in result.stdout
    return READER


def sign_in(monkeypatch: pytest.MonkeyPatch, user: tuple[str, str]) -> None:
    """Sign MLflow's client in as a user, the way the containers do: the two variables."""
    monkeypatch.setenv("MLFLOW_TRACKING_USERNAME", user[0])
    monkeypatch.setenv("MLFLOW_TRACKING_PASSWORD", user[1])


@pytest.fixture(scope="module")
def trained(
    create_database: Callable[[], str],
    auth_server: str,
    reader: tuple[str, str],
    sample: pd.DataFrame,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[Settings]:
    """One version trained and promoted by the admin, as 02/03 do in the Airflow containers."""
    home = tmp_path_factory.mktemp("auth-home")
    with pytest.MonkeyPatch.context() as monkeypatch:
        for field in Settings.model_fields.values():
            monkeypatch.delenv(str(field.alias), raising=False)
        monkeypatch.chdir(home)
        settings = Settings(
            READMISSION_HOME=str(home),
            DATABASE_URL=create_database(),
            MLFLOW_TRACKING_URI=auth_server,
            MODEL_NAME=f"readmission-auth-{uuid.uuid4().hex[:8]}",
            BATCH_SIZE=500,
            MIN_BATCH_ROWS=100,
        )
        sign_in(monkeypatch, ADMIN)
        warehouse.ingest(settings.warehouse_url, sample, settings.batch_size, 0.2, 1)
        training.train_pending(settings)
        registry.promote(settings, "1")
        yield settings


def test_every_request_but_health_needs_a_login(auth_server: str) -> None:
    assert httpx.get(f"{auth_server}/health", timeout=10).status_code == 200
    search = f"{auth_server}/api/2.0/mlflow/experiments/search?max_results=1"
    assert httpx.get(search, timeout=10).status_code == 401
    assert httpx.get(search, auth=("admin", "wrong"), timeout=10).status_code == 401
    assert httpx.get(search, auth=ADMIN, timeout=10).status_code == 200


def test_the_embedded_default_server_needs_no_login(mlflow_server: str) -> None:
    search = f"{mlflow_server}/api/2.0/mlflow/experiments/search?max_results=1"
    assert httpx.get(search, timeout=10).status_code == 200


def test_mlflow_users_is_idempotent_and_needs_the_admin(
    auth_server: str, reader: tuple[str, str]
) -> None:
    again = mlflow_users(auth_server, ADMIN)
    assert again.returncode == 0, again.stderr
    assert "updated" in again.stdout
    refused = mlflow_users(auth_server, (ADMIN[0], "not-the-password"))
    assert refused.returncode == 1
    assert "cannot create 'readmission-api'" in refused.stderr


@pytest.mark.slow
def test_the_reader_loads_the_production_model_and_cannot_change_the_registry(
    trained: Settings, reader: tuple[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    sign_in(monkeypatch, reader)
    production = registry.production_version(trained)
    assert production is not None and production.version == "1"
    model = registry.load_readmission_model(trained, production.version)
    assert model.batches_seen == 1

    client = registry.connect(trained)
    for change in (
        lambda: client.set_registered_model_alias(trained.model_name, "production", "1"),
        lambda: client.delete_registered_model_alias(trained.model_name, "production"),
        lambda: client.create_model_version(trained.model_name, "s3://mlflow/elsewhere", None),
    ):
        with pytest.raises(MlflowException) as refused:
            change()
        assert refused.value.error_code == "PERMISSION_DENIED"
    assert registry.production_version(trained).version == "1"


def locked_versions(lock_path: Path = ROOT / "uv.lock") -> dict[str, list[str]]:
    lock = tomllib.loads(lock_path.read_text())
    versions: dict[str, list[str]] = {}
    for package in lock["package"]:
        versions.setdefault(package["name"], []).append(package["version"])
    return versions


def test_the_lock_holds_one_resolution_of_the_scientific_stack() -> None:
    """Both images install from uv.lock (api and airflow extras): one version per package means
    the trainer and the server cannot differ, whatever their Python."""
    versions = locked_versions()
    assert {name: versions[name] for name in SCIENTIFIC_STACK} == {
        name: [versions[name][0]] for name in SCIENTIFIC_STACK
    }


@pytest.mark.slow
def test_a_logged_model_pins_the_versions_the_api_image_installs(
    trained: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    sign_in(monkeypatch, ADMIN)
    registry.connect(trained)
    requirements = Path(mlflow.pyfunc.get_model_dependencies(registry.model_uri(trained, 1)))
    pinned = dict(
        line.split("==", 1)
        for line in requirements.read_text().splitlines()
        if "==" in line and not line.startswith("#")
    )
    locked = locked_versions()
    assert {name: pinned.get(name) for name in SCIENTIFIC_STACK} == {
        name: locked[name][0] for name in SCIENTIFIC_STACK
    }


@pytest.mark.slow
def test_the_api_serves_the_production_version_as_the_read_only_user(
    trained: Settings, reader: tuple[str, str], tmp_path: Path
) -> None:
    """bin/api configured as compose and k3d configure it: the reader's login, nothing else."""
    with running_api(
        trained, tmp_path, MLFLOW_TRACKING_USERNAME=reader[0], MLFLOW_TRACKING_PASSWORD=reader[1]
    ) as api:
        ready = api.wait_until(lambda: api.get("/ready").status_code == 200, "/ready 200")
        assert ready and api.served_version() == "1"
        response = api.post("/predict", json=example_encounter())
        assert response.status_code == 200, response.text
        assert 0 <= response.json()["probability"] <= 1
