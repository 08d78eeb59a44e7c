"""What the routes depend on: the app's serving state and the model it serves."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated

from fastapi import Depends, HTTPException, Request

from api.drift import DriftMonitor
from api.metrics import ServingMetrics
from api.model_store import ModelStore, ServedModel
from readmission.config import Settings


@dataclass(frozen=True)
class Serving:
    """Everything one app instance serves with, kept in `app.state.serving`."""

    settings: Settings
    store: ModelStore
    metrics: ServingMetrics
    drift: DriftMonitor


# Dependencies are coroutines so that FastAPI calls them on the event loop: a plain function would
# be run in the thread pool, a hand-off that costs more than scoring.
async def serving(request: Request) -> Serving:
    return request.app.state.serving


@dataclass(frozen=True)
class Scoring:
    """What one prediction request needs: the app's state and the model to score with."""

    state: Serving
    model: ServedModel


async def scoring(request: Request) -> Scoring:
    """The served model, read once per request; 503 with what to do when there is none."""
    state: Serving = request.app.state.serving
    model = state.store.current
    if model is None:
        raise HTTPException(503, detail=state.store.unavailable_reason())
    return Scoring(state, model)


ServingState = Annotated[Serving, Depends(serving)]
ScoringState = Annotated[Scoring, Depends(scoring)]
