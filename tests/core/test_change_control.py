"""The change control plan: its schema, its version (hash) and the rule engine (no services)."""

from __future__ import annotations

import copy
import hashlib
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml
from typer.testing import CliRunner, Result

from readmission import change_control, cli
from readmission.change_control import ChangeFacts, ChangeKind, PlanError, Ruling
from readmission.config import Settings
from tests.conftest import SUITE_PLAN

SHIPPED = yaml.safe_load(change_control.DEFAULT_PLAN.read_text())
ALL_PASSED = dict.fromkeys(change_control.GATE_CHECKS, True)
GOOD_METRICS = {"roc_auc": 0.66, "log_loss": 0.30, "calibration_slope": 1.0}


@pytest.fixture(scope="module")
def plan() -> change_control.Plan:
    return change_control.load(change_control.DEFAULT_PLAN)


@pytest.fixture
def write_plan(tmp_path: Path) -> Callable[[Callable[[dict[str, Any]], None]], Path]:
    """The shipped plan with one change made to it, as a file."""

    def write(change: Callable[[dict[str, Any]], None]) -> Path:
        content = copy.deepcopy(SHIPPED)
        change(content)
        path = tmp_path / "change_control.yaml"
        path.write_text(yaml.safe_dump(content, sort_keys=False))
        return path

    return write


def rule_index(rule_id: str) -> int:
    return next(i for i, rule in enumerate(SHIPPED["rules"]) if rule["id"] == rule_id)


def promotion(**overrides: Any) -> ChangeFacts:
    """A warm-started challenger of the production lineage that passes every check."""
    facts: dict[str, Any] = {
        "kind": ChangeKind.PROMOTION,
        "version": "7",
        "production_empty": False,
        "lineage_head": True,
        "same_feature_space": True,
        "same_hyperparameters": True,
        "checks": ALL_PASSED,
        "metrics": GOOD_METRICS,
    }
    return ChangeFacts(**(facts | overrides))


def failing(*names: str) -> dict[str, bool]:
    return ALL_PASSED | dict.fromkeys(names, False)


def test_the_shipped_plan_is_valid_and_versioned_by_the_sha256_of_its_bytes(plan) -> None:
    assert plan.sha256 == hashlib.sha256(change_control.DEFAULT_PLAN.read_bytes()).hexdigest()
    assert plan.short_hash == plan.sha256[:12]
    assert {rule.change for rule in plan.rules} == set(ChangeKind)
    protocol = plan.document.modification_protocol
    assert (
        protocol.retraining and protocol.performance_evaluation and plan.document.impact_assessment
    )


def test_any_change_to_the_file_is_a_new_plan_version(write_plan, plan) -> None:
    edited = write_plan(
        lambda c: c["rules"][rule_index("gate-promotion")]["criteria"].update(min_auc=0.61)
    )
    assert change_control.load(edited).sha256 != plan.sha256


def test_change_control_plan_setting_overrides_the_shipped_plan(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("CHANGE_CONTROL_PLAN")  # the suite's plan (tests/conftest.py)
    assert change_control.plan_path(Settings(_env_file=None)) == change_control.DEFAULT_PLAN
    other = tmp_path / "hospital_plan.yaml"
    settings = Settings(_env_file=None, CHANGE_CONTROL_PLAN=str(other))
    assert change_control.plan_path(settings) == other
    with pytest.raises(PlanError, match=r"hospital_plan\.yaml: cannot read"):
        change_control.current(settings)


# Each row: a change to the shipped plan, and the message (file: field: problem) it must give.
INVALID = [
    (
        lambda c: c["rules"][rule_index("gate-promotion")]["criteria"].update(min_auc="high"),
        f"change_control.yaml: rules[{rule_index('gate-promotion')}].criteria.min_auc: "
        "Input should be a valid number",
    ),
    (
        lambda c: c["rules"][0]["when"].update(production_emtpy=True),
        "change_control.yaml: rules[0].when.production_emtpy: Extra inputs are not permitted",
    ),
    (
        lambda c: c["modification_protocol"].pop("retraining"),
        "change_control.yaml: modification_protocol.retraining: Field required",
    ),
    (
        lambda c: c["rules"][1].update(change="retrain_from_scratch"),
        "change_control.yaml: rules[1].change: Input should be 'warm_start_training', "
        "'promotion', 'live_promotion' or 'live_rollback'",
    ),
    (
        lambda c: c["rules"][2].update(decision="maybe"),
        "change_control.yaml: rules[2].decision: Input should be 'automatic' or 'person'",
    ),
    (
        lambda c: c["rules"][0]["when"].update(lineage_head="yes"),
        "change_control.yaml: rules[0].when.lineage_head: Input should be a valid boolean",
    ),
    (
        lambda c: c["rules"][rule_index("gate-promotion")]["criteria"].update(
            checks_passed=["min_auc", "subgroup_acu"]
        ),
        f"change_control.yaml: rules[{rule_index('gate-promotion')}]: Value error, names "
        "subgroup_acu, not a check of the promotion gate",
    ),
    (
        lambda c: c["rules"][rule_index("gate-promotion")]["criteria"].update(
            calibration_slope=[1.3, 0.7]
        ),
        f"change_control.yaml: rules[{rule_index('gate-promotion')}].criteria: Value error, "
        "calibration_slope: the lower bound is above the upper one",
    ),
    (
        lambda c: c["rules"][3].update(id=c["rules"][0]["id"]),
        "change_control.yaml: (the whole file): Value error, rule id(s) "
        "first-production-version appear more than once",
    ),
    (
        lambda c: c.update(schema_version=2),
        "change_control.yaml: schema_version: Input should be 1",
    ),
]


@pytest.mark.parametrize(("change", "message"), INVALID)
def test_a_plan_that_does_not_validate_names_the_field(write_plan, change, message) -> None:
    with pytest.raises(PlanError) as raised:
        change_control.load(write_plan(change))
    assert message in str(raised.value)


def test_a_file_that_is_not_yaml_names_the_line(tmp_path: Path) -> None:
    path = tmp_path / "change_control.yaml"
    path.write_text("schema_version: 1\nrules: [\n  - id: x\n")
    with pytest.raises(PlanError, match=r"change_control\.yaml: line \d+: not valid YAML"):
        change_control.load(path)


# Each row: the facts of a proposed change, and the ruling and rule the shipped plan gives.
DECISIONS = [
    ("within the plan", promotion(), Ruling.AUTOMATIC, "gate-promotion"),
    (
        "first production version",
        promotion(production_empty=True, checks=ALL_PASSED),
        Ruling.PERSON,
        "first-production-version",
    ),
    (
        "first production version below the floor",
        promotion(production_empty=True, checks=failing("min_auc"), metrics={"roc_auc": 0.55}),
        Ruling.REJECTED,
        "first-production-version",
    ),
    (
        "registered by other means",
        promotion(lineage_head=False),
        Ruling.PERSON,
        "registered-by-other-means",
    ),
    (
        "new feature space",
        promotion(same_feature_space=False),
        Ruling.PERSON,
        "new-feature-space",
    ),
    (
        "new hyperparameters (after readmission tune)",
        promotion(same_hyperparameters=False),
        Ruling.PERSON,
        "new-hyperparameters",
    ),
    (
        "passes overall, a subgroup below its floor",
        promotion(checks=failing("subgroup_auc")),
        Ruling.PERSON,
        "subgroup-below-floor",
    ),
    (
        "a subgroup below its floor and no better than the champion",
        promotion(checks=failing("subgroup_auc", "champion")),
        Ruling.REJECTED,
        "subgroup-below-floor",
    ),
    (
        "does not beat the champion",
        promotion(checks=failing("champion")),
        Ruling.REJECTED,
        "gate-promotion",
    ),
    (
        "the gate passed it under loosened settings, the plan's floor holds",
        promotion(metrics=GOOD_METRICS | {"roc_auc": 0.58}),
        Ruling.REJECTED,
        "gate-promotion",
    ),
    (
        "calibration slope outside the plan's bounds",
        promotion(metrics=GOOD_METRICS | {"calibration_slope": 1.5}),
        Ruling.REJECTED,
        "gate-promotion",
    ),
    (
        "a check not reported is not passed",
        promotion(checks={k: v for k, v in ALL_PASSED.items() if k != "calibration_slope"}),
        Ruling.REJECTED,
        "gate-promotion",
    ),
    (
        "warm start in the same space with the same hyperparameters",
        promotion(kind=ChangeKind.WARM_START_TRAINING, checks={}, metrics={}),
        Ruling.AUTOMATIC,
        "warm-start",
    ),
    (
        "training in another feature space: the plan names no such training",
        promotion(kind=ChangeKind.WARM_START_TRAINING, same_feature_space=False, checks={}),
        Ruling.PERSON,
        None,
    ),
    (
        "live promotion on live evidence",
        promotion(kind=ChangeKind.LIVE_PROMOTION, checks={"live_evidence": True}),
        Ruling.AUTOMATIC,
        "live-promotion",
    ),
    (
        "live promotion without live evidence",
        promotion(kind=ChangeKind.LIVE_PROMOTION, checks={}),
        Ruling.REJECTED,
        "live-promotion",
    ),
    (
        "live promotion of a version from a new lineage",
        promotion(
            kind=ChangeKind.LIVE_PROMOTION,
            same_hyperparameters=False,
            checks={"live_evidence": True},
        ),
        Ruling.PERSON,
        None,
    ),
    (
        "live rollback on live evidence",
        promotion(kind=ChangeKind.LIVE_ROLLBACK, checks={"live_evidence": True}),
        Ruling.AUTOMATIC,
        "live-rollback",
    ),
    (
        "live rollback with nothing in production: not named",
        promotion(kind=ChangeKind.LIVE_ROLLBACK, production_empty=True),
        Ruling.PERSON,
        None,
    ),
]


@pytest.mark.parametrize(
    ("facts", "ruling", "rule"), [row[1:] for row in DECISIONS], ids=[row[0] for row in DECISIONS]
)
def test_the_plan_decides_each_kind_of_change(plan, facts, ruling, rule) -> None:
    decision = change_control.classify(plan, facts)
    assert (decision.ruling, decision.rule_id) == (ruling, rule), decision.reason
    assert decision.plan_sha256 == plan.sha256
    if ruling is Ruling.REJECTED:
        unmet = [c for c in decision.criteria if not c.met]
        assert unmet and all(c.name in decision.reason for c in unmet)
    if rule is None:
        assert "no rule of the plan names" in decision.reason


def test_every_rule_of_the_shipped_plan_decides_some_row_of_the_table(plan) -> None:
    """A rule no table row reaches would be untested (or shadowed by an earlier one)."""
    reached = {rule for _, _, _, rule in DECISIONS}
    assert {rule.id for rule in plan.rules} <= reached


def test_a_decision_records_the_evidence_it_used(plan) -> None:
    decision = change_control.classify(plan, promotion(metrics=GOOD_METRICS | {"roc_auc": 0.58}))
    evidence = decision.as_dict()
    assert evidence["outcome"] == "rejected" and evidence["rule"] == "gate-promotion"
    assert evidence["facts"]["metrics"]["roc_auc"] == 0.58
    assert evidence["facts"]["checks"] == ALL_PASSED
    auc = next(c for c in evidence["criteria"] if c["name"] == "holdout roc_auc")
    assert auc == {
        "name": "holdout roc_auc",
        "required": ">= 0.6",
        "observed": "0.5800",
        "met": False,
    }
    assert "holdout roc_auc: 0.5800 (required >= 0.6)" in decision.reason


def test_the_first_matching_rule_decides(write_plan) -> None:
    """Moved ahead of the person rules, the automatic rule would let a subgroup breach through
    to rejection instead of a person: the order of the file is the order of the decision."""

    def gate_first(content: dict[str, Any]) -> None:
        rules = content["rules"]
        rules.insert(0, rules.pop(rule_index("gate-promotion")))

    reordered = change_control.load(write_plan(gate_first))
    decision = change_control.classify(reordered, promotion(checks=failing("subgroup_auc")))
    assert (decision.ruling, decision.rule_id) == (Ruling.REJECTED, "gate-promotion")


def plan_command(*args: str) -> Result:
    # In process (the same typer app the `readmission` script runs): a subprocess would spend
    # most of its time importing MLflow for the CLI's other commands.
    return CliRunner().invoke(cli.app, ["plan", *args])


def test_readmission_plan_shows_the_hash_and_every_rule(plan, configure) -> None:
    configure(CHANGE_CONTROL_PLAN=str(change_control.DEFAULT_PLAN))
    done = plan_command()
    assert done.exit_code == 0, done.output
    assert f"plan {plan.short_hash} (sha256 {plan.sha256})" in done.stdout
    for number, rule in enumerate(plan.rules, 1):
        assert f"{number:>2}. {rule.id} [{rule.change.value}] -> {rule.decision}" in done.stdout
    assert "criteria: checks_passed=[min_auc, max_log_loss, subgroup_auc" in done.stdout


def test_readmission_plan_check_exits_non_zero_naming_the_field(
    write_plan, plan, configure
) -> None:
    configure(CHANGE_CONTROL_PLAN=str(change_control.DEFAULT_PLAN))
    assert plan_command("--check").stdout.endswith(f"valid, plan {plan.short_hash} (9 rules)\n")
    broken = write_plan(lambda c: c["rules"][0]["criteria"].update(min_auc="high"))
    checked = plan_command("--check", str(broken))
    configure(CHANGE_CONTROL_PLAN=str(broken))
    shown = plan_command()
    for done in (checked, shown):
        assert done.exit_code == 2
        assert "change_control.yaml: rules[0].criteria.min_auc: Input should be a valid number" in (
            done.stderr
        )
        assert done.exception is None or isinstance(done.exception, SystemExit)


def test_the_test_plans_are_valid() -> None:
    for path in (SUITE_PLAN, SUITE_PLAN.with_name("first_version_person.yaml")):
        assert change_control.load(path).rules


def test_the_docs_list_every_rule_of_the_shipped_plan_in_its_order(plan) -> None:
    docs = (Path(__file__).resolve().parents[2] / "docs" / "change_control.md").read_text()
    listed = [line.split("`")[1] for line in docs.splitlines() if line.startswith("| `")]
    assert listed == [rule.id for rule in plan.rules]
