"""Every API replica hears of a promotion at once: it LISTENs on the warehouse's channel, which
the replica that received MLflow's webhook NOTIFYs (readmission.webhooks), and wakes its model
store's watcher. PostgreSQL only: the embedded default (SQLite) runs one API process, which the
webhook reaches directly.

A dedicated connection, outside SQLAlchemy's pool: LISTEN belongs to a session, which a pooled
connection would hand to other work. Lost, it is opened again (1 s, 2 s, ... at most 30 s apart),
and the watcher checks the registry then, since notices sent in between are not replayed.
"""

from __future__ import annotations

import asyncio
import json
import logging

import psycopg
import sqlalchemy as sa

from api.model_store import ModelStore
from readmission.webhooks import CHANNEL

log = logging.getLogger(__name__)
MAX_BACKOFF_SECONDS = 30.0


def libpq_url(url: str) -> str:
    """The SQLAlchemy warehouse URL as psycopg takes it (no `+driver`)."""
    return sa.make_url(url).set(drivername="postgresql").render_as_string(hide_password=False)


class PromotionListener:
    """LISTENs on CHANNEL and wakes `store` for each notice about its model."""

    def __init__(self, warehouse_url: str, store: ModelStore) -> None:
        self.conninfo = libpq_url(warehouse_url)
        self.store = store
        self.listening = False
        self.notices = 0

    async def run(self) -> None:
        """Listen until cancelled, reconnecting after any failure."""
        backoff, connected_before = 1.0, False
        while True:
            try:
                # Keepalives: a connection dropped without a FIN (a node gone) is noticed in
                # about a minute instead of never, since a listener only reads.
                async with await psycopg.AsyncConnection.connect(
                    self.conninfo,
                    autocommit=True,
                    keepalives=1,
                    keepalives_idle=30,
                    keepalives_interval=10,
                    keepalives_count=3,
                ) as conn:
                    await conn.execute(f"LISTEN {CHANNEL}")
                    self.listening, backoff = True, 1.0
                    log.info("listening for promotions on the warehouse's channel %s", CHANNEL)
                    if connected_before:  # notices sent while disconnected are lost
                        self.store.check_now()
                    connected_before = True
                    async for notice in conn.notifies():
                        self._wake_for(notice.payload)
            except asyncio.CancelledError:
                raise
            except Exception as error:  # the listener must outlive the warehouse's outages
                log.warning(
                    "promotion listener lost the warehouse (%s); the poll still runs, "
                    "reconnecting in %g s",
                    " ".join(str(error).split())[:300],
                    backoff,
                )
            self.listening = False
            await asyncio.sleep(backoff)
            backoff = min(backoff * 2, MAX_BACKOFF_SECONDS)

    def _wake_for(self, payload: str) -> None:
        try:
            model_name = json.loads(payload).get("model_name")
        except (ValueError, AttributeError):
            log.warning(
                "ignored a notice on %s that is not a JSON object: %.200s", CHANNEL, payload
            )
            return
        # One warehouse may back APIs of other models: their promotions are not this one's.
        if model_name == self.store.settings.model_name:
            self.notices += 1
            self.store.check_now()
