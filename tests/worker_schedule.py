"""How `make test` shares the suite between its pytest-xdist workers (`-n 2`).

A worker takes a whole unit at a time: a module, or the modules that share a package-scoped
service (SHARED), so that each service starts once, in one worker. The units are handed out in
LONGEST_FIRST's order, then the rest in collection order: the two workers finish together only
if neither is left alone with a long unit at the end. Registered as a plugin by tests/conftest.py.
"""

from __future__ import annotations

import shutil

import pytest
from xdist.remote import Producer
from xdist.scheduler import LoadScopeScheduling

from tests.services import ROOT

ARTIFACTS = ROOT / "test-artifacts"

# Modules using tests/api's `served_api` and `in_process_api`, and tests/ui's `served_url` and
# `idle_url` (package fixtures: bin/api started, a lineage trained and promoted), and those using
# tests/dags' `airflow_db` (session fixture: `airflow db migrate` on a fresh database).
SHARED = {
    "tests/dags/test_demo.py": "tests/dags:airflow_db",
    "tests/dags/test_pipeline_runs.py": "tests/dags:airflow_db",
    "tests/api/test_contract.py": "tests/api:served_api",
    "tests/api/test_model.py": "tests/api:served_api",
    "tests/api/test_predict.py": "tests/api:served_api",
    "tests/ui/test_api_client.py": "tests/ui:served_url",
    "tests/ui/test_app.py": "tests/ui:served_url",
    "tests/ui/test_browser.py": "tests/ui:served_url",
}

# Seconds each took in a run of the suite on two workers (`pytest -n 2 --durations=0`, 812 tests,
# 2026-12-06, quiet machine, at 3f0ca22; summed per unit); a unit not listed took under 14 s.
# test_load took 104 s there, before its swarms stopped once their event was seen (b876a17).
# Measure again when a unit grows.
LONGEST_FIRST = (
    "tests/dags:airflow_db",  # 243
    "tests/dags/test_airflow_standalone.py",  # 239
    "tests/chaos/test_chaos.py",  # 135
    "tests/deploy/test_mlflow_auth.py",  # 93
    "tests/api/test_prediction_log_integrity.py",  # 87
    "tests/core/test_extract_contract.py",  # 80
    "tests/load/test_load.py",  # 104 before b876a17
    "tests/api/test_resilience.py",  # 63
    "tests/core/test_promotion.py",  # 60
    "tests/core/test_cli.py",  # 54
    "tests/api/test_live_promotion.py",  # 53
    "tests/migrations/test_previous_release.py",  # 44
    "tests/ui:served_url",  # 41
    "tests/api/test_shadow.py",  # 40
    "tests/api:served_api",  # 32
    "tests/api/test_prediction_log.py",  # 27
    "tests/core/test_training.py",  # 27
    "tests/core/test_training_lease.py",  # 24
    "tests/monitoring/test_live_queries.py",  # 23
    "tests/api/test_webhooks.py",  # 22
    "tests/migrations/test_flat_release_version.py",  # 14
)


def unit_of(nodeid: str) -> str:
    module = nodeid.split("::", 1)[0]
    return SHARED.get(module, module)


class ByUnit(LoadScopeScheduling):
    """xdist's loadscope, its scopes our units, in the order the items are collected."""

    def _split_scope(self, nodeid: str) -> str:
        return unit_of(nodeid)


@pytest.hookimpl(tryfirst=True)
def pytest_xdist_make_scheduler(config: pytest.Config, log: Producer) -> ByUnit:
    config.option.loadscopereorder = False  # keep LONGEST_FIRST's order, not the count of tests
    return ByUnit(config, log)


def pytest_configure(config: pytest.Config) -> None:
    # test-artifacts/ is emptied once per run, by the process that starts the workers (or by the
    # only process): a worker emptying it would delete the other's screenshots and logs.
    if not hasattr(config, "workerinput"):
        shutil.rmtree(ARTIFACTS, ignore_errors=True)
        ARTIFACTS.mkdir()


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    rank = {unit: place for place, unit in enumerate(LONGEST_FIRST)}
    # Stable: a unit's tests keep their order, and so do the units not listed.
    items.sort(key=lambda item: rank.get(unit_of(item.nodeid), len(rank)))
