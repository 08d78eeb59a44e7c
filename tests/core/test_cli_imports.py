"""The CLI answers at once: what its import and the status command's path leave unloaded.

A real check of `sys.modules` in a fresh interpreter, not a timing (bench/cli_latency.py times it).
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from readmission import registry
from readmission.config import Settings
from tests.services import BIN, service_env

from ..conftest import platform_env

pytestmark = pytest.mark.slow

HEAVY = ("mlflow", "pandas", "sklearn", "scipy", "matplotlib", "sqlalchemy", "alembic", "rich")


def loaded_after(statement: str) -> set[str]:
    """The top-level packages a fresh interpreter holds after running `statement`."""
    probe = f"import sys\n{statement}\nimport json\nprint(json.dumps(sorted(sys.modules)))"
    done = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, timeout=120, check=True
    )
    return {name.split(".")[0] for name in json.loads(done.stdout.splitlines()[-1])}


def test_importing_the_cli_loads_no_heavy_library() -> None:
    loaded = loaded_after("import readmission.cli")
    assert "typer" in loaded and "readmission" in loaded
    assert loaded.isdisjoint(HEAVY), sorted(loaded & set(HEAVY))


@pytest.mark.parametrize("argv", [["--help"], ["--version"], ["status", "--help"]])
def test_help_and_version_load_no_heavy_library(argv: list[str]) -> None:
    statement = (
        "from readmission.cli import app\n"
        f"try:\n    app({argv!r}, prog_name='readmission')\nexcept SystemExit:\n    pass"
    )
    loaded = loaded_after(statement)
    assert loaded.isdisjoint(HEAVY), sorted(loaded & set(HEAVY))


# What `readmission status` reads with SQLAlchemy Core and MLflow's REST API instead: these took
# most of its seconds (importing MLflow alone took longer than the 2 s it may take).
NOT_FOR_STATUS = ("mlflow", "pandas", "numpy", "sklearn", "scipy", "matplotlib", "rich")


def test_status_on_a_platform_loads_neither_mlflow_nor_pandas(
    platform: Settings, sample_csv: Path
) -> None:
    # A warehouse with batches and a registry with a version, its run and an alias: every read
    # of the status runs, and prints what it read.
    env = service_env(**platform_env())
    subprocess.run(
        [str(BIN / "readmission"), "ingest", "--batches", "1", "--source", str(sample_csv)],
        env=env,
        capture_output=True,
        timeout=300,
        check=True,
    )
    client = registry.connect(platform)
    run = client.create_run(client.create_experiment(platform.model_name)).info.run_id
    client.log_metric(run, "holdout_roc_auc", 0.7125)
    client.log_metric(run, "holdout_log_loss", 0.5)
    client.create_registered_model(platform.model_name)
    client.create_model_version(platform.model_name, f"runs:/{run}/model", run_id=run)
    client.set_registered_model_alias(platform.model_name, platform.model_alias, "1")

    statement = (
        "from readmission.cli import app\n"
        "try:\n    app(['status'], prog_name='readmission')\nexcept SystemExit:\n    pass"
    )
    probe = f"import sys\n{statement}\nimport json\nprint(json.dumps(sorted(sys.modules)))"
    done = subprocess.run(
        [sys.executable, "-c", probe], env=env, capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr[-3000:]
    shown, modules = done.stdout.rsplit("\n", 2)[:2]
    assert "production = 1" in shown and "at training 0.7125" in shown, shown
    assert "batch   1 train" in shown, shown
    loaded = {name.split(".")[0] for name in json.loads(modules)}
    assert "sqlalchemy" in loaded  # the warehouse was read
    assert loaded.isdisjoint(NOT_FOR_STATUS), sorted(loaded & set(NOT_FOR_STATUS))
