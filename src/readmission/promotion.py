"""The promotion policy and every change of the production version.

`evaluate_and_promote` judges the lineage head (challenger: the version the last trained batch
produced, from the warehouse's `trainings` table) against the production one (champion) on the
holdout as it stands: quality floors, no reliable subgroup far below the overall AUC, a
calibration slope within bounds, and the AUC difference to the champion on the same rows with a
paired, patient-level bootstrap interval that must satisfy PROMOTION_POLICY. Each check is
recorded as a tag on the challenger. A version without its model card is unfinished and not
judged; a version once rolled back, or rejected by a person, is never promoted by the gate again.

After the verdict the change control plan (readmission.change_control) classifies the promotion:
a change the plan lets the platform make is promoted, the ledger row naming the plan's rule; a
change the plan reserves for a person is not: its reason is recorded on the version and waits
for `decide` (DAG 03's approval step in the Airflow UI, or `readmission promote` by hand).

`change_production` and `rollback` write the promotion ledger, under its lock, in the same step as
the registry change. Before the alias moves, the change is written as an intent tag on the
version going in, naming the ledger row it follows; whoever next holds the lock and finds the
alias moved without its row (a process killed in between) records the row from the intent
instead of taking the move for one made outside the platform.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
import pandas as pd
from mlflow.entities.model_registry import ModelVersion
from mlflow.exceptions import MlflowException
from sklearn import metrics
from sqlalchemy.engine import Connection

from readmission import (
    change_control,
    evaluation,
    ledger,
    model_card,
    registry,
    registry_reader,
    warehouse,
)
from readmission.change_control import ChangeFacts, ChangeKind, Decision, Ruling
from readmission.config import Settings
from readmission.holdout import fingerprint
from readmission.model import ModelParams, labels
from readmission.uncertainty import AucDifference, paired_bootstrap_auc_difference

log = logging.getLogger(__name__)
OUTSIDE = "outside the platform (MLflow UI or API)"
INTENT_TAG = "production_change"  # on the version going in, written before the alias moves
PolicyName = Literal["superior", "non_inferior"]
HYPERPARAMETERS = tuple(ModelParams.__dataclass_fields__)
# The plan's decision on the version's promotion (Ruling), its rule, reason and plan hash.
CHANGE_CONTROL_TAG = "change_control"
# A person's decision on a version the plan reserved for them: approved or rejected, by whom,
# when, with which comment. A rejected version is never promoted by the gate again.
PERSON_DECISION_TAG = "person_decision"
APPROVED, REJECTED = "approved", "rejected"


class PromotionError(ValueError):
    """A production change that cannot be made; the message says why and what to do."""


@dataclass(frozen=True)
class Check:
    name: str
    passed: bool
    detail: str


@dataclass(frozen=True)
class Policy:
    """Everything the gate compares against: the settings, or a DAG run's choice of them."""

    min_auc: float
    max_log_loss: float
    subgroup_auc_margin: float
    calibration_slope_min: float
    calibration_slope_max: float
    promotion_policy: PolicyName
    non_inferiority_margin: float

    @classmethod
    def of(
        cls,
        settings: Settings,
        promotion_policy: PolicyName | None = None,
        non_inferiority_margin: float | None = None,
    ) -> Policy:
        return cls(
            min_auc=settings.min_auc,
            max_log_loss=settings.max_log_loss,
            subgroup_auc_margin=settings.gate_subgroup_auc_margin,
            calibration_slope_min=settings.gate_calibration_slope_min,
            calibration_slope_max=settings.gate_calibration_slope_max,
            promotion_policy=promotion_policy or settings.promotion_policy,
            non_inferiority_margin=settings.non_inferiority_margin
            if non_inferiority_margin is None
            else non_inferiority_margin,
        )


@dataclass(frozen=True)
class SubgroupAuc:
    attribute: str
    group: str
    roc_auc: float | None
    reliable: bool  # enough readmissions and non-readmissions to judge


@dataclass(frozen=True)
class Measured:
    """The challenger's numbers the gate judges, on the holdout as it stands."""

    roc_auc: float
    log_loss: float
    calibration_slope: float
    subgroups: tuple[SubgroupAuc, ...]

    @classmethod
    def of(cls, ours: evaluation.HoldoutEvaluation) -> Measured:
        return cls(
            roc_auc=ours.scores["roc_auc"],
            log_loss=ours.scores["log_loss"],
            calibration_slope=ours.calibration.slope,
            subgroups=tuple(
                SubgroupAuc(attribute, row.group, row.roc_auc, row.reliable)
                for attribute, rows in ours.subgroups.items()
                for row in rows
            ),
        )


@dataclass(frozen=True)
class Comparison:
    """Challenger against champion on the same holdout rows."""

    champion_version: str
    champion_roc_auc: float
    difference: AucDifference  # challenger minus champion


@dataclass(frozen=True)
class Verdict:
    challenger_version: str
    champion_version: str | None
    challenger: dict[str, float]
    champion: dict[str, float] | None
    passed: bool
    promoted: bool
    reason: str
    checks: tuple[Check, ...] = ()
    judged: bool = True  # False: card-less or rolled back, nothing measured or recorded
    delta_roc_auc: float | None = None
    delta_roc_auc_ci: tuple[float, float] | None = None
    holdout_fingerprint: str | None = None
    decision: Decision | None = None  # the plan's, on this promotion; None: not judged

    @property
    def needs_person(self) -> bool:
        """The plan reserves this promotion for a person's decision."""
        return self.decision is not None and self.decision.ruling is Ruling.PERSON

    def as_dict(self) -> dict[str, Any]:
        """The verdict as DAG 03 returns it (its XCom): numbers and names, JSON-ready."""
        return {
            "challenger_version": self.challenger_version,
            "champion_version": self.champion_version,
            # Empty on a re-run after the promotion: nothing was scored again.
            "challenger_roc_auc": self.challenger.get("roc_auc"),
            "champion_roc_auc": self.champion["roc_auc"] if self.champion else None,
            "delta_roc_auc": self.delta_roc_auc,
            "delta_roc_auc_ci": list(self.delta_roc_auc_ci) if self.delta_roc_auc_ci else None,
            "holdout_fingerprint": self.holdout_fingerprint,
            "judged": self.judged,
            "passed": self.passed,
            "promoted": self.promoted,
            "reason": self.reason,
            "checks": {c.name: c.passed for c in self.checks},
            "change_control": self.decision.as_dict() if self.decision else None,
        }


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
    head = warehouse.lineage_head(settings.warehouse_url, settings.model_name)
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

    holdout = warehouse.clean_rows(settings.warehouse_url, warehouse.HOLDOUT_BATCH)
    holdout_print = fingerprint(holdout["encounter_id"])
    y = labels(holdout)
    probability = registry.load_readmission_model(settings, version).predict_proba(holdout)
    ours = evaluation.evaluate_holdout(settings, holdout, y, probability)
    theirs = None
    comparison = None
    if champion_version is not None:
        champion_probability = registry.load_readmission_model(
            settings, champion_version
        ).predict_proba(holdout)
        theirs = evaluation.scores(y, champion_probability, 0.5)
        comparison = Comparison(
            champion_version,
            theirs["roc_auc"],
            paired_bootstrap_auc_difference(
                y,
                probability,
                champion_probability,
                holdout["patient_nbr"].to_numpy(),
                settings.bootstrap_resamples,
                evaluation.BOOTSTRAP_SEED,
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
    ours: evaluation.HoldoutEvaluation,
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


def judge(policy: Policy, ours: Measured, comparison: Comparison | None) -> list[Check]:
    """Every check of the promotion gate, passed or not; the champion comparison comes last."""
    auc, log_loss = ours.roc_auc, ours.log_loss
    return [
        Check(
            "min_auc",
            auc >= policy.min_auc,
            f"holdout AUC {auc:.4f} {'meets' if auc >= policy.min_auc else 'is below'} "
            f"MIN_AUC {policy.min_auc}",
        ),
        Check(
            "max_log_loss",
            log_loss <= policy.max_log_loss,
            f"holdout log-loss {log_loss:.4f} is "
            f"{'within' if log_loss <= policy.max_log_loss else 'above'} "
            f"MAX_LOG_LOSS {policy.max_log_loss}",
        ),
        _subgroup_check(policy, ours),
        _calibration_check(policy, ours),
        _champion_check(policy, comparison),
    ]


def _champion_check(policy: Policy, comparison: Comparison | None) -> Check:
    if comparison is None:
        return Check("champion", True, "no production model yet; quality floors met")
    d = comparison.difference
    if policy.promotion_policy == "superior":
        bound, rule = 0.0, "PROMOTION_POLICY=superior: its lower bound must be above 0"
    else:
        bound = -policy.non_inferiority_margin
        rule = (
            "PROMOTION_POLICY=non_inferior: its lower bound must be above minus "
            f"NON_INFERIORITY_MARGIN {policy.non_inferiority_margin}"
        )
    # Strictly above: an interval touching the bound (a tie, at worst) is not enough.
    passed = d.low > bound
    measured = (
        f"holdout AUC difference to champion v{comparison.champion_version} "
        f"({comparison.champion_roc_auc:.4f}) on the same rows {d.delta:+.4f}, "
        f"{d.level:.0%} CI [{d.low:+.4f}, {d.high:+.4f}]"
    )
    if not passed:
        return Check("champion", False, f"{measured}: {rule}")
    if policy.promotion_policy == "superior":
        return Check("champion", True, f"{measured}: better than the champion ({rule})")
    return Check(
        "champion",
        True,
        f"{measured}: not worse than the champion by more than the margin ({rule})",
    )


def _subgroup_check(policy: Policy, ours: Measured) -> Check:
    floor = ours.roc_auc - policy.subgroup_auc_margin
    judged = [s for s in ours.subgroups if s.reliable and s.roc_auc is not None]
    below = [
        f"{s.attribute} {s.group} {s.roc_auc:.3f}"
        for s in judged
        if s.roc_auc is not None and s.roc_auc < floor
    ]
    skipped = len(ours.subgroups) - len(judged)
    note = f" ({skipped} group(s) too small to judge)" if skipped else ""
    if below:
        return Check(
            "subgroup_auc",
            False,
            f"subgroup AUC below the overall {ours.roc_auc:.3f} minus "
            f"GATE_SUBGROUP_AUC_MARGIN {policy.subgroup_auc_margin}: {', '.join(below)}",
        )
    return Check(
        "subgroup_auc",
        True,
        f"{len(judged)} subgroups within {policy.subgroup_auc_margin} of the overall "
        f"AUC {ours.roc_auc:.3f}{note}",
    )


def _calibration_check(policy: Policy, ours: Measured) -> Check:
    slope = ours.calibration_slope
    low, high = policy.calibration_slope_min, policy.calibration_slope_max
    inside = low <= slope <= high
    return Check(
        "calibration_slope",
        inside,
        f"calibration slope {slope:.3f} is {'within' if inside else 'outside'} "
        f"[GATE_CALIBRATION_SLOPE_MIN {low}, GATE_CALIBRATION_SLOPE_MAX {high}]",
    )


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
    ours: evaluation.HoldoutEvaluation,
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
    lineage = [
        b.model_version
        for b in warehouse.batch_list(settings.warehouse_url, settings.model_name)
        if b.model_version is not None
    ]
    for version in dict.fromkeys([*known, *lineage]):
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


def change_production(
    settings: Settings,
    version: str | int,
    by: str,
    reason: str,
    action: str = ledger.MANUAL,
    evidence: ledger.Evidence | None = None,
    authority: ledger.Authority | None = None,
) -> ledger.ProductionChange | None:
    """Make `version` production and record the change; None if it already is. `authority`:
    the plan and rule (or comment) the change was made under; default, the plan in force."""
    version = str(version)
    with ledger.locked(settings.warehouse_url) as conn:
        current, _ = _notice(conn, settings, noticed_by=by)
        if current == version:
            return None
        entry = _move(conn, settings, current, version, by, reason, action, evidence, authority)
    log.info("production %s: v%s -> v%s by %s", settings.model_name, current, version, by)
    return entry


def rollback(
    settings: Settings, by: str, reason: str | None = None, to: str | None = None
) -> ledger.ProductionChange:
    """Take the production version out (marked: the gate never promotes it again) and return
    to `to`, or to the last version production had before it that was not rolled back itself."""
    with ledger.locked(settings.warehouse_url) as conn:
        current, noticed = _notice(conn, settings, noticed_by=by)
        if (
            noticed is not None
            and noticed.action == ledger.ROLLBACK
            and (to is None or noticed.to_version == str(to))
        ):
            # A rollback killed after the alias moved, finished just now: this re-run of it
            # must not roll back once more.
            return noticed
        if current is None:
            raise PromotionError(
                f"no version of {settings.model_name} is in production: nothing to roll back"
            )
        target = str(to) if to is not None else _rollback_target(conn, settings, current)
        if target == current:
            raise PromotionError(f"version {target} is the production version already")
        entry = _move(
            conn,
            settings,
            current,
            target,
            by,
            reason or f"rollback: version {current} taken out of production, {target} back",
            ledger.ROLLBACK,
        )
    log.info("rolled %s back: v%s -> v%s by %s", settings.model_name, current, target, by)
    return entry


def _rollback_target(conn: Connection, settings: Settings, current: str) -> str:
    changes = ledger.entries_of(conn, settings.model_name)
    for change in reversed(changes):
        candidate = change.from_version
        if (
            candidate is not None
            and candidate != current
            and ledger.rolled_back(conn, settings.model_name, candidate) is None
        ):
            return candidate
    if len(changes) <= 1:
        raise PromotionError(
            f"version {current} was the first production version of {settings.model_name}: "
            "there is no earlier one to return to (promote a version instead)"
        )
    raise PromotionError(
        f"every version production had before version {current} was rolled back: name one "
        "(readmission rollback --to VERSION) or promote one"
    )


def _move(
    conn: Connection,
    settings: Settings,
    current: str | None,
    target: str,
    by: str,
    reason: str,
    action: str,
    evidence: ledger.Evidence | None = None,
    authority: ledger.Authority | None = None,
) -> ledger.ProductionChange:
    """Move production from `current` to `target` and add the ledger row (caller holds the
    lock). The intent goes onto `target` first, so a kill between the alias and the row is
    recorded as this change by the next holder of the lock (see `_notice`)."""
    authority = authority or ledger.Authority(change_control.file_sha256(settings))
    last = ledger.latest(conn, settings.model_name)
    intent = {
        "after": last.id if last else 0,
        "from": current,
        "by": by,
        "reason": reason,
        "action": action,
        "evidence": evidence.as_dict() if evidence else None,
        "authority": vars(authority),
    }
    client = registry.connect(settings)
    try:
        client.set_model_version_tag(settings.model_name, target, INTENT_TAG, json.dumps(intent))
        registry.promote(settings, target)
    except MlflowException as error:
        if error.error_code in ("RESOURCE_DOES_NOT_EXIST", "INVALID_PARAMETER_VALUE"):
            raise PromotionError(
                f"{settings.model_name} has no version {target}: see `readmission status`"
            ) from error
        raise
    entry = ledger.record(
        conn, settings.model_name, current, target, by, reason, action, evidence, authority
    )
    if action == ledger.ROLLBACK and current is not None:
        _mark_rolled_back(settings, current, entry)
    return entry


def _mark_rolled_back(settings: Settings, version: str, entry: ledger.ProductionChange) -> None:
    """The mark people see in the registry; the gate's bar is the ledger row itself."""
    registry.connect(settings).set_model_version_tag(
        settings.model_name,
        version,
        registry_reader.ROLLED_BACK_TAG,
        f"{entry.time:%Y-%m-%d %H:%M:%S} UTC by {entry.by} (back to v{entry.to_version}): "
        f"{entry.reason}",
    )


def notice_outside_changes(settings: Settings, noticed_by: str) -> ledger.ProductionChange | None:
    """Record a production change made outside the platform (or one whose recording a kill cut
    short); None when there is none."""
    with ledger.locked(settings.warehouse_url) as conn:
        _, noticed = _notice(conn, settings, noticed_by)
    return noticed


def _notice(
    conn: Connection, settings: Settings, noticed_by: str
) -> tuple[str | None, ledger.ProductionChange | None]:
    """The production version now, and the entry recording it if the ledger did not know it."""
    production = registry.production_version(settings)
    # str: the SQLite store returns versions as int, the REST API as str
    now = str(production.version) if production else None
    last = ledger.latest(conn, settings.model_name)
    recorded = last.to_version if last else None
    if now == recorded:
        return now, None
    intent = _intent(production.tags) if production else None
    if intent and intent["after"] == (last.id if last else 0) and intent["from"] == recorded:
        evidence = intent["evidence"]
        entry = ledger.record(
            conn,
            settings.model_name,
            recorded,
            now,
            intent["by"],
            intent["reason"],
            intent["action"],
            ledger.Evidence(
                evidence["delta_roc_auc"],
                tuple(evidence["delta_roc_auc_ci"]),
                evidence["holdout_fingerprint"],
            )
            if evidence
            else None,
            # Intents written before the ledger named the plan carry no authority.
            ledger.Authority(**intent.get("authority") or {"plan_sha256": None}),
        )
        if entry.action == ledger.ROLLBACK and recorded is not None:
            _mark_rolled_back(settings, recorded, entry)
        log.warning(
            "production of %s: v%s -> v%s by %s was cut short before its ledger row; recorded "
            "it (noticed by %s)",
            settings.model_name,
            recorded,
            now,
            entry.by,
            noticed_by,
        )
        return now, entry
    change = f"version {now}" if now else "no version"
    entry = ledger.record(
        conn,
        settings.model_name,
        recorded,
        now,
        f"mlflow registry, {OUTSIDE}",
        f"production was set to {change} {OUTSIDE}; noticed by {noticed_by}",
        ledger.OUTSIDE,
        authority=ledger.Authority(change_control.file_sha256(settings)),
    )
    log.warning(
        "production of %s changed %s: v%s -> v%s", settings.model_name, OUTSIDE, recorded, now
    )
    return now, entry


def _intent(tags: Mapping[str, str]) -> dict[str, Any] | None:
    raw = tags.get(INTENT_TAG)
    if not raw:
        return None
    try:
        found: dict[str, Any] = json.loads(raw)
    except json.JSONDecodeError:  # edited by hand in the MLflow UI: not ours to trust
        return None
    return found
