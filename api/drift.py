"""Input drift as the API sees it: a window of recent encounters, and its PSI against the served
model's training data (readmission.monitoring.drift) exported to Prometheus.

Requests only append their records, time-stamped, to a bounded window (O(1)); the PSI of each
feature is computed when Prometheus scrapes, over the window's entries younger than
DRIFT_MAX_AGE_SECONDS, against the level counts the model saw in training
(`ReadmissionModel.reference_counts`). Below DRIFT_MIN_REQUESTS entries no PSI is exported: on a
few dozen records sampling noise alone puts PSI above 0.2 (about (levels - 1) / records), so a
quiet or stale window would read as drift.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from typing import Any

from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

from readmission.monitoring.drift import DriftReference


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
        return len(records), reference.psi(records)


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
