"""Training batches as rows move into them: where a queue of waiting rows is cut, and the stored
rows moved, dropped or recorded as batches cut (the waiting rows of the warehouse are in no
batch until then)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime

import numpy as np
import pandas as pd
import sqlalchemy as sa
from sqlalchemy.engine import Connection

from readmission.data.inventory import Batch
from readmission.data.tables import (
    WAITING_BATCH,
    batches,
    clean_encounters,
    quarantine,
    raw_encounters,
)
from readmission.data.validation import parse_ids


def cut_batches(
    clean: np.ndarray, batch_size: int, min_clean: int, final: bool = True
) -> tuple[list[int], int]:
    """Where the training rows (in encounter_id order; `clean` flags the ones that validate)
    split into batches: (the end of each batch, where the waiting remainder starts).

    A batch closes at `batch_size` rows once it holds `min_clean` clean rows (a batch short of
    them runs on until it does); what is left at the end becomes a batch of its own when it
    holds `min_clean` clean rows, else it waits. Not `final`: the rows are a prefix of the
    queue, more may follow, so the remainder is left uncut (the closed batches are the ones
    the whole queue would give).
    """
    cumulative = np.concatenate([[0], np.cumsum(clean, dtype=np.int64)])
    total, ends, start = len(clean), [], 0
    while start < total:
        enough = int(np.searchsorted(cumulative, cumulative[start] + min_clean, side="left"))
        end = max(start + batch_size, enough)
        if end > total:
            break
        ends.append(end)
        start = end
    if final and start < total and cumulative[total] - cumulative[start] >= min_clean:
        ends.append(total)
        start = total
    return ends, start


@dataclass(frozen=True)
class Cut:
    """A training batch closed while the extract is read: its key range and counts."""

    batch_id: int
    low: int
    high: int
    rows: int
    accepted: int


@dataclass
class Tally:
    """This extract's rows stored into one batch so far: the batch's record and report line."""

    first: int = 2**63
    last: int = 0
    rows: int = 0
    accepted: int = 0
    quarantined: int = 0


def batch_of(key: int, ranges: list[tuple[int, int, int]]) -> int | None:
    """The batch among `ranges` (batch, lowest key, highest key) whose range holds `key`."""
    for batch_id, low, high in ranges:
        if low <= key <= high:
            return batch_id
    return None


def move_waiting(conn: Connection, batch_id: int, low: int, high: int) -> None:
    """Stored waiting rows (raw and clean) with keys from `low` to `high` into a batch."""
    for table in (raw_encounters, clean_encounters):
        conn.execute(
            table.update()
            .where(table.c.batch_id == WAITING_BATCH, table.c.encounter_id.between(low, high))
            .values(batch_id=batch_id)
        )


def waiting_rows(conn: Connection, fixes: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Every training row waiting for a batch, by key: (keys in order, whether each is
    clean). The stored waiting rows, streamed as ids only, and this extract's `fixes`."""
    query = (
        sa.select(
            raw_encounters.c.encounter_id,
            clean_encounters.c.encounter_id.is_not(None).label("clean"),
        )
        .select_from(
            raw_encounters.outerjoin(
                clean_encounters,
                clean_encounters.c.encounter_id == raw_encounters.c.encounter_id,
            )
        )
        .where(raw_encounters.c.batch_id == WAITING_BATCH)
        .execution_options(yield_per=100_000)
    )
    keys, clean = [fixes.astype(np.int64)], [np.ones(len(fixes), dtype=bool)]
    for part in conn.execute(query).partitions():
        keys.append(np.fromiter((int(k) for k, _ in part), dtype=np.int64, count=len(part)))
        clean.append(np.fromiter((bool(c) for _, c in part), dtype=bool, count=len(part)))
    all_keys, all_clean = np.concatenate(keys), np.concatenate(clean)
    order = np.argsort(all_keys, kind="stable")
    return all_keys[order], all_clean[order]


def drop_waiting(conn: Connection, keys: np.ndarray, raw_keys: np.ndarray) -> None:
    """Delete this extract's waiting rows `keys` (clean rows; raw rows of `raw_keys`)."""
    for table, which in ((clean_encounters, keys), (raw_encounters, raw_keys)):
        for start in range(0, len(which), 1000):
            part = [int(k) for k in which[start : start + 1000]]
            conn.execute(
                table.delete().where(
                    table.c.batch_id == WAITING_BATCH, table.c.encounter_id.in_(part)
                )
            )


def move_waiting_quarantine(
    conn: Connection, ranges: list[tuple[int, int, int]], dropped: np.ndarray
) -> dict[int, int]:
    """Waiting quarantined rows into the batch (batch, lowest key, highest key) their key
    falls in (the rows of `dropped` keys deleted): how many each batch received."""
    held = conn.execute(
        sa.select(quarantine.c.id, quarantine.c.encounter_id).where(
            quarantine.c.batch_id == WAITING_BATCH
        )
    ).all()
    if not held:
        return {}
    ids = np.array([int(i) for i, _ in held], dtype=np.int64)
    texts = pd.Series([text for _, text in held], dtype=object)
    keys = parse_ids(texts).to_numpy(dtype="int64", na_value=0)
    gone = np.isin(keys, dropped)
    for start in range(0, int(gone.sum()), 1000):
        part = [int(i) for i in ids[gone][start : start + 1000]]
        conn.execute(quarantine.delete().where(quarantine.c.id.in_(part)))
    moved: dict[int, int] = {}
    for batch_id, low, high in ranges:
        hit = ~gone & (keys >= low) & (keys <= high)
        for at in range(0, int(hit.sum()), 1000):
            part = [int(i) for i in ids[hit][at : at + 1000]]
            conn.execute(
                quarantine.update().where(quarantine.c.id.in_(part)).values(batch_id=batch_id)
            )
        if hit.any():
            moved[batch_id] = int(hit.sum())
    return moved


def record_batch(conn: Connection, batch_id: int, kind: str, tally: Tally) -> Batch:
    """Record the batch (the holdout grows with every extract's holdout patients)."""
    first, last = str(tally.first), str(tally.last)
    previous = conn.execute(sa.select(batches).where(batches.c.batch_id == batch_id)).mappings()
    existing = previous.first()
    if existing is None:
        conn.execute(
            batches.insert().values(
                batch_id=batch_id,
                kind=kind,
                first_encounter_id=first,
                last_encounter_id=last,
                rows=tally.rows,
                accepted=tally.accepted,
                quarantined=tally.quarantined,
                ingested_at=datetime.now(UTC),
            )
        )
    else:
        conn.execute(
            batches.update()
            .where(batches.c.batch_id == batch_id)
            .values(
                first_encounter_id=str(min(int(existing["first_encounter_id"]), tally.first)),
                last_encounter_id=str(max(int(existing["last_encounter_id"]), tally.last)),
                rows=existing["rows"] + tally.rows,
                accepted=existing["accepted"] + tally.accepted,
                quarantined=existing["quarantined"] + tally.quarantined,
                ingested_at=datetime.now(UTC),
            )
        )
    return Batch(
        batch_id, kind, first, last, tally.rows, tally.accepted, tally.quarantined, False, None
    )
