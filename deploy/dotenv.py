"""The deployment's `.env`: created from `.env.example` with freshly generated secrets.

`scripts/compose-up` runs `python3 -m deploy.dotenv` with the host's Python, before any project
environment exists, so this module uses the standard library only. It never changes a value that
is already set, so re-running is safe: it only fills the secrets that are missing or empty (a
`.env` written before a secret was added to `.env.example` gets the new one appended). It reads no
values: everything that reads `.env` (pydantic-settings, deploy.k8s, the tests) goes through
python-dotenv; the lines it writes are plain `KEY=value` with URL-safe values, which python-dotenv
and Compose read alike.
"""

from __future__ import annotations

import argparse
import base64
import os
import re
import secrets
from collections.abc import Callable
from pathlib import Path

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


def ensure(env: Path, example: Path) -> list[str]:
    """Create `env` from `example` (mode 0600) or complete it; returns the secrets generated."""
    source = env if env.exists() else example
    text, generated = fill_secrets(source.read_text())
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
        print(f"{args.env.name} {action}: generated {', '.join(generated)}")
    else:
        print(f"{args.env.name}: every secret is set")


if __name__ == "__main__":
    main()
