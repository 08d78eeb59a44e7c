"""scripts/compose-up, compose-down and k8s-up, run for real against stand-ins for docker, k3d and
kubectl (no Docker engine or cluster here) that log how they are called."""

from __future__ import annotations

import os
import shutil
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from deploy import dotenv

from .conftest import ROOT, env_values

pytestmark = pytest.mark.slow

FAKE_TOOL = r"""#!/usr/bin/env bash
# Stand-in for {tool}: logs its arguments, answers the few questions the scripts ask.
echo "{tool} $*" >> "$FAKE_LOG"
case "{tool} $*" in
  "docker compose version") exit "${{FAKE_COMPOSE_EXIT:-0}}" ;;
  "docker compose port "*) echo "127.0.0.1:$4" ;;
  "docker network inspect "*) exit "${{FAKE_NETWORK_EXIT:-0}}" ;;
  "docker image inspect "*) echo "sha256:$(echo "$5" | sha256sum | cut -c1-64)" ;;
  "k3d cluster get "*) exit "${{FAKE_CLUSTER_GET_EXIT:-1}}" ;;
esac
exit 0
"""


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    """A copy of what the scripts use, with docker, k3d, kubectl and the deploy helper's python
    (.deploy/venv/bin/python) faked."""
    root = tmp_path / "repo"
    for folder in ("scripts", "deploy", "k3d"):
        shutil.copytree(ROOT / folder, root / folder, ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(ROOT / ".env.example", root / ".env.example")
    tools = tmp_path / "bin"
    tools.mkdir()
    for tool in ("docker", "k3d", "kubectl"):
        write_executable(tools / tool, FAKE_TOOL.format(tool=tool))
    # The deploy helper is tested on its own (test_k8s_helper.py); here: how it is called.
    write_executable(
        root / ".deploy" / "venv" / "bin" / "python",
        f'#!/usr/bin/env bash\necho "python $*" >> "$FAKE_LOG"\n'
        f'[ "$1 $2" = "-m deploy.k8s" ] && exit 0\nexec {sys.executable} "$@"\n',
    )
    return root


def write_executable(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    path.chmod(path.stat().st_mode | stat.S_IXUSR)


def run(
    repo: Path, script: str, *args: str, **env: str
) -> tuple[subprocess.CompletedProcess, list[str]]:
    log = repo.parent / "calls.log"
    log.write_text("")
    environment = {
        "PATH": f"{repo.parent / 'bin'}{os.pathsep}{os.environ['PATH']}",
        "HOME": str(repo.parent),
        "FAKE_LOG": str(log),
        **env,
    }
    result = subprocess.run(
        [str(repo / "scripts" / script), *args],
        env=environment,
        capture_output=True,
        text=True,
        timeout=60,
        cwd=repo.parent,
    )
    return result, log.read_text().splitlines()


def test_compose_up_creates_env_with_secrets_then_builds_starts_and_waits(repo: Path) -> None:
    result, calls = run(repo, "compose-up")
    assert result.returncode == 0, result.stderr
    values = env_values((repo / ".env").read_text())
    assert all(values[key] for key in dotenv.SECRETS)
    assert stat.S_IMODE((repo / ".env").stat().st_mode) == 0o600
    assert "docker compose up --detach --build --wait --wait-timeout 900" in calls
    assert calls.index("docker compose version") < calls.index(
        "docker compose up --detach --build --wait --wait-timeout 900"
    )
    assert "Airflow     http://127.0.0.1:8080" in result.stdout
    assert "MLflow      http://127.0.0.1:5000" in result.stdout
    assert not any(call.startswith("python ") for call in calls), "make up needs no venv"


def test_compose_up_ends_by_saying_how_to_promote_then_serve(repo: Path) -> None:
    result, _ = run(repo, "compose-up")
    assert result.returncode == 0, result.stderr
    next_steps = result.stdout.split("Next:")[1]
    for step in (
        "trigger 01_ingest_data",
        "03_evaluate_and_promote",
        'alias "production"',
        "readmission promote <version>",
        "`make k8s-up`",
    ):
        assert step in next_steps
    assert next_steps.index("promote") < next_steps.index("make k8s-up")


def test_compose_up_keeps_an_existing_env_and_passes_arguments_on(repo: Path) -> None:
    run(repo, "compose-up")
    before = (repo / ".env").read_text()
    result, calls = run(repo, "compose-up", "mlflow")
    assert result.returncode == 0, result.stderr
    assert (repo / ".env").read_text() == before
    assert "docker compose up --detach --build --wait --wait-timeout 900 mlflow" in calls


def test_compose_up_without_compose_says_what_to_install(repo: Path) -> None:
    result, calls = run(repo, "compose-up", FAKE_COMPOSE_EXIT="1")
    assert result.returncode == 1
    assert "Compose v2 plugin is required" in result.stderr
    assert not (repo / ".env").exists()
    assert not any("compose up" in call for call in calls)


def test_compose_down_deletes_the_cluster_before_the_network_it_uses(repo: Path) -> None:
    result, calls = run(repo, "compose-down", "--volumes", FAKE_CLUSTER_GET_EXIT="0")
    assert result.returncode == 0, result.stderr
    assert calls.index("k3d cluster delete readmission") < calls.index(
        "docker compose --profile serving down --remove-orphans --volumes"
    )


def test_compose_down_without_a_cluster_only_stops_compose(repo: Path) -> None:
    result, calls = run(repo, "compose-down")
    assert result.returncode == 0, result.stderr
    assert not any("cluster delete" in call for call in calls)
    assert "docker compose --profile serving down --remove-orphans" in calls


def test_k8s_up_creates_the_cluster_imports_images_and_deploys(repo: Path) -> None:
    (repo / ".env").write_text("API_RELOAD_TOKEN=x\n")
    result, calls = run(repo, "k8s-up")
    assert result.returncode == 0, result.stderr
    assert "k3d cluster create --config k3d/cluster.yaml" in calls
    tags = {}
    for component in ("api", "ui"):
        assert (
            f"docker build --file docker/{component}.Dockerfile --tag "
            f"readmission-{component}:build ."
        ) in calls
        imports = [c for c in calls if c.startswith("k3d image import")]
        tag = next(c.split()[-1] for c in imports if f"readmission-{component}:" in c)
        assert len(tag.split(":")[1]) == 12
        assert f"docker tag readmission-{component}:build {tag}" in calls
        tags[component] = tag
    assert tags["api"].split(":")[1] != tags["ui"].split(":")[1]
    assert calls[-2] == (
        f"python -m deploy.k8s apply --context k3d-readmission "
        f"--image readmission-api={tags['api']} "
        f"--image readmission-ui={tags['ui']}"
    )
    assert calls[-1] == (  # the registry webhook to the k3d API pods
        "docker compose run --rm --no-deps webhook-init --url "
        "http://k3d-readmission-serverlb/webhooks/mlflow --name readmission-k3d-api"
    )


def test_k8s_up_reuses_an_existing_cluster(repo: Path) -> None:
    (repo / ".env").write_text("API_RELOAD_TOKEN=x\n")
    result, calls = run(repo, "k8s-up", "--timeout", "60", FAKE_CLUSTER_GET_EXIT="0")
    assert result.returncode == 0, result.stderr
    assert not any("cluster create" in call for call in calls)
    assert calls[-2].endswith("--timeout 60")


@pytest.mark.parametrize("missing", ["env", "network"])
def test_k8s_up_refuses_to_start_without_the_compose_stack(repo: Path, missing: str) -> None:
    if missing == "network":
        (repo / ".env").write_text("API_RELOAD_TOKEN=x\n")
    result, calls = run(repo, "k8s-up", FAKE_NETWORK_EXIT="1" if missing == "network" else "0")
    assert result.returncode == 1
    assert "run `make up` first" in result.stderr
    assert not any(call.startswith(("k3d cluster create", "docker build")) for call in calls)
