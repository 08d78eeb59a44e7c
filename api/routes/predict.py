"""Scoring: one encounter (optionally explained) or a batch, with the compiled scorer.

The hot path skips FastAPI's generic body handling: the body is validated straight from its
bytes by pydantic-core (`model_validate_json`, no intermediate dict), and the answer is written
as JSON bytes instead of being validated again against the response model. The OpenAPI document
still declares both (`openapi_extra`, `response_model`); errors keep their 422 shape.
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, FastAPI, HTTPException, Request, Response
from pydantic import BaseModel
from pydantic.json_schema import models_json_schema
from pydantic_core import to_json

from api.bodies import (
    BatchPrediction,
    BatchRequest,
    ExplainedPrediction,
    Message,
    ValidationProblems,
)
from api.deps import parse_body, query_flag, require_model
from api.direct_route import DirectRoute
from api.model_store import ServedModel
from api.prediction_recorder import ShadowScore
from readmission.evaluation.thresholds import risk_band
from readmission.schema import Encounter, example_encounter

router = APIRouter(tags=["predictions"], route_class=DirectRoute)
ERRORS: dict[int | str, dict[str, Any]] = {
    400: {"model": Message, "description": "The body could not be decoded (not UTF-8 JSON)."},
    413: {
        "model": Message,
        "description": "The body is over MAX_BODY_BYTES (by default, room for MAX_BATCH_ROWS "
        "encounters), or a batch has more than MAX_BATCH_ROWS encounters: split it.",
    },
    422: {"model": ValidationProblems, "description": "A field is invalid: which, and why."},
    503: {"model": Message, "description": "No model is served: how to promote one."},
}
EXAMPLES = {
    "typical": {"summary": "A typical encounter", "value": example_encounter()},
    "frequent-inpatient": {
        "summary": "Three inpatient stays in the past year, discharged to a nursing facility",
        "value": {
            **example_encounter(),
            "number_inpatient": 3,
            "discharge_disposition_id": 3,
            "age": "[80-90)",
            "encounter_id": 2278392,
        },
    },
}


def _fields(model: ServedModel, encounter_id: int | None, probability: float) -> dict[str, Any]:
    return {
        "encounter_id": encounter_id,
        "probability": probability,
        "readmitted_within_30d": probability >= model.threshold,
        "risk_band": risk_band(probability, model.threshold),
        "threshold": model.threshold,
        "model_name": model.name,
        "model_version": model.version,
    }


def _json(content: dict[str, Any]) -> Response:
    return Response(to_json(content), media_type="application/json")


REQUEST_BODIES: tuple[type[BaseModel], ...] = (Encounter, BatchRequest)


def document_request_bodies(app: FastAPI) -> None:
    """Put the schemas of the bodies these routes read themselves into the OpenAPI components
    (FastAPI only adds the models it parses), with this process's MAX_BATCH_ROWS as the
    batch's `maxItems`: a client checking the schema then knows the limit it gets 413 beyond."""
    generate = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            schema = generate()
            _, found = models_json_schema(
                [(body, "validation") for body in REQUEST_BODIES],
                ref_template="#/components/schemas/{model}",
            )
            encounters = found["$defs"]["BatchRequest"]["properties"]["encounters"]
            encounters["maxItems"] = app.state.app_state.settings.max_batch_rows
            schema.setdefault("components", {}).setdefault("schemas", {}).update(found["$defs"])
        return app.openapi_schema or generate()

    app.openapi = openapi  # type: ignore[method-assign]  # FastAPI's documented way to extend it


def _flag(name: str, description: str) -> dict[str, Any]:
    """The OpenAPI description of a boolean query parameter read with `query_flag`."""
    return {
        "name": name,
        "in": "query",
        "required": False,
        "description": description,
        "schema": {"type": "boolean", "default": False},
    }


def _request_body(schema: str, examples: dict[str, Any] | None = None) -> dict[str, Any]:
    """The OpenAPI request body of a route that reads its body itself."""
    media: dict[str, Any] = {"schema": {"$ref": f"#/components/schemas/{schema}"}}
    if examples:
        media["examples"] = examples
    return {"requestBody": {"required": True, "content": {"application/json": media}}}


@router.post(
    "/predict",
    response_model=ExplainedPrediction,
    responses=ERRORS,
    summary="P(readmission within 30 days) of one encounter",
    openapi_extra={
        **_request_body("Encounter", EXAMPLES),
        "parameters": [
            _flag("explain", "Add each input field's share of the log-odds (`contributions`)."),
            _flag(
                "by_feature",
                "With explain=true, also each engineered feature's share "
                "(`feature_contributions`).",
            ),
        ],
    },
)
async def predict(request: Request) -> Response:
    """Score one encounter (the data set's columns) with the production model: probability,
    decision at the version's threshold and risk band; with `explain=true` also each input
    field's share of the log-odds (and with `by_feature=true` each engineered feature's)."""
    state, model = require_model(request)
    explain, by_feature = (query_flag(request, name) for name in ("explain", "by_feature"))
    encounter = parse_body(Encounter, await request.body())
    record = encounter.to_record()
    shadow = state.store.shadow
    scored: ShadowScore | None = None
    # The shadow in this request, no extra thread: the compiled scorers are cheap, and scored
    # together in one pass over the record when they read the same features.
    if shadow is None:
        probability = model.scorer.probability(record)
    elif (pair := state.store.paired(model, shadow)) is not None:
        probability, shadowed = pair.probability(record)
        scored = (shadow.version, shadowed, shadow.threshold)
    else:
        probability = model.scorer.probability(record)
        scored = (shadow.version, shadow.scorer.probability(record), shadow.threshold)
    state.drift.observe((record,))
    state.metrics.record(probability, probability >= model.threshold)
    answer = _fields(model, encounter.encounter_id, probability)
    if state.recorder.full:  # the writer lags: slow down rather than lose the log
        await state.recorder.room()
    state.recorder.record(((answer, encounter.patient_nbr, scored),))
    if explain:
        scorer = model.scorer
        answer["intercept"] = scorer.intercept
        answer["log_odds"] = scorer.logit(record)
        answer["contributions"] = scorer.field_contributions(record)
        if by_feature:
            answer["feature_contributions"] = scorer.feature_contributions(record)
    return _json(answer)


@router.post(
    "/predict/batch",
    response_model=BatchPrediction,
    responses=ERRORS,
    summary="Probabilities for many encounters in one call",
    openapi_extra=_request_body("BatchRequest"),
)
async def predict_batch(request: Request) -> Response:
    """Score up to MAX_BATCH_ROWS encounters in one call, in request order; one invalid
    encounter rejects the whole batch with a 422 naming it by index."""
    state, model = require_model(request)
    batch = parse_body(BatchRequest, await request.body())
    limit = state.settings.max_batch_rows
    if len(batch.encounters) > limit:
        raise HTTPException(
            413,
            detail=f"{len(batch.encounters)} encounters is over the limit of "
            f"{limit} per call (MAX_BATCH_ROWS): split the batch",
        )
    records = [e.to_record() for e in batch.encounters]
    shadow = state.store.shadow if records else None
    shadowed: list[float] = []
    if shadow is None:
        probabilities = model.scorer.probabilities(records).tolist() if records else []
    elif (pair := state.store.paired(model, shadow)) is not None:  # columns factorised once
        both = pair.probabilities(records)
        probabilities, shadowed = both[0].tolist(), both[1].tolist()
    else:
        probabilities = model.scorer.probabilities(records).tolist()
        shadowed = shadow.scorer.probabilities(records).tolist()
    state.drift.observe(records)
    state.metrics.batch_rows.observe(len(records))
    state.metrics.record_many(probabilities, model.threshold)
    predictions = [
        _fields(model, encounter.encounter_id, probability)
        for encounter, probability in zip(batch.encounters, probabilities, strict=True)
    ]
    scored: list[ShadowScore | None] = [None] * len(records)
    if shadow is not None:
        scored = [(shadow.version, p, shadow.threshold) for p in shadowed]
    patients = (e.patient_nbr for e in batch.encounters)
    await state.recorder.record_batch(list(zip(predictions, patients, scored, strict=True)))
    return _json(
        {
            "model_name": model.name,
            "model_version": model.version,
            "count": len(records),
            "predictions": predictions,
        }
    )
