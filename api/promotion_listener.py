"""Every API replica hears of registry changes at once: it LISTENs on the warehouse's channel,
which the replica that received MLflow's webhook NOTIFYs (readmission.release.webhooks). An alias
moved: its model store's watcher checks the registry now; a version was registered: it is loaded
ahead of its promotion (api/preloaded_models.py). PostgreSQL only: the embedded default (SQLite)
runs one API process, which the webhook reaches directly.

A dedicated connection, outside SQLAlchemy's pool: LISTEN belongs to a session, which a pooled
connection would hand to other work. Lost, it is opened again (1 s, 2 s, ... at most 30 s apart),
and the watcher checks the registry then, since notices sent in between are not replayed.
"""

from __future__ import annotations

import asyncio
import json
import logging
from dataclasses import dataclass

import psycopg
import sqlalchemy as sa

from api.model_store import ModelStore
from api.preloaded_models import PreloadedModels
from readmission.release.webhooks import CHANNEL, VERSION_CREATED

log = logging.getLogger(__name__)
MAX_BACKOFF_SECONDS = 30.0


def libpq_url(url: str) -> str:
    """The SQLAlchemy warehouse URL as psycopg takes it (no `+driver`)."""
    return sa.make_url(url).set(drivername="postgresql").render_as_string(hide_password=False)


@dataclass(frozen=True)
class RegistryChanges:
    """What this replica does when told of a change in the registry, by MLflow's webhook or by
    the replica that received it."""

    store: ModelStore
    preloaded: PreloadedModels

    def heard(self, event: str, model_name: str | None, version: str | None) -> bool:
        """Act on `event`; False when it is not about the served model (nothing to do)."""
        # One registry and one warehouse may serve APIs of other models: not this one's changes.
        if model_name != self.store.settings.model_name:
            return False
        if event == VERSION_CREATED:
            if version:
                self.preloaded.preload(version)
        else:
            self.store.check_now()
        return True


class PromotionListener:
    """LISTENs on CHANNEL and hands each notice to `changes`."""

    def __init__(self, warehouse_url: str, changes: RegistryChanges) -> None:
        self.conninfo = libpq_url(warehouse_url)
        self.changes = changes

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
                    backoff = 1.0
                    log.info("listening for promotions on the warehouse's channel %s", CHANNEL)
                    if connected_before:  # notices sent while disconnected are lost
                        self.changes.store.check_now()
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
            await asyncio.sleep(backoff)
            backoff = min(backoff * 2, MAX_BACKOFF_SECONDS)

    def _wake_for(self, payload: str) -> None:
        try:
            notice = json.loads(payload)
            self.changes.heard(notice["event"], notice["model_name"], notice["version"])
        except (ValueError, TypeError, KeyError):
            log.warning("ignored a notice on %s that is not one of ours: %.200s", CHANNEL, payload)
