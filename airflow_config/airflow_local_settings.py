"""Airflow's local settings for this project: imported by every Airflow process at start
(airflow.settings.import_local_settings), from $AIRFLOW_HOME/config in the image and from
PYTHONPATH in bin/airflow-standalone.

It preloads, in the scheduler only, the modules the DAGs' tasks import. The scheduler's
LocalExecutor forks its workers when it starts, and each worker forks one process per task:
imported here, pandas, scikit-learn, MLflow and the readmission package are in every task
process already, instead of being imported again by each task (about 4 s of CPU, most of a
short task's run). Other components (API server, DAG processor, triggerer, the CLI) need none of
them and start as before. A module that fails to import is logged and left to the task that
needs it, which then fails naming it; the scheduler itself keeps running.

The tasks then run the code the scheduler imported when it started: while editing src/readmission
with bin/airflow-standalone running, set READMISSION_PRELOAD_TASK_MODULES=false (or restart it)
so that each task imports the code as it is now.
"""

from __future__ import annotations

import importlib
import os
import sys
import time
from collections.abc import Mapping

PREFIX = "airflow_local_settings:"
# What the tasks of dags/ import (tests/dags/test_dag_definitions.py checks it stays so).
TASK_MODULES = (
    "httpx",
    "readmission.change_control",
    "readmission.config",
    "readmission.data.dataset",
    "readmission.data.ingest_report",
    "readmission.data.lineage",
    "readmission.extracts",
    "readmission.monitoring.realized",
    "readmission.release.live",
    "readmission.release.production_changes",
    "readmission.release.promotion",
    "readmission.training",
)


def preload(modules: tuple[str, ...] = TASK_MODULES) -> list[str]:
    """Import `modules`; those that failed. Said on stderr: Airflow configures its logging
    only after importing this file."""
    started, failed = time.monotonic(), []
    for name in modules:
        try:
            importlib.import_module(name)
        except Exception as error:  # the task importing it will fail and say why
            print(
                f"{PREFIX} {name} not preloaded: {type(error).__name__}: {error}", file=sys.stderr
            )
            failed.append(name)
    print(
        f"{PREFIX} {len(modules) - len(failed)} task modules preloaded for the task processes "
        f"in {time.monotonic() - started:.1f} s",
        file=sys.stderr,
    )
    return failed


def wanted(argv: list[str], environ: Mapping[str, str]) -> bool:
    """Whether this process preloads: the scheduler, unless READMISSION_PRELOAD_TASK_MODULES
    says false."""
    switch = environ.get("READMISSION_PRELOAD_TASK_MODULES", "true").strip().lower()
    return argv[1:2] == ["scheduler"] and switch not in ("false", "0", "no")


if wanted(sys.argv, os.environ):
    preload()
