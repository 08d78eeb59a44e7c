"""GET /model, POST /model/reload and GET /metrics against bin/api."""

from __future__ import annotations

import math
from pathlib import Path

import pytest

from readmission import registry
from readmission.config import Settings
from readmission.data.dataset import synthetic_sample
from readmission.data.validation import validate
from readmission.schema import TARGET, example_encounter
from tests.api.conftest import SERVED_VERSION
from tests.api.serving import (
    DRIFT_MIN_REQUESTS,
    MAX_BATCH_ROWS,
    RELOAD_TOKEN,
    Api,
    AppApi,
    app_api,
    running_api,
    scrape,
)
from tests.conftest import copy_lineage

pytestmark = pytest.mark.slow

CONTRACT_SAMPLES = {
    "http_requests_total": {"handler", "method", "status"},
    "http_request_duration_seconds_bucket": {"handler", "method", "le"},
    "http_requests_inprogress": {"handler", "method"},
    "readmission_predictions_total": {"label"},
    "readmission_prediction_probability_bucket": {"le"},
    "readmission_model_info": {"name", "version", "alias", "run_id"},
    "readmission_model_version": set(),
    "readmission_model_loaded": set(),
    "readmission_model_load_failures_total": set(),
    "readmission_model_load_failing": set(),
    "readmission_model_reloads_total": set(),
    "readmission_registry_up": set(),
    "readmission_model_last_reload_timestamp_seconds": set(),
    "readmission_model_registered_timestamp_seconds": set(),
    "readmission_batch_rows_bucket": {"le"},
    "readmission_validation_errors_total": {"field"},
    "readmission_feature_psi": {"feature"},
    "readmission_drift_window_requests": set(),
    "readmission_drift_min_requests": set(),
}


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def test_model_describes_the_served_version_and_the_registry_state(served_api: Api) -> None:
    body = served_api.get("/model").json()

    assert body["name"] == served_api.settings.model_name
    assert (body["version"], body["alias"], body["stage"]) == (
        SERVED_VERSION,
        "production",
        "Production",
    )
    assert body["run_id"] and body["loaded_at"]
    assert body["metrics"]["samples_seen"] == 1000
    assert {"holdout_roc_auc", "holdout_log_loss", "threshold"} <= set(body["metrics"])
    assert body["registry_reachable"] is True
    assert (body["load_failures"], body["last_error"]) == (0, None)
    assert body["reloads"] == 1


def test_reload_requires_the_configured_bearer_token(served_api: Api) -> None:
    missing = served_api.post("/model/reload")
    wrong = served_api.post("/model/reload", headers=bearer(RELOAD_TOKEN + "x"))
    basic = served_api.post("/model/reload", headers={"Authorization": "Basic dXNlcjpwYXNz"})
    right = served_api.post("/model/reload", headers=bearer(RELOAD_TOKEN))

    assert [r.status_code for r in (missing, wrong, basic)] == [401, 401, 401]
    assert missing.headers["WWW-Authenticate"] == "Bearer"
    assert "token" in wrong.json()["detail"]
    assert right.status_code == 200
    assert right.json()["version"] == SERVED_VERSION and right.json()["registry_reachable"]


def test_reload_picks_up_a_promotion_before_the_next_poll(
    trained_lineage: Settings, tmp_path: Path
) -> None:
    settings = copy_lineage(trained_lineage, versions=2)
    registry.promote(settings, 1)
    with running_api(settings, tmp_path, MODEL_POLL_SECONDS="3600") as api:
        api.wait_until(lambda: api.get("/ready").status_code == 200, "version 1 to be served")
        registry.promote(settings, 2)
        before = api.served_version()
        reloaded = api.post("/model/reload", headers=bearer(RELOAD_TOKEN)).json()
        predicted = api.post("/predict", json=example_encounter()).json()

    assert before == "1"
    assert reloaded["version"] == "2" and reloaded["reloads"] == 2
    assert predicted["model_version"] == "2"


def test_metrics_expose_every_metric_of_the_contract(served_api: Api) -> None:
    served_api.post(
        "/predict/batch",
        json={"encounters": traffic(2 * DRIFT_MIN_REQUESTS, seed=5)[:DRIFT_MIN_REQUESTS]},
    )
    served_api.post("/model/reload", headers=bearer(RELOAD_TOKEN))
    served_api.post("/predict", json={**example_encounter(), "number_inpatient": 6})
    served_api.post("/predict", json={**example_encounter(), "age": "old"})
    served_api.post("/predict/batch", json={"encounters": [example_encounter()] * 3})
    samples = scrape(served_api)

    for name, labels in CONTRACT_SAMPLES.items():
        assert name in samples, f"{name} is not exported"
        assert all(set(found) == labels for found, _ in samples[name]), (name, samples[name])
    value = {name: found[0][1] for name, found in samples.items() if len(found) == 1}
    assert value["readmission_model_version"] == int(SERVED_VERSION)
    assert value["readmission_model_loaded"] == value["readmission_registry_up"] == 1
    assert value["readmission_model_reloads_total"] == 1
    assert value["readmission_model_load_failures_total"] == 0
    assert value["readmission_model_last_reload_timestamp_seconds"] > 1.7e9
    ((info_labels, _),) = samples["readmission_model_info"]
    assert info_labels["version"] == SERVED_VERSION and info_labels["alias"] == "production"
    assert {labels["label"] for labels, _ in samples["readmission_predictions_total"]} == {
        "readmit",
        "no_readmit",
    }
    errors = {
        labels["field"]: value for labels, value in samples["readmission_validation_errors_total"]
    }
    assert errors["age"] >= 1
    requests = {
        (labels["handler"], labels["method"], labels["status"]): value
        for labels, value in samples["http_requests_total"]
    }
    assert requests[("/predict", "POST", "422")] >= 1
    assert requests[("/predict/batch", "POST", "200")] >= 1


def traffic(rows: int, seed: int, **override: object) -> list[dict[str, object]]:
    clean = validate(synthetic_sample(rows, seed)).clean.drop(columns=[TARGET])
    return [{**e, **override} for e in clean.to_dict("records")]


def psi(api: Api, encounters: list[dict[str, object]]) -> dict[str, float]:
    """Send `encounters` (filling the API's drift window) and read the PSI per feature."""
    for start in range(0, len(encounters), MAX_BATCH_ROWS):
        batch = encounters[start : start + MAX_BATCH_ROWS]
        assert api.post("/predict/batch", json={"encounters": batch}).status_code == 200
    return {labels["feature"]: value for labels, value in scrape(api)["readmission_feature_psi"]}


def test_feature_psi_is_low_for_training_like_traffic_and_high_for_shifted_inputs(
    served_api: Api,
) -> None:
    window = 500  # DRIFT_WINDOW of the test API
    usual = psi(served_api, traffic(window, seed=123))
    shifted = psi(served_api, traffic(window, seed=321, age="[90-100)", A1Cresult=">8"))

    assert {
        "age",
        "race",
        "gender",
        "admission_type_id",
        "A1Cresult",
        "insulin",
        "number_inpatient_bin",
        "diag_1_group",
        "time_in_hospital_bin",
    } <= set(usual)
    assert "diag_1_category" not in usual  # 1,300 levels: too many for the window
    assert all(v >= 0 and math.isfinite(v) for v in usual.values())
    assert usual["age"] < 0.1 and usual["A1Cresult"] < 0.1
    assert shifted["age"] > 1 and shifted["A1Cresult"] > 1
    assert shifted["race"] < 0.1


def drift_window(api: Api | AppApi) -> tuple[float, dict[str, float]]:
    samples = scrape(api)
    ((_, size),) = samples["readmission_drift_window_requests"]
    psi = {labels["feature"]: value for labels, value in samples.get("readmission_feature_psi", [])}
    return size, psi


def test_psi_is_exported_once_the_window_holds_the_minimum_and_old_requests_age_out(
    trained_lineage: Settings, tmp_path: Path
) -> None:
    settings = copy_lineage(trained_lineage, versions=1)
    registry.promote(settings, 1)
    encounters = traffic(80, seed=11)[:50]
    env = {"DRIFT_MIN_REQUESTS": "50", "DRIFT_MAX_AGE_SECONDS": "3"}
    with app_api(settings, tmp_path, **env) as api:  # the drift window is the app's
        api.wait_until(lambda: api.served_version() == "1", "version 1 to be served")
        api.post("/predict/batch", json={"encounters": encounters[:49]})
        short = drift_window(api)
        api.post("/predict", json=encounters[49])
        full = drift_window(api)
        aged = api.wait_until(lambda: (w := drift_window(api))[0] == 0 and w, "requests to age out")

    assert short == (49, {})
    assert full[0] == 50 and {"age", "race", "A1Cresult"} <= set(full[1])
    assert aged == (0, {})
