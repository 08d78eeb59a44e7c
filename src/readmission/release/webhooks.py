"""MLflow registry webhooks: how a promotion reaches every API replica within a second.

The MLflow server (3.x, SQL backend store only; a file store sends nothing) POSTs an event to each
registered webhook whenever an alias is set on a model version or removed, whoever made the change
(the CLI, a DAG, the MLflow UI: they all end in the server's alias handler). It sends from a
thread pool of the server process, after answering the change, and retries on 429/5xx. Each
delivery carries `X-MLflow-Delivery-Id` (a uuid4), `X-MLflow-Timestamp` (unix seconds) and
`X-MLflow-Signature`: "v1," + base64(HMAC-SHA256(secret, f"{delivery_id}.{timestamp}.{body}")).

The receiver (the API's POST /webhooks/mlflow) checks the signature and the timestamp, then
records the delivery in the warehouse (`webhook_deliveries`): a delivery id recorded before is a
replay and refused, whichever replica received it first. A webhook reaches one pod behind a
Service, so on PostgreSQL the same transaction NOTIFYs `CHANNEL`, on which every API replica
LISTENs (api/promotion_listener.py) and checks the registry at once. The embedded default
(SQLite) runs one API process: the receiver wakes it directly. The API's poll of the registry
stays as the fallback (MODEL_POLL_SECONDS).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import socket
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import cast

import sqlalchemy as sa
from mlflow.entities.webhook import Webhook, WebhookEventStr, WebhookStatus
from pydantic import BaseModel, ConfigDict

from readmission import registry
from readmission.config import Settings
from readmission.data.database import engine_for
from readmission.data.tables import webhook_deliveries as deliveries

VERSION_CREATED: WebhookEventStr = "model_version.created"
WEBHOOK_NAME = "readmission-serving"
CHANNEL = "readmission_registry_change"
# Standard Webhooks' tolerance: a delivery older (or newer, clock skew) than this is refused as a
# replay without looking it up, so the record of seen ids only has to cover this window.
DELIVERY_WINDOW_SECONDS = 300
SIGNATURE_HEADER = "X-MLflow-Signature"
TIMESTAMP_HEADER = "X-MLflow-Timestamp"
DELIVERY_ID_HEADER = "X-MLflow-Delivery-Id"


class DeliveryRefused(Exception):
    """A delivery this receiver will not act on: HTTP `status`, and why."""

    def __init__(self, status: int, reason: str) -> None:
        super().__init__(reason)
        self.status = status
        self.reason = reason


class RegistryChange(BaseModel):
    """What an event's `data` says changed: a model, one of its versions, an alias."""

    model_config = ConfigDict(extra="ignore")
    name: str
    version: str | None = None
    alias: str | None = None


class AliasChange(RegistryChange):
    """model_version_alias.created / .deleted (the version: created only)."""

    alias: str


class VersionCreated(RegistryChange):
    """model_version.created: the API loads the version ahead of its promotion."""

    version: str


class WebhookEvent(BaseModel):
    """The body MLflow signs."""

    model_config = ConfigDict(extra="ignore")
    entity: str
    action: str
    timestamp: str
    data: dict[str, object]

    @property
    def name(self) -> str:
        return f"{self.entity}.{self.action}"


class AliasEvent(WebhookEvent):
    data: AliasChange  # type: ignore[assignment]


class VersionEvent(WebhookEvent):
    data: VersionCreated  # type: ignore[assignment]


# The events the webhook subscribes to, and how each one's body is read.
EVENT_BODIES: dict[WebhookEventStr, type[WebhookEvent]] = {
    "model_version_alias.created": AliasEvent,
    "model_version_alias.deleted": AliasEvent,
    VERSION_CREATED: VersionEvent,
}
EVENTS: tuple[WebhookEventStr, ...] = tuple(EVENT_BODIES)


@dataclass(frozen=True)
class Delivery:
    """One verified delivery: its id, when MLflow sent it, its event and, for an event this
    platform subscribes to, the change it reports."""

    delivery_id: str
    sent_at: datetime
    event: str
    change: RegistryChange | None


def signature(secret: str, delivery_id: str, timestamp: str, body: bytes) -> str:
    """MLflow's signature of one delivery (mlflow.webhooks.delivery._generate_hmac_signature)."""
    signed = delivery_id.encode() + b"." + timestamp.encode() + b"." + body
    digest = hmac.new(secret.encode(), signed, hashlib.sha256).digest()
    return "v1," + base64.b64encode(digest).decode()


def verify(secret: str, headers: Mapping[str, str], body: bytes, now: float) -> Delivery:
    """The delivery in `headers` + `body` if MLflow signed it with `secret` within the window;
    DeliveryRefused (401) otherwise. The body is parsed only once the signature holds (a
    pydantic ValidationError names the bad field then)."""
    delivery_id = headers.get(DELIVERY_ID_HEADER, "")
    timestamp = headers.get(TIMESTAMP_HEADER, "")
    given = headers.get(SIGNATURE_HEADER, "")
    missing = [
        name
        for name, value in (
            (SIGNATURE_HEADER, given),
            (TIMESTAMP_HEADER, timestamp),
            (DELIVERY_ID_HEADER, delivery_id),
        )
        if not value
    ]
    if missing:
        raise DeliveryRefused(401, f"unsigned delivery: header {', '.join(missing)} missing")
    if not timestamp.isdigit():
        raise DeliveryRefused(401, f"header {TIMESTAMP_HEADER} is not unix seconds: {timestamp!r}")
    if len(delivery_id) > deliveries.c.delivery_id.type.length:  # type: ignore[attr-defined]
        raise DeliveryRefused(401, f"header {DELIVERY_ID_HEADER} is longer than a uuid")
    # compare_digest: the time taken must not tell a forger how much of a guess was right
    if not hmac.compare_digest(
        given.encode(), signature(secret, delivery_id, timestamp, body).encode()
    ):
        raise DeliveryRefused(
            401,
            f"bad signature in {SIGNATURE_HEADER}: not signed with this API's "
            "MLFLOW_WEBHOOK_SECRET (the webhook's secret differs: `readmission webhook ensure`)",
        )
    age = now - int(timestamp)
    if abs(age) > DELIVERY_WINDOW_SECONDS:
        raise DeliveryRefused(
            409,
            f"delivery {delivery_id} was signed {age:.0f} s ago, outside the "
            f"{DELIVERY_WINDOW_SECONDS} s window: a replay, or a clock out of step",
        )
    event = WebhookEvent.model_validate_json(body)
    body_type = {str(k): v for k, v in EVENT_BODIES.items()}.get(event.name)
    # the subclasses' `data` is a RegistryChange, which the base class cannot declare
    change = cast(RegistryChange, body_type.model_validate_json(body).data) if body_type else None
    return Delivery(delivery_id, datetime.fromtimestamp(int(timestamp), UTC), event.name, change)


# Written out: SQLAlchemy's insert().on_conflict_do_nothing() reports rowcount -1 on psycopg 3,
# and the count is what tells a replay. PostgreSQL and SQLite (3.24+) both take this statement.
_INSERT_NEW = sa.text(
    f"INSERT INTO {deliveries.name} ({', '.join(c.name for c in deliveries.c)}) "
    f"VALUES ({', '.join(':' + c.name for c in deliveries.c)}) ON CONFLICT DO NOTHING"
).bindparams(*(sa.bindparam(c.name, type_=c.type) for c in deliveries.c))


def record(url: str, delivery: Delivery, model_name: str) -> bool:
    """Record `delivery`; False if it was recorded before (a replay: nothing else happens).
    The deliveries of every event are recorded, an alias change's being the evidence of the
    registry check it started.
    On PostgreSQL a first delivery about `model_name` also NOTIFYs every API replica, in the
    same transaction: a notice is never sent for a delivery that was not recorded."""
    engine = engine_for(url)
    change = delivery.change
    row = {
        "delivery_id": delivery.delivery_id,
        "received_at": datetime.now(UTC),
        "sent_at": delivery.sent_at,
        "event": delivery.event,
        "model_name": change.name if change else None,
        "alias": change.alias if change else None,
        "version": change.version if change else None,
        "received_by": socket.gethostname(),
    }
    with engine.begin() as conn:
        if conn.execute(_INSERT_NEW, row).rowcount == 0:
            return False
        if change and change.name == model_name and engine.dialect.name == "postgresql":
            notice = {
                "event": delivery.event,
                "model_name": change.name,
                "alias": change.alias,
                "version": change.version,
            }
            conn.execute(
                sa.text("SELECT pg_notify(:channel, :payload)"),
                {"channel": CHANNEL, "payload": json.dumps(notice)},
            )
    return True


def webhook_secret(settings: Settings) -> str:
    if (
        settings.mlflow_webhook_secret is None
        or not settings.mlflow_webhook_secret.get_secret_value()
    ):
        raise ValueError(
            "MLFLOW_WEBHOOK_SECRET is not set: the webhook and the API must share it (compose: "
            "scripts/compose-up writes one to .env; k8s: the Secret readmission-webhook)"
        )
    return settings.mlflow_webhook_secret.get_secret_value()


def ensure_webhook(settings: Settings, url: str, name: str = WEBHOOK_NAME) -> Webhook:
    """The registry's webhook `name` sending alias changes to `url`, signed with
    MLFLOW_WEBHOOK_SECRET: created, or updated to exactly that. Safe to re-run.

    The secret is written on every run, also when unchanged: the server stores it encrypted with
    MLFLOW_WEBHOOK_SECRET_ENCRYPTION_KEY (a random key per start when unset), so rewriting it
    makes a webhook whose secret the server can no longer read work again. Webhooks of the same
    name beyond the first (two first runs at once) are deleted: each would send every change
    twice."""
    secret = webhook_secret(settings)
    client = registry.connect(settings)
    same_name: list[Webhook] = []
    page_token: str | None = None
    while True:
        page = client.list_webhooks(max_results=100, page_token=page_token)
        same_name.extend(w for w in page if w.name == name)
        if not page.token:
            break
        page_token = page.token
    description = "Alias changes, to the readmission API (readmission webhook ensure)"
    if not same_name:
        return client.create_webhook(
            name=name, url=url, events=list(EVENTS), description=description, secret=secret
        )
    first, *extra = same_name
    for webhook in extra:
        client.delete_webhook(webhook.webhook_id)
    return client.update_webhook(
        first.webhook_id,
        url=url,
        events=list(EVENTS),
        description=description,
        secret=secret,
        status=WebhookStatus.ACTIVE,
    )


def send_test_delivery(settings: Settings, webhook: Webhook) -> tuple[bool, str]:
    """Ask the MLflow server to send `webhook` an example event: whether the receiver accepted
    it, and what it or the server said."""
    result = registry.connect(settings).test_webhook(webhook.webhook_id)
    if result.success:
        return True, f"HTTP {result.response_status}"
    said = result.error_message or f"HTTP {result.response_status}: {result.response_body}"
    return False, said
