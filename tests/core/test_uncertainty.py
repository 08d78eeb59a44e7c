"""The patient-level bootstrap interval of ROC-AUC: exact weighting, and coverage of a known AUC."""

from __future__ import annotations

from functools import cache

import numpy as np
import pytest
from scipy.stats import norm
from sklearn import metrics

from readmission.evaluation.uncertainty import (
    _weighted_auc,
    cluster_bootstrap_auc,
    paired_bootstrap_auc_difference,
)

NOISE = 0.5  # within-patient spread of the score around the patient's own level
SEPARATION = 1.0


def clustered_sample(rng: np.random.Generator, patients: int) -> tuple[np.ndarray, ...]:
    """Patients with 1 or more encounters sharing one label and one score level.

    Pairs of a readmitted and a not-readmitted encounter always come from two patients, so the
    encounter-level AUC is P(N(d, 1 + t^2) > N(0, 1 + t^2)) = Phi(d / sqrt(2 (1 + t^2))).
    """
    label = (rng.random(patients) < 0.3).astype(np.int8)
    level = rng.normal(SEPARATION * label, 1.0)
    visits = 1 + rng.poisson(2.0, patients)
    patient = np.repeat(np.arange(patients), visits)
    score = level[patient] + rng.normal(0, NOISE, len(patient))
    return label[patient], score, patient


TRUE_AUC = float(norm.cdf(SEPARATION / np.sqrt(2 * (1 + NOISE**2))))


@cache  # both tests read the patient-level coverage
def coverage(clustered: bool, replicates: int = 200) -> float:
    rng = np.random.default_rng(11)
    hits = 0
    for replicate in range(replicates):
        y, score, patient = clustered_sample(rng, patients=150)
        clusters = patient if clustered else np.arange(len(y))
        interval = cluster_bootstrap_auc(y, score, clusters, resamples=500, seed=replicate)
        hits += interval.low <= TRUE_AUC <= interval.high
    return hits / replicates


def test_the_patient_level_interval_covers_the_known_auc_about_95_percent_of_the_time() -> None:
    # 200 replicates: a 95% interval covers 190 +- 6 times; the bootstrap runs a little short.
    assert 0.90 <= coverage(clustered=True) <= 0.99


def test_resampling_encounters_instead_of_patients_gives_intervals_that_are_too_narrow() -> None:
    assert coverage(clustered=False) < coverage(clustered=True) - 0.05


def test_the_weighted_auc_of_each_resample_equals_scikit_learns() -> None:
    rng = np.random.default_rng(3)
    y = (rng.random(400) < 0.2).astype(np.int8)
    score = np.round(rng.normal(y, 1.0), 1)  # rounded: many ties, which count half
    weights = rng.integers(0, 4, size=(5, 400)).astype(float)
    order = np.argsort(score, kind="stable")
    sorted_score = score[order]
    starts = np.flatnonzero(np.r_[True, sorted_score[1:] != sorted_score[:-1]])

    ours = _weighted_auc(weights[:, order], y[order].astype(bool), starts)
    theirs = [metrics.roc_auc_score(y, score, sample_weight=w) for w in weights]
    assert ours == pytest.approx(theirs, abs=1e-12)


def test_the_interval_is_seeded_and_holds_its_point_estimate() -> None:
    y, score, patient = clustered_sample(np.random.default_rng(5), patients=300)
    first = cluster_bootstrap_auc(y, score, patient, resamples=500, seed=1)
    again = cluster_bootstrap_auc(y, score, patient, resamples=500, seed=1)

    assert first == again
    assert first.low < first.roc_auc < first.high
    assert first.roc_auc == pytest.approx(metrics.roc_auc_score(y, score))
    assert first.resamples == 500


def test_one_class_only_is_refused_with_the_reason() -> None:
    with pytest.raises(ValueError, match="both classes"):
        cluster_bootstrap_auc(np.zeros(10), np.arange(10.0), np.arange(10))


def test_the_paired_difference_is_exact_at_the_point_and_zero_for_the_same_scores() -> None:
    y, score, patient = clustered_sample(np.random.default_rng(5), patients=300)
    noisier = score + np.random.default_rng(6).normal(0, 1.0, len(score))

    found = paired_bootstrap_auc_difference(y, score, noisier, patient, resamples=500, seed=1)
    same = paired_bootstrap_auc_difference(y, score, score, patient, resamples=500, seed=1)

    expected = metrics.roc_auc_score(y, score) - metrics.roc_auc_score(y, noisier)
    assert found.delta == pytest.approx(expected, abs=1e-12)
    assert found.low < found.delta < found.high and found.low > 0  # noise only hurts
    assert (same.delta, same.low, same.high) == (0.0, 0.0, 0.0)  # a tie, on every resample


def test_pairing_makes_the_difference_interval_narrower_than_the_two_intervals_suggest() -> None:
    """Two close models judged on the same patients: their separate intervals overlap almost
    entirely, while the paired interval of the difference can still exclude 0."""
    rng = np.random.default_rng(8)
    y, score, patient = clustered_sample(rng, patients=400)
    better = score + 0.3 * (y - 0.3)  # a little more signal, patient by patient

    paired = paired_bootstrap_auc_difference(y, better, score, patient, resamples=500, seed=2)
    ours = cluster_bootstrap_auc(y, better, patient, resamples=500, seed=2)
    theirs = cluster_bootstrap_auc(y, score, patient, resamples=500, seed=2)

    assert ours.low < theirs.high  # judged apart, the intervals overlap
    assert paired.low > 0  # paired, the gain is clear
    assert paired.high - paired.low < (ours.high - ours.low) / 2
