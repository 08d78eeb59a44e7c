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

from readmission.data.database import engine_for
from readmission.data.tables import promotions

_LOCK_ID = 7_296_015  # PostgreSQL advisory lock serialising production changes

AUTO = "auto"  # the gate promoted its challenger
MANUAL = "manual"  # a person promoted a version (`readmission promote`)
ROLLBACK = "rollback"  # a person rolled production back; the version left is never auto-promoted
OUTSIDE = "outside"  # a change made in the MLflow UI or API, noticed afterwards
ACTIONS = (AUTO, MANUAL, ROLLBACK, OUTSIDE)


@dataclass(frozen=True)
class Evidence:
    """What the gate measured before an automatic promotion."""

    delta_roc_auc: float
    delta_roc_auc_ci: tuple[float, float]
    holdout_fingerprint: str | None  # None: live evidence, measured on served encounters

    def as_dict(self) -> dict[str, Any]:
        return {
            "delta_roc_auc": self.delta_roc_auc,
            "delta_roc_auc_ci": list(self.delta_roc_auc_ci),
            "holdout_fingerprint": self.holdout_fingerprint,
        }


@dataclass(frozen=True)
class Authority:
    """Under which plan a change was made and on whose decision: the plan's rule for the
    platform's changes, the comment of the person for theirs."""

    plan_sha256: str | None
    rule: str | None = None
    comment: str | None = None


@dataclass(frozen=True)
class ProductionChange:
    """One row of the ledger: a change of the production version, whatever made it (a promotion,
    a rollback, a withdrawal, a change noticed in the registry; `action` says which)."""

    id: int
    time: datetime
    model_name: str
    from_version: str | None
    to_version: str | None
    by: str
    reason: str
    action: str | None
    evidence: Evidence | None = None
    authority: Authority = Authority(None)

    def as_dict(self) -> dict[str, Any]:
        evidence = self.evidence.as_dict() if self.evidence else {}
        return {
            "time": self.time.isoformat(),
            "model_name": self.model_name,
            "from_version": self.from_version,
            "to_version": self.to_version,
            "by": self.by,
            "reason": self.reason,
            "action": self.action,
            "delta_roc_auc": evidence.get("delta_roc_auc"),
            "delta_roc_auc_ci": evidence.get("delta_roc_auc_ci"),
            "holdout_fingerprint": evidence.get("holdout_fingerprint"),
            "plan_sha256": self.authority.plan_sha256,
            "rule": self.authority.rule,
            "comment": self.authority.comment,
        }


def _engine(url: str) -> Engine:
    """The warehouse's engine: its migrations create the ledger's table
    (readmission.data.migrations)."""
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
    action: str,
    evidence: Evidence | None = None,
    authority: Authority = Authority(None),
) -> ProductionChange:
    if action not in ACTIONS:
        raise ValueError(f"action must be one of {ACTIONS}, not {action!r}")
    changed_at = datetime.now(UTC)
    inserted = conn.execute(
        promotions.insert().values(
            changed_at=changed_at,
            model_name=model_name,
            from_version=from_version,
            to_version=to_version,
            changed_by=by,
            reason=reason,
            action=action,
            delta_roc_auc=evidence.delta_roc_auc if evidence else None,
            delta_roc_auc_ci_low=evidence.delta_roc_auc_ci[0] if evidence else None,
            delta_roc_auc_ci_high=evidence.delta_roc_auc_ci[1] if evidence else None,
            holdout_fingerprint=evidence.holdout_fingerprint if evidence else None,
            plan_sha256=authority.plan_sha256,
            rule=authority.rule,
            comment=authority.comment,
        )
    )
    key = inserted.inserted_primary_key
    assert key is not None  # an INSERT of one row always has one
    return ProductionChange(
        int(key[0]),
        changed_at,
        model_name,
        from_version,
        to_version,
        by,
        reason,
        action,
        evidence,
        authority,
    )


def latest(conn: Connection, model_name: str) -> ProductionChange | None:
    row = (
        conn.execute(_query(model_name).order_by(promotions.c.id.desc()).limit(1))
        .mappings()
        .first()
    )
    return _entry(row) if row else None


def rolled_back(conn: Connection, model_name: str, version: str) -> ProductionChange | None:
    """The rollback that took `version` out of production, if one did: the gate's bar."""
    row = (
        conn.execute(
            _query(model_name)
            .where(promotions.c.action == ROLLBACK, promotions.c.from_version == version)
            .order_by(promotions.c.id)
            .limit(1)
        )
        .mappings()
        .first()
    )
    return _entry(row) if row else None


def entries(url: str, model_name: str) -> list[ProductionChange]:
    """Every recorded change of `model_name`'s production version, oldest first."""
    with _engine(url).connect() as conn:
        return entries_of(conn, model_name)


def entries_of(conn: Connection, model_name: str) -> list[ProductionChange]:
    rows = conn.execute(_query(model_name).order_by(promotions.c.id)).mappings()
    return [_entry(row) for row in rows]


def _query(model_name: str) -> sa.Select:
    return sa.select(promotions).where(promotions.c.model_name == model_name)


def _entry(row: Any) -> ProductionChange:
    changed_at = row["changed_at"]
    if changed_at.tzinfo is None:  # SQLite keeps no time zone; every row is written in UTC
        changed_at = changed_at.replace(tzinfo=UTC)
    evidence = None
    if row["delta_roc_auc"] is not None:
        evidence = Evidence(
            row["delta_roc_auc"],
            (row["delta_roc_auc_ci_low"], row["delta_roc_auc_ci_high"]),
            row["holdout_fingerprint"],
        )
    return ProductionChange(
        row["id"],
        changed_at,
        row["model_name"],
        row["from_version"],
        row["to_version"],
        row["changed_by"],
        row["reason"],
        row["action"],
        evidence,
        Authority(row["plan_sha256"], row["rule"], row["comment"]),
    )
