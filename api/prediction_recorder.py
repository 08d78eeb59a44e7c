"""The API's side of closing the loop: served predictions go to the prediction log, and the
realized performance stored by `readmission performance` comes back as Prometheus metrics.

Requests only enqueue (readmission.monitoring.prediction_log.PredictionLogWriter); the writing and
the reading of reports happen in background tasks of the app's lifespan, off the event loop.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Callable, Iterable, Iterator, Mapping, Sequence
from datetime import UTC, datetime
from typing import Any

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from readmission.config import Settings
from readmission.monitoring import realized, realized_metrics
from readmission.monitoring.prediction_log import LoggedPrediction, PredictionLogWriter

log = logging.getLogger(__name__)
SHUTDOWN_FLUSH_SECONDS = 5.0
# Longest wait of a request for room in a full buffer while the warehouse takes writes; longer
# than a write of a full batch under load, short enough not to hold an answer for long.
BACKPRESSURE_SECONDS = 2.0


# The shadow's score of a request: its version, probability and threshold.
ShadowScore = tuple[str, float, float]
NO_SHADOW = (None, None, None)
# One answered prediction: the response's fields, the patient_nbr, the shadow's score or None.
Served = tuple[Mapping[str, Any], int | None, ShadowScore | None]


class PredictionRecorder:
    """The writer of the prediction log (None when PREDICTION_LOG is off) and the last stored
    realized-performance report of the served model's name."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.writer = (
            PredictionLogWriter(
                settings.warehouse_url,
                settings.prediction_log_buffer,
                spill=settings.home / "prediction-log",
            )
            if settings.prediction_log
            else None
        )
        self.report: realized_metrics.Report | None = None

    @property
    def full(self) -> bool:
        """Whether the buffer is full: then await `room` before `record`."""
        return self.writer is not None and self.writer.full

    async def room(self, rows: int = 1) -> None:
        """Wait (at most BACKPRESSURE_SECONDS) until `rows` predictions fit in the buffer."""
        if self.writer is not None:
            await self.writer.wait_for_room(rows, BACKPRESSURE_SECONDS)

    async def record_batch(self, served: Sequence[Served]) -> None:
        """`record` a batch, a buffer's worth at a time, each once there is room for it."""
        step = self.writer.capacity if self.writer is not None else len(served) or 1
        for start in range(0, len(served), step):
            await self.room(len(served[start : start + step]))
            self.record(served[start : start + step])

    def record(self, served: Iterable[Served]) -> None:
        """Enqueue each answered prediction (the response's fields) with the encounter's
        patient_nbr and the shadow's score of it, if one was scored."""
        if self.writer is None:
            return
        now = datetime.now(UTC)
        self.writer.enqueue(
            LoggedPrediction(
                p["encounter_id"],
                patient_nbr,
                p["model_name"],
                p["model_version"],
                p["probability"],
                p["threshold"],
                p["readmitted_within_30d"],
                p["risk_band"],
                now,
                *(shadow or NO_SHADOW),
            )
            for p, patient_nbr, shadow in served
        )

    @contextlib.asynccontextmanager
    async def running(self) -> AsyncIterator[None]:
        """The writer and the report reader, for the app's lifespan; a last flush at the end."""
        reader = asyncio.create_task(self._read_reports(), name="performance-report-reader")
        writing = None
        if self.writer is not None:
            writing = asyncio.create_task(self.writer.run(), name="prediction-log-writer")
        try:
            yield
        finally:
            reader.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await reader
            if self.writer is not None and writing is not None:
                self.writer.stop()
                try:
                    await asyncio.wait_for(writing, SHUTDOWN_FLUSH_SECONDS)
                except TimeoutError:  # the warehouse is too slow: keep the rest for next time
                    self.writer.spill_rest()

    async def _read_reports(self) -> None:
        failing = False
        while True:
            try:
                self.report = await asyncio.to_thread(
                    realized.latest,
                    self.settings.warehouse_url,
                    self.settings.model_name,
                )
                failing = False
            except Exception as error:  # the warehouse may be down: keep the last report
                if not failing:
                    log.warning("realized performance not read from the warehouse: %s", error)
                failing = True
            await asyncio.sleep(self.settings.performance_poll_seconds)


# Per served version: (metric name, help, how to read it from a version of the report).
VERSION_GAUGES: tuple[tuple[str, str, Callable[[dict[str, Any]], Any]], ...] = (
    (
        "readmission_realized_roc_auc",
        "ROC AUC on the scored encounters whose outcome has arrived.",
        lambda v: v["roc_auc"],
    ),
    (
        "readmission_realized_labelled_encounters",
        "Scored encounters whose outcome has arrived.",
        lambda v: v["n"],
    ),
    (
        "readmission_realized_pending_encounters",
        "Scored encounters still waiting for their outcome.",
        lambda v: v["pending"],
    ),
    (
        "readmission_realized_recent_roc_auc",
        "ROC AUC on the version's latest counted outcomes (at most 1,000).",
        lambda v: (v.get("recent") or {}).get("roc_auc"),
    ),
    (
        "readmission_realized_recent_roc_auc_upper",
        "Upper end of the 95% interval of the recent realized ROC AUC (patient bootstrap).",
        lambda v: ((v.get("recent") or {}).get("roc_auc_ci") or [None, None])[1],
    ),
    (
        "readmission_realized_recent_outcomes",
        "Counted outcomes in the recent window of the version.",
        lambda v: (v.get("recent") or {}).get("n"),
    ),
    (
        "readmission_estimated_roc_auc",
        "Expected ROC AUC of the pending encounters, from their probabilities (CBPE).",
        lambda v: v["estimate"]["roc_auc"],
    ),
    (
        "readmission_holdout_roc_auc",
        "ROC AUC of the version on the fixed holdout, at training.",
        lambda v: v["holdout_roc_auc"],
    ),
)


class PredictionLogCollector(Collector):
    """Prometheus metrics of the prediction log and of the last realized-performance report."""

    def __init__(self, source: PredictionRecorder) -> None:
        self.source = source

    def describe(self) -> list[Metric]:
        # Nothing to check against the registry's names: collecting at registration would
        # read state that does not exist yet.
        return []

    def collect(self) -> Iterator[Metric]:
        writer = self.source.writer
        yield _gauge(
            "readmission_prediction_log_enabled",
            "1 when served predictions are logged (PREDICTION_LOG).",
            writer is not None,
        )
        if writer is not None:
            yield _counter(
                "readmission_prediction_log_written",
                "Predictions written to the prediction log.",
                writer.written,
            )
            yield _counter(
                "readmission_prediction_log_dropped",
                "Predictions not logged: the buffer was full while the warehouse lagged.",
                writer.dropped,
            )
            yield _counter(
                "readmission_prediction_log_rejected",
                "Predictions the warehouse refused (a value out of its range): set aside, "
                "the rows after them written.",
                writer.rejected,
            )
            yield _counter(
                "readmission_prediction_log_replayed",
                "Predictions left unwritten at the last shutdown, spilled to disk and "
                "buffered again at this start.",
                writer.replayed,
            )
            yield _counter(
                "readmission_prediction_log_lost",
                "Predictions the previous run lost without writing them (a crash), counted at "
                "this start.",
                writer.lost,
            )
            yield _counter(
                "readmission_prediction_log_failed_writes",
                "Failed attempts to write to the prediction log (each retried).",
                writer.failed_writes,
            )
            yield _gauge(
                "readmission_prediction_log_buffered",
                "Predictions waiting to be written.",
                writer.buffered,
            )
            yield _gauge(
                "readmission_prediction_log_up",
                "1 when the last write to the prediction log succeeded.",
                writer.up,
            )
        yield _gauge(
            "readmission_realized_min_auc",
            "MIN_AUC, the floor of the realized AUC alert.",
            self.source.settings.min_auc,
        )
        report = self.source.report
        if report is None:
            return
        yield _gauge(
            "readmission_performance_report_timestamp_seconds",
            "When the last realized-performance report was computed.",
            datetime.fromisoformat(report["computed_at"]).timestamp(),
        )
        for name, documentation, read in VERSION_GAUGES:
            family = GaugeMetricFamily(name, documentation, labels=["version"])
            for version in report["versions"]:
                value = read(version)
                if value is not None:
                    family.add_metric([version["version"]], float(value))
            yield family
        for name, documentation, read in COMPARISON_GAUGES:
            family = GaugeMetricFamily(name, documentation, labels=["production", "shadow"])
            for pair in report.get("comparisons", ()):  # reports before shadows have none
                value = read(pair)
                if value is not None:
                    family.add_metric([pair["production"], pair["shadow"]], float(value))
            yield family


# Per production/shadow pair of the report's live comparison.
COMPARISON_GAUGES: tuple[tuple[str, str, Callable[[dict[str, Any]], Any]], ...] = (
    (
        "readmission_live_delta_roc_auc",
        "Realized ROC AUC of the shadow minus production's, on the encounters both scored.",
        lambda c: c["delta_roc_auc"],
    ),
    (
        "readmission_live_delta_roc_auc_lower",
        "Lower end of the 95% interval of the live AUC difference (paired patient bootstrap).",
        lambda c: (c["delta_roc_auc_ci"] or [None, None])[0],
    ),
    (
        "readmission_live_delta_roc_auc_upper",
        "Upper end of the 95% interval of the live AUC difference (paired patient bootstrap).",
        lambda c: (c["delta_roc_auc_ci"] or [None, None])[1],
    ),
    (
        "readmission_live_paired_outcomes",
        "Encounters scored by both, whose outcome counts.",
        lambda c: c["n"],
    ),
)


def _gauge(name: str, documentation: str, value: float) -> GaugeMetricFamily:
    return GaugeMetricFamily(name, documentation, value=float(value))


def _counter(name: str, documentation: str, value: float) -> CounterMetricFamily:
    return CounterMetricFamily(name, documentation, value=float(value))
