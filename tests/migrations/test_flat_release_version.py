"""A model version registered by the release before the domain package was grouped by stage
(FLAT_RELEASE: its own code, extracted from git and run in subprocesses) loads, compiles to the
same probabilities and is served by this code: the module paths pickled into a registered
version (readmission.model, readmission.features, readmission.registry) stayed where they were."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pandas as pd
import pytest

from readmission import registry
from readmission.data import warehouse
from readmission.data.tables import HOLDOUT_BATCH
from readmission.scoring import CompiledScorer
from tests.conftest import platform_settings
from tests.migrations import previous_release

pytestmark = pytest.mark.slow


def test_a_version_registered_by_the_flat_release_loads_compiles_and_serves(
    create_database: Callable[[], str],
    mlflow_server: str,
    sample: pd.DataFrame,
    tmp_path: Path,
) -> None:
    src = previous_release.extract(tmp_path / "flat-release", previous_release.FLAT_RELEASE)
    settings = platform_settings(create_database(), mlflow_server, tmp_path / "home")
    env = {
        "DATABASE_URL": settings.warehouse_url,
        "MLFLOW_TRACKING_URI": settings.tracking_uri,
        "MODEL_NAME": settings.model_name,
        "BATCH_SIZE": str(settings.batch_size),
        "MIN_BATCH_ROWS": str(settings.min_batch_rows),
        "BOOTSTRAP_RESAMPLES": str(settings.bootstrap_resamples),
        "READMISSION_HOME": str(tmp_path / "flat-home"),
    }
    extract = tmp_path / "extract.csv"
    sample.iloc[:1500].to_csv(extract, index=False)

    # The flat release's own code registers the version: its modules sit in one folder.
    layout = previous_release.run(
        src, tmp_path, ["-c", "import readmission.warehouse as w; print(w.__file__)"], **env
    )
    assert layout.strip() == str(src / "readmission" / "warehouse.py"), layout
    previous_release.run(
        src, tmp_path, ["-m", "readmission", "ingest", "--source", str(extract)], **env
    )
    trained = previous_release.run(
        src, tmp_path, ["-m", "readmission", "train", "--batches", "1"], **env
    )
    assert "batch 1 -> version 1 (parent none)" in trained, trained

    # This code loads it (unpickling the flat release's objects) and compiles it exactly.
    model = registry.load_readmission_model(settings, "1")
    holdout = warehouse.clean_rows(settings.warehouse_url, HOLDOUT_BATCH)
    assert CompiledScorer(model).verify(model, holdout) <= 1e-9  # raises past the tolerance

    # And serves it: bin/api of this code, version 1 promoted.
    previous_release.promote_and_serve(settings, "1", tmp_path / "api")
