"""The UI's API client against the real API (bin/api), and against an address nobody serves."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from readmission.config import Settings
from readmission.schema import FEATURES, example_encounter
from streamlit_ui.api_client import (
    ApiClient,
    ApiUnavailable,
    BatchTooLarge,
    InvalidEncounter,
    NoModelPromoted,
)
from tests.ui.conftest import MAX_BATCH_ROWS, PRODUCTION_VERSION


def test_the_address_comes_from_api_url(ui_against: Callable[[str], Settings]) -> None:
    ui_against("http://127.0.0.1:8123/")
    assert ApiClient().base_url == "http://127.0.0.1:8123"


def test_an_address_where_nothing_listens_is_reported_as_unavailable(down_api_url: str) -> None:
    with pytest.raises(ApiUnavailable, match=f"The API at {down_api_url} does not answer"):
        ApiClient(down_api_url).ready()


@pytest.mark.slow
def test_a_prediction_carries_the_served_version_and_its_explanation(served_url: str) -> None:
    answer = ApiClient(served_url).predict(example_encounter(), explain=True)

    assert answer["model_version"] == PRODUCTION_VERSION
    assert 0 < answer["probability"] < 1
    fields = [c["field"] for c in answer["contributions"]]
    assert fields and set(fields) <= set(FEATURES)
    total = answer["intercept"] + sum(c["logit"] for c in answer["contributions"])
    assert abs(total - answer["log_odds"]) < 1e-9


@pytest.mark.slow
def test_a_rejected_encounter_names_the_field_and_what_it_accepts(served_url: str) -> None:
    with pytest.raises(InvalidEncounter) as raised:
        ApiClient(served_url).predict({**example_encounter(), "time_in_hospital": 40})

    assert str(raised.value).startswith("time_in_hospital: ")
    assert "(allowed: an integer from 1 to 14)" in str(raised.value)


@pytest.mark.slow
def test_many_encounters_are_sent_in_chunks_under_the_apis_limit(served_url: str) -> None:
    client = ApiClient(served_url)
    encounters = [
        {**example_encounter(), "encounter_id": n, "number_inpatient": n % 5}
        for n in range(1, 2 * MAX_BATCH_ROWS + 4)
    ]

    with pytest.raises(BatchTooLarge, match=f"over the limit of {MAX_BATCH_ROWS}"):
        client.predict_batch(encounters)
    predictions = client.predict_many(encounters, MAX_BATCH_ROWS)

    assert [p["encounter_id"] for p in predictions] == [e["encounter_id"] for e in encounters]
    single = client.predict(encounters[-1])
    assert predictions[-1]["probability"] == pytest.approx(single["probability"])


@pytest.mark.slow
def test_an_api_without_a_promoted_model_says_so_on_every_model_call(idle_url: str) -> None:
    client = ApiClient(idle_url)

    assert client.ready()["ready"] is False
    for call in (
        lambda: client.predict(example_encounter()),
        client.model,
        lambda: client.predict_batch([example_encounter()]),
    ):
        with pytest.raises(NoModelPromoted, match="readmission promote"):
            call()
    assert client.history()["versions"] == []
