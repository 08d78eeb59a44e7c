"""
### 03 · Evaluate and promote

Judges the lineage **head** (the challenger: the version the last trained batch produced, per the
warehouse's `trainings` table; a version registered by other means is never the challenger)
against the **production** one (the champion, alias `MODEL_ALIAS`) on the same rows: the holdout
as it stands. The challenger passes when it meets the quality floors (`MIN_AUC`,
`MAX_LOG_LOSS`), no subgroup (race, gender, age band) with enough readmissions lies more than
`GATE_SUBGROUP_AUC_MARGIN` below its overall AUC, its calibration slope is within
`GATE_CALIBRATION_SLOPE_MIN`..`GATE_CALIBRATION_SLOPE_MAX`, and the 95% interval of its AUC minus
the champion's (paired, patient-level bootstrap) satisfies the policy: `superior`, its lower
bound above 0; `non_inferior`, above minus `non_inferiority_margin`. The verdict is recorded as
tags on the challenger version in the MLflow registry (`validation_status`, `validation_reason`,
one `check_*` tag per check, `delta_roc_auc`, `delta_roc_auc_ci`, the holdout's fingerprint).
A promotion is recorded in the promotion ledger with the same evidence (`readmission
promotions`). A version without its model card is not judged; a version once rolled back is
never promoted again by this DAG, so a re-run or retry after `readmission rollback` changes
nothing. `readmission evaluate` runs the same gate from the command line.

**Change control.** After the verdict the change control plan (`CHANGE_CONTROL_PLAN`,
docs/change_control.md) classifies the promotion. A change the plan lets the platform make is
promoted at once, the ledger row naming the plan's rule. A change the plan reserves for a person
(the first production version, a new feature space or new hyperparameters, a subgroup below its
floor, anything the plan does not name) stops at **ask_a_person**: the Airflow UI's *Required
Actions* shows the verdict, the plan's reason and where the model card is; *Approve* promotes it
(the ledger names the Airflow user and their comment), *Reject* keeps it out of production for
good (the gate never promotes it; by hand: `readmission promote`). The run waits until someone
answers; 01 and 02 keep running meanwhile. With `max_active_runs=1` (one production decision
at a time) the scheduler starts no other run of this DAG meanwhile: the Asset events of versions
trained in between wait in its queue and start the next run once the person has answered, which
judges the lineage head as it is then. A plan that does not validate fails the run, naming the
field.

| Param | Meaning |
|---|---|
| `auto_promote` | Promote a passing challenger now. Off: record the verdict, promote by hand. |
| `policy` | `superior` or `non_inferior` (see above). |
| `non_inferiority_margin` | AUC the challenger may lose to the champion under `non_inferior`. |

The defaults come from the settings `AUTO_PROMOTE`, `PROMOTION_POLICY` and
`NON_INFERIORITY_MARGIN` of the Airflow environment. Starts on its own when
**02_warm_start_training** registers versions (Asset `x-readmission://registry/model_versions`),
with the defaults; trigger it by hand to choose.

To promote by hand: `readmission promote <version>`, or set the alias `MODEL_ALIAS` on the
version in the MLflow UI. The API picks the new production version up within
`MODEL_POLL_SECONDS`.
"""

from __future__ import annotations

import logging
from typing import Any

from airflow.providers.standard.operators.hitl import HITLOperator
from airflow.sdk import Param, dag, task
from airflow.sdk.exceptions import AirflowFailException, AirflowSkipException
from readmission_common import IO_RETRIES, MODEL_VERSIONS, START_DATE, TAGS

from readmission.config import get_settings  # environment only: no database, no network

log = logging.getLogger("readmission.dags.evaluate_and_promote")
_defaults = get_settings()
APPROVE, REJECT = "Approve", "Reject"
JUDGE = "judge_challenger"


@dag(
    dag_id="03_evaluate_and_promote",
    dag_display_name="03 · Evaluate and promote",
    description="Lineage head against champion on the holdout; promote on the evidence",
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
        "policy": Param(
            _defaults.promotion_policy,
            type="string",
            enum=["superior", "non_inferior"],
            title="Promotion policy",
            description="superior: the 95% interval of the AUC difference lies above 0; "
            "non_inferior: above minus the margin.",
        ),
        "non_inferiority_margin": Param(
            _defaults.non_inferiority_margin,
            type="number",
            minimum=0,
            maximum=1,
            title="Non-inferiority margin (AUC)",
            description="How much AUC the challenger may lose to the champion (non_inferior).",
        ),
    },
)
def evaluate_and_promote() -> None:
    @task(task_id=JUDGE, **IO_RETRIES)
    def judge_challenger(
        params: dict[str, Any] | None = None, run_id: str | None = None
    ) -> dict[str, Any]:
        """Record the verdict on the challenger version and promote it if asked and it won."""
        from readmission import change_control
        from readmission.release import promotion

        params = params or {}
        settings = get_settings()
        auto_promote = params.get("auto_promote", settings.auto_promote)
        try:
            verdict = promotion.evaluate_and_promote(
                settings,
                auto_promote=auto_promote,
                promotion_policy=params.get("policy"),
                non_inferiority_margin=params.get("non_inferiority_margin"),
                by=f"airflow 03_evaluate_and_promote (run {run_id})",
            )
        except change_control.PlanError as error:  # a retry reads the same file: no retry
            raise AirflowFailException(
                f"the change control plan does not validate: {error}"
            ) from error
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
        elif verdict.needs_person:
            log.info("not promoted: the change control plan reserves it for a person")
        elif verdict.passed:
            log.info(
                "not promoted (auto_promote is off): readmission promote %s",
                verdict.challenger_version,
            )
        approval = None
        if verdict.needs_person and auto_promote:
            subject, body = promotion.approval_request(settings, verdict)
            approval = {"subject": subject, "body": body}
        # `approval` is set when a person must decide: what ask_a_person shows them.
        return {**verdict.as_dict(), "approval": approval}

    @task.branch
    def person_needed(verdict: Any) -> list[str]:  # Any: the branch decorator types no XComArg
        """Ask a person only when the plan reserves the promotion for one (and promotion was
        asked for); otherwise the run ends here."""
        return ["ask_a_person"] if verdict["approval"] else []

    verdict_ref = f"ti.xcom_pull(task_ids='{JUDGE}')['approval']"
    ask_a_person = HITLOperator(
        task_id="ask_a_person",
        task_display_name="Ask a person to approve the promotion",
        subject=f"{{{{ {verdict_ref}['subject'] }}}}",
        body=f"{{{{ {verdict_ref}['body'] }}}}",
        options=[APPROVE, REJECT],
        multiple=False,
        params={
            "comment": Param(
                "",
                type="string",
                title="Comment",
                description="Why you approve or reject: kept in the promotion ledger.",
            )
        },
    )

    @task(**IO_RETRIES)
    def record_decision(
        verdict: dict[str, Any], response: dict[str, Any], run_id: str | None = None
    ) -> dict[str, Any]:
        """Carry out the person's answer: approve promotes the version (the ledger names them and
        their comment), reject keeps it out of production for good. A retry records the same
        answer again and changes nothing more."""
        from readmission.release import production_changes, promotion

        settings = get_settings()
        version = verdict["challenger_version"]
        user = response["responded_by_user"]
        approved = response["chosen_options"] == [APPROVE]
        comment = str((response.get("params_input") or {}).get("comment") or "")
        try:
            change = promotion.decide(
                settings,
                version,
                approved,
                by=f"{user['name']} (Airflow user; run {run_id})",
                comment=comment,
                at=str(response["responded_at"]),
                shown_champion=verdict["champion_version"],
            )
        except (
            production_changes.PromotionError
        ) as error:  # production moved on: a retry cannot help
            raise AirflowFailException(str(error)) from error
        log.info("v%s %s by %s: %s", version, "approved" if approved else "rejected", user, comment)
        return {"version": version, "approved": approved, "promoted": change is not None}

    verdict = judge_challenger()
    person_needed(verdict) >> ask_a_person
    record_decision(verdict, ask_a_person.output)


evaluate_and_promote()
