"""Integrity of the prediction log: an id beyond the warehouse's integer type is refused at the
door, a row the warehouse refuses anyway is set aside without holding up the rows after it, and
predictions left unwritten at shutdown or in a crash are replayed or counted at the next start."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from pathlib import Path

import httpx
import pandas as pd
import pytest
import sqlalchemy as sa

from readmission.config import Settings
from readmission.data.database import engine_for
from readmission.data.tables import prediction_log_table
from readmission.monitoring.prediction_log import LoggedPrediction, PredictionLogWriter
from readmission.processes import free_port
from readmission.schema import ID_MAX
from tests.api.serving import running_api
from tests.api.test_prediction_log import encounters, logged, metric, serving_settings


def prediction(encounter_id: int) -> LoggedPrediction:
    return LoggedPrediction(
        encounter_id, 1, "m", "1", 0.25, 0.5, False, "medium", datetime.now(UTC)
    )


def stored_ids(url: str) -> list[int]:
    with engine_for(url).connect() as conn:
        query = sa.select(prediction_log_table.c.encounter_id).order_by(prediction_log_table.c.id)
        return list(conn.execute(query).scalars())


async def write_all(writer: PredictionLogWriter) -> None:
    """Run the writer until its buffer is empty, then stop it as the API does at shutdown."""
    running = asyncio.create_task(writer.run())
    for _ in range(600):
        if not writer.buffered:
            break
        await asyncio.sleep(0.05)
    writer.stop()
    await running


@pytest.mark.parametrize("kind", ["sqlite", "postgresql"])
def test_a_row_the_warehouse_refuses_is_counted_and_the_rows_after_it_are_written(
    kind: str, create_database: Callable[[], str], tmp_path: Path
) -> None:
    url = create_database() if kind == "postgresql" else f"sqlite:///{tmp_path / 'w.db'}"
    good = list(range(1, 3001))
    writer = PredictionLogWriter(url, capacity=10_000, spill=tmp_path / "spill")
    # 10^19 is what the API refuses since; a writer must still survive one (an older client, a
    # narrower column): bisecting finds it among 3,000 rows in two batches.
    writer.enqueue(prediction(i) for i in good[:1234])
    writer.enqueue([prediction(10**19)])
    writer.enqueue(prediction(i) for i in good[1234:])
    asyncio.run(write_all(writer))

    assert stored_ids(url) == good  # in order, none twice
    assert (writer.written, writer.rejected, writer.dropped) == (len(good), 1, 0)
    assert writer.up and writer.last_error is None
    assert writer.last_rejection is not None
    assert ("Overflow" if kind == "sqlite" else "out of range") in writer.last_rejection


def test_predictions_not_written_at_shutdown_are_spilled_and_written_after_restart(
    create_database: Callable[[], str], tmp_path: Path
) -> None:
    down = f"postgresql+psycopg://postgres@127.0.0.1:{free_port()}/nowhere"
    spill = tmp_path / "spill"
    writer = PredictionLogWriter(down, capacity=100, spill=spill)
    writer.enqueue(prediction(i) for i in range(1, 41))
    asyncio.run(write_all(writer))  # gives up at once: the warehouse refuses connections
    assert writer.written == 0 and not writer.up and writer.buffered == 0
    assert len((spill / "spilled.jsonl").read_text().splitlines()) == 40

    url = create_database()
    restarted = PredictionLogWriter(url, capacity=100, spill=spill)
    restarted.enqueue(prediction(i) for i in range(41, 51))  # served before the writer started
    asyncio.run(write_all(restarted))
    assert stored_ids(url) == list(range(1, 51))  # the spilled ones first, as they were served
    assert (restarted.replayed, restarted.written, restarted.lost) == (40, 50, 0)
    assert not (spill / "spilled.jsonl").exists()

    again = PredictionLogWriter(url, capacity=100, spill=spill)  # nothing is replayed twice
    asyncio.run(write_all(again))
    assert (again.replayed, again.lost, len(stored_ids(url))) == (0, 0, 50)


@pytest.mark.slow
def test_an_id_beyond_bigint_gets_422_then_1000_requests_are_all_logged(
    trained_lineage: Settings,
    create_database: Callable[[], str],
    sample: pd.DataFrame,
    tmp_path: Path,
) -> None:
    settings = serving_settings(trained_lineage, create_database())
    requests = encounters(sample.iloc[:1000])
    assert len(requests) == 1000
    with running_api(settings, tmp_path) as api:
        api.wait_until(lambda: api.served_version() == "2", "version 2 to be served")
        for field, value in (("encounter_id", 10**19), ("patient_nbr", ID_MAX + 1)):
            answer = api.post("/predict", json={**requests[0], field: value})
            assert answer.status_code == 422, answer.text
            (problem,) = answer.json()["detail"]
            assert problem["field"] == field
            assert str(ID_MAX) in problem["allowed"]
        largest = api.post("/predict", json={**requests[0], "encounter_id": ID_MAX})
        assert largest.status_code == 200
        with httpx.Client(base_url=api.url, timeout=30) as client:  # one keep-alive connection
            statuses = [client.post("/predict", json=e).status_code for e in requests]
        assert set(statuses) == {200}
        api.wait_until(
            lambda: metric(api, "readmission_prediction_log_written_total") == 1001,
            "every answer to be written",
        )
        assert metric(api, "readmission_prediction_log_up") == 1
        assert metric(api, "readmission_prediction_log_rejected_total") == 0
        assert metric(api, "readmission_prediction_log_dropped_total") == 0
    rows = logged(settings)
    assert list(rows["encounter_id"]) == [ID_MAX] + [e["encounter_id"] for e in requests]


@pytest.mark.slow
def test_predictions_a_crash_took_with_it_are_counted_at_the_next_start(
    trained_lineage: Settings,
    create_database: Callable[[], str],
    sample: pd.DataFrame,
    tmp_path: Path,
) -> None:
    settings = serving_settings(trained_lineage, create_database())
    down = settings.model_copy(
        update={"database_url": f"postgresql+psycopg://postgres@127.0.0.1:{free_port()}/x"}
    )
    requests = encounters(sample.iloc[:30])
    with running_api(down, tmp_path) as api:
        api.wait_until(lambda: api.served_version() == "2", "version 2 to be served")
        assert {api.post("/predict", json=e).status_code for e in requests} == {200}
        api.wait_until(
            lambda: '"buffered": 30' in _state(tmp_path), "the buffered count to be recorded"
        )
        api.process.kill()  # no shutdown: the 30 buffered predictions die with the process
        api.process.wait()
    with running_api(settings, tmp_path) as api:
        api.wait_until(lambda: api.served_version() == "2", "version 2 to be served")
        api.wait_until(
            lambda: metric(api, "readmission_prediction_log_lost_total") == 30,
            "the lost predictions to be counted",
        )
        assert "30 predictions" in api.tail()
    assert logged(settings).empty


def _state(log_dir: Path) -> str:
    state = log_dir / "home" / "prediction-log" / "state.json"
    return state.read_text() if state.exists() else ""


@pytest.mark.slow
@pytest.mark.parametrize("kind", ["sqlite", "postgresql"])
def test_a_burst_faster_than_the_writer_is_slowed_down_not_dropped(
    kind: str,
    trained_lineage: Settings,
    create_database: Callable[[], str],
    sample: pd.DataFrame,
    tmp_path: Path,
) -> None:
    url = create_database() if kind == "postgresql" else f"sqlite:///{tmp_path / 'w.db'}"
    settings = serving_settings(trained_lineage, url)
    requests = encounters(sample)
    buffer = 16  # far less than 8 clients send while one write runs: without backpressure, drops
    with running_api(settings, tmp_path, PREDICTION_LOG_BUFFER=str(buffer)) as api:
        api.wait_until(lambda: api.served_version() == "2", "version 2 to be served")
        with ThreadPoolExecutor(8) as pool, httpx.Client(base_url=api.url, timeout=30) as client:
            statuses = list(
                pool.map(lambda e: client.post("/predict", json=e).status_code, requests)
            )
            batch = client.post("/predict/batch", json={"encounters": requests[:40]})
        api.wait_until(
            lambda: (
                metric(api, "readmission_prediction_log_buffered") == 0
                and metric(api, "readmission_prediction_log_written_total")
                + metric(api, "readmission_prediction_log_dropped_total")
                == len(requests) + 40
            ),
            "the buffer to be written",
        )
        assert metric(api, "readmission_prediction_log_dropped_total") == 0
    assert set(statuses) == {200} and batch.status_code == 200
    rows = logged(settings)
    assert sorted(rows["encounter_id"]) == sorted(
        [e["encounter_id"] for e in requests] + [e["encounter_id"] for e in requests[:40]]
    )


def test_an_unwritable_spill_folder_does_not_stop_the_log(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'w.db'}"
    blocked = tmp_path / "a-file"
    blocked.write_text("")  # a folder cannot be made below it (as in a read-only home)
    writer = PredictionLogWriter(url, capacity=100, spill=blocked / "prediction-log")
    writer.enqueue(prediction(i) for i in range(1, 21))
    asyncio.run(write_all(writer))
    assert stored_ids(url) == list(range(1, 21)) and writer.written == 20
    assert writer.spill is None  # given up, with an error in the log
