"""Evaluate-and-promote on the real MLflow server: verdicts recorded, re-runs safe."""

from __future__ import annotations

import mlflow
import pandas as pd
import pytest

from readmission import pipeline, registry, training, warehouse
from readmission.config import Settings

from ..conftest import ROOT


@pytest.fixture
def trained(platform: Settings, sample: pd.DataFrame, monkeypatch: pytest.MonkeyPatch) -> Settings:
    monkeypatch.setenv("MAX_LOG_LOSS", "0.7")  # the synthetic sample's base rate is 21%
    settings = Settings()
    warehouse.ingest(settings.warehouse_url, sample, 500, 0.2, 2)
    training.train_pending(settings)
    return settings


def test_a_winning_challenger_is_promoted_and_the_verdict_recorded(trained: Settings) -> None:
    verdict = pipeline.evaluate_and_promote(trained, auto_promote=True)
    assert verdict.promoted and verdict.challenger_version == "2"
    assert registry.production_version(trained).version == "2"
    tags = registry.connect(trained).get_model_version(trained.model_name, "2").tags
    assert (
        tags["validation_status"] == "passed"
        and "no production model yet" in tags["validation_reason"]
    )


def test_without_auto_promotion_the_verdict_is_recorded_but_nothing_promoted(
    trained: Settings,
) -> None:
    verdict = pipeline.evaluate_and_promote(trained, auto_promote=False)
    assert verdict.passed and not verdict.promoted
    assert registry.production_version(trained) is None


def test_re_running_after_a_promotion_keeps_the_verdict_and_changes_nothing(
    trained: Settings,
) -> None:
    first = pipeline.evaluate_and_promote(trained, auto_promote=True)
    again = pipeline.evaluate_and_promote(trained, auto_promote=True)
    assert not again.promoted and "nothing changed" in again.reason
    assert again.challenger["roc_auc"] == pytest.approx(first.challenger["roc_auc"], abs=1e-6)
    tags = registry.connect(trained).get_model_version(trained.model_name, "2").tags
    assert tags["validation_status"] == "passed"
    holdout = warehouse.clean_rows(trained.warehouse_url, warehouse.HOLDOUT_BATCH)
    assert tags["validation_holdout_rows"] == str(len(holdout))


def test_a_retry_after_a_crash_between_verdict_and_promotion_promotes(
    trained: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    def crash(*args: object) -> None:
        raise ConnectionError("injected: the registry went away before the promotion")

    monkeypatch.setattr(registry, "promote", crash)
    with pytest.raises(ConnectionError):
        pipeline.evaluate_and_promote(trained, auto_promote=True)
    tags = registry.connect(trained).get_model_version(trained.model_name, "2").tags
    assert tags["validation_status"] == "passed" and registry.production_version(trained) is None
    monkeypatch.undo()

    retried = pipeline.evaluate_and_promote(trained, auto_promote=True)
    assert retried.promoted and registry.production_version(trained).version == "2"


def test_a_challenger_below_the_quality_floor_is_rejected_with_the_reason(
    trained: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(trained, "min_auc", 0.99)
    verdict = pipeline.evaluate_and_promote(trained, auto_promote=True)
    assert not verdict.passed and not verdict.promoted
    assert "below MIN_AUC 0.99" in verdict.reason
    tags = registry.connect(trained).get_model_version(trained.model_name, "2").tags
    assert tags["validation_status"] == "rejected" and "MIN_AUC" in tags["validation_reason"]


def test_models_logged_from_the_repository_carry_no_uv_project_files(
    platform: Settings, sample: pd.DataFrame, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(ROOT)  # where MLflow would find uv.lock and pyproject.toml
    warehouse.ingest(platform.warehouse_url, sample, 500, 0.2, 1)
    training.train_pending(platform)
    registry.connect(platform)
    files = {a.path for a in mlflow.artifacts.list_artifacts(registry.model_uri(platform, 1))}
    assert "MLmodel" in files and "requirements.txt" in files
    assert not files & {"uv.lock", "pyproject.toml", ".python-version"}
