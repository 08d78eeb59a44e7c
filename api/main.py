"""The FastAPI app: state, routers, error handlers, metrics. Run with `bin/api`."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator

from fastapi import FastAPI
from fastapi.routing import APIRoute
from prometheus_client import REGISTRY, CollectorRegistry

import readmission
from api import errors
from api.body_limit import BodyLimit
from api.deps import AppState
from api.drift import DriftMonitor, PsiCollector
from api.metrics import ServingMetrics
from api.model_store import ModelStore
from api.prediction_recorder import PredictionLogCollector, PredictionRecorder
from api.preloaded_models import PreloadedModels
from api.promotion_listener import PromotionListener, RegistryChanges
from api.routes import health, model, performance, predict, webhooks
from readmission.config import Settings, get_settings
from readmission.logging_setup import configure_logging

DESCRIPTION = """Scores hospital encounters of diabetic patients with the production version of
the readmission model in the MLflow registry (alias `production`), and follows promotions
without a restart. Send the data set's columns; see the examples of `POST /predict`."""


SCORING_PATHS = frozenset({"/predict", "/predict/batch"})


def operation_id(route: APIRoute) -> str:
    """The handler's name: it survives changes of path and method, so clients generated from
    the OpenAPI document keep their method names."""
    return route.name


def create_app(settings: Settings | None = None, registry: CollectorRegistry = REGISTRY) -> FastAPI:
    """The app on `settings`, its metrics on `registry`: the process's default one, beside the
    process metrics, as bin/api runs one app per process; a registry of its own for an app
    built in a process that builds several (the tests)."""
    settings = settings or get_settings()
    metrics = ServingMetrics(registry)
    preloaded = PreloadedModels(settings)
    store = ModelStore(settings, metrics, loader=preloaded.load)
    changes = RegistryChanges(store, preloaded)
    drift = DriftMonitor(
        settings.drift_window, settings.drift_min_requests, settings.drift_max_age_seconds
    )
    metrics.registry.register(
        PsiCollector(drift, lambda: store.current.drift if store.current else None)
    )
    recorder = PredictionRecorder(settings)
    metrics.registry.register(PredictionLogCollector(recorder))

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        configure_logging()
        watcher = asyncio.create_task(store.watch(), name="model-registry-watcher")
        tasks = [watcher]
        if settings.warehouse_url.startswith("postgresql"):  # SQLite: one process, woken directly
            listener = PromotionListener(settings.warehouse_url, changes)
            tasks.append(asyncio.create_task(listener.run(), name="promotion-listener"))
        async with recorder.running():
            yield
        for task in tasks:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        preloaded.close()

    app = FastAPI(
        title="Readmission risk API",
        version=readmission.__version__,
        description=DESCRIPTION,
        lifespan=lifespan,
        generate_unique_id_function=operation_id,
    )
    app.state.app_state = AppState(settings, store, metrics, drift, recorder)
    app.state.registry_changes = changes
    errors.install(app, metrics)
    for router in (
        predict.router,
        model.router,
        performance.router,
        health.router,
        webhooks.router,
    ):
        app.include_router(router)
    # Starlette tries the routes in order, one regex match each: the scoring routes go ahead of
    # FastAPI's documentation routes, so the hot path pays only for its own (paths are distinct,
    # so the order changes no answer).
    app.router.routes.sort(key=lambda route: getattr(route, "path", None) not in SCORING_PATHS)
    predict.document_request_bodies(app)
    app.add_middleware(
        BodyLimit,
        limit=settings.body_limit,
        explanation="MAX_BODY_BYTES"
        if settings.max_body_bytes
        else f"room for MAX_BATCH_ROWS={settings.max_batch_rows} encounters: split the batch",
    )
    metrics.instrument(app)  # last: its middleware wraps the others and counts their 413s
    return app


app = create_app()
