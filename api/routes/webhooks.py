"""MLflow's registry webhook: an alias moved, so every replica checks the registry now.

Verified (HMAC signature with MLFLOW_WEBHOOK_SECRET, timestamp within the window), recorded in
the warehouse once (a delivery id seen before is a replay), then fanned out to every replica
(readmission.release.webhooks: NOTIFY on PostgreSQL) and this one woken directly.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

from fastapi import APIRouter, HTTPException, Request
from fastapi.exceptions import RequestValidationError
from pydantic import BaseModel, Field, ValidationError

from api.bodies import Message
from api.deps import AppStateDep
from api.promotion_listener import RegistryChanges
from readmission.release import webhooks

router = APIRouter(prefix="/webhooks", tags=["webhooks"])


class WebhookReceipt(BaseModel):
    delivery_id: str
    event: str
    acted: bool = Field(
        description="True when the event is about the served model: every replica checks the "
        "registry now (an alias moved) or loads the new version ahead (a version was "
        "registered). False: recorded and otherwise ignored (another model, a test event)."
    )


REFUSALS: dict[int | str, dict[str, Any]] = {
    401: {"model": Message, "description": "Unsigned, or not signed with MLFLOW_WEBHOOK_SECRET."},
    404: {"model": Message, "description": "Not enabled here: MLFLOW_WEBHOOK_SECRET is not set."},
    409: {"model": Message, "description": "A replay: seen before, or outside the time window."},
    503: {"model": Message, "description": "The warehouse is down: MLflow retries it."},
}


@router.post(
    "/mlflow",
    response_model=WebhookReceipt,
    responses=REFUSALS,
    summary="MLflow registry webhook: alias changes reach every replica at once",
)
async def mlflow_webhook(request: Request, state: AppStateDep) -> WebhookReceipt:
    """Receives the events `model_version_alias.created` / `.deleted` that `readmission
    webhook ensure` subscribes to. A delivery must carry MLflow's signature headers; each is
    acted on once."""
    secret = state.settings.mlflow_webhook_secret
    if secret is None:  # not a fault of this API: a deployment without webhooks (the poll serves)
        raise HTTPException(
            404, detail="webhooks are not enabled on this API: MLFLOW_WEBHOOK_SECRET is not set"
        )
    body = await request.body()
    try:
        delivery = webhooks.verify(secret.get_secret_value(), request.headers, body, time.time())
    except webhooks.DeliveryRefused as refused:
        raise HTTPException(refused.status, detail=refused.reason) from None
    except ValidationError as error:  # signed by MLflow, yet not the body expected: say where
        problems = [{**e, "loc": ("body", *e["loc"])} for e in error.errors(include_url=False)]
        raise RequestValidationError(problems) from None
    settings = state.settings
    try:
        first = await asyncio.to_thread(
            webhooks.record, settings.warehouse_url, delivery, settings.model_name
        )
    except Exception as error:  # 503: MLflow retries it, and the poll remains
        raise HTTPException(
            503, detail=f"could not record the delivery in the warehouse: {error}"
        ) from error
    if not first:
        raise HTTPException(
            409, detail=f"delivery {delivery.delivery_id} was received before: a replay, ignored"
        )
    changes: RegistryChanges = request.app.state.registry_changes
    change = delivery.change
    acted = change is not None and changes.heard(delivery.event, change.name, change.version)
    return WebhookReceipt(delivery_id=delivery.delivery_id, event=delivery.event, acted=acted)
