"""The promotion ledger: every change of the production version, in the warehouse.

One row per change: when, which model, from which version to which, by whom or what, and why.
Rows are only ever added. Writers hold one lock (a PostgreSQL advisory lock) while they read the
registry, change it and add their row, so a change and the row recording it cannot be told apart
by a concurrent reader that notices changes made outside the platform.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection, Engine

from readmission.warehouse import API_PRIVILEGES, engine_for

_LOCK_ID = 7_296_015  # PostgreSQL advisory lock serialising production changes

metadata = sa.MetaData()
promotions = sa.Table(
    "promotions",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("changed_at", sa.DateTime(timezone=True), nullable=False),
    sa.Column("model_name", sa.Text, nullable=False, index=True),
    sa.Column("from_version", sa.String(32)),  # null: nothing was in production
    sa.Column("to_version", sa.String(32)),  # null: production was removed
    sa.Column("changed_by", sa.Text, nullable=False),
    sa.Column("reason", sa.Text, nullable=False),
    # The API shows the ledger (GET /model/history) and adds the production changes it notices
    # (made in the MLflow UI); it never changes a row (nothing does: rows are only added).
    info={API_PRIVILEGES: ("SELECT", "INSERT")},
)


@dataclass(frozen=True)
class Promotion:
    time: datetime
    model_name: str
    from_version: str | None
    to_version: str | None
    by: str
    reason: str

    def as_dict(self) -> dict[str, Any]:
        return {
            "time": self.time.isoformat(),
            "model_name": self.model_name,
            "from_version": self.from_version,
            "to_version": self.to_version,
            "by": self.by,
            "reason": self.reason,
        }


def _engine(url: str) -> Engine:
    """The warehouse's engine: its migrations create the ledger's table (readmission.migrations)."""
    return engine_for(url)


def _lock(conn: Connection) -> None:
    if conn.dialect.name == "postgresql":
        conn.execute(sa.text("SELECT pg_advisory_xact_lock(:id)"), {"id": _LOCK_ID})


@contextmanager
def locked(url: str) -> Iterator[Connection]:
    """A transaction holding the ledger's lock: read the registry, change it, record, commit."""
    with _engine(url).begin() as conn:
        _lock(conn)
        yield conn


def record(
    conn: Connection,
    model_name: str,
    from_version: str | None,
    to_version: str | None,
    by: str,
    reason: str,
) -> Promotion:
    entry = Promotion(datetime.now(UTC), model_name, from_version, to_version, by, reason)
    conn.execute(
        promotions.insert().values(
            changed_at=entry.time,
            model_name=model_name,
            from_version=from_version,
            to_version=to_version,
            changed_by=by,
            reason=reason,
        )
    )
    return entry


def latest(conn: Connection, model_name: str) -> Promotion | None:
    row = (
        conn.execute(_query(model_name).order_by(promotions.c.id.desc()).limit(1))
        .mappings()
        .first()
    )
    return _entry(row) if row else None


def entries(url: str, model_name: str) -> list[Promotion]:
    """Every recorded change of `model_name`'s production version, oldest first."""
    with _engine(url).connect() as conn:
        rows = conn.execute(_query(model_name).order_by(promotions.c.id)).mappings()
        return [_entry(row) for row in rows]


def _query(model_name: str) -> sa.Select:
    return sa.select(promotions).where(promotions.c.model_name == model_name)


def _entry(row: Any) -> Promotion:
    changed_at = row["changed_at"]
    if changed_at.tzinfo is None:  # SQLite keeps no time zone; every row is written in UTC
        changed_at = changed_at.replace(tzinfo=UTC)
    return Promotion(
        changed_at,
        row["model_name"],
        row["from_version"],
        row["to_version"],
        row["changed_by"],
        row["reason"],
    )
