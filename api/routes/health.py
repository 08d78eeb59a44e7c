"""Liveness and readiness probes."""

from __future__ import annotations

from fastapi import APIRouter
from fastapi.responses import JSONResponse

from api.bodies import Health, NotReady, Ready
from api.deps import AppStateDep

router = APIRouter(tags=["health"])


@router.get("/health", response_model=Health, summary="Liveness: 200 while the process runs")
async def health() -> Health:
    """Answers while the process runs, model or not: the liveness probe (a failure restarts)."""
    return Health()


@router.get(
    "/ready",
    response_model=Ready,
    summary="Readiness: 200 once a model is served",
    responses={503: {"model": NotReady, "description": "No model is served yet."}},
)
async def ready(state: AppStateDep) -> Ready | JSONResponse:
    """200 with the served version once a model is loaded, else 503 with the reason: the
    readiness probe (no traffic until a model is served)."""
    model = state.store.current
    if model is None:
        body = NotReady(reason=state.store.unavailable_reason())
        return JSONResponse(body.model_dump(), status_code=503)
    return Ready(model_version=model.version)
