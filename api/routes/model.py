"""The served model, the registry's version history, and an authenticated reload."""

from __future__ import annotations

import asyncio
import math
import secrets
from typing import Annotated, Any

from fastapi import APIRouter, Depends, HTTPException
from fastapi.responses import JSONResponse
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from mlflow.exceptions import MlflowException

from api.deps import ServingState
from api.schemas import Message, ModelHistory, ModelInfo, VersionRow
from readmission import registry
from readmission.config import Settings

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
async def model_info(state: ServingState) -> ModelInfo | JSONResponse:
    """The served version (alias, stage, run, its metrics, load time) and the registry
    watcher's state (reachable, failed loads, last error); 503 with the same body and what to
    do while no version is served."""
    info = state.store.info()
    if info.version is None:
        return JSONResponse(info.model_dump(mode="json"), status_code=503)
    return info


@router.get(
    "/history",
    response_model=ModelHistory,
    summary="Every registered version",
    responses={503: {"model": Message, "description": "The registry is unreachable."}},
)
async def model_history(state: ServingState) -> ModelHistory:
    """Every registered version of the model, oldest first: its parent, training batch,
    holdout metrics, aliases and stage, read from the registry at each call."""
    try:
        return await asyncio.to_thread(_history, state.settings)
    except Exception as error:
        raise HTTPException(503, detail=f"model registry unreachable: {error}") from error


def _history(settings: Settings) -> ModelHistory:
    production = registry.production_version(settings)
    aliases = _aliases(settings)
    rows = [
        VersionRow(
            version=v.version,
            parent_version=v.parent_version or None,
            batch_id=v.batch_id,
            holdout_roc_auc=_finite(v.metrics.get("holdout_roc_auc")),
            holdout_log_loss=_finite(v.metrics.get("holdout_log_loss")),
            samples_seen=int(v.metrics["samples_seen"]) if "samples_seen" in v.metrics else None,
            aliases=sorted({*v.aliases, *aliases.get(v.version, ())}),
            stage=v.stage,
        )
        for v in registry.version_summaries(settings)
    ]
    return ModelHistory(
        model_name=settings.model_name,
        production_version=production.version if production else None,
        versions=rows,
    )


def _aliases(settings: Settings) -> dict[str, list[str]]:
    """Version -> its aliases (searching versions does not return their aliases)."""
    try:
        model = registry.connect(settings).get_registered_model(settings.model_name)
    except MlflowException as error:
        if error.error_code == "RESOURCE_DOES_NOT_EXIST":
            return {}
        raise
    found: dict[str, list[str]] = {}
    for alias, version in model.aliases.items():
        found.setdefault(str(version), []).append(alias)
    return found


def _finite(value: float | None) -> float | None:
    return value if value is not None and math.isfinite(value) else None


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
    state: ServingState,
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
    return state.store.info()
