"""What the routes depend on: the app's serving state and the model it serves."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated, TypeVar

from fastapi import Depends, HTTPException, Request
from fastapi.exceptions import RequestValidationError
from pydantic import BaseModel, ValidationError

from api.drift import DriftMonitor
from api.metrics import ServingMetrics
from api.model_store import ModelStore, ServedModel
from api.prediction_recorder import PredictionRecorder
from readmission.config import Settings

Body = TypeVar("Body", bound=BaseModel)


@dataclass(frozen=True)
class AppState:
    """Everything one app instance serves with, kept in `app.state.app_state`."""

    settings: Settings
    store: ModelStore
    metrics: ServingMetrics
    drift: DriftMonitor
    recorder: PredictionRecorder  # served predictions to the prediction log, reports back


# Dependencies are coroutines so that FastAPI calls them on the event loop: a plain function would
# be run in the thread pool, a hand-off that costs more than scoring.
async def app_state(request: Request) -> AppState:
    return request.app.state.app_state


def require_model(request: Request) -> tuple[AppState, ServedModel]:
    """The app's state and the served model, read once per request; 503 with what to do when
    there is none."""
    state: AppState = request.app.state.app_state
    model = state.store.current
    if model is None:
        raise HTTPException(503, detail=state.store.unavailable_reason())
    return state, model


TRUE, FALSE = {"true", "1", "yes", "on"}, {"false", "0", "no", "off"}


def query_flag(request: Request, name: str) -> bool:
    """A boolean query parameter, read without FastAPI's per-parameter machinery (which cost
    /predict more than scoring does); 422 naming it when it is not a boolean."""
    if not request.scope["query_string"]:  # the usual case: parse nothing
        return False
    value = request.query_params.get(name)
    if value is None or value.lower() in FALSE:
        return False
    if value.lower() in TRUE:
        return True
    problem = {
        "type": "bool_parsing",
        "loc": ("query", name),
        "msg": "Input should be a valid boolean",
        "input": value,
    }
    raise RequestValidationError([problem])


def parse_body(schema: type[Body], body: bytes) -> Body:
    """`body` validated as `schema` straight from its JSON bytes; 422 naming each bad field,
    as FastAPI's own body handling would."""
    try:
        return schema.model_validate_json(body)
    except ValidationError as error:
        problems = [{**e, "loc": ("body", *e["loc"])} for e in error.errors(include_url=False)]
        raise RequestValidationError(problems) from None


AppStateDep = Annotated[AppState, Depends(app_state)]
