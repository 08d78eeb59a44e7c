"""Promotions pushed by MLflow's registry webhook to every API replica, not waited for by the poll:
two bin/api processes on one PostgreSQL warehouse, the webhook sent by the real MLflow server to
one of them, the others told through LISTEN/NOTIFY."""

from __future__ import annotations

import json
import secrets
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import ExitStack
from functools import partial

import httpx
import pytest
import sqlalchemy as sa
from mlflow.webhooks.delivery import _generate_hmac_signature
from pydantic import SecretStr

from readmission import registry
from readmission.config import Settings
from readmission.release import webhooks
from readmission.schema import example_encounter
from tests.api.serving import Api, running_api
from tests.conftest import copy_lineage

pytestmark = pytest.mark.slow

SECRET = secrets.token_urlsafe(24)
SLOW_POLL = "60"  # a version served sooner than this came by the webhook


def serves(api: Api, version: str) -> bool:
    return api.served_version() == version


def has_logged(api: Api, text: str) -> bool:
    return text in api.tail(20_000)


@pytest.fixture(scope="module")
def replicas(
    trained_lineage: Settings, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[Api, Api]]:
    """Two API replicas serving version 1 of a lineage copy, polling every 60 s, and the
    registry's webhook sending alias changes to the first; removed afterwards."""
    settings = copy_lineage(trained_lineage).model_copy(
        update={"mlflow_webhook_secret": SecretStr(SECRET)}
    )
    registry.promote(settings, 1)
    with ExitStack() as stack:
        apis = [
            stack.enter_context(
                running_api(
                    settings,
                    tmp_path_factory.mktemp("replica"),
                    MODEL_POLL_SECONDS=SLOW_POLL,
                    MLFLOW_WEBHOOK_SECRET=SECRET,
                )
            )
            for _ in range(2)
        ]
        for api in apis:
            api.wait_until(partial(serves, api, "1"), "version 1 to be served")
        webhook = webhooks.ensure_webhook(
            settings, f"{apis[0].url}/webhooks/mlflow", name=f"test-{uuid.uuid4().hex[:8]}"
        )
        stack.callback(registry.connect(settings).delete_webhook, webhook.webhook_id)
        # bin/mlflow-server caches the webhooks of an event for MLFLOW_WEBHOOK_CACHE_TTL (2 s):
        # a list read just before this webhook existed would miss the next alias change.
        time.sleep(2.5)
        yield apis[0], apis[1]


def signed(body: bytes, delivery_id: str, timestamp: int, secret: str = SECRET) -> dict[str, str]:
    """Headers of a delivery signed the way the MLflow server signs them."""
    return {
        "Content-Type": "application/json",
        webhooks.DELIVERY_ID_HEADER: delivery_id,
        webhooks.TIMESTAMP_HEADER: str(timestamp),
        webhooks.SIGNATURE_HEADER: _generate_hmac_signature(
            secret, delivery_id, str(timestamp), body.decode()
        ),
    }


def alias_event(model_name: str, **data: str) -> bytes:
    return json.dumps(
        {
            "entity": "model_version_alias",
            "action": "created",
            "timestamp": "2026-01-01T00:00:00+00:00",
            "data": {"name": model_name, "alias": "production", "version": "1", **data},
        }
    ).encode()


def recorded(settings: Settings, where: sa.ColumnElement[bool]) -> list[dict]:
    """Rows of the warehouse's webhook_deliveries matching `where`, oldest first."""
    engine = sa.create_engine(settings.warehouse_url)
    query = sa.select(webhooks.deliveries).where(where)
    try:
        with engine.connect() as conn:
            rows = conn.execute(query.order_by(webhooks.deliveries.c.received_at))
            return [dict(row._mapping) for row in rows]
    finally:
        engine.dispose()


def test_an_alias_moved_in_the_registry_reaches_every_replica_without_waiting_for_the_poll(
    replicas: tuple[Api, Api],
) -> None:
    settings = replicas[0].settings

    registry.promote(settings, 2)  # what the CLI and the DAG do
    for api in replicas:
        api.wait_until(partial(serves, api, "2"), "version 2", timeout=30)
    # The MLflow UI's way: the alias alone, no stage.
    registry.connect(settings).set_registered_model_alias(
        settings.model_name, settings.model_alias, "3"
    )
    for api in replicas:
        api.wait_until(partial(serves, api, "3"), "version 3", timeout=30)
    answers = [api.post("/predict", json=example_encounter()).json() for api in replicas]

    # Both within 30 s of each change, with a 60 s poll: MLflow told the receiver, which told
    # the other replica (the bench measures how much sooner: bench/swap.py).
    assert [a["model_version"] for a in answers] == ["3", "3"]
    for api in replicas:
        assert api.process.poll() is None
        assert api.get("/model").json()["reloads"] == 3  # 1 at start, then 2, then 3
    rows = recorded(settings, webhooks.deliveries.c.model_name == settings.model_name)
    assert [(r["event"], r["alias"], r["version"]) for r in rows] == [
        ("model_version_alias.created", "production", "2"),
        ("model_version_alias.created", "production", "3"),
    ]


def test_a_registered_version_is_loaded_ahead_by_every_replica_then_served_when_promoted(
    replicas: tuple[Api, Api], trained_lineage: Settings
) -> None:
    settings = replicas[0].settings
    client = registry.connect(settings)
    new = client.copy_model_version(registry.model_uri(trained_lineage, 1), settings.model_name)
    ahead = f"loading version {new.version} of {settings.model_name} ahead of its promotion"
    for api in replicas:
        api.wait_until(partial(has_logged, api, ahead), "the load ahead", timeout=30)

    client.set_registered_model_alias(settings.model_name, settings.model_alias, new.version)
    for api in replicas:
        api.wait_until(partial(serves, api, new.version), "the new version")

    columns = webhooks.deliveries.c
    rows = recorded(
        settings, (columns.model_name == settings.model_name) & (columns.version == new.version)
    )
    assert [r["event"] for r in rows] == ["model_version.created", "model_version_alias.created"]


def test_a_forged_or_unsigned_delivery_is_refused_and_changes_nothing(
    replicas: tuple[Api, Api],
) -> None:
    receiver, _ = replicas
    body = alias_event(receiver.settings.model_name, version="1")
    delivery_id = str(uuid.uuid4())
    forged = signed(body, delivery_id, int(time.time()), secret=secrets.token_urlsafe(24))
    tampered = signed(alias_event("another-model"), delivery_id, int(time.time()))

    answers = [
        receiver.post("/webhooks/mlflow", content=body, headers=forged),
        receiver.post("/webhooks/mlflow", content=body, headers=tampered),
        receiver.post("/webhooks/mlflow", content=body, headers={"X-MLflow-Delivery-Id": "x"}),
    ]

    assert [a.status_code for a in answers] == [401, 401, 401]
    assert "bad signature" in answers[0].json()["detail"]
    assert "bad signature" in answers[1].json()["detail"]
    assert "X-MLflow-Signature" in answers[2].json()["detail"]
    assert recorded(receiver.settings, webhooks.deliveries.c.delivery_id == delivery_id) == []


def test_a_replayed_delivery_is_refused_by_every_replica(replicas: tuple[Api, Api]) -> None:
    receiver, other = replicas
    body = alias_event("some-other-model")  # accepted, recorded, and no reason to reload
    delivery_id = str(uuid.uuid4())
    headers = signed(body, delivery_id, int(time.time()))
    stale_id = str(uuid.uuid4())
    stale = signed(body, stale_id, int(time.time()) - webhooks.DELIVERY_WINDOW_SECONDS - 60)

    first = receiver.post("/webhooks/mlflow", content=body, headers=headers)
    again = receiver.post("/webhooks/mlflow", content=body, headers=headers)
    elsewhere = other.post("/webhooks/mlflow", content=body, headers=headers)
    old = other.post("/webhooks/mlflow", content=body, headers=stale)

    assert first.status_code == 200
    assert first.json() == {
        "delivery_id": delivery_id,
        "event": "model_version_alias.created",
        "acted": False,
    }
    assert again.status_code == elsewhere.status_code == 409
    assert "replay" in again.json()["detail"] and "replay" in elsewhere.json()["detail"]
    assert old.status_code == 409 and "outside the" in old.json()["detail"]
    deliveries = webhooks.deliveries.c.delivery_id
    assert [r["event"] for r in recorded(receiver.settings, deliveries == delivery_id)] == [
        "model_version_alias.created"
    ]
    assert recorded(receiver.settings, deliveries == stale_id) == []


def test_a_signed_delivery_with_a_bad_field_is_refused_naming_it(replicas: tuple[Api, Api]) -> None:
    receiver, _ = replicas
    body = json.dumps(
        {
            "entity": "model_version_alias",
            "action": "deleted",
            "timestamp": "2026-01-01T00:00:00+00:00",
            "data": {"name": receiver.settings.model_name},
        }
    ).encode()

    answer = receiver.post(
        "/webhooks/mlflow", content=body, headers=signed(body, str(uuid.uuid4()), int(time.time()))
    )

    assert answer.status_code == 422
    assert answer.json()["detail"][0]["field"] == "data.alias"


def test_the_registrys_test_delivery_is_accepted_and_ensure_is_idempotent(
    replicas: tuple[Api, Api],
) -> None:
    receiver, _ = replicas
    settings = receiver.settings.model_copy(update={"mlflow_webhook_secret": SecretStr(SECRET)})
    name = f"test-{uuid.uuid4().hex[:8]}"
    client = registry.connect(settings)

    first = webhooks.ensure_webhook(settings, "http://127.0.0.1:9/nowhere", name)
    second = webhooks.ensure_webhook(settings, f"{receiver.url}/webhooks/mlflow", name)
    try:
        accepted, said = webhooks.send_test_delivery(settings, second)
        same_name = [w for w in client.list_webhooks(max_results=1000) if w.name == name]
    finally:
        client.delete_webhook(second.webhook_id)

    assert second.webhook_id == first.webhook_id
    assert [w.url for w in same_name] == [f"{receiver.url}/webhooks/mlflow"]
    assert sorted(str(e) for e in second.events) == sorted(webhooks.EVENTS)
    assert (accepted, said) == (True, "HTTP 200")


def test_without_a_webhook_the_poll_still_serves_the_promotion(
    trained_lineage: Settings,
    create_database: Callable[[], str],
    tmp_path_factory: pytest.TempPathFactory,
) -> None:
    settings = copy_lineage(trained_lineage, versions=2)
    registry.promote(settings, 1)
    with running_api(
        settings.model_copy(update={"database_url": create_database()}),
        tmp_path_factory.mktemp("polled"),
        MODEL_POLL_SECONDS="1",
        MLFLOW_WEBHOOK_SECRET=SECRET,
    ) as api:
        api.wait_until(lambda: api.served_version() == "1", "version 1 to be served")
        registry.promote(settings, 2)
        api.wait_until(lambda: api.served_version() == "2", "the poll to find version 2")
        unsigned = httpx.post(f"{api.url}/webhooks/mlflow", content=b"{}", timeout=10)

    assert unsigned.status_code == 401
