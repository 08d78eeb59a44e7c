"""Subgroup tables and the threshold policies, on the synthetic sample with a simple score."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from readmission.data.dataset import synthetic_sample
from readmission.evaluation import subgroups, thresholds
from readmission.model import labels


@pytest.fixture(scope="module")
def scored() -> tuple[pd.DataFrame, np.ndarray, np.ndarray]:
    frame = synthetic_sample(3000, seed=4)
    frame["race"] = frame["race"].replace("?", "Caucasian")
    frame.loc[frame.index[:40], "race"] = "?"  # 40 of missing race: a small, named group
    y = labels(frame).astype(int)
    rng = np.random.default_rng(0)
    probability = 1 / (1 + np.exp(-(rng.normal(0, 1, len(y)) + 1.5 * y - 2)))
    return frame, y, probability


def test_each_attribute_table_counts_every_row_once(scored: tuple) -> None:
    frame, y, probability = scored
    tables = subgroups.subgroup_tables(frame, y, probability, 0.3, 30, 500, 0)

    assert set(tables) == {"race", "gender", "age"}
    for rows in tables.values():
        assert sum(row.n for row in rows) == len(frame)
        assert sum(row.positives for row in rows) == y.sum()
    assert "Unknown" in {row.group for row in tables["race"]}
    assert [row.group for row in tables["age"]] == ["[0-40)", "[40-60)", "[60-80)", "[80-100)"]


def test_a_group_with_enough_events_gets_an_auc_inside_its_interval(scored: tuple) -> None:
    frame, y, probability = scored
    rows = subgroups.subgroup_tables(frame, y, probability, 0.3, 30, 500, 0)["gender"]

    for row in rows:
        assert row.reliable and row.note == ""
        assert row.roc_auc is not None and row.roc_auc_ci is not None
        assert row.roc_auc_ci[0] <= row.roc_auc <= row.roc_auc_ci[1]
        flagged = (probability >= 0.3) & (frame["gender"] == row.group).to_numpy()
        assert row.selection_rate == pytest.approx(flagged.sum() / row.n)


def test_a_small_group_is_kept_and_said_to_be_too_small(scored: tuple) -> None:
    frame, y, probability = scored
    race = subgroups.subgroup_tables(frame, y, probability, 0.3, 30, 500, 0)["race"]
    unknown = next(row for row in race if row.group == "Unknown")

    assert unknown.n == 40 and not unknown.reliable
    assert unknown.roc_auc is None and unknown.roc_auc_ci is None
    assert "too few" in unknown.note and "< 30" in unknown.note
    assert unknown.prevalence == pytest.approx(unknown.positives / 40)


def test_top_k_flags_that_share_of_patients(scored: tuple) -> None:
    _, y, probability = scored
    chosen = thresholds.choose("top_k", y, probability, "holdout", top_percent=10)

    assert np.mean(probability >= chosen.value) == pytest.approx(0.10, abs=0.002)
    assert chosen.describe() == "flag the 10% of patients at highest risk"


def test_the_f1_threshold_maximises_f1(scored: tuple) -> None:
    _, y, probability = scored
    chosen = thresholds.choose("f1", y, probability, "holdout")

    def f1(cut: float) -> float:
        flagged = probability >= cut
        return 2 * (flagged & (y == 1)).sum() / (flagged.sum() + y.sum())

    assert all(f1(chosen.value) >= f1(cut) for cut in np.linspace(0.05, 0.95, 37))


def test_an_unknown_policy_is_refused_naming_the_setting() -> None:
    with pytest.raises(ValueError, match="THRESHOLD_POLICY"):
        thresholds.choose("median", np.array([0, 1]), np.array([0.2, 0.8]), "holdout")  # type: ignore[arg-type]  # the wrong value is the point
