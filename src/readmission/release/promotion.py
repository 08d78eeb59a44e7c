"""Evaluate and promote: the lineage head judged against production, and a person's decision.

`evaluate_and_promote` judges the lineage head (challenger: the version the last trained batch
produced, from the warehouse's `trainings` table) against the production one (champion) on the
holdout as it stands, with the gate (readmission.release.gate). Each check is recorded as a tag
on the challenger. A version without its model card is unfinished and not judged; a version once
rolled back, or rejected by a person, is never promoted by the gate again.

After the verdict the change control plan (readmission.change_control) classifies the promotion:
a change the plan lets the platform make is promoted, the ledger row naming the plan's rule; a
change the plan reserves for a person is not: its reason is recorded on the version and waits
for `decide` (DAG 03's approval step in the Airflow UI, or `readmission promote` by hand).
Production itself changes in readmission.release.production_changes.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping

import numpy as np
import pandas as pd
from mlflow.entities.model_registry import ModelVersion
from sklearn import metrics

from readmission import change_control, registry, registry_reader
from readmission.change_control import ChangeFacts, ChangeKind, Decision, Ruling
from readmission.config import Settings
from readmission.data import inventory, lineage, tables, warehouse
from readmission.data.holdout import fingerprint
from readmission.evaluation import holdout_evaluation, model_card
from readmission.evaluation.uncertainty import (
    paired_bootstrap_auc_difference,
)
from readmission.model import ModelParams, labels
from readmission.release import ledger
from readmission.release.gate import (
    Check,
    Comparison,
    Measured,
    Policy,
    PolicyName,
    Verdict,
    judge,
)
from readmission.release.production_changes import (
    PromotionError,
    change_production,
    notice_outside_changes,
)

log = logging.getLogger(__name__)
HYPERPARAMETERS = tuple(ModelParams.__dataclass_fields__)
# The plan's decision on the version's promotion (Ruling), its rule, reason and plan hash.
CHANGE_CONTROL_TAG = "change_control"
# A person's decision on a version the plan reserved for them: approved or rejected, by whom,
# when, with which comment. A rejected version is never promoted by the gate again.
PERSON_DECISION_TAG = "person_decision"
APPROVED, REJECTED = "approved", "rejected"


def evaluate_and_promote(
    settings: Settings,
    auto_promote: bool | None = None,
    promotion_policy: PolicyName | None = None,
    non_inferiority_margin: float | None = None,
    by: str = "evaluate-and-promote",
) -> Verdict | None:
    """Judge the lineage head against the champion on the holdout, record the verdict and the
    change control plan's decision as tags on the challenger, and promote it if every check
    passes, the plan lets the platform make the change and promotion is on. The CLI's
    `readmission evaluate` and DAG 03 both call this. None: the lineage has no version yet.
    Raises change_control.PlanError, before anything is recorded, if the plan does not
    validate."""
    plan = change_control.current(settings)
    auto_promote = settings.auto_promote if auto_promote is None else auto_promote
    policy = Policy.of(settings, promotion_policy, non_inferiority_margin)
    notice_outside_changes(settings, noticed_by=by)
    head = lineage.lineage_head(settings.warehouse_url, settings.model_name)
    if head is None:
        return None
    batch_id, version = head
    challenger = registry.model_version(settings, version)
    if challenger is None:
        raise PromotionError(
            f"the warehouse names version {version} (batch {batch_id}) the head of "
            f"{settings.model_name}'s lineage, but the registry has no such version: the "
            "registry and the warehouse belong to different platforms"
        )
    champion = registry.production_version(settings)
    champion_version = str(champion.version) if champion else None
    if champion_version == version:
        # A re-run (or a retry after the alias moved): finish the promotion if a crash cut it
        # short, keep the verdict as recorded, change nothing else.
        if challenger.current_stage != registry_reader.PRODUCTION_STAGE:
            registry.promote(settings, version)
        reason = f"version {version} is already in production: nothing changed"
        log.info("challenger v%s: %s", version, reason)
        recorded = {
            k.removeprefix("challenger_"): float(v)
            for k, v in challenger.tags.items()
            if k in ("challenger_roc_auc", "challenger_log_loss")
        }
        return Verdict(version, champion_version, recorded, None, True, False, reason)
    with ledger.locked(settings.warehouse_url) as conn:
        barred = ledger.rolled_back(conn, settings.model_name, version)
    if barred is not None:
        return _unjudged(
            version,
            champion_version,
            f"version {version} was rolled back ({barred.time:%Y-%m-%d %H:%M} UTC by "
            f"{barred.by}): the gate never promotes it again (by hand: readmission promote "
            f"{version})",
        )
    if challenger.tags.get(PERSON_DECISION_TAG) == REJECTED:
        return _unjudged(
            version,
            champion_version,
            f"version {version} was rejected by a person "
            f"({challenger.tags.get(PERSON_DECISION_TAG + '_by')}, "
            f"{challenger.tags.get(PERSON_DECISION_TAG + '_at')}: "
            f"{challenger.tags.get(PERSON_DECISION_TAG + '_comment') or 'no comment'}): the gate "
            f"never promotes it (by hand: readmission promote {version})",
        )
    if not _has_card(settings, challenger):
        return _unjudged(
            version,
            champion_version,
            f"version {version} has no model card ({model_card.JSON_PATH} in run "
            f"{challenger.run_id}): its training has not finished, so it is not judged",
        )

    holdout = warehouse.clean_rows(settings.warehouse_url, tables.HOLDOUT_BATCH)
    holdout_print = fingerprint(holdout["encounter_id"])
    y = labels(holdout)
    probability = registry.load_readmission_model(settings, version).predict_proba(holdout)
    ours = holdout_evaluation.evaluate_holdout(settings, holdout, y, probability)
    theirs = None
    comparison = None
    if champion_version is not None:
        champion_probability = registry.load_readmission_model(
            settings, champion_version
        ).predict_proba(holdout)
        theirs = holdout_evaluation.scores(y, champion_probability, 0.5)
        comparison = Comparison(
            champion_version,
            theirs["roc_auc"],
            paired_bootstrap_auc_difference(
                y,
                probability,
                champion_probability,
                holdout["patient_nbr"].to_numpy(),
                settings.bootstrap_resamples,
                holdout_evaluation.BOOTSTRAP_SEED,
            ),
        )
    checks = judge(policy, Measured.of(ours), comparison)
    passed = all(c.passed for c in checks)
    failed = [c.detail for c in checks if not c.passed]
    reason = "; ".join(failed) if failed else checks[-1].detail
    decision = change_control.classify(
        plan, _promotion_facts(settings, challenger, champion, checks, ours)
    )
    # Both must allow it: the gate's checks (the settings' policy) and the plan.
    promoted = passed and auto_promote and decision.ruling is Ruling.AUTOMATIC
    evidence = (
        ledger.Evidence(
            comparison.difference.delta,
            (comparison.difference.low, comparison.difference.high),
            holdout_print,
        )
        if comparison
        else None
    )
    # The verdict first, the promotion last: a retry after a crash in between finds the same
    # verdict (same rows, same bootstrap seed) to record again and then promotes; one after the
    # promotion changes nothing.
    _record_verdict(
        settings,
        version,
        checks,
        passed,
        promoted,
        reason,
        ours,
        comparison,
        len(holdout),
        holdout_print,
        decision,
    )
    aucs = {version: ours.scores["roc_auc"]}
    if comparison is not None:
        aucs[comparison.champion_version] = comparison.champion_roc_auc
    keep_holdout_aucs(settings, holdout, y, holdout_print, aucs)
    if promoted:
        change_production(
            settings,
            version,
            by,
            f"{reason} (plan rule {decision.rule_id})",
            ledger.AUTO,
            evidence,
            ledger.Authority(plan.sha256, decision.rule_id),
        )
    elif passed:  # kept out of production by the policy: served in shadow, to gather live evidence
        registry.set_shadow(settings, version)
    log.info("challenger v%s: %s (%s)", version, "passed" if passed else "rejected", reason)
    log.info("change control plan %s: %s: %s", plan.short_hash, decision.ruling, decision.reason)
    return Verdict(
        version,
        champion_version,
        ours.scores,
        theirs,
        passed,
        promoted,
        reason,
        tuple(checks),
        delta_roc_auc=evidence.delta_roc_auc if evidence else None,
        delta_roc_auc_ci=evidence.delta_roc_auc_ci if evidence else None,
        holdout_fingerprint=holdout_print,
        decision=decision,
    )


def _promotion_facts(
    settings: Settings,
    challenger: ModelVersion,
    champion: ModelVersion | None,
    checks: list[Check],
    ours: holdout_evaluation.HoldoutEvaluation,
) -> ChangeFacts:
    same_space, same_hyperparameters = (
        same_model(settings, challenger, champion) if champion else (True, True)
    )
    return ChangeFacts(
        kind=ChangeKind.PROMOTION,
        version=str(challenger.version),
        production_empty=champion is None,
        # The challenger is the head the warehouse's trainings name: the platform trained it.
        lineage_head=True,
        same_feature_space=same_space,
        same_hyperparameters=same_hyperparameters,
        checks={c.name: c.passed for c in checks},
        metrics={
            "roc_auc": ours.scores["roc_auc"],
            "log_loss": ours.scores["log_loss"],
            "calibration_slope": ours.calibration.slope,
        },
    )


def same_model(settings: Settings, ours: ModelVersion, theirs: ModelVersion) -> tuple[bool, bool]:
    """Whether two versions share their feature space and their hyperparameters, as their
    training runs logged them."""
    mine, other = _params(settings, ours), _params(settings, theirs)
    return (
        mine.get("feature_space") == other.get("feature_space"),
        all(mine.get(k) == other.get(k) for k in HYPERPARAMETERS),
    )


def _params(settings: Settings, version: ModelVersion) -> dict[str, str]:
    if not version.run_id:
        return {}
    return dict(registry.connect(settings).get_run(version.run_id).data.params)


def decide(
    settings: Settings,
    version: str,
    approved: bool,
    by: str,
    comment: str,
    at: str,
    shown_champion: str | None,
) -> ledger.ProductionChange | None:
    """Record a person's decision on a version the plan reserved for them: approved, it goes to
    production (a ledger row by them, with their comment); rejected, the gate never promotes it.
    `at`: when they decided (ISO time), so a retry records the same decision, not a new one.
    `shown_champion`: the production version the verdict they read compared against (None:
    nothing was in production). An approval is refused, and nothing recorded, when production
    has changed since: they approved a comparison that no longer holds.
    The production change if one was made; None if rejected or already in production."""
    decision = APPROVED if approved else REJECTED
    client = registry.connect(settings)
    if approved:
        found = registry.production_version(settings)
        now = str(found.version) if found else None
        # `now == version`: a retry after this approval already promoted it.
        if now not in (shown_champion, version):
            raise PromotionError(
                f"v{version} was approved against production "
                f"{'v' + shown_champion if shown_champion else '(none)'}, but production is "
                f"{'v' + now if now else '(none)'} now: run 03_evaluate_and_promote again "
                "(or `readmission evaluate`) to judge it against the version now in production"
            )
    for key, value in {
        PERSON_DECISION_TAG: decision,
        f"{PERSON_DECISION_TAG}_by": by,
        f"{PERSON_DECISION_TAG}_at": at,
        f"{PERSON_DECISION_TAG}_comment": comment,
    }.items():
        client.set_model_version_tag(settings.model_name, version, key, value)
    if not approved:
        log.info("v%s rejected by %s: %s", version, by, comment or "no comment")
        return None
    tags = client.get_model_version(settings.model_name, version).tags
    return change_production(
        settings,
        version,
        by,
        f"approved by a person: {comment or 'no comment'} (the plan reserved it: "
        f"{tags.get(CHANGE_CONTROL_TAG + '_reason', 'no reason recorded')})",
        ledger.MANUAL,
        authority=ledger.Authority(change_control.file_sha256(settings), None, comment or None),
    )


def approval_request(settings: Settings, verdict: Verdict) -> tuple[str, str]:
    """The subject and Markdown body a person reads before deciding on a promotion the plan
    reserved for them: the verdict, the plan's reason and where the model card is."""
    decision = verdict.decision
    assert decision is not None, "only a judged verdict goes to a person"
    version = verdict.challenger_version
    found = registry.model_version(settings, version)
    run_id = found.run_id if found else None
    checks = "\n".join(
        f"- {'passed' if c.passed else '**failed**'} `{c.name}`: {c.detail}" for c in verdict.checks
    )
    card = f"`runs:/{run_id}/{model_card.MARKDOWN_PATH}` (and `{model_card.JSON_PATH}`)"
    if settings.tracking_uri.startswith(("http://", "https://")):
        link = (
            f"{settings.tracking_uri.rstrip('/')}/#/models/{settings.model_name}/versions/{version}"
        )
        card += f", in the MLflow UI: [{settings.model_name} v{version}]({link})"
    now = (
        f"production now: v{verdict.champion_version}"
        if verdict.champion_version
        else "nothing in production yet"
    )
    subject = f"Promote {settings.model_name} v{version} to production ({now})?"
    body = "\n\n".join(
        [
            f"**Why a person decides** (change control plan "
            f"`{decision.plan_sha256[: change_control.SHORT_HASH]}`, rule "
            f"`{decision.rule_id or 'none'}`): {decision.reason}",
            f"**Verdict of the gate**: {'passed' if verdict.passed else 'failed'}: "
            f"{verdict.reason}",
            checks,
            f"**Model card**: {card}",
            "**Approve** makes it production (the promotion ledger names you and your "
            "comment); **Reject** keeps it out: the gate never promotes it.",
        ]
    )
    return subject, body


def _unjudged(version: str, champion_version: str | None, reason: str) -> Verdict:
    """A challenger the gate does not judge: nothing is measured, recorded or changed."""
    log.info("challenger v%s not judged: %s", version, reason)
    return Verdict(version, champion_version, {}, None, False, False, reason, judged=False)


def _has_card(settings: Settings, version: ModelVersion) -> bool:
    if not version.run_id:
        return False
    found = registry.connect(settings).list_artifacts(version.run_id)
    return any(artifact.path == model_card.JSON_PATH for artifact in found)


def _record_verdict(
    settings: Settings,
    version: str,
    checks: list[Check],
    passed: bool,
    promoted: bool,
    reason: str,
    ours: holdout_evaluation.HoldoutEvaluation,
    comparison: Comparison | None,
    holdout_rows: int,
    holdout_print: str,
    decision: Decision,
) -> None:
    difference = comparison.difference if comparison else None
    tags = {
        "validation_status": "passed" if passed else "rejected",
        "validation_reason": reason,
        **{f"check_{c.name}": f"{'passed' if c.passed else 'failed'}: {c.detail}" for c in checks},
        "challenger_roc_auc": f"{ours.scores['roc_auc']:.6f}",
        "challenger_roc_auc_ci": f"{ours.roc_auc.low:.6f}-{ours.roc_auc.high:.6f}",
        "challenger_log_loss": f"{ours.scores['log_loss']:.6f}",
        "challenger_calibration_slope": f"{ours.calibration.slope:.6f}",
        "champion_version": comparison.champion_version if comparison else "none",
        "champion_roc_auc": f"{comparison.champion_roc_auc:.6f}" if comparison else "none",
        "delta_roc_auc": f"{difference.delta:.6f}" if difference else "none",
        "delta_roc_auc_ci": f"{difference.low:.6f} {difference.high:.6f}" if difference else "none",
        # Champion and challenger on exactly the same rows: today's holdout, named by its print.
        "validation_holdout_rows": str(holdout_rows),
        "validation_holdout_fingerprint": holdout_print,
        "promoted_by": "auto" if promoted else "manual",
        CHANGE_CONTROL_TAG: decision.ruling.value,
        f"{CHANGE_CONTROL_TAG}_rule": decision.rule_id or "none",
        f"{CHANGE_CONTROL_TAG}_reason": decision.reason,
        f"{CHANGE_CONTROL_TAG}_plan": decision.plan_sha256,
    }
    client = registry.connect(settings)
    for key, value in tags.items():
        client.set_model_version_tag(settings.model_name, version, key, value)


def keep_holdout_aucs(
    settings: Settings,
    holdout: pd.DataFrame,
    y: np.ndarray,
    holdout_print: str,
    known: Mapping[str, float],
) -> None:
    """Keep every lineage version's AUC on this holdout as a version tag, computed once per
    holdout (`known`: the ones the gate just measured), and name this holdout as the one the
    history compares versions on."""
    client = registry.connect(settings)
    tag = registry_reader.holdout_auc_tag(holdout_print)
    lineage_versions = [
        b.model_version
        for b in inventory.batch_list(settings.warehouse_url, settings.model_name)
        if b.model_version is not None
    ]
    for version in dict.fromkeys([*known, *lineage_versions]):
        if version in known:
            auc: float | None = known[version]
        elif tag in client.get_model_version(settings.model_name, version).tags:
            continue
        else:
            auc = _holdout_auc(settings, version, holdout, y)
        if auc is not None:
            client.set_model_version_tag(settings.model_name, version, tag, f"{auc:.6f}")
    client.set_registered_model_tag(
        settings.model_name, registry_reader.COMPARED_HOLDOUT_TAG, holdout_print
    )


def _holdout_auc(
    settings: Settings, version: str, holdout: pd.DataFrame, y: np.ndarray
) -> float | None:
    try:
        probability = registry.load_readmission_model(settings, version).predict_proba(holdout)
    except Exception as error:  # an old version that no longer loads must not block the gate
        log.warning("version %s not scored on the holdout (it does not load): %s", version, error)
        return None
    return float(metrics.roc_auc_score(y, probability))
