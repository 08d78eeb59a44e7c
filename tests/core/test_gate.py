"""The promotion gate's rule (`gate.judge`) on hand-made measurements: no services."""

from __future__ import annotations

import dataclasses

import pytest

from readmission.evaluation.uncertainty import AucDifference
from readmission.release.gate import (
    Comparison,
    Measured,
    Policy,
    PolicyName,
    SubgroupAuc,
    judge,
)

POLICY = Policy(
    min_auc=0.6,
    max_log_loss=0.35,
    subgroup_auc_margin=0.1,
    calibration_slope_min=0.7,
    calibration_slope_max=1.3,
    promotion_policy="superior",
    non_inferiority_margin=0.005,
)
GOOD = Measured(
    roc_auc=0.68,
    log_loss=0.33,
    calibration_slope=0.95,
    subgroups=(
        SubgroupAuc("race", "Caucasian", 0.68, True),
        SubgroupAuc("race", "Asian", 0.40, False),  # too few events to judge
    ),
)


def versus(delta: float, low: float, high: float) -> Comparison:
    return Comparison("4", 0.68 - delta, AucDifference(delta, low, high, 0.95, 1000))


@pytest.mark.parametrize(
    ("policy", "margin", "delta", "low", "high", "passed"),
    [
        ("superior", 0.005, 0.0089, 0.0035, 0.0148, True),  # v2 over v1 on the real file
        ("superior", 0.005, 0.0045, 0.0003, 0.0086, True),
        ("superior", 0.005, 0.0, -0.0002, 0.0002, False),  # v5 over v4: a tie
        ("superior", 0.005, 0.0, 0.0, 0.0, False),  # identical predictions: a tie
        ("superior", 0.005, 0.004, 0.0, 0.008, False),  # touching 0 is not above it
        ("superior", 0.005, -0.01, -0.02, -0.001, False),
        ("non_inferior", 0.005, 0.0, -0.0002, 0.0002, True),
        ("non_inferior", 0.005, -0.002, -0.0049, 0.001, True),
        ("non_inferior", 0.005, -0.002, -0.005, 0.001, False),  # at the margin: not above
        ("non_inferior", 0.005, -0.004, -0.009, 0.001, False),
        ("non_inferior", 0.0, 0.0, 0.0, 0.0, False),  # margin 0 asks as much as superior
    ],
)
def test_the_champion_check_follows_the_policy_on_the_intervals_lower_bound(
    policy: PolicyName, margin: float, delta: float, low: float, high: float, passed: bool
) -> None:
    rules = dataclasses.replace(POLICY, promotion_policy=policy, non_inferiority_margin=margin)
    checks = judge(rules, GOOD, versus(delta, low, high))

    champion = checks[-1]
    assert champion.name == "champion" and champion.passed is passed
    assert f"{delta:+.4f}" in champion.detail and f"[{low:+.4f}, {high:+.4f}]" in champion.detail
    assert f"PROMOTION_POLICY={policy}" in champion.detail
    assert "beat" not in champion.detail  # a tie is never reported as beating anything
    if passed and policy == "non_inferior":
        assert "better" not in champion.detail and "not worse" in champion.detail
    assert all(c.passed for c in checks[:-1])


def test_without_a_champion_only_the_floors_and_checks_decide() -> None:
    checks = judge(POLICY, GOOD, None)

    assert [c.name for c in checks] == [
        "min_auc",
        "max_log_loss",
        "subgroup_auc",
        "calibration_slope",
        "champion",
    ]
    assert all(c.passed for c in checks)
    assert checks[-1].detail == "no production model yet; quality floors met"
    assert "1 group(s) too small to judge" in checks[2].detail


@pytest.mark.parametrize(
    ("change", "failing", "words"),
    [
        ({"roc_auc": 0.59}, "min_auc", "is below MIN_AUC 0.6"),
        ({"log_loss": 0.36}, "max_log_loss", "above MAX_LOG_LOSS 0.35"),
        ({"calibration_slope": 0.533}, "calibration_slope", "0.533 is outside"),
        ({"calibration_slope": 1.31}, "calibration_slope", "1.310 is outside"),
        (
            {"subgroups": (SubgroupAuc("age", "[80-90)", 0.57, True),)},
            "subgroup_auc",
            "age [80-90) 0.570",
        ),
    ],
)
def test_each_floor_and_check_fails_on_its_own_with_the_numbers_in_the_detail(
    change: dict[str, object], failing: str, words: str
) -> None:
    measured = dataclasses.replace(GOOD, **change)  # type: ignore[arg-type]
    checks = judge(POLICY, measured, versus(0.009, 0.003, 0.015))

    failed = [c for c in checks if not c.passed]
    assert [c.name for c in failed] == [failing]
    assert words in failed[0].detail
