"""Input drift: the population stability index (PSI) of recent encounters against the level
counts a model saw in training (`ReadmissionModel.reference_counts`).

Only features derived from one input column, with a vocabulary small enough to compare against
a window of about a thousand requests, are monitored (this leaves out the 1,300-level ICD-9
categories). The API keeps the window and exports the numbers (api/drift.py).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from readmission.features import Feature, map_distinct
from readmission.model import ReadmissionModel

EPSILON = 1e-4  # proportion used for a level never seen, so the PSI stays finite
MAX_LEVELS = 100


@dataclass(frozen=True)
class DriftReference:
    """Expected level proportions (OTHER last) of the monitored features of one model."""

    features: tuple[Feature, ...]
    expected: tuple[np.ndarray, ...]

    @classmethod
    def of(cls, model: ReadmissionModel) -> DriftReference | None:
        """The model's reference; None for a model without training counts (an older one)."""
        counts = getattr(model, "reference_counts", None)
        if counts is None or not model.is_fitted:
            return None
        features, expected = [], []
        for feature, level_counts in zip(model.space.features, counts, strict=True):
            if len(feature.inputs) == 1 and len(feature.vocabulary) <= MAX_LEVELS:
                features.append(feature)
                expected.append(proportions(np.asarray(level_counts, dtype=float)))
        return cls(tuple(features), tuple(expected))

    def psi(self, records: Sequence[Mapping[str, Any]]) -> dict[str, float]:
        """Feature name -> PSI of `records` (raw encounters) against this reference."""
        found: dict[str, float] = {}
        for feature, expected in zip(self.features, self.expected, strict=True):
            index = {level: i for i, level in enumerate(feature.vocabulary)}
            levels = map_distinct(feature.fn, [[r[c] for r in records] for c in feature.inputs])
            positions = [index.get(level, len(index)) for level in levels]
            actual = proportions(np.bincount(positions, minlength=len(expected)).astype(float))
            value = psi(expected, actual)
            found[feature.name] = value if math.isfinite(value) else 0.0
        return found


def psi(expected: np.ndarray, actual: np.ndarray) -> float:
    """sum((actual - expected) * ln(actual / expected)) over levels, proportions floored."""
    return float(np.sum((actual - expected) * np.log(actual / expected)))


def proportions(counts: np.ndarray) -> np.ndarray:
    """Counts as proportions, floored at EPSILON: a level never seen keeps the PSI finite."""
    total = counts.sum()
    return np.maximum(counts / total if total else counts, EPSILON)
