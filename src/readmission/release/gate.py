"""The promotion gate as a pure function: the challenger's numbers on the holdout, and its
comparison with the champion on the same rows, judged against the policy (the settings, or a DAG
run's choice of them). `judge` measures nothing and records nothing: readmission.release.promotion
measures, records the checks as tags and acts on the verdict.

The checks: quality floors (MIN_AUC, MAX_LOG_LOSS), no reliable subgroup more than
GATE_SUBGROUP_AUC_MARGIN below the overall AUC, a calibration slope within bounds, and the AUC
difference to the champion (paired, patient-level bootstrap interval) satisfying
PROMOTION_POLICY.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

from readmission.change_control import Decision, Ruling
from readmission.config import Settings
from readmission.evaluation import holdout_evaluation
from readmission.evaluation.uncertainty import AucDifference

PolicyName = Literal["superior", "non_inferior"]


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
    def of(cls, ours: holdout_evaluation.HoldoutEvaluation) -> Measured:
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
