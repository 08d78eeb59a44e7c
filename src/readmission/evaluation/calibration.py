"""How far predicted probabilities can be taken at face value: logistic recalibration, ECE, Brier.

The calibration intercept (calibration-in-the-large) is `a` in logit P(y) = a + logit(p): below 0
the model over-predicts on average. The calibration slope is `b` in logit P(y) = a + b logit(p):
below 1 its predictions are too extreme (typical of overfitting), above 1 too timid.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
from sklearn import metrics

EPSILON = 1e-6  # keeps logit(p) finite for probabilities of exactly 0 or 1
CURVE_BINS = 10


@dataclass(frozen=True)
class CurvePoint:
    mean_predicted: float
    observed_rate: float
    n: int


@dataclass(frozen=True)
class Calibration:
    intercept: float
    slope: float
    ece: float  # expected calibration error over the curve's equal-count bins
    brier: float
    mean_predicted: float
    observed_rate: float
    curve: list[CurvePoint]

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def logit(probability: np.ndarray) -> np.ndarray:
    p = np.clip(np.asarray(probability, dtype=np.float64), EPSILON, 1 - EPSILON)
    return np.log(p / (1 - p))


def calibration_intercept(y: np.ndarray, probability: np.ndarray) -> float:
    """Calibration-in-the-large: the intercept with logit(p) as an offset (slope fixed at 1)."""
    (intercept,) = _logistic_fit(np.ones((len(y), 1)), np.asarray(y), logit(probability))
    return float(intercept)


def calibration_slope(y: np.ndarray, probability: np.ndarray) -> float:
    """The slope of the logistic recalibration of y on logit(p)."""
    design = np.column_stack([np.ones(len(y)), logit(probability)])
    _, slope = _logistic_fit(design, np.asarray(y), np.zeros(len(y)))
    return float(slope)


def calibration_curve(
    y: np.ndarray, probability: np.ndarray, bins: int = CURVE_BINS
) -> list[CurvePoint]:
    """Observed rate against mean prediction in bins of equal counts (sorted by prediction)."""
    order = np.argsort(probability, kind="stable")
    return [
        CurvePoint(float(probability[part].mean()), float(np.mean(y[part])), len(part))
        for part in np.array_split(order, min(bins, len(order)))
        if len(part)
    ]


def assess(y: np.ndarray, probability: np.ndarray, bins: int = CURVE_BINS) -> Calibration:
    y = np.asarray(y, dtype=np.float64)
    probability = np.asarray(probability, dtype=np.float64)
    if len(y) == 0 or y.min() == y.max():
        raise ValueError("calibration needs rows of both classes")
    curve = calibration_curve(y, probability, bins)
    ece = sum(p.n * abs(p.observed_rate - p.mean_predicted) for p in curve) / len(y)
    return Calibration(
        intercept=calibration_intercept(y, probability),
        slope=calibration_slope(y, probability),
        ece=float(ece),
        brier=float(metrics.brier_score_loss(y, probability)),
        mean_predicted=float(probability.mean()),
        observed_rate=float(y.mean()),
        curve=curve,
    )


def _logistic_fit(
    design: np.ndarray, y: np.ndarray, offset: np.ndarray, iterations: int = 50
) -> np.ndarray:
    """Unpenalised maximum-likelihood logistic regression by Newton's method (a handful of
    coefficients, so no solver tolerance or penalty to explain)."""
    beta = np.zeros(design.shape[1])
    for _ in range(iterations):
        eta = offset + design @ beta
        p = 1 / (1 + np.exp(-eta))
        gradient = design.T @ (y - p)
        hessian = design.T @ (design * (p * (1 - p))[:, None])
        step = np.linalg.solve(hessian + 1e-12 * np.eye(len(beta)), gradient)
        beta = beta + step
        if np.max(np.abs(step)) < 1e-10:
            break
    return beta
