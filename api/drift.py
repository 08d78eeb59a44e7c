"""Input drift: population stability index (PSI) of recent encounters vs the training data.

Requests only append their records to a bounded window (O(1)); the PSI of each feature is
computed when Prometheus scrapes, over the window, against the level counts the model saw in
training (`ReadmissionModel.reference_counts`).
"""

from __future__ import annotations

import math
import threading
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

from readmission.features import Feature, _apply
from readmission.model import ReadmissionModel

EPSILON = 1e-4  # proportion used for a level never seen, so the PSI stays finite
# Features derived from one input column with a vocabulary small enough to compare against a
# window of about a thousand requests (this leaves out the 1,300-level ICD-9 categories).
MAX_LEVELS = 100


@dataclass(frozen=True)
class DriftReference:
    """Expected level proportions (OTHER last) of the monitored features of one model."""

    features: tuple[Feature, ...]
    expected: tuple[np.ndarray, ...]

    @classmethod
    def of(cls, model: ReadmissionModel) -> DriftReference | None:
        counts = getattr(model, "reference_counts", None)
        if counts is None or not model.is_fitted:
            return None
        features, expected = [], []
        for feature, level_counts in zip(model.space.features, counts, strict=True):
            if len(feature.inputs) == 1 and len(feature.vocabulary) <= MAX_LEVELS:
                features.append(feature)
                expected.append(_proportions(np.asarray(level_counts, dtype=float)))
        return cls(tuple(features), tuple(expected))


def psi(expected: np.ndarray, actual: np.ndarray) -> float:
    """sum((actual - expected) * ln(actual / expected)) over levels, proportions floored."""
    return float(np.sum((actual - expected) * np.log(actual / expected)))


def _proportions(counts: np.ndarray) -> np.ndarray:
    total = counts.sum()
    return np.maximum(counts / total if total else counts, EPSILON)


class DriftMonitor:
    """The last `window` encounters scored, and their PSI against a model's reference."""

    def __init__(self, window: int) -> None:
        self._recent: deque[Mapping[str, Any]] = deque(maxlen=window)
        self._lock = threading.Lock()  # scrapes run in a worker thread

    def observe(self, records: Iterable[Mapping[str, Any]]) -> None:
        with self._lock:
            self._recent.extend(records)

    def snapshot(self) -> list[Mapping[str, Any]]:
        with self._lock:
            return list(self._recent)

    def psi(self, reference: DriftReference) -> dict[str, float]:
        """Feature name -> PSI of the window; empty while the window is empty."""
        records = self.snapshot()
        if not records:
            return {}
        found = {}
        for feature, expected in zip(reference.features, reference.expected, strict=True):
            index = {level: i for i, level in enumerate(feature.vocabulary)}
            levels = _apply(feature.fn, [[r[c] for r in records] for c in feature.inputs])
            positions = [index.get(level, len(index)) for level in levels]
            actual = _proportions(np.bincount(positions, minlength=len(expected)).astype(float))
            value = psi(expected, actual)
            found[feature.name] = value if math.isfinite(value) else 0.0
        return found


class PsiCollector(Collector):
    """Exports `readmission_feature_psi{feature}` at scrape time."""

    def __init__(self, monitor: DriftMonitor, reference: Callable[[], DriftReference | None]):
        self.monitor = monitor
        self.reference = reference

    def describe(self) -> Sequence[GaugeMetricFamily]:
        return [self._family()]

    def collect(self) -> Iterator[GaugeMetricFamily]:
        family = self._family()
        reference = self.reference()
        if reference is not None:
            for feature, value in self.monitor.psi(reference).items():
                family.add_metric([feature], value)
        yield family

    @staticmethod
    def _family() -> GaugeMetricFamily:
        return GaugeMetricFamily(
            "readmission_feature_psi",
            "Population stability index of the last DRIFT_WINDOW requests vs the training data.",
            labels=["feature"],
        )
