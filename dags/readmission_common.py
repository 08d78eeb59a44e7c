"""What the platform's DAGs share: the Assets linking them, their start date and I/O retries.

Kept free of heavy imports: the dag-processor imports this module every time it parses a DAG.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from airflow.sdk import Asset

# Updated by 01_ingest_data when new training batches land in the warehouse; schedules 02.
CLEAN_ENCOUNTERS = Asset(
    name="readmission_clean_encounters", uri="x-readmission://warehouse/clean_encounters"
)
# Updated by 01_ingest_data after every ingest that changed the warehouse (rows stored,
# corrections recorded, outcomes joined to the prediction log); schedules 04. Not the same as
# CLEAN_ENCOUNTERS: an extract of holdout rows or of outcomes only adds no training batch, yet
# the realized performance must follow it.
WAREHOUSE_CHANGES = Asset(
    name="readmission_warehouse_changes", uri="x-readmission://warehouse/changes"
)
# Updated by 02_warm_start_training when it registers new model versions; schedules 03.
MODEL_VERSIONS = Asset(
    name="readmission_model_versions", uri="x-readmission://registry/model_versions"
)

START_DATE = datetime(2026, 1, 1, tzinfo=UTC)
TAGS = ["readmission"]

# Tasks talking to the warehouse, the MLflow server or a download retry with growing pauses:
# 30 s, 1 min, 2 min. Every step is idempotent, so a retry continues where the last try stopped.
IO_RETRIES: dict[str, Any] = {
    "retries": 3,
    "retry_delay": timedelta(seconds=30),
    "retry_exponential_backoff": 2.0,
    "max_retry_delay": timedelta(minutes=5),
}
