"""postgres_init/ run for real: a private PostgreSQL server (the machine's binaries, its own data
directory and port) stands in for the postgres image's first start, which runs the script with
POSTGRES_USER set and the server listening on its socket."""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest

from tests.conftest import free_port

from .conftest import ROOT

SCRIPT = ROOT / "postgres_init" / "10-create-service-databases.sh"
# Quotes, a backslash, a dollar, a space and a semicolon: the script must pass them verbatim.
PASSWORDS = {"airflow": 'it\'s "airflow"', "mlflow": "back\\slash $HOME; x", "warehouse": "w"}


def postgres_bin() -> Path:
    versions = sorted(Path("/usr/lib/postgresql").glob("*/bin/initdb"))
    assert versions, "PostgreSQL server binaries not found (scripts/ensure-postgres installs them)"
    return versions[-1].parent


def as_postgres(command: list[str]) -> list[str]:
    """initdb and postgres refuse to run as root."""
    return ["runuser", "-u", "postgres", "--", *command] if os.geteuid() == 0 else command


@pytest.fixture(scope="module")
def server() -> Iterator[dict[str, str]]:
    # Not pytest's tmp_path: its parents are private to root, and the server runs as postgres.
    tmp_path = Path(tempfile.mkdtemp(prefix="readmission-pg-"))
    bindir, data, socket = postgres_bin(), tmp_path / "data", tmp_path / "socket"
    socket.mkdir()
    if os.geteuid() == 0:
        shutil.chown(tmp_path, "postgres")
        shutil.chown(socket, "postgres")
    subprocess.run(
        as_postgres(
            [
                str(bindir / "initdb"),
                "-D",
                str(data),
                "-U",
                "postgres",
                "--auth-local=trust",
                "--auth-host=scram-sha-256",
                "--no-sync",
            ]
        ),
        check=True,
        capture_output=True,
        timeout=120,
    )
    port = str(free_port())
    options = f"-p {port} -k {socket} -c listen_addresses=127.0.0.1 -c fsync=off"
    subprocess.run(
        as_postgres(
            [
                str(bindir / "pg_ctl"),
                "-D",
                str(data),
                "-o",
                options,
                "-l",
                str(tmp_path / "server.log"),
                "-w",
                "start",
            ]
        ),
        check=True,
        capture_output=True,
        timeout=120,
    )
    try:
        yield {"PGHOST": str(socket), "PGPORT": port}
    finally:
        subprocess.run(
            as_postgres([str(bindir / "pg_ctl"), "-D", str(data), "-m", "fast", "-w", "stop"]),
            capture_output=True,
            timeout=60,
        )
        shutil.rmtree(tmp_path, ignore_errors=True)


def run_init(server: dict[str, str], **passwords: str) -> subprocess.CompletedProcess:
    env = {
        "PATH": os.environ["PATH"],
        "POSTGRES_USER": "postgres",
        **server,
        **{f"{name.upper()}_DB_PASSWORD": value for name, value in passwords.items()},
    }
    return subprocess.run(
        ["bash", str(SCRIPT)], env=env, capture_output=True, text=True, timeout=60
    )


def connect(server: dict[str, str], user: str, password: str) -> psycopg.Connection:
    return psycopg.connect(
        host="127.0.0.1",
        port=server["PGPORT"],
        dbname=user,
        user=user,
        password=password,
        connect_timeout=10,
    )


def test_each_service_gets_its_own_database_and_login(server: dict[str, str]) -> None:
    result = run_init(server, **PASSWORDS)
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


def test_rerunning_the_script_is_safe(server: dict[str, str]) -> None:
    assert run_init(server, **PASSWORDS).returncode == 0
    again = run_init(server, **PASSWORDS)
    assert again.returncode == 0, again.stderr
    with connect(server, "warehouse", PASSWORDS["warehouse"]) as conn:
        assert conn.execute("SELECT 1").fetchone() == (1,)


def test_a_missing_password_stops_the_script_with_its_name(server: dict[str, str]) -> None:
    result = run_init(server, airflow="a", mlflow="m")
    assert result.returncode != 0
    assert "WAREHOUSE_DB_PASSWORD" in result.stderr
