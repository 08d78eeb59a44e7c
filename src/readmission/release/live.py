"""Acting on live evidence: what the served predictions, once their outcomes arrived, say about
production and its shadow (a realized-performance report, readmission.monitoring.realized).

- Roll back: the served version's recent realized AUC interval (patient bootstrap) lies wholly
  below REALIZED_AUC_FLOOR, or its realized calibration slope leaves
  [REALIZED_CALIBRATION_SLOPE_MIN, REALIZED_CALIBRATION_SLOPE_MAX], over at least
  LIVE_MIN_OUTCOMES counted outcomes: back to the newest earlier version not rolled back
  (production_changes.rollback).
- Promote the shadow: the lower end of the paired interval of its AUC minus production's on the
  same encounters lies above 0, over at least LIVE_MIN_OUTCOMES of them.

Each proposed change goes to the change-control plan (rules `live-rollback`, `live-promotion`);
only a change the plan makes automatic is made, with its numbers in the ledger's reason (and,
for a promotion, in its evidence columns). `act` is what DAG 04 and `readmission performance
--act` both call. Idempotent: once acted on, production is the version the evidence pointed to,
and the same report proposes nothing more. A person's decision stands: evidence scored before a
person put the version in production does not roll it back.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from mlflow.entities.model_registry import ModelVersion

from readmission import change_control, registry, registry_reader
from readmission.change_control import ChangeFacts, ChangeKind, Decision, Ruling
from readmission.config import Settings
from readmission.release import ledger, production_changes, promotion

log = logging.getLogger(__name__)
LIVE_EVIDENCE = "live_evidence"  # the plan's check of live changes


@dataclass(frozen=True)
class LiveAction:
    """One change the live evidence proposed, the plan's decision on it, and whether it was
    made."""

    kind: ChangeKind
    from_version: str
    to_version: str | None  # a rollback's target is chosen when it is made
    evidence: str  # the numbers, as recorded in the ledger's reason
    decision: Decision
    made: bool

    def as_dict(self) -> dict[str, Any]:
        return {
            "kind": self.kind.value,
            "from_version": self.from_version,
            "to_version": self.to_version,
            "evidence": self.evidence,
            "outcome": self.decision.ruling.value,
            "rule": self.decision.rule_id,
            "decision_reason": self.decision.reason,
            "made": self.made,
        }


def act(settings: Settings, report: dict[str, Any], by: str) -> list[LiveAction]:
    """Propose the changes `report` supports, have the plan decide, make the automatic ones."""
    production = registry.production_version(settings)
    if production is None:
        return []
    current = str(production.version)
    served = next((v for v in report["versions"] if v["version"] == current), None)
    if served is not None:
        worse = _worse_than_floor(settings, served)
        if worse is not None and not _after_a_persons_decision(settings, current, served):
            return [_rollback(settings, current, worse, by)]
    shadow = registry.shadow_version(settings)
    if shadow is None or str(shadow.version) == current:
        return []
    pair = next(
        (
            c
            for c in report.get("comparisons", ())
            if (c["production"], c["shadow"]) == (current, str(shadow.version))
        ),
        None,
    )
    if pair is None or pair["n"] < settings.live_min_outcomes or pair["delta_roc_auc_ci"] is None:
        return []
    if pair["delta_roc_auc_ci"][0] <= 0:  # not shown better (yet)
        return []
    return [_promote(settings, production, shadow, pair, by)]


def _worse_than_floor(settings: Settings, served: dict[str, Any]) -> str | None:
    """What in the served version's realized figures calls for a rollback, or None."""
    recent = served.get("recent") or {}
    n = recent.get("n") or 0
    if n < settings.live_min_outcomes:
        return None
    interval = recent.get("roc_auc_ci")
    if interval is not None and interval[1] < settings.realized_auc_floor:
        return (
            f"recent realized AUC {recent['roc_auc']:.4f} [95% {interval[0]:.4f}, "
            f"{interval[1]:.4f}] over {n} outcomes: upper end below REALIZED_AUC_FLOOR "
            f"{settings.realized_auc_floor}"
        )
    slope = served.get("calibration_slope")
    low, high = settings.realized_calibration_slope_min, settings.realized_calibration_slope_max
    if slope is not None and not low <= slope <= high:
        return (
            f"realized calibration slope {slope:.4f} over {served['n']} outcomes: outside "
            f"[{low}, {high}] (REALIZED_CALIBRATION_SLOPE_MIN/MAX)"
        )
    return None


def _after_a_persons_decision(settings: Settings, version: str, served: dict[str, Any]) -> bool:
    """Whether a person put `version` in production after its last scored prediction: the
    evidence was there when they decided, so it never overrules them."""
    entries = ledger.entries(settings.warehouse_url, settings.model_name)
    made = next((e for e in reversed(entries) if e.to_version == version), None)
    if made is None or made.action != ledger.MANUAL:
        return False
    return made.time > datetime.fromisoformat(served["last_scored_at"])


def _rollback(settings: Settings, current: str, worse: str, by: str) -> LiveAction:
    decision = change_control.classify(
        change_control.current(settings),
        ChangeFacts(
            kind=ChangeKind.LIVE_ROLLBACK,
            version=current,
            production_empty=False,
            lineage_head=True,  # not a condition of a rollback: the version leaves production
            same_feature_space=True,
            same_hyperparameters=True,
            checks={LIVE_EVIDENCE: True},
        ),
    )
    if decision.ruling is not Ruling.AUTOMATIC:
        log.warning("live evidence against v%s: %s; %s", current, worse, decision.reason)
        return LiveAction(ChangeKind.LIVE_ROLLBACK, current, None, worse, decision, False)
    try:
        entry = production_changes.rollback(
            settings, by, f"live evidence (rule {decision.rule_id}): {worse}", None
        )
    except (
        production_changes.PromotionError
    ) as error:  # no earlier version to return to: a person's call
        log.error("live evidence against v%s: %s; not rolled back: %s", current, worse, error)
        return LiveAction(
            ChangeKind.LIVE_ROLLBACK,
            current,
            None,
            f"{worse}; not rolled back: {error}",
            decision,
            False,
        )
    log.warning("rolled v%s back to v%s on live evidence: %s", current, entry.to_version, worse)
    return LiveAction(ChangeKind.LIVE_ROLLBACK, current, entry.to_version, worse, decision, True)


def _promote(
    settings: Settings,
    production: ModelVersion,
    shadow: ModelVersion,
    pair: dict[str, Any],
    by: str,
) -> LiveAction:
    current, candidate = str(production.version), str(shadow.version)
    low, high = pair["delta_roc_auc_ci"]
    evidence = (
        f"shadow v{candidate} minus production v{current}: realized AUC difference "
        f"{pair['delta_roc_auc']:+.4f} [95% {low:+.4f}, {high:+.4f}] on {pair['n']} paired "
        f"outcomes (LIVE_MIN_OUTCOMES {settings.live_min_outcomes})"
    )
    same_space, same_hyperparameters = promotion.same_model(settings, shadow, production)
    newest = registry.newest_version(settings)
    decision = change_control.classify(
        change_control.current(settings),
        ChangeFacts(
            kind=ChangeKind.LIVE_PROMOTION,
            version=candidate,
            production_empty=False,
            lineage_head=newest is not None and str(newest.version) == candidate,
            same_feature_space=same_space,
            same_hyperparameters=same_hyperparameters,
            # A version a rollback took out, or a person rejected, stays out, whatever it shows
            # in shadow.
            checks={
                LIVE_EVIDENCE: registry_reader.ROLLED_BACK_TAG not in shadow.tags
                and shadow.tags.get(promotion.PERSON_DECISION_TAG) != promotion.REJECTED
            },
        ),
    )
    if decision.ruling is not Ruling.AUTOMATIC:
        log.warning("live evidence for v%s: %s; %s", candidate, evidence, decision.reason)
        return LiveAction(ChangeKind.LIVE_PROMOTION, current, candidate, evidence, decision, False)
    production_changes.change_production(
        settings,
        candidate,
        by,
        f"live evidence (rule {decision.rule_id}): {evidence}",
        ledger.AUTO,
        ledger.Evidence(pair["delta_roc_auc"], (low, high), None),
    )
    registry.set_shadow(settings, None)  # it answers now: nothing left to shadow
    log.info("promoted v%s on live evidence: %s", candidate, evidence)
    return LiveAction(ChangeKind.LIVE_PROMOTION, current, candidate, evidence, decision, True)
