"""The served model, the registry's version history, and an authenticated reload."""

from __future__ import annotations

import asyncio
import secrets
from typing import Annotated, Any

from fastapi import APIRouter, Depends, HTTPException, Request
from fastapi.responses import JSONResponse
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from api.bodies import Message, ModelHistory, ModelInfo, PromotionRow, VersionRow
from api.deps import AppStateDep, require_model
from api.model_store import ModelStore
from readmission.config import Settings
from readmission.release import history

router = APIRouter(prefix="/model", tags=["model"])
bearer = HTTPBearer(auto_error=False, description="The API_RELOAD_TOKEN of the server.")
NO_MODEL: dict[int | str, dict[str, Any]] = {
    503: {"model": ModelInfo, "description": "No model is served (version null)."}
}


@router.get(
    "",
    response_model=ModelInfo,
    responses=NO_MODEL,
    summary="The served model version, its metrics and the registry watcher's state",
)
async def model_info(state: AppStateDep) -> ModelInfo | JSONResponse:
    """The served version (alias, stage, run, its metrics, load time) and the registry
    watcher's state (reachable, failed loads, last error); 503 with the same body and what to
    do while no version is served."""
    info = _model_info(state.store)
    if info.version is None:
        return JSONResponse(info.model_dump(mode="json"), status_code=503)
    return info


def _model_info(store: ModelStore) -> ModelInfo:
    served = store.current
    return ModelInfo(
        name=served.name if served else store.settings.model_name,
        version=served.version if served else None,
        alias=served.alias if served else None,
        stage=served.stage if served else None,
        run_id=served.run_id if served else None,
        metrics=served.metrics if served else {},
        registered_at=served.registered_at if served else None,
        loaded_at=served.loaded_at if served else None,
        registry_reachable=store.registry_up,
        load_failures=store.load_failures,
        last_error=store.last_error,
        reloads=store.reloads,
        shadow_version=store.shadow.version if store.shadow else None,
        detail=None if served else store.unavailable_reason(),
    )


@router.get(
    "/history",
    response_model=ModelHistory,
    summary="Every registered version and every change of the production version",
    responses={
        503: {"model": Message, "description": "The registry or the warehouse is unreachable."}
    },
)
async def model_history(state: AppStateDep) -> ModelHistory:
    """Versions oldest first (holdout metrics, aliases, stage, verdict) and the promotion
    ledger: who put which version into production, when and why."""
    try:
        return await asyncio.to_thread(_history, state.settings)
    except Exception as error:
        raise HTTPException(
            503, detail=f"model registry or warehouse unreachable: {error}"
        ) from error


def _history(settings: Settings) -> ModelHistory:
    found = history.version_history(settings)
    return ModelHistory(
        model_name=found.model_name,
        production_version=found.production_version,
        compared_holdout_fingerprint=found.compared_holdout,
        versions=[
            VersionRow(**history.VersionRow.of(v, found.compared_holdout).as_dict())
            for v in found.versions
        ],
        promotions=[PromotionRow.model_validate(p.as_dict()) for p in found.promotions],
    )


@router.get(
    "/card",
    summary="The model card of the served version",
    responses={
        404: {"model": Message, "description": "The served version was trained without a card."},
        503: {"model": Message, "description": "No model is served."},
    },
)
async def model_card(request: Request) -> dict[str, Any]:
    """The `model_card.json` of the served version's training run: intended use, data,
    holdout metrics with 95% intervals, calibration, subgroup tables, threshold, limitations."""
    _, model = require_model(request)
    if model.card is None:
        raise HTTPException(
            404,
            detail=f"version {model.version} has no model card: it was trained before "
            "cards were written; promote a newer version",
        )
    return model.card


@router.post(
    "/reload",
    response_model=ModelInfo,
    summary="Check the registry now (Authorization: Bearer API_RELOAD_TOKEN)",
    responses={
        401: {"model": Message, "description": "Missing or wrong token."},
        503: {"model": Message, "description": "API_RELOAD_TOKEN is not set."},
    },
)
async def reload_model(
    state: AppStateDep,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(bearer)],
) -> ModelInfo:
    """Check the registry now instead of at the next poll, and load the production version if
    it changed; answers the served model afterwards."""
    token = state.settings.api_reload_token
    if token is None or not token.get_secret_value():
        raise HTTPException(503, detail="reloading is disabled: set API_RELOAD_TOKEN on the server")
    if credentials is None or not secrets.compare_digest(
        credentials.credentials.encode(), token.get_secret_value().encode()
    ):
        raise HTTPException(
            401, detail="missing or wrong bearer token", headers={"WWW-Authenticate": "Bearer"}
        )
    await state.store.refresh(retry_now=True)
    return _model_info(state.store)
