"""The chaos suite's platform: a fresh PostgreSQL warehouse, the session's real MLflow server,
a model name of the test's own, and extracts of a synthetic sample cut by encounter_id."""

from __future__ import annotations

import functools
import subprocess
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pandas as pd
import pytest

from readmission import registry_reader
from readmission.config import Settings
from readmission.data import database, inventory, lineage
from readmission.data.dataset import synthetic_sample
from tests.services import CommandLine, run_cli, service_env, start_cli

from ..conftest import TEST_RESAMPLES, platform_env
from . import crash

BATCH_SIZE = 300


@pytest.fixture
def chaos(
    configure: Callable[..., Settings], create_database: Callable[[], str], mlflow_server: str
) -> Iterator[Settings]:
    settings = configure(
        DATABASE_URL=create_database(),
        MLFLOW_TRACKING_URI=mlflow_server,
        MODEL_NAME=f"chaos-{uuid.uuid4().hex[:8]}",
        BATCH_SIZE=str(BATCH_SIZE),
        MIN_BATCH_ROWS="1",  # the scenarios cut small extracts: every remainder a batch
        TRAINING_LEASE_WAIT="120",
        MAX_LOG_LOSS="0.7",  # the synthetic sample's base rate is 21%
        BOOTSTRAP_RESAMPLES=str(TEST_RESAMPLES),
    )
    yield settings
    # The checks' pooled connections: the PostgreSQL server is shared, its slots are few.
    database.engine_for(settings.warehouse_url).dispose()


@pytest.fixture(scope="session")
def rows() -> pd.DataFrame:
    """1,200 synthetic encounters as text, in encounter_id order."""
    return synthetic_sample(1200, seed=11).astype(str)


@pytest.fixture
def extract(rows: pd.DataFrame, tmp_path: Path) -> Callable[..., Path]:
    """Write rows[start:stop] (or a given frame) as an extract file; return its path."""

    def write(start: int = 0, stop: int | None = None, frame: pd.DataFrame | None = None) -> Path:
        part = rows.iloc[start:stop] if frame is None else frame
        path = tmp_path / f"extract-{uuid.uuid4().hex[:6]}.csv"
        part.to_csv(path, index=False)
        return path

    return write


def start(*args: str, crash_at: str | None = None) -> CommandLine:
    """A `readmission` process of its own, on this test's platform; SIGKILLed at `crash_at`."""
    env = service_env(**platform_env())
    return start_cli(*args, env=env, merge_stderr=True, prepare=_armed(crash_at))


def run(*args: str, crash_at: str | None = None) -> subprocess.CompletedProcess[str]:
    """`start` to its end; its output and error output in one."""
    env = service_env(**platform_env())
    return run_cli(*args, env=env, merge_stderr=True, prepare=_armed(crash_at))


def ok(*args: str) -> str:
    done = run(*args)
    assert done.returncode == 0, done.stdout[-3000:]
    return done.stdout


def _armed(crash_at: str | None) -> Callable[[], None] | None:
    return functools.partial(crash.arm, crash_at) if crash_at else None


def wait_until(condition: Callable[[], bool], timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "condition not met in time"
        time.sleep(0.2)


def _count(report: dict[str, object], key: str) -> int:
    """A row count of an ingest report, as `inventory.ingest_history` reads it back."""
    value = report[key]
    assert isinstance(value, int), (key, report)
    return value


def assert_consistent(settings: Settings, sources: list[pd.DataFrame]) -> None:
    """The invariants every chaos scenario must leave behind, whatever was killed when."""
    url = settings.warehouse_url
    for report in inventory.ingest_history(url):
        quarantined = report["quarantined"]
        assert isinstance(quarantined, dict), report
        accounted = (
            _count(report, "accepted")
            + sum(quarantined.values())
            + _count(report, "already_present")
            + _count(report, "deferred")
        )
        assert report["rows_in"] == accounted, report
    ids = pd.concat(sources)["encounter_id"].astype(int)
    assert inventory.row_counts(url)["raw_encounters"] == ids.nunique()  # every row stored once
    assert inventory.holdout_overlap(url) == 0

    trained = [b for b in inventory.batch_list(url, settings.model_name) if b.kind == "train"]
    assert trained and all(b.trained for b in trained), "every batch trained"
    versions = [
        v
        for v in registry_reader.version_summaries(settings)
        if v.tags.get("warehouse_id") == lineage.warehouse_id(url)
    ]
    assert len(versions) == len(trained), "registered versions = trained batches"
    assert sorted(str(v.batch_id) for v in versions) == sorted(str(b.batch_id) for b in trained)
    by_batch = {int(str(v.batch_id)): v for v in versions}
    parent = ""
    for batch in sorted(by_batch):  # each version continues the one before it
        assert by_batch[batch].parent_version == parent
        assert by_batch[batch].version == next(
            b.model_version for b in trained if b.batch_id == batch
        )
        parent = by_batch[batch].version
