"""deploy.dotenv: the .env that scripts/compose-up creates and completes."""

from __future__ import annotations

import stat
from pathlib import Path

import pytest
import sqlalchemy as sa
from cryptography.fernet import Fernet

from deploy import dotenv
from readmission.config import Settings

from .conftest import ROOT, env_values

EXAMPLE = ROOT / ".env.example"


def test_env_created_from_the_example_has_every_secret_and_keeps_the_rest(tmp_path: Path) -> None:
    env = tmp_path / ".env"
    generated = dotenv.ensure(env, EXAMPLE)
    values, example = env_values(env.read_text()), env_values(EXAMPLE.read_text())
    assert set(generated) == set(dotenv.SECRETS) | set(dotenv.HOST_SETTINGS)
    for key in dotenv.SECRETS:
        assert len(values[key]) >= 32, key
    for key, value in example.items():
        if key not in {*dotenv.SECRETS, *dotenv.HOST_SETTINGS}:
            assert values[key] == value, key
    assert stat.S_IMODE(env.stat().st_mode) == 0o600
    comments = [line for line in EXAMPLE.read_text().splitlines() if line.startswith("#")]
    assert all(line in env.read_text().splitlines() for line in comments)


def test_every_secret_is_a_different_fresh_value(tmp_path: Path) -> None:
    first, second = tmp_path / "a.env", tmp_path / "b.env"
    dotenv.ensure(first, EXAMPLE)
    dotenv.ensure(second, EXAMPLE)
    a, b = env_values(first.read_text()), env_values(second.read_text())
    values = [a[key] for key in dotenv.SECRETS]
    assert len(set(values)) == len(values)
    assert all(a[key] != b[key] for key in dotenv.SECRETS)


def test_the_example_declares_every_secret_empty() -> None:
    example = env_values(EXAMPLE.read_text())
    assert {key: example.get(key) for key in dotenv.SECRETS} == dict.fromkeys(dotenv.SECRETS, "")


def test_secrets_are_url_safe_and_the_fernet_key_is_valid(tmp_path: Path) -> None:
    env = tmp_path / ".env"
    dotenv.ensure(env, EXAMPLE)
    values = env_values(env.read_text())
    fernet_keys = {"AIRFLOW_FERNET_KEY", "MLFLOW_WEBHOOK_ENCRYPTION_KEY"}
    for key in fernet_keys:
        Fernet(values[key].encode())  # raises on a malformed key
    for key in set(dotenv.SECRETS) - fernet_keys:
        assert values[key].replace("-", "").replace("_", "").isalnum(), key


def test_rerunning_changes_nothing_and_set_values_are_never_replaced(tmp_path: Path) -> None:
    env = tmp_path / ".env"
    env.write_text("POSTGRES_PASSWORD=mine\nAPI_RELOAD_TOKEN=\nMODEL_NAME=custom\n")
    generated = dotenv.ensure(env, EXAMPLE)
    assert "POSTGRES_PASSWORD" not in generated and "API_RELOAD_TOKEN" in generated
    values = env_values(env.read_text())
    assert values["POSTGRES_PASSWORD"] == "mine" and values["MODEL_NAME"] == "custom"
    assert set(dotenv.SECRETS) <= values.keys()
    before = env.read_text()
    assert dotenv.ensure(env, EXAMPLE) == []
    assert env.read_text() == before


def test_what_python_dotenv_reads_as_empty_or_absent_gets_a_secret() -> None:
    """The generator reads no values, but it must agree with python-dotenv (the reader of
    pydantic-settings and deploy.k8s) on which secrets are missing."""
    text = (
        "# POSTGRES_PASSWORD=commented-out\n"
        "export API_RELOAD_TOKEN=\n"
        'GRAFANA_ADMIN_PASSWORD=""\n'
        "AIRFLOW_DB_PASSWORD = ''\n"
        "MLFLOW_DB_PASSWORD=kept=as-is\n"
    )
    before = env_values(text)
    filled, generated = dotenv.fill_secrets(text)
    after = env_values(filled)
    assert {key for key in dotenv.SECRETS if not before.get(key)} == set(generated)
    assert all(after[key] for key in dotenv.SECRETS)
    assert after["MLFLOW_DB_PASSWORD"] == "kept=as-is"
    assert filled.startswith("# POSTGRES_PASSWORD=commented-out\n")


def test_main_reports_what_it_generated(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    env = tmp_path / ".env"
    dotenv.main(["--env", str(env), "--example", str(EXAMPLE)])
    assert capsys.readouterr().out.startswith(".env created from .env.example: set ")
    dotenv.main(["--env", str(env), "--example", str(EXAMPLE)])
    assert capsys.readouterr().out == ".env: every secret and host setting is set\n"


def test_the_cli_on_the_host_uses_the_compose_warehouse_and_mlflow(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Issue 22: with DATABASE_URL empty, `readmission promote` on the host wrote its ledger row
    in .readmission/warehouse.db. The settings the CLI reads from .env point at the stack's
    warehouse and MLflow at their host ports."""
    env = tmp_path / ".env"
    env.write_text(
        EXAMPLE.read_text()
        + "POSTGRES_HOST_PORT=6543\nMLFLOW_HOST_PORT=5055\nWAREHOUSE_DB_PASSWORD='p@ss w/rd'\n"
    )
    assert {"DATABASE_URL", "MLFLOW_TRACKING_URI"} <= set(dotenv.ensure(env, EXAMPLE))
    for field in Settings.model_fields.values():
        monkeypatch.delenv(str(field.alias), raising=False)
    monkeypatch.chdir(tmp_path)  # where pydantic-settings reads .env, as in the checkout
    settings = Settings()
    url = sa.make_url(settings.warehouse_url)
    assert (url.drivername, url.username, url.password) == (
        "postgresql+psycopg",
        "warehouse",
        "p@ss w/rd",
    )
    assert (url.host, url.port, url.database) == ("127.0.0.1", 6543, "warehouse")
    assert settings.tracking_uri == "http://127.0.0.1:5055"


def test_host_settings_fill_an_old_env_and_never_replace_a_set_one(tmp_path: Path) -> None:
    env = tmp_path / ".env"
    env.write_text("DATABASE_URL=\nMLFLOW_TRACKING_URI=http://mlflow.example:5000\n")
    assert "DATABASE_URL" in dotenv.ensure(env, EXAMPLE)
    values = env_values(env.read_text())
    password = values["WAREHOUSE_DB_PASSWORD"]
    assert values["DATABASE_URL"] == (
        f"postgresql+psycopg://warehouse:{password}@127.0.0.1:5433/warehouse"
    )
    assert values["MLFLOW_TRACKING_URI"] == "http://mlflow.example:5000"
    before = env.read_text()
    assert dotenv.ensure(env, EXAMPLE) == []
    assert env.read_text() == before
