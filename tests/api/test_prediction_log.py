"""The prediction log behind bin/api: every answered prediction is recorded in the warehouse,
across restarts and through a warehouse outage, and joins its outcome when an extract brings it."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pandas as pd
import pytest
import sqlalchemy as sa
from sklearn.metrics import roc_auc_score

from readmission import extracts, registry, registry_reader
from readmission.config import Settings
from readmission.data.database import engine_for
from readmission.data.tables import prediction_log_table
from readmission.data.validation import validate
from readmission.monitoring import realized
from readmission.processes import free_port, stop
from readmission.schema import POSITIVE_LABEL, TARGET
from tests.api.serving import Api, running_api
from tests.conftest import copy_lineage

PROXY = Path(__file__).with_name("tcp_proxy.py")


def encounters(frame: pd.DataFrame) -> list[dict[str, Any]]:
    """Valid requests for the rows of `frame`, ids included, outcome left out."""
    return validate(frame).clean.drop(columns=[TARGET]).to_dict("records")


def metric(api: Api, name: str) -> float:
    """The value of an unlabelled metric of the API's /metrics (NaN when absent)."""
    for line in api.get("/metrics").text.splitlines():
        if line.startswith(f"{name} "):
            return float(line.split()[1])
    return float("nan")


def logged(settings: Settings) -> pd.DataFrame:
    query = sa.select(prediction_log_table).where(
        prediction_log_table.c.model_name == settings.model_name
    )
    with engine_for(settings.warehouse_url).connect() as conn:
        return pd.read_sql(query.order_by(prediction_log_table.c.id), conn)


def serving_settings(trained_lineage: Settings, database_url: str) -> Settings:
    """Version 2 of a copy of the lineage in production, predictions logged to `database_url`."""
    settings = copy_lineage(trained_lineage, versions=2).model_copy(
        update={"database_url": database_url}
    )
    registry.promote(settings, 2)
    return settings


@pytest.mark.slow
def test_every_answer_is_logged_across_a_restart_and_realized_auc_is_scikit_learns(
    trained_lineage: Settings,
    create_database: Callable[[], str],
    sample: pd.DataFrame,
    sample_csv: Path,
    tmp_path: Path,
) -> None:
    settings = serving_settings(trained_lineage, create_database())
    requests = encounters(sample.sort_values("encounter_id").iloc[600:900])
    answers: list[dict[str, Any]] = []
    with running_api(settings, tmp_path, PERFORMANCE_POLL_SECONDS="0.5") as api:
        api.wait_until(lambda: api.served_version() == "2", "version 2 to be served")
        answers += [api.post("/predict", json=e).json() for e in requests[:100]]
    assert len(logged(settings)) == 100  # written before the API stopped

    with running_api(settings, tmp_path, PERFORMANCE_POLL_SECONDS="0.5") as api:
        api.wait_until(lambda: api.served_version() == "2", "version 2 to be served")
        for start in range(100, len(requests), 50):
            batch = api.post("/predict/batch", json={"encounters": requests[start : start + 50]})
            answers += batch.json()["predictions"]
        api.wait_until(
            lambda: metric(api, "readmission_prediction_log_written_total") == len(requests) - 100,
            "the batches to be written",
        )
        extracts.ingest(settings, source=str(sample_csv))  # the outcomes arrive
        report = realized.compute(settings)
        exported = api.wait_until(
            lambda: (
                'readmission_realized_roc_auc{version="2"}' in (m := api.get("/metrics").text) and m
            ),
            "the report to be exported",
        )
        served_report = api.get("/performance").json()

    rows = logged(settings)
    assert len(rows) == len(answers) == len(requests)
    by_encounter = rows.set_index("encounter_id")
    for answer in answers:
        row = by_encounter.loc[answer["encounter_id"]]
        assert (row["model_version"], row["risk_band"]) == ("2", answer["risk_band"])
        assert row["probability"] == answer["probability"]
        assert bool(row["predicted_label"]) == answer["readmitted_within_30d"]
    outcomes = sample.set_index(sample["encounter_id"].astype(int))[TARGET]
    truth = [int(outcomes[a["encounter_id"]] == POSITIVE_LABEL) for a in answers]
    (version,) = report["versions"]
    assert (version["version"], version["n"], version["pending"]) == ("2", len(answers), 0)
    expected = roc_auc_score(truth, [a["probability"] for a in answers])
    assert version["roc_auc"] == pytest.approx(expected, abs=1e-12)
    assert version["observed_rate"] == pytest.approx(np.mean(truth))
    (trained,) = [v for v in registry_reader.version_summaries(settings) if str(v.version) == "2"]
    assert version["holdout_roc_auc"] == pytest.approx(trained.metrics["holdout_roc_auc"])
    assert served_report["report_id"] == report["report_id"]
    assert served_report["versions"][0]["roc_auc"] == pytest.approx(expected, abs=1e-12)
    assert f'readmission_realized_roc_auc{{version="2"}} {expected}' in exported
    assert f'readmission_realized_labelled_encounters{{version="2"}} {len(answers)}.0' in exported
    assert f'readmission_realized_recent_outcomes{{version="2"}} {len(answers)}.0' in exported
    assert f'readmission_realized_recent_roc_auc{{version="2"}} {expected}' in exported
    upper = version["recent"]["roc_auc_ci"][1]
    assert (
        expected < upper
        and f'readmission_realized_recent_roc_auc_upper{{version="2"}} {upper}' in exported
    )


@contextmanager
def tcp_proxy(listen_port: int, host: str, port: int) -> Iterator[subprocess.Popen]:
    process = subprocess.Popen(
        [sys.executable, str(PROXY), str(listen_port), host, str(port)],
        stdout=subprocess.PIPE,
        start_new_session=True,
        env={},
    )
    try:
        assert process.stdout is not None and process.stdout.readline() == b"listening\n"
        yield process
    finally:
        stop(process)
        if process.stdout is not None:
            process.stdout.close()


@pytest.mark.slow
def test_a_warehouse_outage_under_load_gives_only_200s_counts_the_dropped_and_recovers(
    trained_lineage: Settings,
    create_database: Callable[[], str],
    sample: pd.DataFrame,
    tmp_path: Path,
) -> None:
    database = sa.make_url(create_database())
    port = free_port()
    through_proxy = database.set(host="127.0.0.1", port=port).render_as_string(False)
    settings = serving_settings(trained_lineage, through_proxy)
    requests = encounters(sample.iloc[:400])
    buffer = 50
    with (
        tcp_proxy(port, database.host or "127.0.0.1", database.port or 5432) as proxy,
        running_api(settings, tmp_path, PREDICTION_LOG_BUFFER=str(buffer)) as api,
    ):
        api.wait_until(lambda: api.served_version() == "2", "version 2 to be served")
        before = [api.post("/predict", json=e).status_code for e in requests[:20]]
        api.wait_until(
            lambda: metric(api, "readmission_prediction_log_written_total") == 20,
            "the first predictions to be written",
        )
        stop(proxy)  # the warehouse is gone
        with ThreadPoolExecutor(8) as pool, httpx.Client(base_url=api.url, timeout=30) as client:
            during = list(
                pool.map(lambda e: client.post("/predict", json=e).status_code, requests[20:300])
            )
        api.wait_until(
            lambda: metric(api, "readmission_prediction_log_up") == 0, "the failed write"
        )
        dropped = metric(api, "readmission_prediction_log_dropped_total")
        with tcp_proxy(port, database.host or "127.0.0.1", database.port or 5432):
            api.wait_until(
                lambda: (
                    metric(api, "readmission_prediction_log_up") == 1
                    and metric(api, "readmission_prediction_log_buffered") == 0
                ),
                "logging to resume",
            )
            after = [api.post("/predict", json=e).status_code for e in requests[300:]]
            api.wait_until(
                lambda: (
                    metric(api, "readmission_prediction_log_buffered") == 0
                    and metric(api, "readmission_prediction_log_written_total")
                    == 20 + buffer + len(after)
                ),
                "the last predictions to be written",
            )
            stored = set(logged(settings)["encounter_id"])

    assert set(before + during + after) == {200}
    assert dropped == len(during) - buffer
    ids = [e["encounter_id"] for e in requests]
    # Everything before and after the outage, and what the buffer held of the outage's traffic.
    assert stored >= {*ids[:20], *ids[300:]}
    assert len(stored & set(ids[20:300])) == buffer
    assert len(stored) == 20 + buffer + len(after)
