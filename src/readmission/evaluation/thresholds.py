"""The decision threshold of a version, chosen on rows it has not trained on.

Two policies: `f1` maximises F1 (labels that mean something at an 11% base rate), `top_k` flags the
k% of patients at highest risk, for a care team that can follow up only so many.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any, Literal

import numpy as np
from sklearn import metrics

Policy = Literal["f1", "top_k"]
RiskBand = Literal["low", "medium", "high"]
# How the bands follow from a version's threshold, in words: the API's schema and the UI show it.
RISK_BAND_RULE = "high: p >= threshold; medium: p >= threshold / 2; low: below."


@dataclass(frozen=True)
class Threshold:
    value: float
    policy: Policy
    top_percent: float | None  # the k of top_k
    chosen_on: str  # which rows: never the ones the version trained on
    n: int

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)

    def describe(self) -> str:
        if self.policy == "top_k":
            return f"flag the {self.top_percent:g}% of patients at highest risk"
        return "maximise F1"


def best_f1_threshold(y: np.ndarray, probability: np.ndarray) -> float:
    """The probability cut-off maximising F1."""
    precision, recall, thresholds = metrics.precision_recall_curve(y, probability)
    f1 = 2 * precision * recall / np.maximum(precision + recall, 1e-12)
    return float(thresholds[int(np.argmax(f1[:-1]))]) if len(thresholds) else 0.5


def top_k_threshold(probability: np.ndarray, top_percent: float) -> float:
    """The cut-off above which `top_percent` % of the rows fall (ties flag a few more)."""
    if not 0 < top_percent <= 100:
        raise ValueError(f"THRESHOLD_TOP_PERCENT must be in (0, 100], got {top_percent}")
    return float(np.quantile(probability, 1 - top_percent / 100, method="higher"))


def choose(
    policy: Policy,
    y: np.ndarray,
    probability: np.ndarray,
    chosen_on: str,
    top_percent: float = 10.0,
) -> Threshold:
    if policy == "top_k":
        value = top_k_threshold(probability, top_percent)
        return Threshold(value, policy, top_percent, chosen_on, len(y))
    if policy == "f1":
        return Threshold(best_f1_threshold(y, probability), policy, None, chosen_on, len(y))
    raise ValueError(f"THRESHOLD_POLICY must be 'f1' or 'top_k', got {policy!r}")


def risk_band(probability: float, threshold: float) -> RiskBand:
    """The band a care team reads beside the decision: high at the threshold (the patients
    flagged), medium from half of it (worth a second look), low below."""
    if probability >= threshold:
        return "high"
    return "medium" if probability >= threshold / 2 else "low"
