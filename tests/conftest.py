"""Real services for the tests, started once per session: PostgreSQL databases, an S3 stand-in
(moto) and an MLflow tracking server backed by both, run with the container's entrypoint."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import time
import uuid
import weakref
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import pandas as pd
import pytest
import sqlalchemy as sa
from sqlalchemy.engine import Connection, Engine

from readmission.config import Settings, get_settings
from readmission.dataset import synthetic_sample

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
# The change control plan every test runs under unless it names another (see the file).
SUITE_PLAN = ROOT / "tests" / "plans" / "suite.yaml"
ADMIN_URL = os.environ.get(
    "TEST_POSTGRES_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/postgres"
)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_for(url: str, process: subprocess.Popen, timeout: float = 120) -> None:
    """Poll `url` until it answers 200; fail early with the log if the process died."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"{process.args} exited with {process.returncode}")
        try:
            if httpx.get(url, timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.3)
    raise TimeoutError(f"{url} did not come up in {timeout}s")


def stop(process: subprocess.Popen) -> None:
    """Stop a process started with `start_new_session=True`, and its children."""
    if process.poll() is None:
        try:
            os.killpg(process.pid, 15)
            process.wait(timeout=20)
        except (ProcessLookupError, subprocess.TimeoutExpired):
            os.killpg(process.pid, 9)


# What a subprocess inherits from the pytest process: what any program needs to run on this
# machine, nothing that says where a service or database is. Fixtures export AIRFLOW_*, MLFLOW_*,
# DATABASE_URL and the like into this process (the DAG tests must: Airflow reads them when
# imported); a child that inherited them would run on another test's databases.
INHERITED = frozenset(
    {
        "PATH",
        "HOME",
        "USER",
        "LOGNAME",
        "SHELL",
        "TERM",
        "LANG",
        "LANGUAGE",
        "TZ",
        "TMPDIR",
        "CI",
        "OPENBLAS_CORETYPE",
        "OPENBLAS_L2_SIZE",
        "SSL_CERT_FILE",
        "SSL_CERT_DIR",
        "REQUESTS_CA_BUNDLE",
        "HTTP_PROXY",
        "HTTPS_PROXY",
        "NO_PROXY",
        "http_proxy",
        "https_proxy",
        "no_proxy",
    }
)


def service_env(**extra: str) -> dict[str, str]:
    """The environment of a subprocess: the allow-listed basics, the venv's bin first on PATH,
    and `extra`, which must name every setting the child needs."""
    env = {k: v for k, v in os.environ.items() if k in INHERITED or k.startswith("LC_")}
    env["PATH"] = f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}"
    env.update(extra)
    return env


def platform_env() -> dict[str, str]:
    """The platform settings this test set (see `configure`), to hand to a subprocess."""
    aliases = {str(field.alias) for field in Settings.model_fields.values()}
    return {k: v for k, v in os.environ.items() if k in aliases}


# Every engine this process opened (the warehouse caches one per database URL, for the process's
# life): its idle pooled connections are closed after each test. The PostgreSQL server is shared
# by every test database of the session and its connection slots are few (100); engines of
# earlier tests' databases would otherwise keep theirs until the session ends.
_engines: weakref.WeakSet[Engine] = weakref.WeakSet()


@sa.event.listens_for(Engine, "engine_connect")
def _remember_engine(conn: Connection) -> None:
    _engines.add(conn.engine)


@pytest.fixture(autouse=True)
def _release_pooled_connections() -> Iterator[None]:
    yield
    for engine in list(_engines):
        engine.dispose()  # checked-out connections stay open; the next use reconnects


@pytest.fixture(scope="session", autouse=True)
def _suite_plan() -> Iterator[None]:
    """The suite's change control plan for every Settings the tests build and every process they
    start with platform_env(); a test of another plan sets CHANGE_CONTROL_PLAN itself."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("CHANGE_CONTROL_PLAN", str(SUITE_PLAN))
        yield


@pytest.fixture(scope="session")
def create_database() -> Iterator[Callable[[], str]]:
    """Factory of fresh, empty PostgreSQL databases; all dropped at the end of the session."""
    admin = sa.create_engine(ADMIN_URL, isolation_level="AUTOCOMMIT")
    created: list[str] = []

    def create() -> str:
        name = f"readmission_test_{uuid.uuid4().hex[:10]}"
        with admin.connect() as conn:
            conn.execute(sa.text(f'CREATE DATABASE "{name}"'))
        created.append(name)
        return sa.make_url(ADMIN_URL).set(database=name).render_as_string(hide_password=False)

    yield create
    with admin.connect() as conn:  # FORCE ends the connections pooled by the code under test
        for name in created:
            conn.execute(sa.text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    admin.dispose()


def mlflow_backend_uri(url: str) -> str:
    """MLflow's store on psycopg2: with psycopg 3 its stage transitions fail on PostgreSQL
    (`operator does not exist: integer <> character varying`)."""
    return url.replace("postgresql+psycopg://", "postgresql+psycopg2://", 1)


@pytest.fixture(scope="session")
def s3_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, str]]:
    """A moto S3 server standing in for MinIO, with the artifact bucket created."""
    port = free_port()
    log = (tmp_path_factory.mktemp("moto") / "moto.log").open("w")
    process = subprocess.Popen(
        [str(BIN / "moto_server"), "-H", "127.0.0.1", "-p", str(port)],
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    endpoint = f"http://127.0.0.1:{port}"
    try:
        wait_for(f"{endpoint}/moto-api/", process, timeout=60)
        env = {
            "MLFLOW_S3_ENDPOINT_URL": endpoint,
            "AWS_ACCESS_KEY_ID": "test",
            "AWS_SECRET_ACCESS_KEY": "test",
            "AWS_DEFAULT_REGION": "us-east-1",
        }
        import boto3

        boto3.client(
            "s3",
            endpoint_url=endpoint,
            aws_access_key_id="test",
            aws_secret_access_key="test",
            region_name="us-east-1",
        ).create_bucket(Bucket="mlflow")
        yield env
    finally:
        stop(process)
        log.close()


@contextmanager
def running_mlflow_server(log_dir: Path, s3: dict[str, str], **env: str) -> Iterator[str]:
    """bin/mlflow-server (the container's entrypoint) on a free port with `env`, artifacts
    proxied to the moto S3 server; its URL once healthy, stopped on exit. A start-up failure
    prints the end of its log."""
    port = free_port()
    log_path = log_dir / "mlflow.log"
    with log_path.open("w") as log:
        process = subprocess.Popen(
            [str(ROOT / "bin" / "mlflow-server")],
            env=service_env(**s3, MLFLOW_PORT=str(port), **env),
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    url = f"http://127.0.0.1:{port}"
    try:
        try:
            wait_for(f"{url}/health", process)
        except Exception:
            print(log_path.read_text()[-5000:])
            raise
        yield url
    finally:
        stop(process)


@pytest.fixture(scope="session")
def mlflow_server(
    create_database: Callable[[], str],
    s3_server: dict[str, str],
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[str]:
    """A real MLflow server (bin/mlflow-server): PostgreSQL store, artifacts proxied to S3."""
    with running_mlflow_server(
        tmp_path_factory.mktemp("mlflow"),
        s3_server,
        MLFLOW_BACKEND_STORE_URI=mlflow_backend_uri(create_database()),
        MLFLOW_ARTIFACTS_DESTINATION="s3://mlflow/artifacts",
    ) as url:
        yield url


@pytest.fixture
def configure(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Callable[..., Settings]:
    """Set the platform's environment for one test and return the settings it yields."""

    cleaned = False

    def apply(**env: str) -> Settings:
        nonlocal cleaned
        if not cleaned:  # later calls in the same test add to what the first one set
            # Start from no platform settings at all: earlier tests (and mlflow.set_tracking_uri,
            # which exports MLFLOW_TRACKING_URI) may have left some in the process environment.
            for field in Settings.model_fields.values():
                monkeypatch.delenv(str(field.alias), raising=False)
            monkeypatch.setenv("CHANGE_CONTROL_PLAN", str(SUITE_PLAN))
            cleaned = True
        monkeypatch.chdir(tmp_path)
        monkeypatch.setenv("READMISSION_HOME", str(tmp_path / "home"))
        for key, value in env.items():
            monkeypatch.setenv(key, value)
        get_settings.cache_clear()
        return get_settings()

    yield apply
    get_settings.cache_clear()


@pytest.fixture
def platform(
    configure: Callable[..., Settings], create_database: Callable[[], str], mlflow_server: str
) -> Settings:
    """Settings on a fresh PostgreSQL warehouse, the shared MLflow server and a model name of
    this test's own, with small batches of the synthetic sample."""
    return configure(
        DATABASE_URL=create_database(),
        MLFLOW_TRACKING_URI=mlflow_server,
        MODEL_NAME=f"readmission-test-{uuid.uuid4().hex[:8]}",
        BATCH_SIZE="500",
        MIN_BATCH_ROWS="100",
    )


@pytest.fixture(scope="session")
def sample() -> pd.DataFrame:
    """2,500 synthetic encounters: a 500-row holdout and 4 training batches of 500."""
    return synthetic_sample(2500, seed=7)


@pytest.fixture(scope="session")
def sample_csv(sample: pd.DataFrame, tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("data") / "diabetic_data.csv"
    sample.to_csv(path, index=False)
    return path


@pytest.fixture(scope="session")
def artifacts_dir() -> Path:
    """Where tests leave files for people to look at (screenshots, reports)."""
    path = ROOT / "test-artifacts"
    shutil.rmtree(path, ignore_errors=True)
    path.mkdir()
    return path
