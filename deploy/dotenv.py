"""The deployment's `.env`: created from `.env.example` with freshly generated secrets.

`scripts/compose-up` runs `python3 -m deploy.dotenv` with the host's Python, before any project
environment exists, so this module uses the standard library only. It never changes a value that
is already set, so re-running is safe: it only fills the secrets that are missing or empty (a
`.env` written before a secret was added to `.env.example` gets the new one appended), then the
host's addresses of the stack (HOST_SETTINGS) when they are empty. It reads only the few values
those addresses are made of; everything else that reads `.env` (pydantic-settings, deploy.k8s, the
tests) goes through python-dotenv. The lines it writes are plain `KEY=value` with URL-safe values,
which python-dotenv and Compose read alike.
"""

from __future__ import annotations

import argparse
import base64
import os
import re
import secrets
from collections.abc import Callable, Mapping
from pathlib import Path
from urllib.parse import quote

ROOT = Path(__file__).resolve().parents[1]
# The assignments python-dotenv and Compose both accept; `KEY=`, `KEY=""` and `KEY=''` are empty.
ASSIGNMENT = re.compile(r"^(?:export\s+)?(?P<key>[A-Za-z_][A-Za-z0-9_]*)\s*=\s*(?P<value>.*)$")
EMPTY = {"", '""', "''"}


def token() -> str:
    """URL-safe, so it can sit in a database URL without escaping."""
    return secrets.token_urlsafe(24)


def fernet_key() -> str:
    """What Airflow's Fernet expects: 32 random bytes, URL-safe base64."""
    return base64.urlsafe_b64encode(os.urandom(32)).decode()


SECRETS: dict[str, Callable[[], str]] = {
    "POSTGRES_PASSWORD": token,
    "AIRFLOW_DB_PASSWORD": token,
    "MLFLOW_DB_PASSWORD": token,
    "WAREHOUSE_DB_PASSWORD": token,
    "WAREHOUSE_API_PASSWORD": token,
    "MINIO_ROOT_PASSWORD": token,
    "AIRFLOW_ADMIN_PASSWORD": token,
    "AIRFLOW_FERNET_KEY": fernet_key,
    "AIRFLOW_JWT_SECRET": token,
    "AIRFLOW_API_SECRET_KEY": token,
    "GRAFANA_ADMIN_PASSWORD": token,
    "API_RELOAD_TOKEN": token,
    "MINIO_MLFLOW_PASSWORD": token,
    "MLFLOW_ADMIN_PASSWORD": token,
    "MLFLOW_API_PASSWORD": token,
    "MLFLOW_FLASK_SECRET_KEY": token,
    "MLFLOW_WEBHOOK_SECRET": token,
    "MLFLOW_WEBHOOK_ENCRYPTION_KEY": fernet_key,
}


def fill_secrets(text: str) -> tuple[str, list[str]]:
    """Give every secret that is empty in `text` a fresh value; append the ones it lacks.
    Returns the new text and the names of the secrets generated."""
    generated: list[str] = []
    lines = []
    for line in text.splitlines():
        match = ASSIGNMENT.match(line.strip())
        if match and match["key"] in SECRETS and match["value"].strip() in EMPTY:
            line = f"{match['key']}={SECRETS[match['key']]()}"
            generated.append(match["key"])
        lines.append(line)
    present = {match["key"] for line in lines if (match := ASSIGNMENT.match(line.strip()))}
    missing = [key for key in SECRETS if key not in present]
    if missing:
        lines += ["", "# --- Secrets added by deploy.dotenv ---"]
        lines += [f"{key}={SECRETS[key]()}" for key in missing]
        generated += missing
    return "\n".join(lines) + "\n", generated


def warehouse_url(values: Mapping[str, str]) -> str:
    password = quote(values.get("WAREHOUSE_DB_PASSWORD", ""), safe="")
    port = values.get("POSTGRES_HOST_PORT") or "5433"
    return f"postgresql+psycopg://warehouse:{password}@127.0.0.1:{port}/warehouse"


def mlflow_url(values: Mapping[str, str]) -> str:
    return f"http://127.0.0.1:{values.get('MLFLOW_HOST_PORT') or '5000'}"


# Settings of `readmission` on the host (promote, status, ...; pydantic-settings reads .env): the
# compose warehouse and MLflow at their host ports (docker-compose.yaml binds them to 127.0.0.1).
# Left empty, the CLI would use the embedded default's SQLite files, so a promotion made there
# would take the ledger lock and write its ledger row where the API never looks. The containers
# set both themselves; compose does not pass these two through.
HOST_SETTINGS: dict[str, Callable[[Mapping[str, str]], str]] = {
    "DATABASE_URL": warehouse_url,
    "MLFLOW_TRACKING_URI": mlflow_url,
}


def plain_value(raw: str) -> str:
    """A value as python-dotenv reads the simple forms: quotes removed, or a ` #` comment."""
    raw = raw.strip()
    if len(raw) >= 2 and raw[0] == raw[-1] and raw[0] in "'\"":
        return raw[1:-1]
    return raw.split(" #", 1)[0].strip()


def fill_host_settings(text: str) -> tuple[str, list[str]]:
    """Set every HOST_SETTINGS variable that is empty in `text` (appended when absent) from the
    ports and warehouse password of `text`. Returns the new text and the names set."""
    values = {
        match["key"]: plain_value(match["value"])
        for line in text.splitlines()
        if (match := ASSIGNMENT.match(line.strip()))
    }
    filled: list[str] = []
    lines = []
    for line in text.splitlines():
        match = ASSIGNMENT.match(line.strip())
        if match and match["key"] in HOST_SETTINGS and match["value"].strip() in EMPTY:
            line = f"{match['key']}={HOST_SETTINGS[match['key']](values)}"
            filled.append(match["key"])
        lines.append(line)
    if missing := [key for key in HOST_SETTINGS if key not in values]:
        lines += ["", "# --- The compose stack as the host reaches it, added by deploy.dotenv ---"]
        lines += [f"{key}={HOST_SETTINGS[key](values)}" for key in missing]
        filled += missing
    return "\n".join(lines) + "\n", filled


def ensure(env: Path, example: Path) -> list[str]:
    """Create `env` from `example` (mode 0600) or complete it; returns the variables set (secrets
    generated, then host settings)."""
    source = env if env.exists() else example
    text, generated = fill_secrets(source.read_text())
    text, addresses = fill_host_settings(text)
    generated += addresses
    if generated or not env.exists():
        env.touch(mode=0o600)
        env.write_text(text)
    return generated


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--env", type=Path, default=ROOT / ".env")
    parser.add_argument("--example", type=Path, default=ROOT / ".env.example")
    args = parser.parse_args(argv)
    existed = args.env.exists()
    generated = ensure(args.env, args.example)
    action = "completed" if existed else "created from " + args.example.name
    if generated:
        print(f"{args.env.name} {action}: set {', '.join(generated)}")
    else:
        print(f"{args.env.name}: every secret and host setting is set")


if __name__ == "__main__":
    main()
