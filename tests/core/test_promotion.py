"""The promotion gate, the promotion ledger and rollback, on real PostgreSQL and the real MLflow
server: the lineage head judged against the champion on the same holdout with a paired
interval, rollbacks final for the gate, interrupted changes recorded by the next one."""

from __future__ import annotations

import hashlib
import uuid
from collections.abc import Callable
from pathlib import Path

import pytest

from readmission import change_control, registry, registry_reader, status
from readmission.config import Settings
from readmission.data import tables, warehouse
from readmission.data.holdout import fingerprint
from readmission.data.lineage import mark_trained, training_lease
from readmission.evaluation import model_card
from readmission.release import ledger, production_changes, promotion
from tests.conftest import SUITE_PLAN, TRAINED_VERSIONS


@pytest.fixture(scope="module")
def lineage(trained_lineage: Settings) -> Settings:
    """The session's three warm-start versions, judged under this module's gate settings (the
    gate reads them when it runs, not from training); tests work on copies of them."""
    return trained_lineage.model_copy(
        update={
            "max_log_loss": 0.7,  # the synthetic sample's base rate is 21%
            # 1,500 synthetic rows over a thousand features make an over-confident model
            # (slope ~0.6)
            "gate_calibration_slope_min": 0.3,
            # Three 500-row batches barely move the AUC on a 500-row holdout (intervals
            # ~ +-0.02): the gate tests below choose the policy that decides what they are about.
            "promotion_policy": "non_inferior",
            "non_inferiority_margin": 0.5,
        }
    )


@pytest.fixture
def fresh(lineage: Settings) -> Settings:
    """The lineage's versions under a model name of this test's own, its trainings recorded
    under that name too: nothing in production, an empty ledger (kept per model name)."""
    name = f"promotion-test-{uuid.uuid4().hex[:8]}"
    client = registry.connect(lineage)
    url = lineage.warehouse_url
    with training_lease(url, "test: copying the lineage", 60) as lease:
        for version in range(1, TRAINED_VERSIONS + 1):
            copy = client.copy_model_version(registry.model_uri(lineage, version), name)
            batch = int(copy.tags["batch_id"])
            assert copy.run_id is not None
            mark_trained(url, name, batch, copy.version, copy.run_id, lease)
    return lineage.model_copy(update={"model_name": name})


def tags(settings: Settings, version: str) -> dict[str, str]:
    return registry.connect(settings).get_model_version(settings.model_name, version).tags


def moves(settings: Settings) -> list[tuple[str | None, str | None]]:
    return [
        (e.from_version, e.to_version)
        for e in ledger.entries(settings.warehouse_url, settings.model_name)
    ]


def production(settings: Settings) -> str | None:
    found = registry.production_version(settings)
    return str(found.version) if found else None


@pytest.mark.slow
def test_a_winning_challenger_is_promoted_with_every_check_recorded(fresh: Settings) -> None:
    verdict = promotion.evaluate_and_promote(fresh, auto_promote=True, by="test-dag")

    assert verdict is not None
    assert verdict.passed and verdict.promoted and verdict.challenger_version == "3"
    assert production(fresh) == "3"
    recorded = tags(fresh, "3")
    assert recorded["validation_status"] == "passed"
    for check in ("min_auc", "max_log_loss", "subgroup_auc", "calibration_slope", "champion"):
        assert recorded[f"check_{check}"].startswith("passed: "), check
    assert "no production model yet" in recorded["check_champion"]
    (entry,) = ledger.entries(fresh.warehouse_url, fresh.model_name)
    assert (entry.from_version, entry.to_version, entry.by) == (None, "3", "test-dag")
    assert entry.action == ledger.AUTO and entry.evidence is None  # nothing to compare with


@pytest.mark.slow
def test_without_auto_promotion_the_verdict_is_recorded_and_nothing_changes(
    fresh: Settings,
) -> None:
    verdict = promotion.evaluate_and_promote(fresh, auto_promote=False)

    assert verdict is not None and verdict.passed and not verdict.promoted
    assert registry.production_version(fresh) is None
    assert tags(fresh, "3")["validation_status"] == "passed"
    assert moves(fresh) == []


@pytest.mark.slow
def test_re_running_after_a_promotion_keeps_the_verdict_and_changes_nothing(
    fresh: Settings,
) -> None:
    first = promotion.evaluate_and_promote(fresh, auto_promote=True)
    again = promotion.evaluate_and_promote(fresh, auto_promote=True)

    assert first is not None and again is not None
    assert not again.promoted and "nothing changed" in again.reason
    assert again.challenger["roc_auc"] == pytest.approx(first.challenger["roc_auc"], abs=1e-6)
    recorded = tags(fresh, "3")
    assert recorded["validation_status"] == "passed"
    holdout = warehouse.clean_rows(fresh.warehouse_url, tables.HOLDOUT_BATCH)
    assert recorded["validation_holdout_rows"] == str(len(holdout))
    assert moves(fresh) == [(None, "3")]


@pytest.mark.slow
def test_a_retry_after_a_crash_between_verdict_and_promotion_promotes(
    fresh: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    def crash(*args: object) -> None:
        raise ConnectionError("injected: the registry went away before the promotion")

    monkeypatch.setattr(registry, "promote", crash)
    with pytest.raises(ConnectionError):
        promotion.evaluate_and_promote(fresh, auto_promote=True)
    assert tags(fresh, "3")["validation_status"] == "passed"
    assert registry.production_version(fresh) is None and moves(fresh) == []
    monkeypatch.undo()

    retried = promotion.evaluate_and_promote(fresh, auto_promote=True)
    assert retried is not None and retried.promoted and production(fresh) == "3"
    assert moves(fresh) == [(None, "3")]


@pytest.mark.slow
def test_a_challenger_below_the_quality_floor_is_rejected_with_the_reason(fresh: Settings) -> None:
    verdict = promotion.evaluate_and_promote(
        fresh.model_copy(update={"min_auc": 0.99}), auto_promote=True
    )

    assert verdict is not None and not verdict.passed and not verdict.promoted
    assert "below MIN_AUC 0.99" in verdict.reason
    recorded = tags(fresh, "3")
    assert recorded["validation_status"] == "rejected"
    assert recorded["check_min_auc"].startswith("failed: ")
    assert registry.production_version(fresh) is None


@pytest.mark.slow
def test_a_subgroup_far_below_the_overall_auc_fails_the_gate(fresh: Settings) -> None:
    strict = fresh.model_copy(update={"gate_subgroup_auc_margin": 0.0})
    verdict = promotion.evaluate_and_promote(strict, auto_promote=True)

    assert verdict is not None and not verdict.promoted
    check = {c.name: c for c in verdict.checks}["subgroup_auc"]
    assert not check.passed and "GATE_SUBGROUP_AUC_MARGIN 0.0" in check.detail
    assert tags(fresh, "3")["check_subgroup_auc"] == f"failed: {check.detail}"


@pytest.mark.slow
def test_a_calibration_slope_outside_the_bounds_fails_the_gate(fresh: Settings) -> None:
    strict = fresh.model_copy(
        update={"gate_calibration_slope_min": 5.0, "gate_calibration_slope_max": 6.0}
    )
    verdict = promotion.evaluate_and_promote(strict, auto_promote=True)

    assert verdict is not None
    assert not verdict.promoted and "calibration slope" in verdict.reason
    assert tags(fresh, "3")["check_calibration_slope"].startswith("failed: calibration slope")


@pytest.mark.slow
def test_every_production_change_is_in_the_ledger_and_rollback_returns_to_the_previous(
    fresh: Settings,
) -> None:
    for version in ("1", "2", "3"):
        production_changes.change_production(fresh, version, "cli (tester)", f"try {version}")
    back = production_changes.rollback(fresh, "cli (tester)")

    assert (back.from_version, back.to_version, back.action) == ("3", "2", ledger.ROLLBACK)
    assert production(fresh) == "2"
    entries = ledger.entries(fresh.warehouse_url, fresh.model_name)
    assert [(e.from_version, e.to_version) for e in entries] == [
        (None, "1"),
        ("1", "2"),
        ("2", "3"),
        ("3", "2"),
    ]
    assert [e.reason for e in entries[:3]] == ["try 1", "try 2", "try 3"]
    assert [e.action for e in entries] == ["manual"] * 3 + ["rollback"]
    assert "rollback" in entries[-1].reason and entries[-1].by == "cli (tester)"
    assert [e.time for e in entries] == sorted(e.time for e in entries)
    assert production_changes.change_production(fresh, "2", "cli (tester)", "again") is None
    assert "back to v2" in tags(fresh, "3")[registry_reader.ROLLED_BACK_TAG]


@pytest.mark.slow
def test_a_second_rollback_never_returns_to_a_rolled_back_version(fresh: Settings) -> None:
    for version in ("1", "2", "3"):
        production_changes.change_production(fresh, version, "cli (tester)", "by hand")
    production_changes.rollback(fresh, "cli (tester)")  # 3 -> 2
    again = production_changes.rollback(fresh, "cli (tester)")  # 2 -> 1, not back to 3

    assert (again.from_version, again.to_version) == ("2", "1")
    assert production(fresh) == "1"
    with pytest.raises(production_changes.PromotionError, match="rolled back: name one"):
        production_changes.rollback(fresh, "cli (tester)")
    assert production(fresh) == "1"


@pytest.mark.slow
def test_after_a_rollback_the_gate_never_promotes_the_rolled_back_head_again(
    fresh: Settings,
) -> None:
    for version in ("1", "2", "3"):
        production_changes.change_production(fresh, version, "cli (tester)", "by hand")
    production_changes.rollback(fresh, "cli (tester)", reason="v3 misbehaves")
    before = tags(fresh, "3")

    for _ in range(2):  # a run of 03 and its retry
        verdict = promotion.evaluate_and_promote(fresh, auto_promote=True, by="test-dag")
        assert verdict is not None and not verdict.judged and not verdict.promoted
        assert verdict.challenger_version == "3" and "was rolled back" in verdict.reason
        assert production(fresh) == "2"
    assert tags(fresh, "3") == before  # nothing recorded on it either
    assert moves(fresh) == [(None, "1"), ("1", "2"), ("2", "3"), ("3", "2")]

    to_first = production_changes.rollback(fresh, "cli (tester)", to="1")
    assert (to_first.from_version, to_first.to_version) == ("2", "1")
    assert production(fresh) == "1"
    # By hand a person may still promote it, recorded as theirs.
    by_hand = production_changes.change_production(fresh, "3", "cli (tester)", "fixed after all")
    assert by_hand is not None and by_hand.action == ledger.MANUAL


@pytest.mark.slow
def test_the_challenger_is_the_lineage_head_never_a_version_registered_otherwise(
    fresh: Settings,
) -> None:
    client = registry.connect(fresh)
    outsider = client.copy_model_version(registry.model_uri(fresh, "3"), fresh.model_name)
    assert outsider.version == "4"  # the newest version, but no training of the lineage made it

    verdict = promotion.evaluate_and_promote(fresh, auto_promote=True, by="test-dag")
    assert verdict is not None and verdict.challenger_version == "3" and verdict.promoted
    assert production(fresh) == "3"
    assert "validation_status" not in tags(fresh, "4")
    again = promotion.evaluate_and_promote(fresh, auto_promote=True, by="test-dag")
    assert again is not None and again.challenger_version == "3" and not again.promoted

    manual = production_changes.change_production(fresh, "4", "cli (tester)", "promoted by hand")
    assert manual is not None and (manual.action, manual.by) == (ledger.MANUAL, "cli (tester)")
    assert manual.evidence is None


@pytest.mark.slow
def test_the_gate_compares_on_the_same_holdout_with_a_paired_interval_and_keeps_the_evidence(
    fresh: Settings,
) -> None:
    production_changes.change_production(fresh, "1", "cli (tester)", "first by hand")
    strict = promotion.evaluate_and_promote(
        fresh, auto_promote=True, promotion_policy="superior", by="test-dag"
    )
    assert strict is not None and not strict.passed and production(fresh) == "1"
    assert strict.delta_roc_auc_ci is not None
    low, high = strict.delta_roc_auc_ci
    assert low <= 0 < high or high <= 0  # not shown superior: the interval reaches 0
    assert "PROMOTION_POLICY=superior" in strict.reason and "beat" not in strict.reason

    verdict = promotion.evaluate_and_promote(fresh, auto_promote=True, by="test-dag")
    assert verdict is not None and verdict.promoted and production(fresh) == "3"
    assert verdict.champion is not None and verdict.delta_roc_auc_ci is not None
    holdout = warehouse.clean_rows(fresh.warehouse_url, tables.HOLDOUT_BATCH)
    holdout_print = fingerprint(holdout["encounter_id"])
    assert verdict.holdout_fingerprint == holdout_print
    delta = verdict.challenger["roc_auc"] - verdict.champion["roc_auc"]
    assert verdict.delta_roc_auc == pytest.approx(delta, abs=1e-12)
    low, high = verdict.delta_roc_auc_ci
    assert low < delta < high and low > -0.5
    assert "not worse than the champion by more than the margin" in verdict.reason
    recorded = tags(fresh, "3")
    assert float(recorded["delta_roc_auc"]) == pytest.approx(delta, abs=1e-6)
    assert [float(x) for x in recorded["delta_roc_auc_ci"].split()] == pytest.approx(
        [low, high], abs=1e-6
    )
    assert recorded["validation_holdout_fingerprint"] == holdout_print

    entry = ledger.entries(fresh.warehouse_url, fresh.model_name)[-1]
    assert (entry.from_version, entry.to_version, entry.action) == ("1", "3", ledger.AUTO)
    assert entry.evidence is not None
    assert entry.evidence.delta_roc_auc == pytest.approx(delta, abs=1e-12)
    assert entry.evidence.delta_roc_auc_ci == pytest.approx((low, high))
    assert entry.evidence.holdout_fingerprint == holdout_print
    as_json = entry.as_dict()
    assert as_json["delta_roc_auc_ci"] == pytest.approx([low, high])


@pytest.mark.slow
def test_every_version_shows_its_auc_on_the_current_holdout_beside_the_training_day_one(
    fresh: Settings,
) -> None:
    production_changes.change_production(fresh, "1", "cli (tester)", "first by hand")
    verdict = promotion.evaluate_and_promote(fresh, auto_promote=False, by="test-dag")
    assert verdict is not None and verdict.champion is not None

    report = status.report(fresh)
    rows = {v["version"]: v for v in report["versions"]}
    assert rows["3"]["current_holdout_roc_auc"] == pytest.approx(
        verdict.challenger["roc_auc"], abs=1e-6
    )
    assert rows["1"]["current_holdout_roc_auc"] == pytest.approx(
        verdict.champion["roc_auc"], abs=1e-6
    )
    # The gate scored the rest of the lineage there too, once: v2 beside its neighbours.
    assert 0.5 < rows["2"]["current_holdout_roc_auc"] < 1
    assert rows["3"]["holdout_fingerprint"] is not None  # the training day's, named
    assert registry_reader.compared_holdout(fresh) == report["holdout"]["fingerprint"]
    # The holdout has not grown since training here: the gate's number is the card's.
    assert rows["3"]["holdout_fingerprint"] == report["holdout"]["fingerprint"]
    version = registry.model_version(fresh, "3")
    assert version is not None and version.run_id is not None
    card = model_card.load(version.run_id)
    assert card is not None
    assert card["holdout"]["roc_auc"] == pytest.approx(verdict.challenger["roc_auc"])


@pytest.mark.slow
def test_a_head_without_its_model_card_is_not_judged(fresh: Settings) -> None:
    client = registry.connect(fresh)
    run = client.create_run(registry.experiment_id(fresh))
    client.set_terminated(run.info.run_id)
    # A training cut short before its card: a version of a run holding nothing yet.
    source = f"{run.info.artifact_uri}/model"
    bare = client.create_model_version(fresh.model_name, source, run_id=run.info.run_id)
    url = fresh.warehouse_url
    with training_lease(url, "test: a version without its card", 60) as lease:
        mark_trained(url, fresh.model_name, 99, bare.version, run.info.run_id, lease)

    verdict = promotion.evaluate_and_promote(fresh, auto_promote=True, by="test-dag")

    assert verdict is not None and verdict.challenger_version == bare.version
    assert not verdict.judged and not verdict.promoted
    assert "has no model card" in verdict.reason and "not judged" in verdict.reason
    assert "validation_status" not in tags(fresh, bare.version)
    assert production(fresh) is None and moves(fresh) == []


@pytest.mark.slow
def test_an_alias_moved_without_its_ledger_row_is_recorded_as_the_change_it_was(
    fresh: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    production_changes.change_production(fresh, "1", "cli (tester)", "first by hand")

    def crash(*args: object, **kwargs: object) -> None:
        raise ConnectionError("injected: the warehouse went away after the alias moved")

    monkeypatch.setattr(ledger, "record", crash)
    with pytest.raises(ConnectionError):
        promotion.evaluate_and_promote(fresh, auto_promote=True, by="test-dag")
    monkeypatch.undo()
    assert production(fresh) == "3" and moves(fresh) == [(None, "1")]

    again = promotion.evaluate_and_promote(fresh, auto_promote=True, by="test-dag")
    assert again is not None and not again.promoted and "nothing changed" in again.reason
    entries = ledger.entries(fresh.warehouse_url, fresh.model_name)
    assert [(e.from_version, e.to_version, e.action) for e in entries] == [
        (None, "1", "manual"),
        ("1", "3", "auto"),
    ]
    assert entries[-1].by == "test-dag" and entries[-1].evidence is not None


@pytest.mark.slow
def test_a_change_made_in_the_mlflow_registry_is_noticed_and_rolled_back_from(
    fresh: Settings,
) -> None:
    production_changes.change_production(fresh, "1", "cli (tester)", "first")
    client = registry.connect(fresh)
    client.set_registered_model_alias(fresh.model_name, fresh.model_alias, "3")  # as the UI does

    noticed = production_changes.notice_outside_changes(fresh, noticed_by="the api")
    assert noticed is not None
    assert (noticed.from_version, noticed.to_version) == ("1", "3")
    assert "outside the platform" in noticed.by and "noticed by the api" in noticed.reason
    assert production_changes.notice_outside_changes(fresh, noticed_by="the api") is None

    production_changes.rollback(fresh, "cli (tester)")
    assert production(fresh) == "1"
    assert moves(fresh) == [(None, "1"), ("1", "3"), ("3", "1")]


@pytest.mark.slow
def test_rollback_without_an_earlier_production_version_says_why(fresh: Settings) -> None:
    with pytest.raises(production_changes.PromotionError, match="nothing to roll back"):
        production_changes.rollback(fresh, "cli (tester)")
    production_changes.change_production(fresh, "2", "cli (tester)", "first")
    with pytest.raises(production_changes.PromotionError, match="first production version"):
        production_changes.rollback(fresh, "cli (tester)")
    assert production(fresh) == "2"


@pytest.mark.slow
def test_promoting_a_version_that_does_not_exist_names_it(fresh: Settings) -> None:
    with pytest.raises(production_changes.PromotionError, match="has no version 42"):
        production_changes.change_production(fresh, "42", "cli (tester)", "typo")
    assert moves(fresh) == []


def test_the_ledger_and_rollback_work_on_the_embedded_default(
    configure: Callable[..., Settings], tmp_path: Path
) -> None:
    """SQLite warehouse and MLflow store (whose versions come back as int, not str)."""
    settings = configure()
    client = registry.connect(settings)
    client.create_registered_model(settings.model_name)
    for _ in range(3):  # versions that are never loaded need no model behind them
        client.create_model_version(settings.model_name, source=(tmp_path / "none").as_uri())

    for version in ("1", "2", "3"):
        production_changes.change_production(settings, version, "cli (tester)", "by hand")
    assert production_changes.notice_outside_changes(settings, noticed_by="the test") is None
    production_changes.rollback(settings, "cli (tester)")

    assert production(settings) == "2"
    assert [v.aliases for v in registry_reader.version_summaries(settings)] == [
        [],
        ["production"],
        [],
    ]
    assert moves(settings) == [(None, "1"), ("1", "2"), ("2", "3"), ("3", "2")]


PERSON_PLAN = SUITE_PLAN.with_name("first_version_person.yaml")


def sha256_of(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.fixture
def person_plan(fresh: Settings) -> Settings:
    """`fresh` under a plan that reserves the first production version for a person."""
    return fresh.model_copy(update={"change_control_plan": str(PERSON_PLAN)})


@pytest.mark.slow
def test_an_automatic_promotion_names_the_plan_and_the_rule_that_allowed_it(
    fresh: Settings,
) -> None:
    verdict = promotion.evaluate_and_promote(fresh, auto_promote=True, by="test-dag")

    assert verdict is not None and verdict.promoted and not verdict.needs_person
    assert verdict.decision is not None and verdict.decision.rule_id == "gate-promotion"
    (entry,) = ledger.entries(fresh.warehouse_url, fresh.model_name)
    assert entry.authority == ledger.Authority(sha256_of(SUITE_PLAN), "gate-promotion", None)
    assert entry.as_dict()["rule"] == "gate-promotion" and "(plan rule gate-promotion)" in (
        entry.reason
    )
    recorded = tags(fresh, "3")
    assert (recorded["change_control"], recorded["change_control_rule"]) == (
        "automatic",
        "gate-promotion",
    )
    assert recorded["change_control_plan"] == sha256_of(SUITE_PLAN)


@pytest.mark.slow
def test_a_promotion_the_plan_reserves_for_a_person_waits_with_the_reason(
    person_plan: Settings,
) -> None:
    for _ in range(2):  # a run of 03 and its retry: still waiting, nothing changed
        verdict = promotion.evaluate_and_promote(person_plan, auto_promote=True, by="test-dag")
        assert verdict is not None and verdict.passed and not verdict.promoted
        assert verdict.needs_person and verdict.decision is not None
        assert verdict.decision.rule_id == "first-production-version"
    assert production(person_plan) is None and moves(person_plan) == []
    recorded = tags(person_plan, "3")
    assert recorded["change_control"] == "person"
    assert recorded["change_control_rule"] == "first-production-version"
    assert (
        recorded["change_control_reason"] == "The first version to go to production needs a person."
    )
    assert recorded["change_control_plan"] == sha256_of(PERSON_PLAN)
    assert "person_decision" not in recorded

    assert verdict is not None  # the loop ran
    subject, body = promotion.approval_request(person_plan, verdict)
    assert (
        subject == f"Promote {person_plan.model_name} v3 to production (nothing in production yet)?"
    )
    assert "rule `first-production-version`" in body and verdict.reason in body
    version = registry.model_version(person_plan, "3")
    assert version is not None
    run_id = version.run_id
    assert f"`runs:/{run_id}/model_card.md`" in body
    assert f"#/models/{person_plan.model_name}/versions/3" in body  # the MLflow UI's page


@pytest.mark.slow
def test_a_persons_approval_promotes_and_the_ledger_names_them_and_their_comment(
    person_plan: Settings,
) -> None:
    promotion.evaluate_and_promote(person_plan, auto_promote=True, by="test-dag")

    for _ in range(2):  # the approval step and its retry: one change
        promotion.decide(
            person_plan,
            "3",
            True,
            "alice",
            "read the card",
            at="2026-12-05T01:00:00+00:00",
            shown_champion=None,
        )
    assert production(person_plan) == "3" and moves(person_plan) == [(None, "3")]
    (entry,) = ledger.entries(person_plan.warehouse_url, person_plan.model_name)
    assert (entry.by, entry.action) == ("alice", ledger.MANUAL)
    assert entry.authority == ledger.Authority(sha256_of(PERSON_PLAN), None, "read the card")
    assert entry.reason.startswith("approved by a person: read the card (the plan reserved it: ")
    assert tags(person_plan, "3")["person_decision"] == "approved"
    # A later run of 03 keeps the person's decision.
    again = promotion.evaluate_and_promote(person_plan, auto_promote=True, by="test-dag")
    assert again is not None and "already in production" in again.reason


@pytest.mark.slow
def test_an_approval_of_a_comparison_production_has_since_left_behind_is_refused(
    person_plan: Settings,
) -> None:
    """The person read v3 against an empty production; meanwhile v2 went to production by
    hand. Their approval no longer answers the question they were asked: nothing changes and
    nothing is recorded; 03 must judge v3 against v2 first."""
    verdict = promotion.evaluate_and_promote(person_plan, auto_promote=True, by="test-dag")
    assert verdict is not None and verdict.needs_person and verdict.champion_version is None
    production_changes.change_production(person_plan, "2", "tester", "by hand", ledger.MANUAL)

    with pytest.raises(production_changes.PromotionError, match=r"production is v2 now: run 03"):
        promotion.decide(
            person_plan, "3", True, "alice", "looks fine", "2026-12-05T01:00:00+00:00", None
        )
    assert production(person_plan) == "2" and moves(person_plan) == [(None, "2")]
    assert "person_decision" not in tags(person_plan, "3")


@pytest.mark.slow
def test_a_persons_rejection_keeps_the_version_out_even_where_the_plan_would_promote_it(
    person_plan: Settings, fresh: Settings
) -> None:
    promotion.evaluate_and_promote(person_plan, auto_promote=True, by="test-dag")
    promotion.decide(
        person_plan, "3", False, "bob", "too few events", "2026-12-05T01:00:00+00:00", None
    )
    before = tags(person_plan, "3")

    # Re-runs of 03, under the plan that asked and under one that would promote it on its own.
    for settings in (person_plan, fresh):
        verdict = promotion.evaluate_and_promote(settings, auto_promote=True, by="test-dag")
        assert verdict is not None and not verdict.judged and not verdict.promoted
        assert "rejected by a person (bob, 2026-12-05T01:00:00+00:00: too few events)" in (
            verdict.reason
        )
    assert production(person_plan) is None and moves(person_plan) == []
    assert tags(person_plan, "3") == before
    assert before["person_decision"] == "rejected" and before["person_decision_by"] == "bob"


@pytest.mark.slow
def test_a_plan_that_does_not_validate_stops_the_gate_before_it_records_anything(
    fresh: Settings, tmp_path: Path
) -> None:
    broken = tmp_path / "broken_plan.yaml"
    broken.write_text(SUITE_PLAN.read_text().replace("decision: automatic", "decision: maybe", 1))
    settings = fresh.model_copy(update={"change_control_plan": str(broken)})

    with pytest.raises(change_control.PlanError, match=r"broken_plan\.yaml: rules\[4\]\.decision"):
        promotion.evaluate_and_promote(settings, auto_promote=True)
    assert "validation_status" not in tags(fresh, "3") and moves(fresh) == []
