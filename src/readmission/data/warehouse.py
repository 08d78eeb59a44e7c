"""The rows the warehouse stores, read back: a batch's clean rows, the quarantine, the
corrections as frames; which encounters it holds; and, inside an ingest's transaction, the
stored hashes, raw rows and clean ids of the encounters an extract repeats."""

from __future__ import annotations

import json

import pandas as pd
import sqlalchemy as sa
from sqlalchemy.engine import Connection

from readmission.data.database import engine_for
from readmission.data.tables import (
    clean_encounters,
    corrections,
    quarantine,
    raw_encounters,
)
from readmission.schema import COLUMNS


def clean_rows(url: str, batch_id: int) -> pd.DataFrame:
    """The clean encounters of one batch (batch 0: the holdout), in encounter_id order."""
    query = (
        sa.select(clean_encounters)
        .where(clean_encounters.c.batch_id == batch_id)
        .order_by(clean_encounters.c.encounter_id)
    )
    with engine_for(url).connect() as conn:
        frame = pd.read_sql(query, conn)
    return frame[list(COLUMNS)]


def quarantined_rows(url: str, batch_id: int | None = None) -> pd.DataFrame:
    query = sa.select(
        quarantine.c.encounter_id,
        quarantine.c.batch_id,
        quarantine.c.reason_code,
        quarantine.c.reason,
    )
    if batch_id is not None:
        query = query.where(quarantine.c.batch_id == batch_id)
    with engine_for(url).connect() as conn:
        return pd.read_sql(query.order_by(quarantine.c.id), conn)


def correction_rows(url: str) -> pd.DataFrame:
    """Every recorded correction: the encounter, the fields that differ, where it was applied."""
    query = sa.select(
        corrections.c.encounter_id, corrections.c.fields, corrections.c.applied_to_batch
    ).order_by(corrections.c.id)
    with engine_for(url).connect() as conn:
        frame = pd.read_sql(query, conn)
    frame["fields"] = frame["fields"].map(json.loads)
    return frame


def stored_encounter_ids(url: str) -> set[str]:
    """The encounter_id of every encounter stored so far, as text (`N`, its canonical form)."""
    with engine_for(url).connect() as conn:
        return {str(k) for k in conn.execute(sa.select(raw_encounters.c.encounter_id)).scalars()}


def stored_hashes(conn: Connection, ids: list[int]) -> dict[int, str]:
    """The stored row hash of each of the encounters `ids` stored before."""
    columns = sa.select(raw_encounters.c.encounter_id, raw_encounters.c.row_hash)
    if conn.dialect.name == "postgresql":
        # One array parameter for the whole chunk: a thousand-parameter IN is rewritten by
        # the driver on every call, which took as long as storing the rows. Sent as the
        # array's text: the driver's dumping of a list of ints is Python per element.
        # Untyped, so the server reads it as the array itself, a constant: typed as text,
        # its cast runs per row and the array is scanned per row (minutes for a chunk).
        keys = sa.bindparam("keys", "{" + ",".join(map(str, ids)) + "}", type_=sa.types.NullType())
        query = columns.where(
            sa.text("encounter_id = ANY(CAST(:keys AS bigint[]))").bindparams(keys)
        )
        return {int(k): h for k, h in conn.execute(query)}
    found: dict[int, str] = {}
    for start in range(0, len(ids), 1000):
        query = columns.where(raw_encounters.c.encounter_id.in_(ids[start : start + 1000]))
        found.update((int(k), h) for k, h in conn.execute(query))
    return found


def stored_raw_rows(conn: Connection, ids: list[int]) -> pd.DataFrame:
    frames = []
    for start in range(0, len(ids), 1000):
        query = sa.select(raw_encounters).where(
            raw_encounters.c.encounter_id.in_(ids[start : start + 1000])
        )
        frames.append(pd.read_sql(query, conn))
    return pd.concat(frames).set_index("encounter_id")


def stored_clean_ids(conn: Connection, ids: list[int]) -> set[int]:
    found: set[int] = set()
    for start in range(0, len(ids), 1000):
        query = sa.select(clean_encounters.c.encounter_id).where(
            clean_encounters.c.encounter_id.in_(ids[start : start + 1000])
        )
        found.update(int(k) for k in conn.execute(query).scalars())
    return found
