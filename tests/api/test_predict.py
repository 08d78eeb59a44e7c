"""POST /predict and /predict/batch serving a registered version: through bin/api where the
server is the point (scoring over HTTP, body limits while reading), in process for the rest."""

from __future__ import annotations

import json
import math
from collections.abc import Iterator
from typing import Any

import pytest

from readmission import registry
from readmission.config import MAX_BATCH_ROWS_CEILING, Settings
from readmission.data.dataset import synthetic_sample
from readmission.data.validation import validate
from readmission.schema import FEATURES, TARGET, Encounter, allowed, example_encounter
from readmission.scoring import CompiledScorer
from tests.api.conftest import SERVED_VERSION
from tests.api.serving import MAX_BATCH_ROWS, Api, AppApi

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def encounters() -> list[dict[str, Any]]:
    clean = validate(synthetic_sample(40, seed=99)).clean
    return clean.drop(columns=[TARGET]).to_dict("records")


@pytest.fixture(scope="module")
def scorer(trained_lineage: Settings) -> CompiledScorer:
    """The served version compiled here, from the registry, independently of the API (both
    serve a copy of it)."""
    return CompiledScorer(registry.load_readmission_model(trained_lineage, SERVED_VERSION))


def record(encounter: dict[str, Any]) -> dict[str, Any]:
    return Encounter.model_validate(encounter).to_record()


def test_predict_scores_like_the_registered_version_with_band_relative_to_its_threshold(
    served_api: Api, encounters: list[dict[str, Any]], scorer: CompiledScorer
) -> None:
    bands = set()
    for encounter in encounters:
        body = served_api.post("/predict", json=encounter).json()
        expected = scorer.probability(record(encounter))
        t = scorer.threshold

        assert abs(body["probability"] - expected) < 1e-9
        assert body["encounter_id"] == encounter["encounter_id"]
        assert body["threshold"] == pytest.approx(t)
        assert body["readmitted_within_30d"] is (expected >= t)
        assert body["risk_band"] == (
            "high" if expected >= t else "medium" if expected >= t / 2 else "low"
        )
        assert (body["model_name"], body["model_version"]) == (
            served_api.settings.model_name,
            SERVED_VERSION,
        )
        assert "contributions" not in body
        bands.add(body["risk_band"])
    assert len(bands) >= 2, "the sample should reach more than one risk band"


def test_explain_names_encounter_fields_whose_shares_add_up_to_the_log_odds(
    in_process_api: AppApi, scorer: CompiledScorer
) -> None:
    encounter = {**example_encounter(), "number_inpatient": 5, "discharge_disposition_id": 3}
    body = in_process_api.post("/predict", params={"explain": "true"}, json=encounter).json()
    shares = body["contributions"]

    assert {c["field"] for c in shares} <= set(FEATURES)
    assert all(c["value"] == str(encounter[c["field"]]) and c["logit"] != 0 for c in shares)
    magnitudes = [abs(c["logit"]) for c in shares]
    assert magnitudes == sorted(magnitudes, reverse=True)
    assert abs(body["intercept"] + sum(c["logit"] for c in shares) - body["log_odds"]) < 1e-9
    assert body["log_odds"] == pytest.approx(scorer.logit(record(encounter)), abs=1e-12)
    assert 1 / (1 + math.exp(-body["log_odds"])) == pytest.approx(body["probability"], abs=1e-12)
    assert {"number_inpatient", "discharge_disposition_id"} <= {c["field"] for c in shares}
    assert "feature_contributions" not in body


def test_the_per_feature_detail_is_available_on_request(
    in_process_api: AppApi, scorer: CompiledScorer
) -> None:
    encounter = {**example_encounter(), "number_inpatient": 5}
    body = in_process_api.post(
        "/predict", params={"explain": "true", "by_feature": "true"}, json=encounter
    ).json()
    expected = scorer.feature_contributions(record(encounter))

    assert [(c["feature"], c["value"]) for c in body["feature_contributions"]] == [
        (c.feature, c.value) for c in expected
    ]
    total = body["intercept"] + sum(c["logit"] for c in body["feature_contributions"])
    assert abs(total - body["log_odds"]) < 1e-9


def test_batch_scores_every_encounter_like_single_requests(
    in_process_api: AppApi, encounters: list[dict[str, Any]], scorer: CompiledScorer
) -> None:
    body = in_process_api.post("/predict/batch", json={"encounters": encounters}).json()

    assert body["count"] == len(encounters) == len(body["predictions"])
    assert body["model_version"] == SERVED_VERSION
    assert [p["encounter_id"] for p in body["predictions"]] == [
        e["encounter_id"] for e in encounters
    ]
    for prediction, encounter in zip(body["predictions"], encounters, strict=True):
        assert abs(prediction["probability"] - scorer.probability(record(encounter))) < 1e-9


def test_hyphenated_columns_are_accepted_by_their_data_set_names(in_process_api: AppApi) -> None:
    encounter = {**example_encounter(), "glyburide-metformin": "Up", "insulin": "Down"}
    response = in_process_api.post("/predict", json=encounter)
    assert response.status_code == 200


@pytest.mark.parametrize(
    ("change", "field", "column"),
    [
        ({"age": "[100-110)"}, "age", "age"),
        ({"time_in_hospital": 15}, "time_in_hospital", "time_in_hospital"),
        ({"glyburide-metformin": "Sometimes"}, "glyburide-metformin", "glyburide-metformin"),
        ({"diag_1": "not-a-code"}, "diag_1", "diag_1"),
        ({"num_medications": "many"}, "num_medications", "num_medications"),
    ],
)
def test_an_invalid_field_gets_422_naming_it_and_what_it_accepts(
    in_process_api: AppApi, change: dict[str, Any], field: str, column: str
) -> None:
    response = in_process_api.post("/predict", json={**example_encounter(), **change})

    assert response.status_code == 422
    (problem,) = response.json()["detail"]
    assert problem["field"] == field
    assert problem["allowed"] == allowed(column)
    assert problem["problem"]


def test_missing_and_unknown_fields_are_named(in_process_api: AppApi) -> None:
    encounter = {**example_encounter(), "blood_type": "A+"}
    del encounter["gender"]
    problems = in_process_api.post("/predict", json=encounter).json()["detail"]

    assert {p["field"]: p["problem"] for p in problems} == {
        "gender": "Field required",
        "blood_type": "unknown field",
    }


def test_a_bad_encounter_in_a_batch_is_named_by_its_position(in_process_api: AppApi) -> None:
    batch = [example_encounter(), {**example_encounter(), "gender": "Unknown"}]
    response = in_process_api.post("/predict/batch", json={"encounters": batch})

    assert response.status_code == 422
    assert [p["field"] for p in response.json()["detail"]] == ["encounters[1].gender"]


def test_malformed_json_gets_422_not_500(in_process_api: AppApi) -> None:
    response = in_process_api.post(
        "/predict", content=b'{"age": ', headers={"Content-Type": "application/json"}
    )
    assert response.status_code == 422
    assert response.json()["detail"][0]["field"] == "body"


def test_a_batch_over_the_limit_gets_413_stating_the_limit(in_process_api: AppApi) -> None:
    batch = [example_encounter()] * (MAX_BATCH_ROWS + 1)
    response = in_process_api.post("/predict/batch", json={"encounters": batch})

    assert response.status_code == 413
    assert f"limit of {MAX_BATCH_ROWS}" in response.json()["detail"]
    assert "MAX_BATCH_ROWS" in response.json()["detail"]
    full = in_process_api.post("/predict/batch", json={"encounters": batch[:MAX_BATCH_ROWS]})
    assert full.status_code == 200 and full.json()["count"] == MAX_BATCH_ROWS


@pytest.mark.parametrize("value", [True, "3", 3.5])
def test_integers_are_strict_and_the_422_names_the_field(
    in_process_api: AppApi, value: object
) -> None:
    response = in_process_api.post(
        "/predict", json={**example_encounter(), "time_in_hospital": value}
    )

    assert response.status_code == 422
    (problem,) = response.json()["detail"]
    assert problem["field"] == "time_in_hospital"
    assert problem["allowed"] == allowed("time_in_hospital")


def test_a_body_over_the_limit_gets_413_before_it_is_read(served_api: Api) -> None:
    limit = served_api.settings.model_copy(update={"max_batch_rows": MAX_BATCH_ROWS}).body_limit
    oversized = b'{"encounters": [' + b" " * limit + b"]}"
    response = served_api.post(
        "/predict/batch", content=oversized, headers={"Content-Type": "application/json"}
    )

    assert response.status_code == 413
    assert f"over the limit of {limit:,} bytes" in response.json()["detail"]
    assert "MAX_BATCH_ROWS" in response.json()["detail"]


def test_a_chunked_body_over_the_limit_gets_413_and_one_under_it_is_scored(
    served_api: Api,
) -> None:
    limit = served_api.settings.model_copy(update={"max_batch_rows": MAX_BATCH_ROWS}).body_limit

    def chunked(body: bytes) -> Iterator[bytes]:  # a generator: httpx sends it chunked
        for start in range(0, len(body), 65536):
            yield body[start : start + 65536]

    endless = b'{"encounters": [' + b" " * (4 * limit) + b"]}"
    small = json.dumps({"encounters": [example_encounter()] * 3}).encode()
    over = served_api.post(
        "/predict/batch", content=chunked(endless), headers={"Content-Type": "application/json"}
    )
    under = served_api.post(
        "/predict/batch", content=chunked(small), headers={"Content-Type": "application/json"}
    )

    assert over.status_code == 413 and "over the limit" in over.json()["detail"]
    assert under.status_code == 200 and under.json()["count"] == 3


def test_the_batch_list_is_bounded_in_the_schema(in_process_api: AppApi) -> None:
    schema = in_process_api.get("/openapi.json").json()["components"]["schemas"]["BatchRequest"]
    # The served limit (MAX_BATCH_ROWS), not the ceiling any setting may reach: beyond it, 413.
    assert schema["properties"]["encounters"]["maxItems"] == MAX_BATCH_ROWS < MAX_BATCH_ROWS_CEILING
