"""The warehouse on PostgreSQL and SQLite: idempotent, batched ingest with a fixed holdout."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pandas as pd
import pytest

from readmission import warehouse


@pytest.fixture(params=["postgresql", "sqlite"])
def url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'warehouse.db'}"
    create: Callable[[], str] = request.getfixturevalue("create_database")
    return create()


def test_holdout_first_then_batches_in_encounter_order(url: str, sample: pd.DataFrame) -> None:
    report = warehouse.ingest(url, sample, 500, 0.2, max_batches=1)
    assert [(b.batch_id, b.kind, b.rows) for b in report.new_batches] == [
        (0, "holdout", 500),
        (1, "train", 500),
    ]
    assert report.new_batches[1].first_encounter_id == sample["encounter_id"].iloc[0]
    holdout_ids = warehouse.clean_rows(url, 0)["encounter_id"]
    assert holdout_ids.min() > warehouse.clean_rows(url, 1)["encounter_id"].max()


def test_ingesting_twice_adds_zero_rows(url: str, sample: pd.DataFrame) -> None:
    first = warehouse.ingest(url, sample, 500, 0.2)
    counts = warehouse.row_counts(url)
    again = warehouse.ingest(url, sample, 500, 0.2)
    assert first.rows_added == 2500 and again.rows_added == 0
    assert again.already_present == 2500
    assert warehouse.row_counts(url) == counts
    assert len(warehouse.batch_list(url)) == 5


def test_next_batch_continues_where_the_last_one_stopped(url: str, sample: pd.DataFrame) -> None:
    warehouse.ingest(url, sample, 500, 0.2, max_batches=1)
    warehouse.ingest(url, sample, 500, 0.2, max_batches=2)
    batches = warehouse.batch_list(url)
    assert [b.batch_id for b in batches] == [0, 1, 2, 3]
    assert warehouse.untrained_batches(url) == [1, 2, 3]
    ids = [warehouse.clean_rows(url, b)["encounter_id"] for b in (1, 2, 3)]
    assert ids[0].max() < ids[1].min() and ids[1].max() < ids[2].min()


def test_quarantined_rows_keep_their_reason_and_counts_add_up(
    url: str, sample: pd.DataFrame
) -> None:
    dirty = sample.copy()
    dirty.loc[3, "gender"] = "Unknown/Invalid"
    dirty.loc[4, "diag_1"] = "not-a-code"
    dirty.loc[5, "encounter_id"] = dirty.loc[6, "encounter_id"]
    report = warehouse.ingest(url, dirty, 500, 0.2, max_batches=1)
    batch = report.new_batches[1]
    assert (batch.rows, batch.accepted, batch.quarantined) == (500, 497, 3)
    reasons = warehouse.quarantined_rows(url, 1)["reason"].tolist()
    assert any("gender must be one of" in r for r in reasons)
    assert any("diag_1 must be" in r for r in reasons)
    assert any("duplicate encounter_id" in r for r in reasons)
    assert warehouse.ingest(url, dirty, 500, 0.2, max_batches=1).new_batches[0].batch_id == 2
    assert len(warehouse.quarantined_rows(url, 1)) == 3


def test_mark_trained_is_recorded_once(url: str, sample: pd.DataFrame) -> None:
    warehouse.ingest(url, sample, 500, 0.2, max_batches=1)
    assert warehouse.mark_trained(url, 1, "1", "run-a") is True
    assert warehouse.mark_trained(url, 1, "2", "run-b") is False
    (batch,) = [b for b in warehouse.batch_list(url) if b.batch_id == 1]
    assert batch.trained and batch.model_version == "1"
