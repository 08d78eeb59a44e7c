"""
### 03 · Evaluate and promote

Scores the lineage's **newest** model version (the challenger) and the **production** one (the
champion, alias `MODEL_ALIAS`) on the same rows: the holdout as it stands (its size and
fingerprint go into the verdict). The challenger passes when it meets the quality floors
(`MIN_AUC`, `MAX_LOG_LOSS`), no subgroup (race, gender, age band) with enough readmissions lies
more than `GATE_SUBGROUP_AUC_MARGIN` below its overall AUC, its calibration slope is within
`GATE_CALIBRATION_SLOPE_MIN`..`GATE_CALIBRATION_SLOPE_MAX`, and it beats the champion's holdout
AUC by at least `margin`. The verdict is recorded as tags on the challenger version in the MLflow
registry (`validation_status`, `validation_reason`, one `check_*` tag per check, scores). A
promotion is recorded in the promotion ledger (`readmission promotions`).

| Param | Meaning |
|---|---|
| `auto_promote` | Promote a passing challenger now. Off: record the verdict, promote by hand. |
| `margin` | AUC points the challenger must gain over the champion. |

Both defaults come from the settings `AUTO_PROMOTE` and `PROMOTION_MARGIN` of the Airflow
environment. Starts on its own when **02_warm_start_training** registers versions (Asset
`x-readmission://registry/model_versions`), with the defaults; trigger it by hand to choose.

To promote by hand: `readmission promote <version>`, or set the alias `MODEL_ALIAS` on the
version in the MLflow UI. The API picks the new production version up within
`MODEL_POLL_SECONDS`.
"""

from __future__ import annotations

import logging
from typing import Any

from airflow.sdk import Param, dag, task
from airflow.sdk.exceptions import AirflowSkipException
from readmission_common import IO_RETRIES, MODEL_VERSIONS, START_DATE, TAGS

from readmission.config import get_settings  # environment only: no database, no network

log = logging.getLogger("readmission.dags.evaluate_and_promote")
_defaults = get_settings()


@dag(
    dag_id="03_evaluate_and_promote",
    dag_display_name="03 · Evaluate and promote",
    description="Challenger against champion on the holdout; promote the winner",
    doc_md=__doc__,
    schedule=[MODEL_VERSIONS],
    start_date=START_DATE,
    catchup=False,
    max_active_runs=1,
    is_paused_upon_creation=False,
    tags=[*TAGS, "registry"],
    params={
        "auto_promote": Param(
            _defaults.auto_promote,
            type="boolean",
            title="Promote automatically",
            description="On: promote a passing challenger now. Off: record the verdict only.",
        ),
        "margin": Param(
            _defaults.promotion_margin,
            type="number",
            minimum=0,
            title="Margin (AUC)",
            description="How much the challenger's holdout AUC must beat the champion's by.",
        ),
    },
)
def evaluate_and_promote() -> None:
    @task(**IO_RETRIES)
    def judge_challenger(
        params: dict[str, Any] | None = None, run_id: str | None = None
    ) -> dict[str, Any]:
        """Record the verdict on the challenger version and promote it if asked and it won."""
        from readmission import promotion

        params = params or {}
        settings = get_settings()
        verdict = promotion.evaluate_and_promote(
            settings,
            auto_promote=params.get("auto_promote"),
            margin=params.get("margin"),
            by=f"airflow 03_evaluate_and_promote (run {run_id})",
        )
        if verdict is None:
            raise AirflowSkipException(
                f"{settings.model_name} has no version yet: "
                "run 01_ingest_data and 02_warm_start_training first"
            )
        status = "passed" if verdict.passed else "rejected"
        log.info(
            "challenger %s v%s %s against champion v%s: %s",
            settings.model_name,
            verdict.challenger_version,
            status,
            verdict.champion_version or "none",
            verdict.reason,
        )
        if verdict.promoted:
            log.info("promoted v%s to alias %s", verdict.challenger_version, settings.model_alias)
        elif verdict.passed:
            log.info(
                "not promoted (auto_promote is off): readmission promote %s",
                verdict.challenger_version,
            )
        return {
            "challenger_version": verdict.challenger_version,
            "champion_version": verdict.champion_version,
            # Empty on a re-run after the promotion: nothing was scored again.
            "challenger_roc_auc": verdict.challenger.get("roc_auc"),
            "champion_roc_auc": verdict.champion["roc_auc"] if verdict.champion else None,
            "passed": verdict.passed,
            "promoted": verdict.promoted,
            "reason": verdict.reason,
            "checks": {c.name: c.passed for c in verdict.checks},
        }

    judge_challenger()


evaluate_and_promote()
