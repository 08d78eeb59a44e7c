"""The promotion gate, the promotion ledger and rollback, on the real MLflow server."""

from __future__ import annotations

import uuid
from collections.abc import Callable
from pathlib import Path

import pandas as pd
import pytest

from readmission import ledger, promotion, registry, training, warehouse
from readmission.config import Settings

VERSIONS = 3


@pytest.fixture(scope="module")
def lineage(
    create_database: Callable[[], str], mlflow_server: str, sample: pd.DataFrame
) -> Settings:
    """Three warm-start versions, trained once for the module; tests work on copies of them."""
    settings = Settings(
        _env_file=None,
        DATABASE_URL=create_database(),
        MLFLOW_TRACKING_URI=mlflow_server,
        MODEL_NAME=f"promotion-lineage-{uuid.uuid4().hex[:8]}",
        MAX_LOG_LOSS=0.7,  # the synthetic sample's base rate is 21%
        # 1,500 synthetic rows over a thousand features make an over-confident model (slope ~0.6)
        GATE_CALIBRATION_SLOPE_MIN=0.3,
    )
    warehouse.ingest(settings.warehouse_url, sample, 500, 0.2, VERSIONS)
    training.train_pending(settings)
    return settings


@pytest.fixture
def fresh(lineage: Settings) -> Settings:
    """The lineage's versions under a model name of this test's own: nothing in production,
    an empty ledger (the ledger is kept per model name)."""
    name = f"promotion-test-{uuid.uuid4().hex[:8]}"
    client = registry.connect(lineage)
    for version in range(1, VERSIONS + 1):
        client.copy_model_version(registry.model_uri(lineage, version), name)
    return lineage.model_copy(update={"model_name": name})


def tags(settings: Settings, version: str) -> dict[str, str]:
    return registry.connect(settings).get_model_version(settings.model_name, version).tags


def moves(settings: Settings) -> list[tuple[str | None, str | None]]:
    return [
        (e.from_version, e.to_version)
        for e in ledger.entries(settings.warehouse_url, settings.model_name)
    ]


def test_a_winning_challenger_is_promoted_with_every_check_recorded(fresh: Settings) -> None:
    verdict = promotion.evaluate_and_promote(fresh, auto_promote=True, by="test-dag")

    assert verdict.passed and verdict.promoted and verdict.challenger_version == "3"
    assert registry.production_version(fresh).version == "3"
    recorded = tags(fresh, "3")
    assert recorded["validation_status"] == "passed"
    for check in ("min_auc", "max_log_loss", "subgroup_auc", "calibration_slope", "champion"):
        assert recorded[f"check_{check}"].startswith("passed: "), check
    assert "no production model yet" in recorded["check_champion"]
    (entry,) = ledger.entries(fresh.warehouse_url, fresh.model_name)
    assert (entry.from_version, entry.to_version, entry.by) == (None, "3", "test-dag")


def test_without_auto_promotion_the_verdict_is_recorded_and_nothing_changes(
    fresh: Settings,
) -> None:
    verdict = promotion.evaluate_and_promote(fresh, auto_promote=False)

    assert verdict.passed and not verdict.promoted
    assert registry.production_version(fresh) is None
    assert tags(fresh, "3")["validation_status"] == "passed"
    assert moves(fresh) == []


def test_re_running_after_a_promotion_keeps_the_verdict_and_changes_nothing(
    fresh: Settings,
) -> None:
    first = promotion.evaluate_and_promote(fresh, auto_promote=True)
    again = promotion.evaluate_and_promote(fresh, auto_promote=True)

    assert not again.promoted and "nothing changed" in again.reason
    assert again.challenger["roc_auc"] == pytest.approx(first.challenger["roc_auc"], abs=1e-6)
    recorded = tags(fresh, "3")
    assert recorded["validation_status"] == "passed"
    holdout = warehouse.clean_rows(fresh.warehouse_url, warehouse.HOLDOUT_BATCH)
    assert recorded["validation_holdout_rows"] == str(len(holdout))
    assert moves(fresh) == [(None, "3")]


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
    assert retried.promoted and registry.production_version(fresh).version == "3"
    assert moves(fresh) == [(None, "3")]


def test_a_challenger_below_the_quality_floor_is_rejected_with_the_reason(fresh: Settings) -> None:
    verdict = promotion.evaluate_and_promote(
        fresh.model_copy(update={"min_auc": 0.99}), auto_promote=True
    )

    assert not verdict.passed and not verdict.promoted
    assert "below MIN_AUC 0.99" in verdict.reason
    recorded = tags(fresh, "3")
    assert recorded["validation_status"] == "rejected"
    assert recorded["check_min_auc"].startswith("failed: ")
    assert registry.production_version(fresh) is None


def test_a_subgroup_far_below_the_overall_auc_fails_the_gate(fresh: Settings) -> None:
    strict = fresh.model_copy(update={"gate_subgroup_auc_margin": 0.0})
    verdict = promotion.evaluate_and_promote(strict, auto_promote=True)

    assert not verdict.promoted
    check = {c.name: c for c in verdict.checks}["subgroup_auc"]
    assert not check.passed and "GATE_SUBGROUP_AUC_MARGIN 0.0" in check.detail
    assert tags(fresh, "3")["check_subgroup_auc"] == f"failed: {check.detail}"


def test_a_calibration_slope_outside_the_bounds_fails_the_gate(fresh: Settings) -> None:
    strict = fresh.model_copy(
        update={"gate_calibration_slope_min": 5.0, "gate_calibration_slope_max": 6.0}
    )
    verdict = promotion.evaluate_and_promote(strict, auto_promote=True)

    assert not verdict.promoted and "calibration slope" in verdict.reason
    assert tags(fresh, "3")["check_calibration_slope"].startswith("failed: calibration slope")


def test_every_production_change_is_in_the_ledger_and_rollback_returns_to_the_previous(
    fresh: Settings,
) -> None:
    for version in ("1", "2", "3"):
        promotion.change_production(fresh, version, "cli (tester)", f"try {version}")
    back = promotion.rollback(fresh, "cli (tester)")

    assert (back.from_version, back.to_version) == ("3", "2")
    assert registry.production_version(fresh).version == "2"
    entries = ledger.entries(fresh.warehouse_url, fresh.model_name)
    assert [(e.from_version, e.to_version) for e in entries] == [
        (None, "1"),
        ("1", "2"),
        ("2", "3"),
        ("3", "2"),
    ]
    assert [e.reason for e in entries[:3]] == ["try 1", "try 2", "try 3"]
    assert "rollback" in entries[-1].reason and entries[-1].by == "cli (tester)"
    assert [e.time for e in entries] == sorted(e.time for e in entries)
    assert promotion.change_production(fresh, "2", "cli (tester)", "again") is None


def test_a_change_made_in_the_mlflow_registry_is_noticed_and_rolled_back_from(
    fresh: Settings,
) -> None:
    promotion.change_production(fresh, "1", "cli (tester)", "first")
    client = registry.connect(fresh)
    client.set_registered_model_alias(fresh.model_name, fresh.model_alias, "3")  # as the UI does

    noticed = promotion.notice_outside_changes(fresh, noticed_by="the api")
    assert (noticed.from_version, noticed.to_version) == ("1", "3")
    assert "outside the platform" in noticed.by and "noticed by the api" in noticed.reason
    assert promotion.notice_outside_changes(fresh, noticed_by="the api") is None

    promotion.rollback(fresh, "cli (tester)")
    assert registry.production_version(fresh).version == "1"
    assert moves(fresh) == [(None, "1"), ("1", "3"), ("3", "1")]


def test_rollback_without_an_earlier_production_version_says_why(fresh: Settings) -> None:
    with pytest.raises(promotion.PromotionError, match="nothing to roll back"):
        promotion.rollback(fresh, "cli (tester)")
    promotion.change_production(fresh, "2", "cli (tester)", "first")
    with pytest.raises(promotion.PromotionError, match="first production version"):
        promotion.rollback(fresh, "cli (tester)")
    assert registry.production_version(fresh).version == "2"


def test_promoting_a_version_that_does_not_exist_names_it(fresh: Settings) -> None:
    with pytest.raises(promotion.PromotionError, match="has no version 42"):
        promotion.change_production(fresh, "42", "cli (tester)", "typo")
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
        promotion.change_production(settings, version, "cli (tester)", "by hand")
    assert promotion.notice_outside_changes(settings, noticed_by="the test") is None
    promotion.rollback(settings, "cli (tester)")

    assert registry.production_version(settings).version in (2, "2")
    assert [v.aliases for v in registry.version_summaries(settings)] == [[], ["production"], []]
    assert moves(settings) == [(None, "1"), ("1", "2"), ("2", "3"), ("3", "2")]
