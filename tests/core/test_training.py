"""Warm-start training against a real MLflow server (PostgreSQL backend, S3 artifacts)."""

from __future__ import annotations

import mlflow
import pandas as pd
import pytest

from readmission import registry, registry_reader, training
from readmission.config import Settings
from readmission.data import ingestion, lineage, tables, warehouse
from readmission.data.holdout import fingerprint
from readmission.features import CATEGORICAL, FeatureSpace, normalise
from readmission.model import ReadmissionModel
from readmission.scoring import CompiledScorer
from tests.conftest import copy_lineage, version_number


def ingest(settings: Settings, sample: pd.DataFrame, batches: int | None = None) -> None:
    ingestion.ingest(
        settings.warehouse_url, sample, settings.batch_size, settings.holdout_fraction, batches
    )


@pytest.mark.slow
def test_warm_start_registers_one_version_per_batch_each_tagged_with_its_parent(
    platform: Settings, sample: pd.DataFrame
) -> None:
    ingest(platform, sample)
    results = training.train_pending(platform)

    assert [r.batch_id for r in results] == [1, 2, 3, 4]
    versions = registry_reader.version_summaries(platform)
    assert [v.version for v in versions] == ["1", "2", "3", "4"]
    assert [v.parent_version for v in versions] == ["", "1", "2", "3"]
    assert [v.batch_id for v in versions] == ["1", "2", "3", "4"]
    assert [v.metrics["samples_seen"] for v in versions] == [500, 1000, 1500, 1997]
    assert all("prequential_roc_auc" in v.metrics for v in versions[1:])
    holdout = warehouse.clean_rows(platform.warehouse_url, tables.HOLDOUT_BATCH)
    assert {v.tags["holdout_rows"] for v in versions} == {str(len(holdout))}
    assert {v.tags["holdout_fingerprint"] for v in versions} == {
        fingerprint(holdout["encounter_id"])
    }
    assert {v.tags["feature_space"] for v in versions} == {FeatureSpace().fingerprint}
    assert lineage.untrained_batches(platform.warehouse_url, platform.model_name) == []
    client = registry.connect(platform)
    newest_run = versions[-1].run_id
    assert newest_run is not None
    assert {"plots/roc.png", "plots/calibration.png"} <= {
        a.path for a in client.list_artifacts(newest_run, "plots")
    }


@pytest.mark.slow
def test_each_step_continues_the_previous_model_instead_of_starting_over(
    trained_lineage: Settings,
) -> None:
    first = registry.load_readmission_model(trained_lineage, 1)
    second = registry.load_readmission_model(trained_lineage, 2)

    assert (first.batches_seen, second.batches_seen) == (1, 2)
    assert second.scaler.n_samples_seen_ == first.scaler.n_samples_seen_ + 500
    assert (second.classifier.coef_ != first.classifier.coef_).any()


@pytest.mark.slow
def test_a_trained_batch_is_never_trained_twice(platform: Settings, sample: pd.DataFrame) -> None:
    ingest(platform, sample, batches=1)
    assert len(training.train_pending(platform)) == 1
    assert training.train_pending(platform) == []
    assert len(registry_reader.version_summaries(platform)) == 1


@pytest.mark.slow
def test_a_failure_after_partial_fit_leaves_no_version_and_the_batch_untrained(
    platform: Settings, sample: pd.DataFrame, monkeypatch: pytest.MonkeyPatch
) -> None:
    ingest(platform, sample, batches=2)
    training.train_pending(platform, max_batches=1)

    def broken_evaluation(*args: object) -> dict[str, float]:
        raise RuntimeError("injected failure after partial_fit")

    monkeypatch.setattr(training, "_evaluate_and_log", broken_evaluation)
    with pytest.raises(RuntimeError, match="injected"):
        training.train_pending(platform)

    assert [v.version for v in registry_reader.version_summaries(platform)] == ["1"]
    assert lineage.untrained_batches(platform.warehouse_url, platform.model_name) == [2]
    monkeypatch.undo()
    assert training.train_pending(platform)[0].parent_version == "1"


@pytest.mark.slow
def test_a_version_registered_before_a_crash_is_recorded_not_retrained(
    platform: Settings, sample: pd.DataFrame, monkeypatch: pytest.MonkeyPatch
) -> None:
    ingest(platform, sample, batches=1)
    monkeypatch.setattr(lineage, "mark_trained", lambda *a: (_ for _ in ()).throw(OSError()))
    with pytest.raises(OSError):
        training.train_pending(platform)
    monkeypatch.undo()

    (result,) = training.train_pending(platform)
    assert result.recovered and result.version == "1"
    assert lineage.untrained_batches(platform.warehouse_url, platform.model_name) == []


@pytest.mark.slow
def test_a_version_registered_by_other_means_is_never_a_parent(
    platform: Settings, sample: pd.DataFrame
) -> None:
    ingest(platform, sample, batches=2)
    (first,) = training.train_pending(platform, max_batches=1)
    registry.connect(platform)
    # Someone registers a version under the model name by hand, with a batch tag even.
    mlflow.register_model(
        f"runs:/{first.run_id}/model", platform.model_name, tags={"batch_id": "2"}
    )

    (second,) = training.train_pending(platform)
    assert second.version == "3" and second.parent_version == first.version == "1"
    assert not second.recovered


@pytest.mark.slow
def test_a_registry_that_lost_the_lineage_head_is_a_clear_error(
    platform: Settings, sample: pd.DataFrame
) -> None:
    ingest(platform, sample, batches=2)
    training.train_pending(platform, max_batches=1)
    registry.connect(platform).delete_model_version(platform.model_name, "1")

    with pytest.raises(training.LineageError, match=r"version 1 does not exist.*MODEL_NAME"):
        training.train_pending(platform)


def test_a_parent_of_another_feature_space_cannot_be_warm_started() -> None:
    model = ReadmissionModel()
    model.space = FeatureSpace(features=CATEGORICAL[:-1])
    with pytest.raises(training.LineageError) as error:
        training.check_feature_space(model, "7", "readmission")
    message = str(error.value)
    assert "version 7 was trained on feature space" in message
    assert f"{len(CATEGORICAL[-1].vocabulary) + 1} added" in message
    assert "set MODEL_NAME to a new name" in message
    training.check_feature_space(ReadmissionModel(), "7", "readmission")  # same space: fine


@pytest.mark.slow
def test_promote_then_resolve_by_alias_and_by_legacy_stage(trained_lineage: Settings) -> None:
    platform = copy_lineage(trained_lineage, versions=2)  # promoted here: a copy of its own
    assert registry.production_version(platform) is None

    registry.promote(platform, 1)
    assert version_number(registry.production_version(platform)) == "1"
    client = registry.connect(platform)
    client.delete_registered_model_alias(platform.model_name, platform.model_alias)
    assert version_number(registry.production_version(platform)) == "1"  # by stage Production

    registry.promote(platform, 2)
    resolved = registry.production_version(platform)
    assert resolved is not None
    assert resolved.version == "2" and platform.model_alias in resolved.aliases
    assert client.get_model_version(platform.model_name, "1").current_stage == "Archived"
    assert [v.aliases for v in registry_reader.version_summaries(platform)] == [[], ["production"]]


@pytest.mark.slow
def test_registered_model_loads_as_pyfunc_and_compiles_to_the_same_probabilities(
    trained_lineage: Settings,
) -> None:
    platform = trained_lineage  # read, not changed
    holdout = warehouse.clean_rows(platform.warehouse_url, tables.HOLDOUT_BATCH)

    predicted = registry.load_pyfunc(platform, 1).predict(holdout)
    model = registry.load_readmission_model(platform, 1)
    compiled = CompiledScorer(model).probabilities(normalise(holdout).to_dict("records"))

    assert isinstance(predicted, pd.DataFrame)
    assert list(predicted.columns) == [registry.PROBABILITY_COLUMN]
    assert predicted[registry.PROBABILITY_COLUMN].between(0, 1).all()
    assert abs(compiled - predicted[registry.PROBABILITY_COLUMN].to_numpy()).max() < 1e-9


@pytest.mark.slow
def test_a_version_registered_without_its_card_is_unfinished_so_trained_again_and_removed(
    platform: Settings, sample: pd.DataFrame
) -> None:
    """What the release before left when killed between registration and the card: a version
    tagged for the batch, without a card. It is not adopted; the batch's new version replaces it."""
    ingest(platform, sample, batches=1)
    registry.connect(platform)
    with mlflow.start_run(experiment_id=registry.experiment_id(platform)):
        unfitted = registry.ReadmissionPyfunc(ReadmissionModel(training.initial_params(platform)))
        info = mlflow.pyfunc.log_model(name="model", python_model=unfitted)
    tags = {
        "batch_id": "1",
        "parent_version": "",
        "warehouse_id": lineage.warehouse_id(platform.warehouse_url),
    }
    mlflow.register_model(info.model_uri, platform.model_name, tags=tags)

    (result,) = training.train_pending(platform)
    assert (result.version, result.recovered) == ("2", False)
    assert [v.version for v in registry_reader.version_summaries(platform)] == ["2"]
