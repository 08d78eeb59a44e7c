"""The API follows the registry: nothing to serve, then each promoted version, without restart."""

from __future__ import annotations

from collections.abc import Iterator

import pandas as pd
import pytest

from readmission import registry
from readmission.config import Settings
from readmission.schema import Encounter, example_encounter
from tests.api.serving import RELOAD_TOKEN, Api, running_api
from tests.conftest import copy_lineage

pytestmark = pytest.mark.slow

HIGH_RISK = {**example_encounter(), "number_inpatient": 4, "age": "[80-90)", "encounter_id": 77}


@pytest.fixture(scope="module")
def unpromoted_api(
    trained_lineage: Settings, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Api]:
    """bin/api on two registered versions, none promoted, without API_RELOAD_TOKEN."""
    settings = copy_lineage(trained_lineage, versions=2)
    with running_api(settings, tmp_path_factory.mktemp("api"), API_RELOAD_TOKEN="") as api:
        api.wait_until(
            lambda: not api.get("/ready").json()["reason"].startswith("starting"),
            "the first registry check",
        )
        yield api


def registry_probability(settings: Settings, version: str, encounter: dict) -> float:
    """What the registered pyfunc (the training pipeline) predicts for one encounter."""
    frame = pd.DataFrame([Encounter.model_validate(encounter).to_record()])
    result = registry.load_pyfunc(settings, version).predict(frame)
    assert isinstance(result, pd.DataFrame)
    return float(result[registry.PROBABILITY_COLUMN].iloc[0])


def test_without_production_model_503_explains_how_to_promote_then_promotions_are_served(
    unpromoted_api: Api,
) -> None:
    api, settings = unpromoted_api, unpromoted_api.settings
    ready, unserved, model = (
        api.get("/ready"),
        api.post("/predict", json=HIGH_RISK),
        api.get("/model"),
    )
    health = api.get("/health")

    registry.promote(settings, 1)
    api.wait_until(lambda: api.get("/ready").status_code == 200, "version 1 to be served")
    first = api.post("/predict", json=HIGH_RISK).json()

    registry.promote(settings, 2)
    api.wait_until(lambda: api.served_version() == "2", "version 2 to be served")
    second = api.post("/predict", json=HIGH_RISK).json()
    served = api.get("/model").json()
    history = api.get("/model/history").json()
    card = api.get("/model/card").json()

    assert health.status_code == 200 and health.json() == {"status": "ok"}
    assert ready.status_code == 503 and ready.json()["ready"] is False
    assert unserved.status_code == 503
    assert "readmission promote VERSION" in unserved.json()["detail"]
    assert "alias 'production'" in unserved.json()["detail"]
    assert model.status_code == 503
    assert model.json()["version"] is None and model.json()["registry_reachable"] is True

    assert api.process.poll() is None, "the API must not restart to change versions"
    assert (first["model_version"], second["model_version"]) == ("1", "2")
    assert first["model_name"] == second["model_name"] == settings.model_name
    assert first["encounter_id"] == 77
    assert abs(first["probability"] - registry_probability(settings, "1", HIGH_RISK)) < 1e-9
    assert abs(second["probability"] - registry_probability(settings, "2", HIGH_RISK)) < 1e-9
    assert first["probability"] != second["probability"]
    assert served["reloads"] == 2 and served["alias"] == "production"
    assert served["stage"] == "Production" and served["metrics"]["samples_seen"] == 1000
    assert 0.5 < served["metrics"]["holdout_roc_auc"] <= 1

    assert history["production_version"] == "2"
    assert [v["version"] for v in history["versions"]] == ["1", "2"]
    assert [v["parent_version"] for v in history["versions"]] == [None, "1"]
    assert [v["batch_id"] for v in history["versions"]] == ["1", "2"]
    assert [v["samples_seen"] for v in history["versions"]] == [500, 1000]
    assert [v["aliases"] for v in history["versions"]] == [[], ["production"]]
    assert [v["stage"] for v in history["versions"]] == ["Archived", "Production"]
    # registry.promote is what the MLflow UI does: the API notices each change for the ledger
    promotions = history["promotions"]
    assert [(p["from_version"], p["to_version"]) for p in promotions] == [(None, "1"), ("1", "2")]
    assert all("outside the platform" in p["by"] for p in promotions)
    assert all("noticed by the serving API" in p["reason"] for p in promotions)
    assert [p["action"] for p in promotions] == ["outside", "outside"]
    assert all(p["delta_roc_auc"] is None and p["delta_roc_auc_ci"] is None for p in promotions)
    # No gate has scored the versions on one holdout yet: each AUC names its training day's.
    assert history["compared_holdout_fingerprint"] is None
    assert all(v["compared_roc_auc"] is None for v in history["versions"])
    assert all(v["holdout_fingerprint"] for v in history["versions"])

    assert card["model"]["version"] == "2"
    assert card["holdout"]["roc_auc_ci"][0] <= card["holdout"]["roc_auc"]
    assert card["threshold"]["value"] == pytest.approx(second["threshold"])


def test_reload_is_disabled_with_503_when_no_token_is_configured(unpromoted_api: Api) -> None:
    response = unpromoted_api.post(
        "/model/reload", headers={"Authorization": f"Bearer {RELOAD_TOKEN}"}
    )

    assert response.status_code == 503
    assert "API_RELOAD_TOKEN" in response.json()["detail"]
