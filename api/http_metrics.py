"""HTTP metrics of every request, by route template, and the GET /metrics endpoint.

`http_requests_total{handler,method,status}`, `http_request_duration_seconds{handler,method}` and
`http_requests_inprogress{handler,method}` (names and labels are a contract with the dashboards
and alerts). A pure ASGI middleware with its labelled children cached: the generic
instrumentator it replaces matched every request against every route and looked up its label
children again, a tenth of a /predict request's time. Paths that match no route are not
counted, so that scanners cannot grow the label sets; neither is /metrics itself.
"""

from __future__ import annotations

import time
from collections.abc import Iterable

from fastapi import FastAPI, Request, Response
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.exposition import generate_latest
from starlette.routing import BaseRoute, Match
from starlette.types import ASGIApp, Message, Receive, Scope, Send

LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5)
METRICS_PATH = "/metrics"


class HttpMetrics:
    def __init__(self, app: ASGIApp, routes: Iterable[BaseRoute], registry: CollectorRegistry):
        self.app = app
        self.routes = list(routes)
        # A route without path parameters is its own template: one dictionary look-up.
        self.templates = {
            path: path
            for route in self.routes
            if (path := getattr(route, "path", None)) and "{" not in path
        }
        self.requests = Counter(
            "http_requests_total",
            "Total number of requests by method, status and handler.",
            ["method", "status", "handler"],
            registry=registry,
        )
        self.latency = Histogram(
            "http_request_duration_seconds",
            "Latency with only few buckets by handler.",
            ["handler", "method"],
            buckets=LATENCY_BUCKETS,
            registry=registry,
        )
        self.inprogress = Gauge(
            "http_requests_inprogress",
            "Number of HTTP requests in progress.",
            ["method", "handler"],
            registry=registry,
            multiprocess_mode="livesum",
        )
        self._children: dict[tuple[str, str], tuple[Gauge, Histogram]] = {}
        self._counters: dict[tuple[str, str, int], Counter] = {}

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        handler = self._template(scope)
        if handler is None or handler == METRICS_PATH:
            await self.app(scope, receive, send)
            return
        method = scope["method"]
        children = self._children.get((handler, method))
        if children is None:
            children = self._children[handler, method] = (
                self.inprogress.labels(method, handler),
                self.latency.labels(handler, method),
            )
        inprogress, latency = children
        status = 500  # what the client gets if the app fails before answering

        async def send_status(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        started = time.perf_counter()
        inprogress.inc()
        try:
            await self.app(scope, receive, send_status)
        finally:
            inprogress.dec()
            latency.observe(time.perf_counter() - started)
            counter = self._counters.get((handler, method, status))
            if counter is None:
                counter = self._counters[handler, method, status] = self.requests.labels(
                    method, str(status), handler
                )
            counter.inc()

    def _template(self, scope: Scope) -> str | None:
        path = scope["path"]
        if path in self.templates:
            return self.templates[path]
        partial = None
        for route in self.routes:
            match, _ = route.matches(scope)
            if match == Match.FULL:
                return getattr(route, "path", None)
            if match == Match.PARTIAL and partial is None:
                partial = getattr(route, "path", None)
        return partial


def expose(app: FastAPI, registry: CollectorRegistry) -> None:
    """GET /metrics: the registry in Prometheus' text format."""

    async def metrics(request: Request) -> Response:
        return Response(generate_latest(registry), media_type=CONTENT_TYPE_LATEST)

    app.add_api_route(METRICS_PATH, metrics, methods=["GET"], include_in_schema=False)
