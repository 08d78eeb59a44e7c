"""What the warehouse holds, read with SQLAlchemy Core: batches and which version trained each,
ingests, corrections, the holdout's size and fingerprint, row counts. What `readmission status`
shows; nothing here imports pandas."""

from __future__ import annotations

import json
from dataclasses import dataclass

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from readmission.data.database import engine_for
from readmission.data.holdout import fingerprint
from readmission.data.tables import (
    HOLDOUT_BATCH,
    batches,
    clean_encounters,
    corrections,
    ingests,
    quarantine,
    raw_encounters,
    settings_table,
    trainings,
)


@dataclass(frozen=True)
class Batch:
    batch_id: int
    kind: str
    first_encounter_id: str
    last_encounter_id: str
    rows: int
    accepted: int
    quarantined: int
    trained: bool
    model_version: str | None


def holdout_fraction(url: str) -> float | None:
    """The holdout fraction pinned by the first ingest (None before it)."""
    with engine_for(url).connect() as conn:
        stored = conn.execute(
            sa.select(settings_table.c.value).where(settings_table.c.key == "holdout_fraction")
        ).scalar()
    return float(stored) if stored is not None else None


def batch_list(url: str, model_name: str | None = None) -> list[Batch]:
    """Every batch, with whether (and into which version) lineage `model_name` trained it."""
    with engine_for(url).connect() as conn:
        trained = trained_versions(conn, model_name) if model_name else {}
        rows = conn.execute(sa.select(batches).order_by(batches.c.batch_id)).mappings()
        return [
            Batch(
                r["batch_id"],
                r["kind"],
                r["first_encounter_id"],
                r["last_encounter_id"],
                r["rows"],
                r["accepted"],
                r["quarantined"],
                r["batch_id"] in trained,
                trained.get(r["batch_id"]),
            )
            for r in rows
        ]


def trained_versions(conn: Connection, model_name: str) -> dict[int, str]:
    query = sa.select(trainings.c.batch_id, trainings.c.model_version).where(
        trainings.c.model_name == model_name
    )
    return {int(b): str(v) for b, v in conn.execute(query)}


def ingest_history(url: str) -> list[dict[str, object]]:
    """The report of every ingest, oldest first."""
    with engine_for(url).connect() as conn:
        rows = conn.execute(sa.select(ingests).order_by(ingests.c.id)).mappings()
        return [{"source": r["source"], **json.loads(r["report"])} for r in rows]


def row_counts(url: str) -> dict[str, int]:
    with engine_for(url).connect() as conn:
        return {
            t.name: conn.execute(sa.select(sa.func.count()).select_from(t)).scalar_one()
            for t in (raw_encounters, clean_encounters, quarantine, corrections)
        }


def holdout_overlap(url: str) -> int:
    """Patients with encounters both in the holdout and in a training batch: 0, always."""
    held = sa.select(clean_encounters.c.patient_nbr).where(
        clean_encounters.c.batch_id == HOLDOUT_BATCH
    )
    query = sa.select(sa.func.count(sa.distinct(clean_encounters.c.patient_nbr))).where(
        clean_encounters.c.batch_id != HOLDOUT_BATCH, clean_encounters.c.patient_nbr.in_(held)
    )
    with engine_for(url).connect() as conn:
        return int(conn.execute(query).scalar_one())


def correction_count(url: str) -> int:
    """Corrections recorded so far."""
    with engine_for(url).connect() as conn:
        return int(conn.execute(sa.select(sa.func.count()).select_from(corrections)).scalar_one())


@dataclass(frozen=True)
class HoldoutSummary:
    rows: int
    patients: int
    fingerprint: str  # of its encounters (readmission.data.holdout.fingerprint)


def holdout_summary(url: str) -> HoldoutSummary:
    """The holdout's size and fingerprint, from its ids alone (no rows loaded)."""
    query = sa.select(clean_encounters.c.encounter_id, clean_encounters.c.patient_nbr).where(
        clean_encounters.c.batch_id == HOLDOUT_BATCH
    )
    with engine_for(url).connect() as conn:
        found = conn.execute(query).all()
    return HoldoutSummary(
        rows=len(found),
        patients=len({patient for _, patient in found}),
        fingerprint=fingerprint(encounter for encounter, _ in found),
    )
