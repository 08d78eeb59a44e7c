"""Metrics and plots of a model's probabilities against true labels."""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt
import numpy as np
from matplotlib.figure import Figure
from sklearn import metrics
from sklearn.calibration import calibration_curve


def best_f1_threshold(y: np.ndarray, probability: np.ndarray) -> float:
    """The probability cut-off maximising F1, so labels mean something at an 11% base rate."""
    precision, recall, thresholds = metrics.precision_recall_curve(y, probability)
    f1 = 2 * precision * recall / np.maximum(precision + recall, 1e-12)
    return float(thresholds[int(np.argmax(f1[:-1]))]) if len(thresholds) else 0.5


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


def roc_figure(y: np.ndarray, probability: np.ndarray, title: str) -> Figure:
    fpr, tpr, _ = metrics.roc_curve(y, probability)
    figure, axes = plt.subplots(figsize=(5, 5))
    axes.plot(fpr, tpr, label=f"AUC {metrics.roc_auc_score(y, probability):.3f}")
    axes.plot([0, 1], [0, 1], linestyle=":", color="grey")
    axes.set(xlabel="False positive rate", ylabel="True positive rate", title=title)
    axes.legend(loc="lower right")
    return figure


def calibration_figure(y: np.ndarray, probability: np.ndarray, title: str) -> Figure:
    observed, predicted = calibration_curve(y, probability, n_bins=10, strategy="quantile")
    figure, axes = plt.subplots(figsize=(5, 5))
    axes.plot(predicted, observed, marker="o")
    top = max(float(predicted.max()), float(observed.max()))
    axes.plot([0, top], [0, top], linestyle=":", color="grey")
    axes.set(xlabel="Mean predicted probability", ylabel="Observed readmission rate", title=title)
    return figure
