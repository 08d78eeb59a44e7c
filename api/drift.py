"""Input drift: population stability index (PSI) of recent encounters vs the training data.

Requests only append their records, time-stamped, to a bounded window (O(1)); the PSI of each
feature is computed when Prometheus scrapes, over the window's entries younger than
DRIFT_MAX_AGE_SECONDS, against the level counts the model saw in training
(`ReadmissionModel.reference_counts`). Below DRIFT_MIN_REQUESTS entries no PSI is exported: on a
few dozen records sampling noise alone puts PSI above 0.2 (about (levels - 1) / records), so a
quiet or stale window would read as drift.
"""

from __future__ import annotations

import math
import threading
import time
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
    """The last `window` encounters scored within `max_age` seconds, and their PSI against a
    model's reference once they are at least `min_requests`."""

    def __init__(self, window: int, min_requests: int, max_age: float) -> None:
        self.min_requests = min_requests
        self.max_age = max_age
        self._recent: deque[tuple[float, Mapping[str, Any]]] = deque(maxlen=window)
        self._lock = threading.Lock()  # scrapes run in a worker thread

    def observe(self, records: Iterable[Mapping[str, Any]]) -> None:
        now = time.monotonic()
        with self._lock:
            self._recent.extend((now, r) for r in records)

    def snapshot(self) -> list[Mapping[str, Any]]:
        """The window's records, after dropping those older than `max_age`."""
        oldest = time.monotonic() - self.max_age
        with self._lock:
            while self._recent and self._recent[0][0] < oldest:
                self._recent.popleft()
            return [record for _, record in self._recent]

    def psi(self, reference: DriftReference) -> tuple[int, dict[str, float]]:
        """Requests in the window, and feature name -> PSI (empty below `min_requests`)."""
        records = self.snapshot()
        if len(records) < self.min_requests:
            return len(records), {}
        found: dict[str, float] = {}
        for feature, expected in zip(reference.features, reference.expected, strict=True):
            index = {level: i for i, level in enumerate(feature.vocabulary)}
            levels = _apply(feature.fn, [[r[c] for r in records] for c in feature.inputs])
            positions = [index.get(level, len(index)) for level in levels]
            actual = _proportions(np.bincount(positions, minlength=len(expected)).astype(float))
            value = psi(expected, actual)
            found[feature.name] = value if math.isfinite(value) else 0.0
        return len(records), found


class PsiCollector(Collector):
    """Exports, at scrape time, `readmission_feature_psi{feature}` (once the window holds
    DRIFT_MIN_REQUESTS), the window's size and that minimum: the alert requires both."""

    def __init__(self, monitor: DriftMonitor, reference: Callable[[], DriftReference | None]):
        self.monitor = monitor
        self.reference = reference

    def describe(self) -> Sequence[GaugeMetricFamily]:
        return self._families(0, {})

    def collect(self) -> Iterator[GaugeMetricFamily]:
        reference = self.reference()
        found: dict[str, float] = {}
        if reference is None:
            size = len(self.monitor.snapshot())
        else:
            size, found = self.monitor.psi(reference)
        yield from self._families(size, found)

    def _families(self, size: int, found: Mapping[str, float]) -> list[GaugeMetricFamily]:
        psi_family = GaugeMetricFamily(
            "readmission_feature_psi",
            "Population stability index of the recent requests vs the training data "
            "(absent while the window holds fewer than DRIFT_MIN_REQUESTS).",
            labels=["feature"],
        )
        for feature, value in found.items():
            psi_family.add_metric([feature], value)
        return [
            psi_family,
            GaugeMetricFamily(
                "readmission_drift_window_requests",
                "Requests in the drift window (the last DRIFT_WINDOW, younger than "
                "DRIFT_MAX_AGE_SECONDS).",
                value=size,
            ),
            GaugeMetricFamily(
                "readmission_drift_min_requests",
                "DRIFT_MIN_REQUESTS: the window size from which PSI is exported.",
                value=self.monitor.min_requests,
            ),
        ]
