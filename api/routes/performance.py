"""Realized performance of the served versions, as last computed by `readmission performance`."""

from __future__ import annotations

import asyncio

from fastapi import APIRouter, HTTPException

from api.bodies import Message, PerformanceReport
from api.deps import AppStateDep
from readmission.monitoring import realized

router = APIRouter(tags=["model"])


@router.get(
    "/performance",
    response_model=PerformanceReport,
    summary="How each served version really performed on the encounters it scored",
    responses={
        404: {"model": Message, "description": "Not computed yet."},
        503: {"model": Message, "description": "The warehouse is unreachable."},
    },
)
async def realized_performance(state: AppStateDep) -> PerformanceReport:
    """Realized metrics per served version and calendar week on the scored encounters whose
    outcome has arrived, and an estimate for those still pending. Computed after each ingest
    (and by `readmission performance`), not on request."""
    settings = state.settings
    try:
        report = await asyncio.to_thread(
            realized.latest, settings.warehouse_url, settings.model_name
        )
    except Exception as error:
        raise HTTPException(503, detail=f"warehouse unreachable: {error}") from error
    if report is None:
        raise HTTPException(
            404,
            detail="no realized performance computed yet: it follows every ingest, or run "
            "`readmission performance`",
        )
    return PerformanceReport.model_validate(report)
