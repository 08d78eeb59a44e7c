"""The registry read over MLflow's REST API (a tracking server) and through MLflow's client (a
local store) gives the same versions, production version and compared holdout."""

from __future__ import annotations

import subprocess
import uuid
import warnings
from collections.abc import Callable
from pathlib import Path

import pytest
from mlflow import MlflowClient

from readmission import registry, registry_reader
from readmission.config import Settings

from ..conftest import BIN, free_port, platform_env, service_env


def populate(settings: Settings) -> None:
    """Three versions of MODEL_NAME: v1 in the legacy stage Production with two values of one
    metric, v2 under the production alias and rolled-back tag, v3 under the shadow alias."""
    client = registry.connect(settings)
    experiment = client.create_experiment(f"reader-{uuid.uuid4().hex[:8]}")
    client.create_registered_model(settings.model_name)
    for number in (1, 2, 3):
        run = client.create_run(experiment).info.run_id
        client.log_metric(run, "holdout_roc_auc", 0.5 + number / 100, step=0)
        client.log_metric(run, "holdout_roc_auc", 0.6 + number / 100, step=1)  # the latest
        client.log_metric(run, "holdout_log_loss", 0.4)
        client.set_terminated(run)
        client.create_model_version(
            settings.model_name,
            f"runs:/{run}/model",
            run_id=run,
            tags={
                "batch_id": str(number),
                "parent_version": str(number - 1) if number > 1 else "",
                registry_reader.holdout_auc_tag("abc"): str(0.7 + number / 100),
            },
        )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)  # stages are deprecated, still read
        client.transition_model_version_stage(settings.model_name, "1", "Production")
    client.set_registered_model_alias(settings.model_name, settings.model_alias, "2")
    client.set_registered_model_alias(settings.model_name, settings.shadow_alias, "3")
    client.set_model_version_tag(settings.model_name, "2", registry_reader.ROLLED_BACK_TAG, "1")
    client.set_registered_model_tag(
        settings.model_name, registry_reader.COMPARED_HOLDOUT_TAG, "abc"
    )


@pytest.fixture
def served(configure: Callable[..., Settings], mlflow_server: str) -> Settings:
    """MODEL_NAME of this test's own on the real MLflow server, read over REST."""
    return configure(MLFLOW_TRACKING_URI=mlflow_server, MODEL_NAME=f"reader-{uuid.uuid4().hex[:8]}")


@pytest.fixture
def stored(configure: Callable[..., Settings], tmp_path: Path) -> Settings:
    """MODEL_NAME of this test's own in a local SQLite store, read through MLflow's client (no
    process: this variant runs in `make test-fast`)."""
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    return configure(MLFLOW_TRACKING_URI=uri, MODEL_NAME=f"reader-{uuid.uuid4().hex[:8]}")


# Each check runs over REST (slow: the server is a process) and in a local store, as two tests:
# the slow guard judges a fixture by its name, so one fixture that starts the server for one
# parameter would mark the other parameter as starting it too.


def versions_production_and_compared_holdout_as_registered(settings: Settings) -> None:
    populate(settings)
    summaries = registry_reader.version_summaries(settings)
    assert [v.version for v in summaries] == ["1", "2", "3"]
    assert [v.aliases for v in summaries] == [[], [settings.model_alias], [settings.shadow_alias]]
    assert [v.stage for v in summaries] == ["Production", "None", "None"]
    assert [v.parent_version for v in summaries] == ["", "1", "2"]
    assert [v.batch_id for v in summaries] == ["1", "2", "3"]
    # The run's latest value of each metric, as MLflow's client reports it.
    assert [v.metrics for v in summaries] == [
        {"holdout_roc_auc": pytest.approx(0.6 + n / 100), "holdout_log_loss": 0.4}
        for n in (1, 2, 3)
    ]
    client = MlflowClient(settings.tracking_uri, settings.tracking_uri)
    assert [v.run_id for v in summaries] == [
        client.get_model_version(settings.model_name, n).run_id for n in ("1", "2", "3")
    ]
    assert summaries[1].tags[registry_reader.ROLLED_BACK_TAG] == "1"
    assert [v.roc_auc_on("abc") for v in summaries] == [
        pytest.approx(0.7 + n / 100) for n in (1, 2, 3)
    ]
    assert summaries[0].roc_auc_on("another") is None
    assert registry_reader.compared_holdout(settings) == "abc"
    # The alias wins over the legacy stage; the entity writers get is the same version.
    assert registry_reader.production_version(settings) == "2"
    production = registry.production_version(settings)
    assert production is not None and str(production.version) == "2"

    client.delete_registered_model_alias(settings.model_name, settings.model_alias)
    assert registry_reader.production_version(settings) == "1"  # the newest in the stage


def a_model_not_registered_reads_as_empty(settings: Settings) -> None:
    assert registry_reader.version_summaries(settings) == []
    assert registry_reader.production_version(settings) is None
    assert registry_reader.compared_holdout(settings) is None
    assert registry.production_version(settings) is None


@pytest.mark.slow
def test_versions_production_and_compared_holdout_as_registered_over_rest(
    served: Settings,
) -> None:
    versions_production_and_compared_holdout_as_registered(served)


def test_versions_production_and_compared_holdout_as_registered_in_a_store(
    stored: Settings,
) -> None:
    versions_production_and_compared_holdout_as_registered(stored)


@pytest.mark.slow
def test_a_model_not_registered_reads_as_empty_over_rest(served: Settings) -> None:
    a_model_not_registered_reads_as_empty(served)


def test_a_model_not_registered_reads_as_empty_in_a_store(stored: Settings) -> None:
    a_model_not_registered_reads_as_empty(stored)


@pytest.mark.slow
def test_an_unreachable_server_is_a_clear_error_at_once(configure: Callable[..., Settings]) -> None:
    uri = f"http://127.0.0.1:{free_port()}"  # nothing listens there
    settings = configure(MLFLOW_TRACKING_URI=uri)
    # Not retried: MLflow's own client retries a refused connection for minutes.
    with pytest.raises(registry_reader.RegistryError, match=f"{uri}/api/2.0/mlflow/.*did not"):
        registry_reader.version_summaries(settings)
    done = subprocess.run(
        [str(BIN / "readmission"), "status"],
        env=service_env(**platform_env()),
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 2 and "MLflow did not answer" in done.stderr, done.stderr
    assert "Traceback" not in done.stderr
