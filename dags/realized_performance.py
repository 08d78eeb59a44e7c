"""
### 04 · Realized performance

How each served model version really performed: the API logs every encounter it scores, and
when an ingested extract brings those encounters' outcomes (`readmitted`), this DAG computes,
per served version and per calendar week of scoring, the realized ROC-AUC, PR-AUC, log-loss,
Brier score, calibration, and PPV and sensitivity at the served threshold, with an estimate
(from the probabilities alone) for the encounters still waiting for their outcome.

The report is stored in the warehouse (`performance_reports`; `GET /performance` of the API),
logged to MLflow (a run `realized-performance-v<N>` per version) and exported by the API to
Prometheus, where the alert `RealizedAucBelowMinimum` watches it. Then the live evidence is
acted on (readmission.release.live, as `readmission performance --act`): production is rolled back
when the upper end of its recent realized AUC interval falls below REALIZED_AUC_FLOOR (or its
realized calibration slope leaves its band), and a shadow whose paired AUC difference interval lies
above 0 over LIVE_MIN_OUTCOMES outcomes is promoted, each only when the change-control plan allows
it, each recorded in the promotion ledger with its numbers.

Starts on its own after every ingest that changed the warehouse (Asset
`x-readmission://warehouse/changes`, updated by **01_ingest_data**: rows stored, corrections
recorded or outcomes joined), including an extract that brings only outcomes or holdout rows and
so starts no training; an ingest that changed nothing starts no run. Trigger it by hand at any
time. Re-running is safe: it adds one more report, computed from the same rows.
"""

from __future__ import annotations

import logging
from typing import Any

from airflow.sdk import dag, task
from readmission_common import IO_RETRIES, START_DATE, TAGS, WAREHOUSE_CHANGES

log = logging.getLogger("readmission.dags.realized_performance")


@dag(
    dag_id="04_realized_performance",
    dag_display_name="04 · Realized performance",
    description="Realized performance of the served versions on the outcomes that arrived",
    doc_md=__doc__,
    # Only this Asset: an ingest adding training batches changes the warehouse too. Scheduling
    # on either of it and CLEAN_ENCOUNTERS (`|`) could start 04 twice for one ingest; on both (a
    # list) would hold an outcomes-only ingest's run back until some ingest adds a batch.
    schedule=[WAREHOUSE_CHANGES],
    start_date=START_DATE,
    catchup=False,
    max_active_runs=1,
    is_paused_upon_creation=False,
    tags=[*TAGS, "monitoring"],
)
def realized_performance() -> None:
    @task(**IO_RETRIES)
    def measure_realized_performance() -> list[dict[str, Any]]:
        """Join the outcomes that arrived, compute, store and log the report; return its rows."""
        from readmission.config import get_settings
        from readmission.monitoring import realized

        report = realized.compute(get_settings())
        rows = realized.as_rows(report)
        if not rows:
            log.info("no prediction logged yet: the API logs every encounter it scores")
        for row in rows:
            log.info(
                "v%s: %d scored, %d labelled, %d pending; realized AUC %s, holdout AUC %s, "
                "estimated AUC of the pending %s",
                row["version"],
                row["scored"],
                row["labelled"],
                row["pending"],
                row["realized_roc_auc"],
                row["holdout_roc_auc"],
                row["estimated_roc_auc"],
            )
        return rows

    @task(**IO_RETRIES)
    def act_on_live_evidence() -> list[dict[str, Any]]:
        """Roll production back or promote its shadow when the last report's live evidence
        calls for it and the change-control plan allows it (readmission.release.live); a retry finds
        the change made and changes nothing."""
        from readmission.config import get_settings
        from readmission.monitoring import realized
        from readmission.release import live

        settings = get_settings()
        report = realized.latest(settings.warehouse_url, settings.model_name)
        if report is None:
            return []
        actions = live.act(settings, report, "04_realized_performance")
        for action in actions:
            log.info("%s", action.as_dict())
        return [action.as_dict() for action in actions]

    measure_realized_performance() >> act_on_live_evidence()


realized_performance()
