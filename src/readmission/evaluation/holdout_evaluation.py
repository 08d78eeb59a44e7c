"""A version's performance on the holdout: metrics with uncertainty, calibration, subgroups,
and the plots of them (scikit-learn's displays)."""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")

from dataclasses import dataclass

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
from matplotlib.figure import Figure
from sklearn import metrics
from sklearn.calibration import CalibrationDisplay
from sklearn.metrics import RocCurveDisplay

from readmission.config import Settings
from readmission.evaluation import calibration, subgroups, thresholds
from readmission.evaluation.uncertainty import AucInterval, cluster_bootstrap_auc

BOOTSTRAP_SEED = 20_240  # fixed, so a version's card and its promotion gate see the same interval


def scores(y: np.ndarray, probability: np.ndarray, threshold: float) -> dict[str, float]:
    """Classification metrics at `threshold` and ranking/probability metrics."""
    predicted = (probability >= threshold).astype(int)
    both_classes = len(np.unique(y)) == 2
    return {
        "accuracy": metrics.accuracy_score(y, predicted),
        "precision": metrics.precision_score(y, predicted, zero_division=0),
        "recall": metrics.recall_score(y, predicted, zero_division=0),
        "f1": metrics.f1_score(y, predicted, zero_division=0),
        "roc_auc": metrics.roc_auc_score(y, probability) if both_classes else float("nan"),
        "pr_auc": metrics.average_precision_score(y, probability) if both_classes else float("nan"),
        "log_loss": metrics.log_loss(y, probability, labels=[0, 1]),
        "brier": metrics.brier_score_loss(y, probability),
    }


@dataclass(frozen=True)
class HoldoutEvaluation:
    """Everything a model card and the promotion gate say about one version on the holdout."""

    n: int
    positives: int
    patients: int
    threshold: thresholds.Threshold
    scores: dict[str, float]  # at the threshold
    selection_rate: float  # share of the holdout flagged at the threshold
    roc_auc: AucInterval
    calibration: calibration.Calibration
    subgroups: dict[str, list[subgroups.GroupRow]]
    min_events: int

    def metrics(self) -> dict[str, float]:
        """Flat numbers for MLflow (logged with the prefix `holdout_`)."""
        return {
            **self.scores,
            "roc_auc_ci_low": self.roc_auc.low,
            "roc_auc_ci_high": self.roc_auc.high,
            "calibration_intercept": self.calibration.intercept,
            "calibration_slope": self.calibration.slope,
            "ece": self.calibration.ece,
            "selection_rate": self.selection_rate,
        }


def evaluate_holdout(
    settings: Settings,
    holdout: pd.DataFrame,
    y: np.ndarray,
    probability: np.ndarray,
    threshold: thresholds.Threshold | None = None,
) -> HoldoutEvaluation:
    """Evaluate probabilities on the holdout; choose the threshold there unless one is given
    (the holdout is the only data a new version has not trained on)."""
    if threshold is None:
        threshold = thresholds.choose(
            settings.threshold_policy,
            y,
            probability,
            chosen_on="holdout",
            top_percent=settings.threshold_top_percent,
        )
    patients = holdout["patient_nbr"].to_numpy()
    return HoldoutEvaluation(
        n=len(y),
        positives=int(y.sum()),
        patients=len(np.unique(patients)),
        threshold=threshold,
        scores=scores(y, probability, threshold.value),
        selection_rate=float(np.mean(probability >= threshold.value)),
        roc_auc=cluster_bootstrap_auc(
            y, probability, patients, settings.bootstrap_resamples, BOOTSTRAP_SEED
        ),
        calibration=calibration.assess(y, probability),
        subgroups=subgroups.subgroup_tables(
            holdout,
            y,
            probability,
            threshold.value,
            settings.subgroup_min_events,
            settings.bootstrap_resamples,
            BOOTSTRAP_SEED,
        ),
        min_events=settings.subgroup_min_events,
    )


def roc_figure(y: np.ndarray, probability: np.ndarray, title: str) -> Figure:
    display = RocCurveDisplay.from_predictions(
        y, probability, name="holdout", plot_chance_level=True
    )
    display.ax_.set_title(title)
    return display.figure_


def calibration_figure(y: np.ndarray, probability: np.ndarray, title: str) -> Figure:
    figure, axes = plt.subplots(figsize=(5, 5))
    display = CalibrationDisplay.from_predictions(
        y, probability, n_bins=calibration.CURVE_BINS, strategy="quantile", name="holdout", ax=axes
    )
    top = max(float(display.prob_pred.max()), float(display.prob_true.max())) * 1.1
    axes.set(xlim=(0, top), ylim=(0, top), title=title)
    axes.set_xlabel("Mean predicted probability (equal-count bins)")
    axes.set_ylabel("Observed readmission rate")
    return figure
