"""
### 02 · Warm-start training

Trains every ingested but untrained batch, **in order**, each continuing the version the
warehouse recorded for the previous batch: one batch, one MLflow run, one new version of
`MODEL_NAME` (tagged with its batch and parent version). The loop is the CLI's
(`readmission train`): it holds the warehouse's training lease, so this DAG, the CLI and
`mlflow run` never train at the same time; a run that finds the lease taken waits for it
(`TRAINING_LEASE_WAIT`), then trains whatever is still pending.

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
        from readmission import training
        from readmission.config import get_settings
        from readmission.data import lineage

        settings = get_settings()

        def announce(number: int, total: int, batch_id: int) -> None:
            log.info("[%d/%d] training batch %d", number, total, batch_id)

        try:
            results = training.train_pending(
                settings, holder="Airflow 02_warm_start_training", on_step=announce
            )
        except lineage.LeaseBusy as busy:
            log.info("not training: %s, which trains every pending batch", busy)
            return []
        if not results:
            log.info("no untrained batch: trigger 01_ingest_data to add one")
        for result in results:
            log.info(
                "batch %d -> %s version %s (parent %s), holdout AUC %.4f",
                result.batch_id,
                settings.model_name,
                result.version,
                result.parent_version or "none",
                result.holdout.get("roc_auc", float("nan")),
            )
        return [result.as_dict() for result in results]

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
