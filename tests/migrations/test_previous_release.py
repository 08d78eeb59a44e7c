"""A warehouse and an MLflow lineage made by the release before migrations (PREVIOUS_RELEASE:
its own code, extracted from git and run in subprocesses) are upgraded in place by this code:
the data stays, the schema is exactly the code's, ingest and training continue the old lineage,
and the API (bin/api under uvicorn) serves the old version. On PostgreSQL and on SQLite."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pandas as pd
import pytest
import sqlalchemy as sa
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext

from readmission import registry, training
from readmission.config import Settings
from readmission.data import database, ingestion, lineage, migrations, tables
from readmission.evaluation import model_card
from tests.conftest import platform_settings
from tests.migrations import previous_release

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def previous_src(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return previous_release.extract(tmp_path_factory.mktemp("previous-release"))


def previous_cli(src: Path, settings: Settings, cwd: Path, *args: str) -> str:
    """`readmission ARGS` of the previous release, on the settings' stores."""
    return previous_release.run(
        src,
        cwd,
        ["-m", "readmission", *args],
        DATABASE_URL=settings.warehouse_url,
        MLFLOW_TRACKING_URI=settings.tracking_uri,
        MODEL_NAME=settings.model_name,
        BATCH_SIZE=str(settings.batch_size),
        READMISSION_HOME=str(cwd / "home"),
    )


def table_counts(url: str) -> dict[str, int]:
    """Rows of every table, read without this code's engine (opening it would upgrade)."""
    engine = sa.create_engine(url)
    try:
        with engine.connect() as conn:
            names = sa.inspect(conn).get_table_names()
            return {
                name: conn.execute(sa.text(f'SELECT count(*) FROM "{name}"')).scalar_one()
                for name in names
            }
    finally:
        engine.dispose()


@pytest.mark.parametrize("backend", ["postgresql", "sqlite"])
def test_a_warehouse_and_lineage_of_the_previous_release_keep_serving_and_training(
    backend: str,
    previous_src: Path,
    create_database: Callable[[], str],
    mlflow_server: str,
    sample: pd.DataFrame,
    tmp_path: Path,
) -> None:
    url = create_database() if backend == "postgresql" else f"sqlite:///{tmp_path / 'wh.db'}"
    settings = platform_settings(url, mlflow_server, tmp_path / "home")
    first_extract = tmp_path / "first.csv"
    sample.iloc[:1500].to_csv(first_extract, index=False)

    where = previous_release.run(
        previous_src, tmp_path, ["-c", "import readmission; print(readmission.__file__)"]
    )
    assert where.startswith(str(previous_src)), where  # the previous release's code runs
    previous_cli(previous_src, settings, tmp_path, "ingest", "--source", str(first_extract))
    trained = previous_cli(previous_src, settings, tmp_path, "train", "--batches", "1")
    assert "batch 1 -> version 1 (parent none)" in trained, trained
    before = table_counts(url)
    assert "alembic_version" not in before and before["raw_encounters"] > 0

    engine = database.engine_for(url)  # this code's first use: the upgrade
    with engine.connect() as conn:
        assert migrations.current(conn) == migrations.head()
        context = MigrationContext.configure(conn, opts={"compare_type": True})
        assert compare_metadata(context, tables.metadata) == []
    after = table_counts(url)
    assert {k: v for k, v in after.items() if k in before} == before  # nothing lost
    assert lineage.lineage_head(url, settings.model_name) == (1, "1")

    report = ingestion.ingest(url, sample, settings.batch_size, settings.holdout_fraction)
    assert report.already_present == 1500  # the first extract's rows, stored by the old code
    (result,) = training.train_pending(settings, max_batches=1)
    assert (result.batch_id, result.version, result.parent_version) == (2, "2", "1")
    new = registry.model_version(settings, result.version)
    assert new is not None and new.tags["lease_token"] == "1"
    card = model_card.load(result.run_id)
    assert card is not None and card["model"]["version"] == "2"

    previous_release.promote_and_serve(settings, "1", tmp_path / "api")  # the old release's
    engine.dispose()
