"""The CLI answers at once: what its import and the status command's path leave unloaded.

A real check of `sys.modules` in a fresh interpreter, not a timing (bench/cli_latency.py times it).
"""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

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


def test_the_status_path_reads_the_registry_without_scikit_learn() -> None:
    # `readmission status` imports steps (warehouse and registry): MLflow's client and pandas
    # it needs, the model's libraries it does not.
    loaded = loaded_after("import readmission.steps")
    assert {"mlflow", "pandas"} <= loaded
    assert loaded.isdisjoint({"sklearn", "matplotlib"}), sorted(loaded & {"sklearn", "matplotlib"})
