"""No secret literal in the repository: every git-tracked file and every new, not ignored one
(what the next commit could contain). Secrets live in the user's .env (git-ignored)."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import pytest

from .conftest import ROOT

SKIPPED_SUFFIXES = {
    ".lock",
    ".png",
    ".jpg",
    ".jpeg",
    ".gif",
    ".ico",
    ".zip",
    ".gz",
    ".whl",
    ".parquet",
    ".pkl",
    ".joblib",
}
# Stand-ins that are obviously not secrets (e.g. moto's fake AWS credentials in tests).
DUMMY = {
    "test",
    "testing",
    "dummy",
    "fake",
    "example",
    "placeholder",
    "none",
    "null",
    "true",
    "false",
    "required",
    "redacted",
}
NAME = r"[\w.-]*(?:password|passwd|secret|token|api_?key|access_?key|private_?key)[\w.-]*"
PATTERNS = {
    "AWS access key id": re.compile(r"\b(?:AKIA|ASIA)[0-9A-Z]{16}\b"),
    "private key": re.compile(r"-----BEGIN (?:[A-Z]+ )?PRIVATE KEY-----"),
    "GitHub token": re.compile(r"\bgh[pousr]_[A-Za-z0-9]{36,}\b"),
    "Slack token": re.compile(r"\bxox[abprs]-[A-Za-z0-9-]{10,}"),
    "JSON web token": re.compile(r"\beyJ[\w-]{10,}\.eyJ[\w-]{10,}\.[\w-]{10,}"),
    "password in a URL": re.compile(r"\b[a-z][a-z0-9+.-]*://[^\s/:@'\"]+:(?P<value>[^\s/@'\"]+)@"),
    # NAME = "literal" / NAME: 'literal' (code, YAML, JSON, TOML)
    "quoted secret": re.compile(
        rf"(?i)\b{NAME}[\"']?\s*[:=]\s*[\"'](?P<value>[^\"'\s]{{4,}})[\"']"
    ),
    # NAME=literal / NAME: literal (env files, YAML, shell; in Python code that is an expression)
    "assigned secret": re.compile(
        rf"(?im)^[\s-]*(?:export\s+)?{NAME}\s*[:=][ \t]*(?P<value>[^\s\"'#]{{4,}})[ \t]*$"
    ),
}


def is_reference(value: str) -> bool:
    """A variable, template, path or placeholder rather than a value."""
    return (
        value.lower() in DUMMY
        or value.startswith(("$", "{", "<", "/", "./", "%"))
        or value.endswith((".json", ".yaml", ".yml", ".txt", ".env"))
        or bool(re.fullmatch(r"[A-Z][A-Z0-9_]*", value))  # the NAME of another variable
        or bool(re.fullmatch(r"[\w.]+\(.*\)?", value))  # a call: secrets.token_urlsafe(24)
        or "${" in value
        or "{{" in value
        or "os.environ" in value
    )


def findings(text: str, python: bool = False) -> list[str]:
    found = []
    for kind, pattern in PATTERNS.items():
        if python and kind == "assigned secret":
            continue
        for match in pattern.finditer(text):
            value = match.groupdict().get("value")
            if value is not None and is_reference(value):
                continue
            line = text.count("\n", 0, match.start()) + 1
            found.append(f"line {line}: {kind}")
    return found


def repository_files() -> list[Path]:
    listed = subprocess.run(
        ["git", "ls-files", "--cached", "--others", "--exclude-standard", "-z"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    paths = [ROOT / name for name in listed.split("\0") if name]
    return [p for p in paths if p.is_file() and p.suffix not in SKIPPED_SUFFIXES]


@pytest.mark.slow
def test_the_repository_holds_no_secret_literal() -> None:
    files = repository_files()
    assert any(p.name == "docker-compose.yaml" for p in files)
    assert not any(p.name == ".env" for p in files), ".env must stay git-ignored"
    problems = []
    for path in files:
        try:
            text = path.read_text()
        except UnicodeDecodeError:
            continue
        problems += [
            f"{path.relative_to(ROOT)} {f}" for f in findings(text, python=path.suffix == ".py")
        ]
    assert not problems, "secret literals:\n" + "\n".join(problems)


# The scanner itself. Literals are assembled at run time so that this file passes its own scan.
LEAKS = [
    "AWS_ACCESS_KEY_ID=" + "AKIA" + "Q3EXAMPLEKEY7ABC",
    "-----BEGIN RSA " + "PRIVATE KEY-----",
    "token = '" + "ghp_" + "a1" * 18 + "'",
    "url: postgresql://airflow:" + "hunter2pass" + "@postgres:5432/airflow",
    'GF_SECURITY_ADMIN_PASSWORD: "' + "s3cr3t-value" + '"',
    "POSTGRES_PASSWORD=" + "Zk9-tq4Lm0",
    "  api_key: " + "live_4f9a8b7c6d",
    'password="' + "correct-horse" + '"',
]
SAFE = [
    "POSTGRES_PASSWORD: ${POSTGRES_PASSWORD:?set it in .env}",
    "POSTGRES_PASSWORD=",
    "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_PASSWORDS_FILE: /opt/airflow/auth/passwords.json",
    "url: postgresql+psycopg2://mlflow:${MLFLOW_DB_PASSWORD}@postgres:5432/mlflow",
    'aws_secret_access_key="test"',
    "key: API_RELOAD_TOKEN",
    "  - name: GF_SECURITY_ADMIN_PASSWORD",
    "token = secrets.token_urlsafe(24)",
    "password = os.environ['AIRFLOW_ADMIN_PASSWORD']",
    "API_RELOAD_TOKEN=$(openssl rand -hex 16)",
    "curl -H 'Authorization: Bearer $API_RELOAD_TOKEN'",
]


@pytest.mark.parametrize("text", LEAKS)
def test_the_scan_catches_a_leaked_secret(text: str) -> None:
    assert findings(text), text


@pytest.mark.parametrize("text", SAFE)
def test_the_scan_accepts_references_and_dummies(text: str) -> None:
    assert findings(text) == [], text


def test_python_expressions_are_not_literals_but_python_strings_are() -> None:
    assert findings("token = state.settings.api_reload_token", python=True) == []
    assert findings("token = '" + "abcd1234efgh" + "'", python=True)
