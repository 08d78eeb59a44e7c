"""The API's own warehouse login, for real: postgres_init creates readmission_api on a private
PostgreSQL server (conftest.server), the owner creates the tables with `readmission init-warehouse`
(what compose's warehouse-init runs), and then the API's own code paths run as that login: it
logs predictions, reads realized performance, reads the promotion ledger and adds to it. Anything
else it tries is refused by PostgreSQL."""

from __future__ import annotations

import asyncio
import dataclasses
import json
import subprocess
import uuid
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from types import SimpleNamespace

import psycopg
import pytest
import sqlalchemy as sa
from psycopg import errors

from deploy import k8s
from readmission import registry
from readmission.config import Settings
from readmission.data import migrations, tables
from readmission.data.database import WarehouseNotReady, api_privileges, engine_for
from readmission.monitoring import prediction_log, realized
from readmission.monitoring.prediction_log import LoggedPrediction, PredictionLogWriter
from readmission.release import ledger, production_changes
from tests.core.test_warehouse_schema import PROCESSES, open_at_once
from tests.migrations import previous_release
from tests.services import BIN, service_env

from .conftest import run_init

pytestmark = pytest.mark.slow

# The private server's logins and their passwords. readmission_api's holds characters a URL must
# quote, and quotes for the script: the URL of the API's Secret (built by deploy.k8s) must reach
# the server intact.
LOGINS = {
    "airflow": "airflow-1",
    "mlflow": "mlflow-1",
    "warehouse": "owner-1",
    "readmission_api": "p@ss:w/o%rd #?'\" $x;",
}
OWNER_PASSWORD, API_PASSWORD = LOGINS["warehouse"], LOGINS["readmission_api"]
PASSWORDS = {  # postgres_init's variables
    "AIRFLOW_DB_PASSWORD": LOGINS["airflow"],
    "MLFLOW_DB_PASSWORD": LOGINS["mlflow"],
    "WAREHOUSE_DB_PASSWORD": OWNER_PASSWORD,
    "WAREHOUSE_API_PASSWORD": API_PASSWORD,
}
# What the API does in the warehouse, and so all its login may do (readmission.data.tables).
API_PRIVILEGES = {
    "performance_reports": ["SELECT"],
    "prediction_log": ["INSERT"],
    "promotions": ["SELECT", "INSERT"],
    "webhook_deliveries": ["INSERT"],
}


def owner_url(server: dict[str, str], database: str = "warehouse") -> str:
    return sa.URL.create(
        "postgresql+psycopg",
        username="warehouse",
        password=OWNER_PASSWORD,
        host="127.0.0.1",
        port=int(server["PGPORT"]),
        database=database,
    ).render_as_string(hide_password=False)


def api_url(server: dict[str, str], database: str = "warehouse") -> str:
    """The API's DATABASE_URL as deploy.k8s writes it into api-secrets, for this server."""
    source = k8s.WORKLOAD_SECRETS["api"]["DATABASE_URL"]
    assert isinstance(source, k8s.DatabaseUrl)
    here = dataclasses.replace(source, host="127.0.0.1", port=int(server["PGPORT"]))
    return dataclasses.replace(here, database=database).value(PASSWORDS)


def init_warehouse(url: str) -> subprocess.CompletedProcess[str]:
    """`readmission init-warehouse` as the compose service warehouse-init runs it."""
    return subprocess.run(
        [str(BIN / "readmission"), "init-warehouse"],
        env=service_env(DATABASE_URL=url),
        capture_output=True,
        text=True,
        timeout=120,
    )


def superuser(server: dict[str, str], database: str = "warehouse") -> psycopg.Connection:
    """The server's superuser over its socket (trust), as the postgres image's scripts connect."""
    return psycopg.connect(
        host=server["PGHOST"],
        port=server["PGPORT"],
        user="postgres",
        dbname=database,
        autocommit=True,
    )


@pytest.fixture(scope="module")
def urls(server: dict[str, str]) -> Iterator[dict[str, str]]:
    """The warehouse initialised as compose initialises it: postgres_init, then warehouse-init."""
    result = run_init(server, **PASSWORDS)
    assert result.returncode == 0, result.stderr
    initialised = init_warehouse(owner_url(server))
    assert initialised.returncode == 0, initialised.stderr
    found = {
        "owner": owner_url(server),
        "api": api_url(server),
        "init": initialised.stdout,
    }
    yield found
    for url in (found["owner"], found["api"]):  # engine_for keeps one engine per URL
        engine_for(url).dispose()


def prediction(model_name: str, version: str = "1") -> LoggedPrediction:
    return LoggedPrediction(
        encounter_id=int(uuid.uuid4().int % 10**9),
        patient_nbr=42,
        model_name=model_name,
        model_version=version,
        probability=0.31,
        threshold=0.2,
        predicted_label=True,
        risk_band="high",
        scored_at=datetime.now(UTC),
    )


def logged(url: str, model_name: str) -> int:
    with engine_for(url).connect() as conn:
        query = sa.select(sa.func.count()).where(
            tables.prediction_log_table.c.model_name == model_name
        )
        return int(conn.execute(query).scalar_one())


def test_init_warehouse_grants_the_api_exactly_what_it_does(
    urls: dict[str, str], server: dict[str, str]
) -> None:
    hidden = sa.make_url(urls["owner"]).render_as_string(hide_password=True)
    assert f"warehouse ready: {hidden}\n" in urls["init"]
    assert "readmission_api may SELECT, INSERT on promotions" in urls["init"]
    assert OWNER_PASSWORD not in urls["init"]
    # Every table of the schema: nothing on the encounters, the batches, the lease ...
    assert api_privileges(urls["owner"]) == API_PRIVILEGES
    with superuser(server) as conn:
        sequences: dict[str, list[str]] = dict(
            conn.execute(
                "SELECT c.relname, array_remove(ARRAY["
                "CASE WHEN has_sequence_privilege('readmission_api', c.oid, 'USAGE') "
                "THEN 'USAGE' END, "
                "CASE WHEN has_sequence_privilege('readmission_api', c.oid, 'SELECT') "
                "THEN 'SELECT' END, "
                "CASE WHEN has_sequence_privilege('readmission_api', c.oid, 'UPDATE') "
                "THEN 'UPDATE' END], NULL) FROM pg_class c WHERE c.relkind = 'S'"
            ).fetchall()
        )
    # nextval() for the rows it inserts, nothing more (no setval, no other sequence).
    assert {name: used for name, used in sequences.items() if used} == {
        "prediction_log_id_seq": ["USAGE"],
        "promotions_id_seq": ["USAGE"],
    }


def test_init_warehouse_is_safe_to_rerun(urls: dict[str, str]) -> None:
    again = init_warehouse(urls["owner"])
    assert again.returncode == 0, again.stderr
    assert api_privileges(urls["owner"]) == API_PRIVILEGES


def test_the_api_logs_predictions_as_its_own_login(urls: dict[str, str]) -> None:
    model_name = f"model-{uuid.uuid4().hex[:8]}"

    async def serve() -> PredictionLogWriter:
        writer = PredictionLogWriter(urls["api"], capacity=10)
        writer.enqueue([prediction(model_name) for _ in range(3)])
        assert await writer.write_some(), writer.last_error
        return writer

    writer = asyncio.run(serve())
    assert (writer.written, writer.failed_writes, writer.buffered) == (3, 0, 0)
    prediction_log.write(urls["api"], [prediction(model_name, "2")])
    assert logged(urls["owner"], model_name) == 4


def test_the_api_reads_realized_performance_as_its_own_login(urls: dict[str, str]) -> None:
    model_name = f"model-{uuid.uuid4().hex[:8]}"
    assert realized.latest(urls["api"], model_name) is None
    report = {"model_name": model_name, "versions": [{"version": "1", "roc_auc": 0.7}]}
    with engine_for(urls["owner"]).begin() as conn:  # the platform computes reports
        conn.execute(
            tables.performance_reports.insert().values(
                model_name=model_name,
                computed_at=datetime.now(UTC),
                last_prediction_id=0,
                report=json.dumps(report),
            )
        )
    found = realized.latest(urls["api"], model_name)
    assert found is not None and found["versions"] == report["versions"]


def test_the_api_records_and_reads_the_promotion_ledger_as_its_own_login(
    urls: dict[str, str],
    configure: Callable[..., Settings],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """What the API does when it sees production change in the registry (ModelStore's
    _notice_change) and what GET /model/history reads; the registry is a stand-in."""
    settings = configure(DATABASE_URL=urls["api"], MODEL_NAME=f"model-{uuid.uuid4().hex[:8]}")
    monkeypatch.setattr(
        registry, "production_version", lambda _: SimpleNamespace(version="3", tags={})
    )
    entry = production_changes.notice_outside_changes(settings, noticed_by="the serving API")
    assert entry is not None and (entry.from_version, entry.to_version) == (None, "3")
    assert production_changes.notice_outside_changes(settings, noticed_by="the serving API") is None
    (read,) = ledger.entries(urls["api"], settings.model_name)
    assert read.to_version == "3" and "noticed by the serving API" in read.reason
    assert ledger.entries(urls["owner"], settings.model_name) == [read]


@pytest.mark.parametrize(
    "statement",
    [
        # The prediction log: the API appends; reading it and copying outcomes in is the platform's.
        "SELECT * FROM prediction_log",
        "UPDATE prediction_log SET outcome = 'NO'",
        "DELETE FROM prediction_log",
        "TRUNCATE prediction_log",
        "SELECT setval('prediction_log_id_seq', 1)",
        # The ledger and the reports: no rewriting history, no forged report.
        "UPDATE promotions SET reason = 'rewritten'",
        "DELETE FROM promotions",
        "INSERT INTO performance_reports (model_name, computed_at, last_prediction_id, report) "
        "VALUES ('m', now(), 0, '{}')",
        # The patients' encounters and the platform's bookkeeping: neither read nor written.
        "SELECT * FROM raw_encounters",
        "SELECT * FROM clean_encounters",
        "SELECT * FROM quarantined_encounters",
        "INSERT INTO raw_encounters (encounter_id, batch_id, row_hash) VALUES (1, 1, 'x')",
        "INSERT INTO clean_encounters (encounter_id, batch_id) VALUES (1, 1)",
        "UPDATE warehouse_settings SET value = 'x'",
        "DELETE FROM trainings",
        "DELETE FROM leases",
        # The schema: only its owner changes it.
        "DROP TABLE prediction_log",
        "ALTER TABLE prediction_log ADD COLUMN note text",
        "CREATE INDEX ON prediction_log (probability)",
        "CREATE TABLE api_owned (id int)",
        "CREATE TEMPORARY TABLE scratch (id int)",
        "CREATE SCHEMA api",
    ],
)
def test_everything_else_is_refused(
    urls: dict[str, str], server: dict[str, str], statement: str
) -> None:
    with (
        psycopg.connect(
            host="127.0.0.1",
            port=server["PGPORT"],
            dbname="warehouse",
            user="readmission_api",
            password=API_PASSWORD,
            autocommit=True,
        ) as conn,
        pytest.raises(errors.InsufficientPrivilege),
    ):
        conn.execute(statement)


def test_before_the_owner_creates_the_tables_the_api_says_who_must(
    urls: dict[str, str], server: dict[str, str]
) -> None:
    database = f"warehouse_{uuid.uuid4().hex[:8]}"
    with superuser(server, "postgres") as conn:
        conn.execute(f"CREATE DATABASE {database} OWNER warehouse")
        conn.execute(f"REVOKE ALL ON DATABASE {database} FROM PUBLIC")
        conn.execute(f"GRANT CONNECT ON DATABASE {database} TO readmission_api")
    api, owner = api_url(server, database), owner_url(server, database)
    model_name = f"model-{uuid.uuid4().hex[:8]}"
    try:
        with pytest.raises(WarehouseNotReady, match="readmission_api may not create"):
            prediction_log.write(api, [prediction(model_name)])
        created = init_warehouse(owner)
        assert created.returncode == 0, created.stderr
        prediction_log.write(api, [prediction(model_name)])  # no restart: the next write works
        assert logged(owner, model_name) == 1
    finally:
        for url in (api, owner):
            engine_for(url).dispose()
        with superuser(server, "postgres") as conn:
            conn.execute(f"DROP DATABASE {database} WITH (FORCE)")


def test_owners_opening_a_fresh_warehouse_at_once_create_and_grant_once(
    urls: dict[str, str], server: dict[str, str]
) -> None:
    """Airflow's components and warehouse-init start side by side: each creates the missing tables
    and grants, under the schema lock (two GRANTs on one table at once would fail)."""
    for _ in range(3):
        database = f"warehouse_{uuid.uuid4().hex[:8]}"
        with superuser(server, "postgres") as conn:
            conn.execute(f"CREATE DATABASE {database} OWNER warehouse")
        try:
            assert open_at_once(owner_url(server, database)) == [0] * PROCESSES
            granted = api_privileges(owner_url(server, database))
            assert granted == API_PRIVILEGES  # the migrations make every table, the ledger's too
        finally:
            engine_for(owner_url(server, database)).dispose()
            with superuser(server, "postgres") as conn:  # its grants go with it
                conn.execute(f"DROP DATABASE {database} WITH (FORCE)")


def test_a_login_created_after_the_tables_gets_its_rights_at_the_owners_next_start(
    urls: dict[str, str], server: dict[str, str]
) -> None:
    """An existing volume: the tables predate the login (the operator re-runs postgres_init);
    the owner's next start (warehouse-init at `make up`, any Airflow task) grants."""
    engine_for(urls["api"]).dispose()
    with superuser(server) as conn:
        conn.execute("DROP OWNED BY readmission_api")
        conn.execute("DROP ROLE readmission_api")
    alone = init_warehouse(urls["owner"])  # the owner's start before the login is back
    assert alone.returncode == 0, alone.stderr
    assert "no login readmission_api on this server" in alone.stdout
    assert run_init(server, **PASSWORDS).returncode == 0
    with superuser(server) as conn:  # not engine_for as the owner: opening would grant
        held = conn.execute(
            "SELECT count(*) FROM pg_class c, unnest(ARRAY['SELECT', 'INSERT']) AS p "
            "WHERE c.relnamespace = 'public'::regnamespace AND c.relkind = 'r' "
            "AND has_table_privilege('readmission_api', c.oid, p)"
        ).fetchone()
    assert held == (0,)
    model_name = f"model-{uuid.uuid4().hex[:8]}"
    # COPY goes through psycopg's cursor, so its error is psycopg's, not wrapped by SQLAlchemy.
    with pytest.raises(errors.InsufficientPrivilege, match="permission denied for table"):
        prediction_log.write(urls["api"], [prediction(model_name)])
    again = init_warehouse(urls["owner"])
    assert again.returncode == 0, again.stderr
    assert api_privileges(urls["owner"]) == API_PRIVILEGES
    prediction_log.write(urls["api"], [prediction(model_name)])
    assert logged(urls["owner"], model_name) == 1


def test_a_warehouse_of_the_previous_release_is_upgraded_and_granted_by_init_warehouse(
    urls: dict[str, str], server: dict[str, str], tmp_path: Path
) -> None:
    """An existing compose volume: the release before migrations made the tables (create_all,
    as the owner), the API's login lost its rights; warehouse-init upgrades and grants."""
    database = f"warehouse_{uuid.uuid4().hex[:8]}"
    with superuser(server, "postgres") as conn:
        conn.execute(f"CREATE DATABASE {database} OWNER warehouse")
    owner, api = owner_url(server, database), api_url(server, database)
    try:
        make = "import sys; from readmission import ledger; ledger.ensure_table(sys.argv[1])"
        src = previous_release.extract(tmp_path)
        previous_release.run(src, tmp_path, ["-c", make, owner])
        with superuser(server, database) as conn:
            conn.execute("REVOKE ALL ON ALL TABLES IN SCHEMA public FROM readmission_api")
        upgraded = init_warehouse(owner)
        assert upgraded.returncode == 0, upgraded.stderr
        assert f"schema revision {migrations.head()}" in upgraded.stdout
        assert api_privileges(owner) == API_PRIVILEGES
        prediction_log.write(api, [prediction("model-upgraded")])  # the API's login, no DDL
        assert logged(owner, "model-upgraded") == 1
    finally:
        for url in (api, owner):
            engine_for(url).dispose()
        with superuser(server, "postgres") as conn:
            conn.execute(f"DROP DATABASE {database} WITH (FORCE)")
