"""Prometheus metrics of the API (their names are a contract with the dashboards and alerts).

They live in the process's default registry, beside the process metrics (CPU, memory, open
files): one app per process, as `bin/api` runs it.
"""

from __future__ import annotations

import time

from fastapi import FastAPI
from prometheus_client import (
    REGISTRY,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
)

from api.http_metrics import HttpMetrics, expose

PROBABILITY_BUCKETS = tuple(round(0.05 * i, 2) for i in range(1, 20))
BATCH_BUCKETS = (1, 5, 10, 25, 50, 100, 250, 500, 1000, 2500, 10000)


class ServingMetrics:
    """Every metric the API exports, registered on `self.registry`."""

    def __init__(self, registry: CollectorRegistry = REGISTRY) -> None:
        self.registry = registry
        predictions = Counter(
            "readmission_predictions", "Predictions served, by label.", ["label"], registry=registry
        )
        self.readmit = predictions.labels("readmit")
        self.no_readmit = predictions.labels("no_readmit")
        self.probability = Histogram(
            "readmission_prediction_probability",
            "Predicted probabilities of readmission within 30 days.",
            buckets=PROBABILITY_BUCKETS,
            registry=registry,
        )
        self.batch_rows = Histogram(
            "readmission_batch_rows",
            "Encounters per /predict/batch call.",
            buckets=BATCH_BUCKETS,
            registry=registry,
        )
        self.validation_errors = Counter(
            "readmission_validation_errors",
            "Rejected request fields, by column.",
            ["field"],
            registry=registry,
        )
        self.model_info = Gauge(
            "readmission_model_info",
            "The served model version (value 1).",
            ["name", "version", "alias", "run_id"],
            registry=registry,
        )
        self.model_version = Gauge(
            "readmission_model_version", "Served version number.", registry=registry
        )
        self.model_loaded = Gauge(
            "readmission_model_loaded", "1 while a model is served.", registry=registry
        )
        self.load_failures = Counter(
            "readmission_model_load_failures",
            "Model versions that failed to load or verify.",
            registry=registry,
        )
        self.load_failing = Gauge(
            "readmission_model_load_failing",
            "1 while the version in production fails to load (retried with back-off).",
            registry=registry,
        )
        self.reloads = Counter(
            "readmission_model_reloads", "Model versions loaded and swapped in.", registry=registry
        )
        self.registry_up = Gauge(
            "readmission_registry_up",
            "1 when the last model registry check succeeded.",
            registry=registry,
        )
        self.last_reload = Gauge(
            "readmission_model_last_reload_timestamp_seconds",
            "Unix time of the last model swap.",
            registry=registry,
        )
        self.registered = Gauge(
            "readmission_model_registered_timestamp_seconds",
            "Unix time the served version was registered (its age, whatever the uptime).",
            registry=registry,
        )

    def record(self, probability: float, readmit: bool) -> None:
        (self.readmit if readmit else self.no_readmit).inc()
        self.probability.observe(probability)

    def record_many(self, probabilities: list[float], threshold: float) -> None:
        readmits = sum(p >= threshold for p in probabilities)
        self.readmit.inc(readmits)
        self.no_readmit.inc(len(probabilities) - readmits)
        for probability in probabilities:
            self.probability.observe(probability)

    def model_swapped(
        self, name: str, version: str, alias: str, run_id: str, registered: float
    ) -> None:
        self.describe_model(name, version, alias, run_id)
        self.model_version.set(int(version) if version.isdigit() else -1)
        self.model_loaded.set(1)
        self.registered.set(registered)
        self.reloads.inc()
        self.last_reload.set(time.time())

    def describe_model(self, name: str, version: str, alias: str, run_id: str) -> None:
        self.model_info.clear()
        self.model_info.labels(name, version, alias, run_id).set(1)

    def model_withdrawn(self) -> None:
        self.model_info.clear()
        self.model_version.set(0)
        self.model_loaded.set(0)
        self.registered.set(0)

    def instrument(self, app: FastAPI) -> None:
        """HTTP metrics per route template (http_requests_total, http_request_duration_seconds,
        http_requests_inprogress) and the GET /metrics endpoint."""
        expose(app, self.registry)
        app.add_middleware(HttpMetrics, routes=app.routes, registry=self.registry)
