"""Scoring: one encounter (optionally explained) or a batch, with the compiled scorer."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Body, HTTPException, Query

from api.deps import ScoringState
from api.model_store import ServedModel
from api.schemas import (
    BatchPrediction,
    BatchRequest,
    ExplainedPrediction,
    Message,
    Prediction,
    RiskBand,
    ValidationProblems,
)
from readmission.schema import Encounter, example_encounter

TOP_CONTRIBUTIONS = 10
router = APIRouter(tags=["predictions"])
ERRORS: dict[int | str, dict[str, Any]] = {
    400: {"model": Message, "description": "The body could not be decoded (not UTF-8 JSON)."},
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


def risk_band(probability: float, threshold: float) -> RiskBand:
    if probability >= threshold:
        return "high"
    return "medium" if probability >= threshold / 2 else "low"


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


@router.post(
    "/predict",
    response_model=ExplainedPrediction,
    response_model_exclude_unset=True,
    responses=ERRORS,
    summary="P(readmission within 30 days) of one encounter",
)
async def predict(
    encounter: Annotated[Encounter, Body(openapi_examples=EXAMPLES)],
    scoring: ScoringState,
    explain: Annotated[bool, Query(description="Add each feature's share of the logit.")] = False,
) -> ExplainedPrediction:
    """Score one encounter (the data set's columns) with the production model: probability,
    decision at the version's threshold and risk band; with `explain=true` also the top
    features' contributions to the logit."""
    state, model = scoring.state, scoring.model
    record = encounter.to_record()
    probability = model.scorer.probability(record)
    state.drift.observe((record,))
    state.metrics.record(probability, probability >= model.threshold)
    prediction = ExplainedPrediction(**_fields(model, encounter.encounter_id, probability))
    if explain:
        prediction.contributions = model.scorer.contributions(record)[:TOP_CONTRIBUTIONS]
        prediction.intercept = model.scorer.intercept
    return prediction


@router.post(
    "/predict/batch",
    response_model=BatchPrediction,
    responses={**ERRORS, 413: {"model": Message, "description": "Over MAX_BATCH_ROWS."}},
    summary="Probabilities for many encounters in one call",
)
async def predict_batch(batch: BatchRequest, scoring: ScoringState) -> BatchPrediction:
    """Score up to MAX_BATCH_ROWS encounters in one call, in request order; one invalid
    encounter rejects the whole batch with a 422 naming it by index."""
    state, model = scoring.state, scoring.model
    limit = state.settings.max_batch_rows
    if len(batch.encounters) > limit:
        raise HTTPException(
            413,
            detail=f"{len(batch.encounters)} encounters is over the limit of "
            f"{limit} per call (MAX_BATCH_ROWS): split the batch",
        )
    records = [e.to_record() for e in batch.encounters]
    probabilities = model.scorer.probabilities(records).tolist() if records else []
    state.drift.observe(records)
    state.metrics.batch_rows.observe(len(records))
    state.metrics.record_many(probabilities, model.threshold)
    predictions = [
        Prediction(**_fields(model, encounter.encounter_id, probability))
        for encounter, probability in zip(batch.encounters, probabilities, strict=True)
    ]
    return BatchPrediction(
        model_name=model.name,
        model_version=model.version,
        count=len(predictions),
        predictions=predictions,
    )
