"""ROC-AUC with a confidence interval from a patient-level (cluster) bootstrap.

Encounters of one patient are not independent: a patient readmitted once tends to be readmitted
again and to score alike. Resampling encounters would treat them as independent and give
intervals that are too narrow; resampling patients, with all their encounters, does not.

Every resample is a vector of patient multiplicities; the weighted AUC of all resamples is
computed at once from one sort of the scores (Mann-Whitney with ties counted half), so a
thousand resamples of a 20,000-row holdout take about a second. The promotion gate's comparison
of two models draws the same resamples for both (`paired_bootstrap_auc_difference`).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
from sklearn import metrics

CHUNK_CELLS = 4_000_000  # resamples x rows weighed at once: bounds memory to ~100 MB


@dataclass(frozen=True)
class AucInterval:
    """A point estimate on all rows and the percentile interval of its bootstrap distribution."""

    roc_auc: float
    low: float
    high: float
    level: float
    resamples: int  # resamples with both classes present, the ones the interval comes from

    def as_list(self) -> list[float]:
        return [self.low, self.high]


def cluster_bootstrap_auc(
    y: np.ndarray,
    score: np.ndarray,
    clusters: np.ndarray,
    resamples: int = 1000,
    seed: int = 0,
    level: float = 0.95,
) -> AucInterval:
    """ROC-AUC of `score` for labels `y`, with an interval from resampling whole `clusters`."""
    y, (score,) = _checked(y, [score], clusters, resamples)
    point = float(metrics.roc_auc_score(y, score))
    ranking = _Ranking(y, score)
    found = np.concatenate(
        [ranking.auc(weight) for weight in _resample_weights(clusters, resamples, seed)]
    )
    low, high = _interval(found, level)
    return AucInterval(point, low, high, level, int(np.isfinite(found).sum()))


@dataclass(frozen=True)
class AucDifference:
    """AUC of a challenger minus a champion's on the same rows, with a paired interval."""

    delta: float
    low: float
    high: float
    level: float
    resamples: int

    def as_list(self) -> list[float]:
        return [self.low, self.high]


def paired_bootstrap_auc_difference(
    y: np.ndarray,
    challenger: np.ndarray,
    champion: np.ndarray,
    clusters: np.ndarray,
    resamples: int = 1000,
    seed: int = 0,
    level: float = 0.95,
) -> AucDifference:
    """AUC(challenger) - AUC(champion), with an interval from resampling whole `clusters`.

    Paired: each resample weighs the same patients for both models, so what the two share (the
    hard and easy patients of that resample) cancels out of the difference; two separate
    intervals would overlap even when one model is better on nearly every resample.
    """
    y, (ours, theirs) = _checked(y, [challenger, champion], clusters, resamples)
    delta = float(metrics.roc_auc_score(y, ours) - metrics.roc_auc_score(y, theirs))
    a, b = _Ranking(y, ours), _Ranking(y, theirs)
    found = np.concatenate(
        [a.auc(weight) - b.auc(weight) for weight in _resample_weights(clusters, resamples, seed)]
    )
    low, high = _interval(found, level)
    return AucDifference(delta, low, high, level, int(np.isfinite(found).sum()))


def _checked(
    y: np.ndarray, scores: list[np.ndarray], clusters: np.ndarray, resamples: int
) -> tuple[np.ndarray, list[np.ndarray]]:
    y = np.asarray(y, dtype=np.int8)
    found = [np.asarray(score, dtype=np.float64) for score in scores]
    if any(len(score) != len(y) for score in found) or len(y) != len(clusters):
        raise ValueError("y, score and clusters must have one entry per row")
    if y.min(initial=0) == y.max(initial=0):
        raise ValueError("ROC-AUC needs both classes among the rows")
    if resamples < 1:
        raise ValueError("resamples must be at least 1")
    return y, found


def _resample_weights(clusters: np.ndarray, resamples: int, seed: int) -> Iterator[np.ndarray]:
    """Chunks of resamples: each row a resample, each column a row's weight (its cluster's
    multiplicity in the resample)."""
    _, cluster_of_row = np.unique(np.asarray(clusters), return_inverse=True)
    n_clusters = int(cluster_of_row.max()) + 1
    rng = np.random.default_rng(seed)
    chunk = max(1, CHUNK_CELLS // len(cluster_of_row))
    for start in range(0, resamples, chunk):
        size = min(chunk, resamples - start)
        draws = rng.integers(0, n_clusters, size=(size, n_clusters))
        offsets = (np.arange(size) * n_clusters)[:, None]
        multiplicity = np.bincount((draws + offsets).ravel(), minlength=size * n_clusters)
        yield multiplicity.reshape(size, n_clusters)[:, cluster_of_row].astype(np.float64)


def _interval(found: np.ndarray, level: float) -> tuple[float, float]:
    found = found[np.isfinite(found)]
    if len(found) == 0:
        raise ValueError("no bootstrap resample held both classes: too few rows of one class")
    tail = (1 - level) / 2 * 100
    low, high = np.percentile(found, [tail, 100 - tail])
    return float(low), float(high)


class _Ranking:
    """One sort of a score, reused for the weighted AUC of every resample."""

    def __init__(self, y: np.ndarray, score: np.ndarray) -> None:
        self.order = np.argsort(score, kind="stable")
        sorted_score = score[self.order]
        # Rows with equal scores form one group: a positive ties with the negatives of its group.
        self.group_starts = np.flatnonzero(np.r_[True, sorted_score[1:] != sorted_score[:-1]])
        self.positive = y[self.order].astype(bool)

    def auc(self, weight: np.ndarray) -> np.ndarray:
        return _weighted_auc(weight[:, self.order], self.positive, self.group_starts)


def _weighted_auc(weight: np.ndarray, positive: np.ndarray, group_starts: np.ndarray) -> np.ndarray:
    """Weighted Mann-Whitney AUC of each row of `weight` (columns in ascending score order)."""
    positives = np.add.reduceat(np.where(positive, weight, 0.0), group_starts, axis=1)
    negatives = np.add.reduceat(np.where(positive, 0.0, weight), group_starts, axis=1)
    below = np.cumsum(negatives, axis=1) - negatives
    wins = (positives * (below + 0.5 * negatives)).sum(axis=1)
    pairs = positives.sum(axis=1) * negatives.sum(axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(pairs > 0, wins / pairs, np.nan)
