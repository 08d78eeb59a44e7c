"""MLflow behind its login, as compose and Kubernetes run it: a real auth-enabled server started
with bin/mlflow-server (PostgreSQL store, artifacts in S3), the API's read-only user created by
bin/mlflow-users with READ on the model and its experiment alone, a version trained and promoted
by the admin as the Airflow tasks do, and read, never changed, by the read-only user; deploy.k8s
asking that server, as that user, what is in production before and after a promotion. Also: the
logged model pins the numpy, scipy, scikit-learn and pandas that the serving image installs (one
resolution in uv.lock)."""

from __future__ import annotations

import shutil
import subprocess
import tomllib
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import mlflow
import pandas as pd
import pytest
from mlflow.exceptions import MlflowException

from deploy import dotenv, k8s
from readmission import registry, training
from readmission.config import Settings
from readmission.data import ingestion
from readmission.schema import example_encounter
from tests.api.serving import running_api
from tests.conftest import mlflow_backend_uri, running_mlflow_server, version_number
from tests.services import service_env

from .conftest import ROOT

ADMIN = ("admin", f"admin-{uuid.uuid4().hex}")
READER = ("readmission-api", f"reader-{uuid.uuid4().hex}")
# The experiment and model of this module's lineage, which bin/mlflow-users lets the reader read.
EXPERIMENT = f"readmission-auth-{uuid.uuid4().hex[:8]}"
MODEL = f"readmission-auth-{uuid.uuid4().hex[:8]}"
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


def mlflow_users(
    server: str, admin: tuple[str, str], model: str = MODEL
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(ROOT / "bin" / "mlflow-users")],
        env=service_env(
            MLFLOW_TRACKING_URI=server,
            MLFLOW_TRACKING_USERNAME=admin[0],
            MLFLOW_TRACKING_PASSWORD=admin[1],
            MLFLOW_READER_USERNAME=READER[0],
            MLFLOW_READER_PASSWORD=READER[1],
            MLFLOW_EXPERIMENT_NAME=EXPERIMENT,
            MODEL_NAME=model,
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
            MLFLOW_EXPERIMENT_NAME=EXPERIMENT,
            MODEL_NAME=MODEL,
            BATCH_SIZE=500,
            MIN_BATCH_ROWS=100,
        )
        sign_in(monkeypatch, ADMIN)
        ingestion.ingest(settings.warehouse_url, sample, settings.batch_size, 0.2, 1)
        training.train_pending(settings)
        registry.promote(settings, "1")
        yield settings


@pytest.mark.slow
def test_every_request_but_health_needs_a_login(auth_server: str) -> None:
    assert httpx.get(f"{auth_server}/health", timeout=10).status_code == 200
    search = f"{auth_server}/api/2.0/mlflow/experiments/search?max_results=1"
    assert httpx.get(search, timeout=10).status_code == 401
    assert httpx.get(search, auth=("admin", "wrong"), timeout=10).status_code == 401
    assert httpx.get(search, auth=ADMIN, timeout=10).status_code == 200


@pytest.mark.slow
def test_the_embedded_default_server_needs_no_login(mlflow_server: str) -> None:
    search = f"{mlflow_server}/api/2.0/mlflow/experiments/search?max_results=1"
    assert httpx.get(search, timeout=10).status_code == 200


@pytest.mark.slow
def test_mlflow_users_is_idempotent_and_needs_the_admin(
    auth_server: str, reader: tuple[str, str]
) -> None:
    again = mlflow_users(auth_server, ADMIN)
    assert again.returncode == 0, again.stderr
    assert "updated" in again.stdout
    refused = mlflow_users(auth_server, (ADMIN[0], "not-the-password"))
    assert refused.returncode == 1
    assert "cannot set up 'readmission-api'" in refused.stderr


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
    assert version_number(registry.production_version(trained)) == "1"


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


def as_admin(server: str, method: str, path: str, **kwargs: Any) -> dict[str, Any]:
    """One MLflow REST call as the admin (what the Airflow tasks and people in the UI do)."""
    response = httpx.request(
        method, f"{server}/api/2.0/mlflow/{path}", auth=ADMIN, timeout=30, **kwargs
    )
    assert response.status_code == 200, response.text
    return response.json()


def as_reader(server: str, method: str, path: str, **kwargs: Any) -> int:
    return httpx.request(
        method, f"{server}/api/2.0/mlflow/{path}", auth=READER, timeout=30, **kwargs
    ).status_code


@pytest.mark.slow
def test_the_reader_can_create_nothing_and_reads_only_its_model_and_experiment(
    auth_server: str, reader: tuple[str, str], monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """Issue 22: with MLflow's defaults the API's user could create experiments and models (and
    own them), take the model's name before the first training run and read every run."""
    other = uuid.uuid4().hex[:8]
    other_experiment = as_admin(auth_server, "POST", "experiments/create", json={"name": other})
    as_admin(auth_server, "POST", "registered-models/create", json={"name": other})
    for path, body in [
        ("experiments/create", {"name": f"mine-{other}"}),
        ("registered-models/create", {"name": f"mine-{other}"}),
        ("registered-models/alias", {"name": MODEL, "alias": "production", "version": "1"}),
        ("registered-models/alias", {"name": other, "alias": "production", "version": "1"}),
    ]:
        assert as_reader(auth_server, "POST", path, json=body) == 403, path
    assert as_reader(auth_server, "GET", "registered-models/get", params={"name": MODEL}) == 200
    assert as_reader(auth_server, "GET", "registered-models/get", params={"name": other}) == 403
    mine = {"experiment_name": EXPERIMENT}
    assert as_reader(auth_server, "GET", "experiments/get-by-name", params=mine) == 200
    theirs = {"experiment_id": other_experiment["experiment_id"]}
    assert as_reader(auth_server, "GET", "experiments/get", params=theirs) == 403

    # Runs and their artifacts: those of the model's experiment only.
    sign_in(monkeypatch, ADMIN)
    client = mlflow.MlflowClient(auth_server)
    own_experiment = client.get_experiment_by_name(EXPERIMENT)
    assert own_experiment is not None
    runs = {}
    for name, experiment_id in [
        ("own", own_experiment.experiment_id),
        ("other", other_experiment["experiment_id"]),
    ]:
        run = client.create_run(experiment_id)
        client.log_text(run.info.run_id, f"{name} notes", "notes.txt")
        runs[name] = run.info.run_id
    sign_in(monkeypatch, reader)

    def notes(run: str) -> str:
        path = mlflow.artifacts.download_artifacts(
            run_id=runs[run],
            artifact_path="notes.txt",
            tracking_uri=auth_server,
            dst_path=str(tmp_path / run),
        )
        return Path(path).read_text()

    assert notes("own") == "own notes"
    with pytest.raises(MlflowException) as refused:
        notes("other")
    assert refused.value.error_code == "PERMISSION_DENIED"
    assert as_reader(auth_server, "GET", "runs/get", params={"run_id": runs["other"]}) == 403


def deploy_tree(root: Path, server: str, model: str) -> Path:
    """A checkout as `make up` leaves it for `make k8s-up`: .env with the compose host ports (here
    the auth server's) and the API's MLflow login, k8s/ whose api.env names `model`. Returns the
    k3d overlay."""
    for folder in ("k8s", "monitoring"):
        shutil.copytree(ROOT / folder, root / folder)
    env = root / ".env"
    dotenv.ensure(env, ROOT / ".env.example")
    port = server.rsplit(":", 1)[1]
    with env.open("a") as out:
        out.write(f"MLFLOW_HOST_PORT={port}\nAIRFLOW_HOST_PORT=18080\n")
        out.write(f"MLFLOW_API_USER={READER[0]}\nMLFLOW_API_PASSWORD={READER[1]}\n")
    api_env = root / "k8s" / "base" / "api.env"
    api_env.write_text(
        api_env.read_text().replace(
            "MODEL_NAME=diabetes-readmission-predictor", f"MODEL_NAME={model}"
        )
    )
    return root / "k8s" / "overlays" / "k3d"


def k8s_up(
    overlay: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture
) -> tuple[int, str, dict[str, Any]]:
    """`python -m deploy.k8s apply` against the real MLflow, with no cluster here: the cluster
    calls record what would be deployed."""
    deployed: dict[str, Any] = {}

    def record(manifests: list, cluster: Any, timeout: float, **kwargs: Any) -> None:
        deployed.update(kwargs)

    monkeypatch.setattr(k8s.Cluster, "connect", classmethod(lambda cls, context: cls(None)))
    monkeypatch.setattr(k8s, "deploy", record)
    code = k8s.main(["apply", "--overlay", str(overlay)])
    captured = capsys.readouterr()
    return code, captured.out + captured.err, deployed


@pytest.mark.slow
def test_k8s_up_finds_nothing_in_production_until_an_alias_or_the_production_stage(
    auth_server: str,
    reader: tuple[str, str],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture,
) -> None:
    """`make k8s-up` right after `make up` (model created by mlflow-init, no version), with a
    version but no alias, with a version in stage Staging: nothing in production, exit 0 and the
    promotion hint with .env's ports. A version in the legacy stage Production, then an alias:
    what the API serves."""
    model = f"k8s-up-{uuid.uuid4().hex[:8]}"
    assert mlflow_users(auth_server, ADMIN, model).returncode == 0
    overlay = deploy_tree(tmp_path, auth_server, model)
    port = auth_server.rsplit(":", 1)[1]

    def nothing_in_production() -> None:
        code, out, deployed = k8s_up(overlay, monkeypatch, capsys)
        assert code == 0, out
        assert deployed["model_in_production"] is False
        assert "production version: none yet" in out
        assert f"No version of {model} is in production yet" in out
        assert "http://localhost:18080" in out
        assert f"http://localhost:{port} > Models > {model}" in out
        assert "readmission promote <version>" in out

    nothing_in_production()
    # The API pods' own check answers too (no RegistryUnreachable on a fresh deployment).
    sign_in(monkeypatch, reader)
    for field in Settings.model_fields.values():
        monkeypatch.delenv(str(field.alias), raising=False)
    settings = Settings(
        READMISSION_HOME=str(tmp_path / "home"), MLFLOW_TRACKING_URI=auth_server, MODEL_NAME=model
    )
    assert registry.production_version(settings) is None

    source = {"name": model, "source": "s3://mlflow/auth-artifacts/none"}
    as_admin(auth_server, "POST", "model-versions/create", json=source)
    nothing_in_production()
    stage = {"name": model, "version": "1", "archive_existing_versions": False}
    as_admin(
        auth_server, "POST", "model-versions/transition-stage", json=stage | {"stage": "Staging"}
    )
    nothing_in_production()

    as_admin(auth_server, "POST", "model-versions/create", json=source)
    as_admin(
        auth_server,
        "POST",
        "model-versions/transition-stage",
        json=stage | {"version": "2", "stage": "Production"},
    )
    assert k8s.production_version(overlay) == "2"
    assert version_number(registry.production_version(settings)) == "2"
    alias = {"name": model, "alias": "production", "version": "1"}
    as_admin(auth_server, "POST", "registered-models/alias", json=alias)
    assert k8s.production_version(overlay) == "1"
    code, out, deployed = k8s_up(overlay, monkeypatch, capsys)
    assert code == 0 and deployed["model_in_production"] is True
    assert "production version: 1" in out and "No version" not in out


@pytest.mark.slow
def test_k8s_up_names_the_grant_when_the_reader_may_not_read_the_model(
    auth_server: str, reader: tuple[str, str], tmp_path: Path
) -> None:
    """A model of api.env that mlflow-init did not grant (MODEL_NAME of .env differs): 403."""
    model = f"ungranted-{uuid.uuid4().hex[:8]}"
    as_admin(auth_server, "POST", "registered-models/create", json={"name": model})
    overlay = deploy_tree(tmp_path, auth_server, model)
    with pytest.raises(k8s.DeployError, match=r"denies the API's user 'readmission-api'.*403"):
        k8s.production_version(overlay)
