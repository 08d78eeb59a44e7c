"""postgres_init/ run for real, against a private PostgreSQL server (conftest.server): what the
warehouse's tables let the API's login do is tested in test_warehouse_api_login.py."""

from __future__ import annotations

import psycopg
import pytest

from .conftest import run_init

pytestmark = pytest.mark.slow

# Quotes, a backslash, a dollar, a space and a semicolon: the script must pass them verbatim.
PASSWORDS = {"airflow": 'it\'s "airflow"', "mlflow": "back\\slash $HOME; x", "warehouse": "w"}
API_PASSWORD = "a'pi\" $x\\;"
VARIABLES = {
    "AIRFLOW_DB_PASSWORD": PASSWORDS["airflow"],
    "MLFLOW_DB_PASSWORD": PASSWORDS["mlflow"],
    "WAREHOUSE_DB_PASSWORD": PASSWORDS["warehouse"],
    "WAREHOUSE_API_PASSWORD": API_PASSWORD,
}


def connect(
    server: dict[str, str], user: str, password: str, dbname: str | None = None
) -> psycopg.Connection:
    return psycopg.connect(
        host="127.0.0.1",
        port=server["PGPORT"],
        dbname=dbname or user,
        user=user,
        password=password,
        connect_timeout=10,
    )


def test_each_service_gets_its_own_database_and_login(server: dict[str, str]) -> None:
    result = run_init(server, **VARIABLES)
    assert result.returncode == 0, result.stderr
    for user, password in PASSWORDS.items():
        with connect(server, user, password) as conn:
            row = conn.execute(
                "SELECT current_database(), current_user, pg_get_userbyid("
                "datdba) FROM pg_database WHERE datname = current_database()"
            )
            assert row.fetchone() == (user, user, user)
            conn.execute("CREATE TABLE owned_here (id int)")  # owners may create tables
    with pytest.raises(psycopg.OperationalError, match="password authentication failed"):
        connect(server, "mlflow", PASSWORDS["airflow"])


def test_the_apis_login_has_no_power_and_opens_no_other_services_database(
    server: dict[str, str],
) -> None:
    assert run_init(server, **VARIABLES).returncode == 0
    with connect(server, "readmission_api", API_PASSWORD, "warehouse") as conn:
        row = conn.execute(
            "SELECT rolsuper, rolcreatedb, rolcreaterole, rolreplication, rolbypassrls, "
            "(SELECT count(*) FROM pg_auth_members WHERE member = pg_roles.oid), "
            "(SELECT count(*) FROM pg_database WHERE datdba = pg_roles.oid) "
            "FROM pg_roles WHERE rolname = current_user"
        ).fetchone()
        assert row == (False, False, False, False, False, 0, 0)  # no role, no database
    # By default PUBLIC may connect to every database: the script revokes that.
    for database in ("airflow", "mlflow"):
        with pytest.raises(psycopg.OperationalError, match="permission denied for database"):
            connect(server, "readmission_api", API_PASSWORD, database)
    with pytest.raises(psycopg.OperationalError, match="permission denied for database"):
        connect(server, "airflow", PASSWORDS["airflow"], "mlflow")


def test_rerunning_the_script_is_safe(server: dict[str, str]) -> None:
    assert run_init(server, **VARIABLES).returncode == 0
    again = run_init(server, **VARIABLES)
    assert again.returncode == 0, again.stderr
    with connect(server, "warehouse", PASSWORDS["warehouse"]) as conn:
        assert conn.execute("SELECT 1").fetchone() == (1,)
    with connect(server, "readmission_api", API_PASSWORD, "warehouse") as conn:
        assert conn.execute("SELECT current_user").fetchone() == ("readmission_api",)


@pytest.mark.parametrize("missing", sorted(VARIABLES))
def test_a_missing_password_stops_the_script_before_it_changes_anything(
    server: dict[str, str], missing: str
) -> None:
    result = run_init(server, **{k: v for k, v in VARIABLES.items() if k != missing})
    assert result.returncode != 0
    assert missing in result.stderr
    # psql prints each statement's tag (REVOKE, GRANT ...): none ran.
    assert result.stdout == ""
