"""The change control plan: which changes of the model the platform may make on its own, the
acceptance criteria they must meet, and which need a person.

The plan is a file (`change_control.yaml` beside this module, or `CHANGE_CONTROL_PLAN`),
validated at load against the schema below and versioned by the sha256 of its bytes. `classify`
is the rule engine: a pure function from the facts of one proposed change to a `Decision`.
Format and how to change the plan: docs/change_control.md.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, StrictBool, ValidationError, model_validator

from readmission.config import Settings

DEFAULT_PLAN = Path(__file__).with_name("change_control.yaml")
SHORT_HASH = 12
# The checks of the promotion gate (readmission.release.gate.judge), by the names it records
# them under: a promotion rule may only name these, so a misspelt check stops the load instead of
# never passing.
GATE_CHECKS = ("min_auc", "max_log_loss", "subgroup_auc", "calibration_slope", "champion")


class ChangeKind(StrEnum):
    WARM_START_TRAINING = "warm_start_training"
    PROMOTION = "promotion"
    LIVE_PROMOTION = "live_promotion"
    LIVE_ROLLBACK = "live_rollback"


class Ruling(StrEnum):
    AUTOMATIC = "automatic"  # the platform makes the change, under the rule named
    PERSON = "person"  # the change waits for a person's decision
    REJECTED = "rejected"  # the change fails the acceptance criteria: nobody makes it


class PlanError(ValueError):
    """The plan cannot be read or does not validate; the message names the file and field."""


CheckName = Annotated[str, Field(pattern=r"^[a-z][a-z0-9_]*$")]


class _Strict(BaseModel):
    # A misspelt key must stop the load: ignored, it would silently widen what is allowed.
    model_config = ConfigDict(extra="forbid", frozen=True)


class Conditions(_Strict):
    """Facts a change must show for the rule to match; an absent one matches any value."""

    production_empty: StrictBool | None = None
    lineage_head: StrictBool | None = None
    same_feature_space: StrictBool | None = None
    same_hyperparameters: StrictBool | None = None
    failed_checks: tuple[CheckName, ...] | None = Field(
        None, description="Every check named here was reported failed."
    )


class Criteria(_Strict):
    """What a matched change must meet; unmet, it is rejected."""

    checks_passed: tuple[CheckName, ...] = ()
    min_auc: float | None = Field(None, ge=0, le=1)
    max_log_loss: float | None = Field(None, gt=0)
    calibration_slope: tuple[float, float] | None = None

    @model_validator(mode="after")
    def _ordered_slope_bounds(self) -> Criteria:
        if self.calibration_slope and self.calibration_slope[0] > self.calibration_slope[1]:
            raise ValueError("calibration_slope: the lower bound is above the upper one")
        return self


class Rule(_Strict):
    id: str = Field(pattern=r"^[a-z][a-z0-9-]*$")
    change: ChangeKind
    description: str = Field(min_length=1)
    when: Conditions = Conditions()
    criteria: Criteria = Criteria()
    decision: Literal["automatic", "person"]

    @model_validator(mode="after")
    def _gate_checks_only(self) -> Rule:
        if self.change is ChangeKind.PROMOTION:
            named = (*self.criteria.checks_passed, *(self.when.failed_checks or ()))
            unknown = sorted(set(named) - set(GATE_CHECKS))
            if unknown:
                raise ValueError(
                    f"names {', '.join(unknown)}, not a check of the promotion gate "
                    f"({', '.join(GATE_CHECKS)})"
                )
        return self


class ModificationProtocol(_Strict):
    data_management: str = Field(min_length=1)
    retraining: str = Field(min_length=1)
    performance_evaluation: str = Field(min_length=1)
    update_procedure: str = Field(min_length=1)


class PlanDocument(_Strict):
    """The plan file's content, as its schema allows it."""

    schema_version: Literal[1]
    model: str = Field(min_length=1)
    modification_protocol: ModificationProtocol
    impact_assessment: str = Field(min_length=1)
    rules: tuple[Rule, ...] = Field(min_length=1)

    @model_validator(mode="after")
    def _unique_ids(self) -> PlanDocument:
        ids = [rule.id for rule in self.rules]
        twice = sorted({i for i in ids if ids.count(i) > 1})
        if twice:
            raise ValueError(f"rule id(s) {', '.join(twice)} appear more than once")
        return self


@dataclass(frozen=True)
class Plan:
    """A loaded, valid plan and the version it is: the sha256 of the file's bytes."""

    path: Path
    sha256: str
    document: PlanDocument

    @property
    def short_hash(self) -> str:
        return self.sha256[:SHORT_HASH]

    @property
    def rules(self) -> tuple[Rule, ...]:
        return self.document.rules


@dataclass(frozen=True)
class ChangeFacts:
    """What is known of one proposed change, as the caller established it.

    `same_feature_space` / `same_hyperparameters` compare the version with the one it replaces
    (promotions: the champion) or continues (training: its parent); with none, nothing changed:
    True. `lineage_head`: the version was registered by the platform's training as the newest
    of its lineage, not by other means. `checks`: each check by name, passed or not (the gate's
    for promotions, `live_evidence` for live changes); `metrics`: the challenger's holdout
    `roc_auc`, `log_loss` and `calibration_slope`. A fact that is None matches no condition.
    """

    kind: ChangeKind
    version: str | None  # None: a trained version whose card is written before it is registered
    production_empty: bool | None  # None: not established (training changes no production)
    lineage_head: bool
    same_feature_space: bool
    same_hyperparameters: bool
    checks: Mapping[str, bool] = field(default_factory=dict)
    metrics: Mapping[str, float] = field(default_factory=dict)


@dataclass(frozen=True)
class Criterion:
    """One acceptance criterion as judged: the evidence a decision rests on."""

    name: str
    required: str
    observed: str
    met: bool


@dataclass(frozen=True)
class Decision:
    ruling: Ruling  # who makes the change: the platform, a person, or nobody
    rule_id: str | None  # None: no rule of the plan names this change
    reason: str
    plan_sha256: str
    facts: ChangeFacts
    criteria: tuple[Criterion, ...] = ()

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready: for the model card, the ledger and the gate's tags."""
        facts = self.facts
        return {
            "outcome": self.ruling.value,  # the stored name (cards, tags, XComs)
            "rule": self.rule_id,
            "reason": self.reason,
            "plan_sha256": self.plan_sha256,
            "facts": {
                "kind": facts.kind.value,
                "version": facts.version,
                "production_empty": facts.production_empty,
                "lineage_head": facts.lineage_head,
                "same_feature_space": facts.same_feature_space,
                "same_hyperparameters": facts.same_hyperparameters,
                "checks": dict(facts.checks),
                "metrics": dict(facts.metrics),
            },
            "criteria": [vars(c) for c in self.criteria],
        }


def plan_path(settings: Settings) -> Path:
    """CHANGE_CONTROL_PLAN, else the plan shipped with the package (in a checkout and in every
    image, which install the package)."""
    return Path(settings.change_control_plan) if settings.change_control_plan else DEFAULT_PLAN


def load(path: Path) -> Plan:
    """Read and validate a plan file; PlanError names the file and the failing field."""
    try:
        raw = path.read_bytes()
    except OSError as error:
        raise PlanError(f"{path}: cannot read the change control plan: {error.strerror}") from error
    try:
        content = yaml.safe_load(raw)
    except yaml.YAMLError as error:
        mark = getattr(error, "problem_mark", None)
        where = f"line {mark.line + 1}: " if mark is not None else ""
        problem = getattr(error, "problem", None) or str(error)
        raise PlanError(f"{path.name}: {where}not valid YAML: {problem}") from error
    try:
        document = PlanDocument.model_validate(content)
    except ValidationError as error:
        raise PlanError(
            "\n".join(
                f"{path.name}: {_field(e['loc'])}: {e['msg']}"
                for e in error.errors(include_url=False)
            )
        ) from error
    return Plan(path, hashlib.sha256(raw).hexdigest(), document)


def current(settings: Settings) -> Plan:
    """The plan in force for these settings."""
    return load(plan_path(settings))


def file_sha256(settings: Settings) -> str | None:
    """The sha256 of the plan file in force, valid or not (None: unreadable). The ledger names
    the plan on every row, also on a person's change made while the plan does not validate (a
    rollback must not wait for a fix of the plan)."""
    try:
        return hashlib.sha256(plan_path(settings).read_bytes()).hexdigest()
    except OSError:
        return None


def _field(loc: Sequence[int | str]) -> str:
    """('rules', 2, 'criteria', 'min_auc') -> 'rules[2].criteria.min_auc'."""
    text = ""
    for part in loc:
        text += f"[{part}]" if isinstance(part, int) else f".{part}"
    return text.lstrip(".") or "(the whole file)"


def classify(plan: Plan, facts: ChangeFacts) -> Decision:
    """The plan's decision on one proposed change: the first rule whose conditions the facts
    meet decides; its unmet criteria reject the change; a change no rule names needs a person."""
    for rule in plan.rules:
        if rule.change is not facts.kind or not _matches(rule.when, facts):
            continue
        judged = _judge(rule.criteria, facts)
        unmet = [c for c in judged if not c.met]
        if unmet:
            reason = "; ".join(f"{c.name}: {c.observed} (required {c.required})" for c in unmet)
            return Decision(
                Ruling.REJECTED,
                rule.id,
                f"fails the acceptance criteria of rule {rule.id}: {reason}",
                plan.sha256,
                facts,
                judged,
            )
        ruling = Ruling.AUTOMATIC if rule.decision == "automatic" else Ruling.PERSON
        return Decision(ruling, rule.id, rule.description, plan.sha256, facts, judged)
    return Decision(
        Ruling.PERSON,
        None,
        f"no rule of the plan names this {facts.kind.value} (version {facts.version}): a "
        "change the plan does not name needs a person",
        plan.sha256,
        facts,
    )


def _matches(when: Conditions, facts: ChangeFacts) -> bool:
    flags = ("production_empty", "lineage_head", "same_feature_space", "same_hyperparameters")
    for name in flags:
        wanted = getattr(when, name)
        if wanted is not None and wanted != getattr(facts, name):
            return False
    return all(facts.checks.get(check) is False for check in when.failed_checks or ())


def _judge(criteria: Criteria, facts: ChangeFacts) -> tuple[Criterion, ...]:
    judged = [
        # A check that was not reported has not passed: missing evidence never allows a change.
        Criterion(
            f"check {name}",
            "passed",
            {True: "passed", False: "failed", None: "not reported"}[facts.checks.get(name)],
            facts.checks.get(name) is True,
        )
        for name in criteria.checks_passed
    ]
    metrics = facts.metrics
    if criteria.min_auc is not None:
        auc = metrics.get("roc_auc")
        judged.append(
            Criterion(
                "holdout roc_auc",
                f">= {criteria.min_auc}",
                _observed(auc),
                auc is not None and auc >= criteria.min_auc,
            )
        )
    if criteria.max_log_loss is not None:
        loss = metrics.get("log_loss")
        judged.append(
            Criterion(
                "holdout log_loss",
                f"<= {criteria.max_log_loss}",
                _observed(loss),
                loss is not None and loss <= criteria.max_log_loss,
            )
        )
    if criteria.calibration_slope is not None:
        low, high = criteria.calibration_slope
        slope = metrics.get("calibration_slope")
        judged.append(
            Criterion(
                "calibration slope",
                f"within [{low}, {high}]",
                _observed(slope),
                slope is not None and low <= slope <= high,
            )
        )
    return tuple(judged)


def _observed(value: float | None) -> str:
    return "not reported" if value is None else f"{value:.4f}"


def warm_start(plan: Plan, version: str | None) -> Decision:
    """The plan's decision on a version the training step made: a warm start in its parent's
    feature space with its parent's hyperparameters (training refuses any other continuation,
    training.check_feature_space), or the first of a lineage, which has nothing to differ from."""
    return classify(
        plan,
        ChangeFacts(
            kind=ChangeKind.WARM_START_TRAINING,
            version=version,
            production_empty=None,
            lineage_head=True,
            same_feature_space=True,
            same_hyperparameters=True,
        ),
    )


def card_section(plan: Plan, decisions: Sequence[Decision]) -> dict[str, Any]:
    """The model card's `change_control` section: the plan's version and the rules that
    applied to this version, each with the decision it made and the evidence."""
    return {
        "plan_sha256": plan.sha256,
        "plan_hash": plan.short_hash,
        "plan_file": plan.path.name,
        "rules_applied": [decision.as_dict() for decision in decisions],
    }
