"""The training lease's fencing, in real runs (PostgreSQL, the MLflow server): a run whose lease
is lost (its database session terminated with pg_terminate_backend) while another `readmission
train` process takes the lease and trains the same batch fails loudly, and the batch is left
with exactly one version, carded, whichever step the loss interrupted."""

from __future__ import annotations

import subprocess
from collections.abc import Callable
from typing import Any

import mlflow
import pandas as pd
import pytest
import sqlalchemy as sa

from readmission import registry_reader, training
from readmission.config import Settings
from readmission.data import ingestion, lineage
from readmission.evaluation import model_card
from readmission.model import ReadmissionModel
from tests.conftest import platform_env
from tests.services import BIN, service_env

pytestmark = pytest.mark.slow


def lose_the_lease_to_another_run(settings: Settings) -> None:
    """End the session holding the lease, as a failover or an operator would, and let another
    process train what is pending."""
    engine = sa.create_engine(settings.warehouse_url)
    try:
        with engine.connect() as conn:
            ended = conn.execute(
                sa.text(
                    "SELECT pg_terminate_backend(pid) FROM pg_locks WHERE locktype = 'advisory'"
                    " AND classid = 0 AND objid = :id AND database ="
                    " (SELECT oid FROM pg_database WHERE datname = current_database())"
                ),
                {"id": lineage._LEASE_ID},
            ).scalars()
            assert list(ended) == [True]
    finally:
        engine.dispose()
    other = subprocess.run(
        [str(BIN / "readmission"), "train"],
        env=service_env(**platform_env()),
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert other.returncode == 0, other.stdout[-3000:] + other.stderr[-3000:]


def interrupting(
    original: Callable[..., Any], settings: Settings, after: bool
) -> Callable[..., Any]:
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        if not after:
            lose_the_lease_to_another_run(settings)
        result = original(*args, **kwargs)
        if after:
            lose_the_lease_to_another_run(settings)
        return result

    return wrapper


@pytest.mark.parametrize(
    "point",
    [
        "mid-fit",  # before the check that precedes registration
        "registering",  # checked, then lost before the version exists: the other run's wins
        "registered",  # the version exists, not recorded: the other run adopts it
    ],
)
def test_a_run_that_loses_the_lease_fails_and_leaves_one_version_for_the_batch(
    platform: Settings, sample: pd.DataFrame, monkeypatch: pytest.MonkeyPatch, point: str
) -> None:
    ingestion.ingest(platform.warehouse_url, sample, platform.batch_size, 0.2, max_batches=1)
    if point == "mid-fit":
        patched = interrupting(ReadmissionModel.partial_fit, platform, after=False)
        monkeypatch.setattr(ReadmissionModel, "partial_fit", patched)
    else:
        patched = interrupting(mlflow.register_model, platform, after=point == "registered")
        monkeypatch.setattr(mlflow, "register_model", patched)

    with pytest.raises(lineage.LeaseLost, match="session ended"):
        training.train_pending(platform)
    monkeypatch.undo()

    versions = registry_reader.version_summaries(platform)
    assert [(v.version, v.batch_id) for v in versions] == [
        (lineage.recorded_version(platform.warehouse_url, platform.model_name, 1), "1")
    ]
    (version,) = versions
    card = model_card.load(version.run_id or "")
    assert card is not None and card["model"]["version"] == version.version
    # The lease moved on: the other run took the next token.
    assert version.tags["lease_token"] == ("1" if point == "registered" else "2")
    assert training.train_pending(platform) == []
