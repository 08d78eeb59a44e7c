"""What the API does when the registry or a model version lets it down: it stays up, keeps the
model it has, and says what went wrong (under load: tests/load)."""

from __future__ import annotations

from pathlib import Path

from readmission import registry
from readmission.config import Settings
from readmission.schema import example_encounter
from tests.api.serving import copy_lineage, running_api
from tests.conftest import free_port


def test_with_the_registry_down_at_start_the_api_is_live_but_not_ready(
    trained_lineage: Settings, tmp_path: Path
) -> None:
    nobody = f"http://127.0.0.1:{free_port()}"  # nothing listens there
    settings = trained_lineage.model_copy(update={"mlflow_tracking_uri": nobody})
    with running_api(settings, tmp_path) as api:
        ready = api.wait_until(
            lambda: (
                (r := api.get("/ready")).json()["reason"]
                != ("starting: the production model is being looked up in the registry")
                and r
            ),
            "the first registry check",
        )
        health, predicted, model = (
            api.get("/health"),
            api.post("/predict", json=example_encounter()),
            api.get("/model"),
        )
        metrics = api.get("/metrics").text.splitlines()

    assert health.status_code == 200
    assert ready.status_code == 503 and "model registry unreachable" in ready.json()["reason"]
    assert predicted.status_code == 503
    assert "model registry unreachable" in predicted.json()["detail"]
    assert model.status_code == 503
    assert (model.json()["version"], model.json()["registry_reachable"]) == (None, False)
    assert "readmission_registry_up 0.0" in metrics
    assert "readmission_model_loaded 0.0" in metrics


def test_a_version_that_fails_to_load_is_counted_and_the_current_one_keeps_serving(
    trained_lineage: Settings, tmp_path: Path
) -> None:
    settings = copy_lineage(trained_lineage, versions=1)
    registry.promote(settings, 1)
    with running_api(settings, tmp_path) as api:
        api.wait_until(lambda: api.served_version() == "1", "version 1 to be served")
        client = registry.connect(settings)
        run_id = client.get_model_version(settings.model_name, "1").run_id
        broken = client.create_model_version(
            settings.model_name, source=f"runs:/{run_id}/plots", run_id=run_id
        )  # the run's plots: not a model
        registry.promote(settings, broken.version)
        model = api.wait_until(
            lambda: (m := api.get("/model").json())["load_failures"] and m,
            "the failed load to be reported",
        )
        predicted = api.post("/predict", json=example_encounter())
        metrics = api.get("/metrics").text.splitlines()

    assert (model["version"], model["registry_reachable"]) == ("1", True)
    assert model["last_error"].startswith(f"version {broken.version} was not loaded")
    assert predicted.status_code == 200 and predicted.json()["model_version"] == "1"
    assert "readmission_model_version 1.0" in metrics
    assert any(
        line.startswith("readmission_model_load_failures_total ") and float(line.split()[1]) >= 1
        for line in metrics
    )
