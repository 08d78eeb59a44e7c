"""What a trained version logs to MLflow: its model files, never the repository's project files."""

from __future__ import annotations

import mlflow
import pandas as pd
import pytest

from readmission import registry, training
from readmission.config import Settings
from readmission.data import ingestion
from tests.services import ROOT

pytestmark = pytest.mark.slow


def test_models_logged_from_the_repository_carry_no_uv_project_files(
    platform: Settings, sample: pd.DataFrame, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(ROOT)  # where MLflow would find uv.lock and pyproject.toml
    ingestion.ingest(platform.warehouse_url, sample, 500, 0.2, 1)
    training.train_pending(platform)
    registry.connect(platform)
    files = {a.path for a in mlflow.artifacts.list_artifacts(registry.model_uri(platform, 1))}
    assert "MLmodel" in files and "requirements.txt" in files
    assert not files & {"uv.lock", "pyproject.toml", ".python-version"}
