"""What the API does when the registry or a model version lets it down: it stays up, keeps the
model it has, and says what went wrong (under load: tests/load)."""

from __future__ import annotations

import re
import warnings
from pathlib import Path

import pytest

from readmission import registry
from readmission.config import Settings
from readmission.processes import free_port
from readmission.schema import example_encounter
from tests.api.serving import RELOAD_TOKEN, Api, running_api
from tests.api.unplug import Unpluggable
from tests.conftest import copy_lineage


@pytest.mark.slow
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


@pytest.mark.slow
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


def withdraw(settings: Settings) -> None:
    """Take the production version out of service: no alias, no stage Production."""
    client = registry.connect(settings)
    version = client.get_model_version_by_alias(settings.model_name, settings.model_alias)
    client.delete_registered_model_alias(settings.model_name, settings.model_alias)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)  # stages are deprecated, still honoured
        client.transition_model_version_stage(settings.model_name, version.version, "Archived")


@pytest.mark.slow
def test_a_withdrawn_model_stops_serving_and_a_promotion_brings_serving_back(
    trained_lineage: Settings, tmp_path: Path
) -> None:
    settings = copy_lineage(trained_lineage, versions=1)
    registry.promote(settings, 1)
    with running_api(settings, tmp_path) as api:
        api.wait_until(lambda: api.served_version() == "1", "version 1 to be served")
        withdraw(settings)
        ready = api.wait_until(
            lambda: (r := api.get("/ready")).status_code == 503 and r, "the withdrawal"
        )
        predicted, model = api.post("/predict", json=example_encounter()), api.get("/model")
        metrics = api.get("/metrics").text.splitlines()
        registry.promote(settings, 1)
        api.wait_until(lambda: api.get("/ready").status_code == 200, "serving to resume")
        resumed = api.post("/predict", json=example_encounter())

    assert "version 1" in ready.json()["reason"] and "withdrawn" in ready.json()["reason"]
    assert predicted.status_code == 503
    assert "withdrawn" in predicted.json()["detail"]
    assert "readmission promote VERSION" in predicted.json()["detail"]
    assert model.status_code == 503
    assert (model.json()["version"], model.json()["registry_reachable"]) == (None, True)
    assert "readmission_model_loaded 0.0" in metrics
    assert not any(line.startswith("readmission_model_info{") for line in metrics)
    assert resumed.status_code == 200 and resumed.json()["model_version"] == "1"


@pytest.mark.slow
def test_with_the_registry_unreachable_the_current_model_keeps_serving_and_says_so(
    trained_lineage: Settings, tmp_path: Path
) -> None:
    settings = copy_lineage(trained_lineage, versions=1)
    registry.promote(settings, 1)
    cable = Unpluggable(settings.tracking_uri)
    cable.plug()
    behind = settings.model_copy(update={"mlflow_tracking_uri": cable.url})
    try:
        with running_api(behind, tmp_path) as api:
            api.wait_until(lambda: api.served_version() == "1", "version 1 to be served")
            cable.unplug()
            model = api.wait_until(
                lambda: not (m := api.get("/model").json())["registry_reachable"] and m,
                "the registry check to fail",
            )
            ready, predicted = api.get("/ready"), api.post("/predict", json=example_encounter())
            metrics = api.get("/metrics").text.splitlines()
            cable.plug()
            api.wait_until(
                lambda: api.get("/model").json()["registry_reachable"], "the registry to return"
            )
            after = api.get("/model").json()
    finally:
        cable.unplug()

    assert model["version"] == "1"
    assert "fail static" in model["last_error"] and "unreachable" in model["last_error"]
    assert ready.status_code == 200
    assert predicted.status_code == 200 and predicted.json()["model_version"] == "1"
    assert "readmission_registry_up 0.0" in metrics and "readmission_model_loaded 1.0" in metrics
    assert (after["version"], after["last_error"]) == ("1", None)


def promote_broken_version(settings: Settings) -> str:
    """Register the run's plots as a version (artifacts that are not a model) and promote it."""
    client = registry.connect(settings)
    run_id = client.get_model_version(settings.model_name, "1").run_id
    broken = client.create_model_version(
        settings.model_name, source=f"runs:/{run_id}/plots", run_id=run_id
    )
    registry.promote(settings, broken.version)
    return str(broken.version)


@pytest.mark.slow
def test_a_version_that_fails_to_load_is_retried_with_capped_exponential_back_off(
    trained_lineage: Settings, tmp_path: Path
) -> None:
    settings = copy_lineage(trained_lineage, versions=1)
    registry.promote(settings, 1)
    with running_api(
        settings, tmp_path, MODEL_POLL_SECONDS="0.5", MODEL_RETRY_MAX_SECONDS="2"
    ) as api:
        api.wait_until(lambda: api.served_version() == "1", "version 1 to be served")
        broken = promote_broken_version(settings)
        seen: dict[int, float] = {}

        def attempts() -> bool:
            error = api.get("/model").json()["last_error"] or ""
            if match := re.search(r"\((\d+) attempts?, next in ([\d.]+) s\)", error):
                seen[int(match.group(1))] = float(match.group(2))
            return max(seen, default=0) >= 4

        api.wait_until(attempts, "a fourth load attempt")
        model = api.get("/model").json()
        metrics = api.get("/metrics").text.splitlines()

    assert model["version"] == "1" and model["last_error"].startswith(f"version {broken} ")
    assert seen == {n: min(0.5 * 2**n, 2.0) for n in seen}  # poll x 2^attempts, capped
    assert "readmission_model_load_failing 1.0" in metrics


def disk_usage(directory: Path) -> int:
    return sum(f.stat().st_size for f in directory.rglob("*") if f.is_file())


@pytest.mark.slow
def test_failed_loads_and_swaps_leave_the_temporary_directory_as_it_was(
    trained_lineage: Settings, tmp_path: Path
) -> None:
    """Artifacts come through the MLflow server's proxy (mlflow-artifacts:), as in production."""
    settings = copy_lineage(trained_lineage, versions=2)
    registry.promote(settings, 1)
    temporary = tmp_path / "tmp"
    temporary.mkdir()
    reload = {"headers": {"Authorization": f"Bearer {RELOAD_TOKEN}"}}

    def reload_now(api: Api) -> dict:
        return api.post("/model/reload", **reload).json()

    with running_api(settings, tmp_path, TMPDIR=str(temporary), MODEL_POLL_SECONDS="3600") as api:
        api.wait_until(lambda: api.served_version() == "1", "version 1 to be served")
        before = disk_usage(temporary), sorted(temporary.iterdir())
        broken = promote_broken_version(settings)
        failed = [reload_now(api) for _ in range(50)]
        swaps = []
        for swap in range(20):
            registry.promote(settings, 2 - swap % 2)
            swaps.append(reload_now(api))
        after = disk_usage(temporary), sorted(temporary.iterdir())

    assert all(
        f["version"] == "1" and f["last_error"].startswith(f"version {broken} ") for f in failed
    )
    assert failed[-1]["load_failures"] == 50
    assert [s["version"] for s in swaps] == [str(2 - i % 2) for i in range(20)]
    assert after == before
