"""
### 02 · Warm-start training

Trains every ingested but untrained batch, **in order**, each continuing the newest registered
model version: one batch, one MLflow run, one new version of `MODEL_NAME` (tagged with its
batch and parent version). Batches are trained one after the other in a single task, never in
parallel: each step starts from the version the previous step registered.

Starts on its own when **01_ingest_data** adds training batches (Asset
`x-readmission://warehouse/clean_encounters`); can also be triggered by hand (it then trains
whatever is pending, or nothing). Re-running is safe: a trained batch is never trained again,
and a retry continues with the first batch still untrained.

When it registered at least one version, `announce_new_versions` updates the Asset
`x-readmission://registry/model_versions`, which starts **03_evaluate_and_promote**.
"""

from __future__ import annotations

import logging
from typing import Any

from airflow.sdk import dag, task
from airflow.sdk.exceptions import AirflowSkipException
from readmission_common import CLEAN_ENCOUNTERS, IO_RETRIES, MODEL_VERSIONS, START_DATE, TAGS

log = logging.getLogger("readmission.dags.warm_start_training")


@dag(
    dag_id="02_warm_start_training",
    dag_display_name="02 · Warm-start training",
    description="One registered model version per untrained batch, in order",
    doc_md=__doc__,
    schedule=[CLEAN_ENCOUNTERS],
    start_date=START_DATE,
    catchup=False,
    max_active_runs=1,  # two runs at once would both continue the same parent version
    is_paused_upon_creation=False,
    tags=[*TAGS, "training"],
)
def warm_start_training() -> None:
    @task(**IO_RETRIES)
    def train_untrained_batches() -> list[dict[str, Any]]:
        """Train the pending batches in order; return batch ids, versions and holdout scores."""
        from readmission import pipeline, warehouse
        from readmission.config import get_settings

        settings = get_settings()
        pending = warehouse.untrained_batches(settings.warehouse_url)
        if not pending:
            log.info("no untrained batch: trigger 01_ingest_data to add one")
        trained = []
        for number, batch_id in enumerate(pending, 1):
            log.info("[%d/%d] training batch %d", number, len(pending), batch_id)
            result = pipeline.train(settings, batch_id)
            auc = result.holdout.get("roc_auc", float("nan"))
            log.info(
                "[%d/%d] batch %d -> %s version %s (parent %s), holdout AUC %.4f",
                number,
                len(pending),
                batch_id,
                settings.model_name,
                result.version,
                result.parent_version or "none",
                auc,
            )
            trained.append(
                {
                    "batch_id": batch_id,
                    "version": result.version,
                    "parent_version": result.parent_version,
                    "holdout_roc_auc": auc,
                }
            )
        return trained

    @task(outlets=[MODEL_VERSIONS])
    def announce_new_versions(
        trained: list[dict[str, Any]], outlet_events: Any = None
    ) -> list[str]:
        """Update the Asset (and so start evaluation) only when versions were registered."""
        if not trained:
            raise AirflowSkipException("no new model version: nothing for 03 to evaluate")
        versions = [t["version"] for t in trained]
        outlet_events[MODEL_VERSIONS].extra = {"versions": versions}
        return versions

    announce_new_versions(train_untrained_batches())


warm_start_training()
