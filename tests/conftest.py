"""Real services for the tests, started once per session: PostgreSQL databases, an S3 stand-in
(moto) and an MLflow tracking server backed by both, run with the container's entrypoint."""

from __future__ import annotations

import os
import uuid
import weakref
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import pandas as pd
import pytest
import sqlalchemy as sa
from mlflow.entities.model_registry import ModelVersion
from sqlalchemy.engine import Connection, Engine

from readmission import registry, training
from readmission.config import Settings, get_settings
from readmission.data import ingestion
from readmission.data.dataset import synthetic_sample
from readmission.processes import free_port, running
from tests import slow_guard, worker_schedule
from tests.services import BIN, ROOT, service_env

# The change control plan every test runs under unless it names another (see the file).
SUITE_PLAN = ROOT / "tests" / "plans" / "suite.yaml"
# Bootstrap resamples of the intervals tests compute but do not study (the production default is
# 1,000): each trained version bootstraps its holdout AUC and every subgroup's.
TEST_RESAMPLES = 200
ADMIN_URL = os.environ.get(
    "TEST_POSTGRES_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/postgres"
)


def platform_env() -> dict[str, str]:
    """The platform settings this test set (see `configure`), to hand to a subprocess."""
    aliases = {str(field.alias) for field in Settings.model_fields.values()}
    return {k: v for k, v in os.environ.items() if k in aliases}


def pytest_configure(config: pytest.Config) -> None:
    # A plugin, not hooks of this conftest: pytest calls a conftest's hooks only for the nodes
    # under its folder, and session fixtures belong to the session, which sits above it.
    config.pluginmanager.register(slow_guard, "slow-guard")
    config.pluginmanager.register(worker_schedule, "worker-schedule")


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
        close_idle_connections(engine)


def close_idle_connections(engine: Engine) -> None:
    """Close the connections idle in `engine`'s pool; leave the ones in use, and the pool, alone.

    Not `engine.dispose()`: it replaces the pool, and a connection checked out at that moment (by
    a worker thread of an app still running in this process: the prediction log's writer or the
    report reader of the package-scoped `in_process_api`) went back, when returned, into the old
    pool, which nothing referenced any more. It stayed open until the cyclic garbage collector
    freed that pool, and psycopg's `Connection.__del__` then warned "deleted while still open" in
    whichever test the collector happened to run (test_predict, test_prediction_log). Here it
    returns to the engine's own pool, to be reused or closed after a later test. (QueuePool's
    count of open connections restarts from zero, so those still in use are not counted until
    the next release closes them: a few extra connections at most, for a test or two.)
    """
    engine.pool.dispose()


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
    endpoint = f"http://127.0.0.1:{port}"
    with running(
        [str(BIN / "moto_server"), "-H", "127.0.0.1", "-p", str(port)],
        tmp_path_factory.mktemp("moto") / "moto.log",
        service_env(),
        f"{endpoint}/moto-api/",
        timeout=60,
    ):
        import boto3

        boto3.client(
            "s3",
            endpoint_url=endpoint,
            aws_access_key_id="test",
            aws_secret_access_key="test",
            region_name="us-east-1",
        ).create_bucket(Bucket="mlflow")
        yield {
            "MLFLOW_S3_ENDPOINT_URL": endpoint,
            "AWS_ACCESS_KEY_ID": "test",
            "AWS_SECRET_ACCESS_KEY": "test",
            "AWS_DEFAULT_REGION": "us-east-1",
        }


@contextmanager
def running_mlflow_server(log_dir: Path, s3: dict[str, str], **env: str) -> Iterator[str]:
    """bin/mlflow-server (the container's entrypoint) on a free port with `env`, artifacts
    proxied to the moto S3 server; its URL once healthy, stopped on exit. A start-up failure
    prints the end of its log."""
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    with running(
        [str(ROOT / "bin" / "mlflow-server")],
        log_dir / "mlflow.log",
        service_env(**s3, MLFLOW_PORT=str(port), **env),
        f"{url}/health",
    ):
        yield url


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
def configure(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[Callable[..., Settings]]:
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
        BOOTSTRAP_RESAMPLES=str(TEST_RESAMPLES),
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
    """Where tests leave files for people to look at (screenshots, reports), emptied when the
    run starts (tests/worker_schedule.py)."""
    worker_schedule.ARTIFACTS.mkdir(exist_ok=True)
    return worker_schedule.ARTIFACTS


TRAINED_VERSIONS = 3


def platform_settings(database_url: str, tracking_uri: str, home: Path, **extra: str) -> Settings:
    """Settings of one test platform, independent of the process environment."""
    return Settings(
        DATABASE_URL=database_url,
        MLFLOW_TRACKING_URI=tracking_uri,
        MODEL_NAME=f"lineage-{uuid.uuid4().hex[:8]}",
        BATCH_SIZE=500,
        MIN_BATCH_ROWS=100,
        BOOTSTRAP_RESAMPLES=TEST_RESAMPLES,
        READMISSION_HOME=str(home),
        # pydantic-settings' __init__ also takes its source options (_env_file, _cli_*, ...) as
        # keywords: mypy cannot tell that a **dict[str, str] fills none of them.
        **extra,  # type: ignore[arg-type]
    )


def train_versions(settings: Settings, sample: pd.DataFrame, batches: int) -> None:
    ingestion.ingest(
        settings.warehouse_url, sample, settings.batch_size, settings.holdout_fraction, batches
    )
    training.train_pending(settings)


@pytest.fixture(scope="session")
def trained_lineage(
    create_database: Callable[[], str],
    mlflow_server: str,
    sample: pd.DataFrame,
    tmp_path_factory: pytest.TempPathFactory,
) -> Settings:
    """Three warm-started versions of the sample's first three 500-row batches (500-row
    holdout) on the shared MLflow server, trained once per session: training, with its
    pyfuncs, figures, cards and bootstraps, is the suite's slowest step. Read it as it is;
    a test that promotes, tags or records trainings works on `copy_lineage` of it."""
    settings = platform_settings(
        create_database(), mlflow_server, tmp_path_factory.mktemp("lineage")
    )
    train_versions(settings, sample, TRAINED_VERSIONS)
    return settings


def copy_lineage(base: Settings, versions: int = TRAINED_VERSIONS) -> Settings:
    """Versions 1..`versions` of `base` registered again under a new model name, none promoted
    (MLflow's copy_model_version: the same run and artifacts, no training)."""
    client = registry.connect(base)
    name = f"copy-{uuid.uuid4().hex[:8]}"
    for version in range(1, versions + 1):
        client.copy_model_version(registry.model_uri(base, version), name)
    return base.model_copy(update={"model_name": name})


def version_number(version: ModelVersion | None) -> str | None:
    """The number of the version a registry lookup (`registry.production_version` and the
    like) found, or None when it found none: `assert version_number(...) == "2"` then fails
    instead of raising AttributeError."""
    return version.version if version is not None else None
