"""Ingesting an extract into the warehouse: raw, clean and quarantined encounters, corrections,
batches, and the record of every ingest.

The same SQLAlchemy code runs on PostgreSQL and SQLite. An encounter is identified by its
`encounter_id` (as an integer: `N` and `N.0` are the same encounter). Every extract, in any
order, overlapping or replayed, is reduced to what is new: a new encounter goes to the holdout
(batch 0) when its patient is a holdout patient (`readmission.data.holdout`), else into a new
training batch, in `encounter_id` order; an encounter stored before is skipped, or, when its
content differs, recorded as a correction. A stored batch is never rewritten. A training batch holds
at least MIN_BATCH_ROWS clean rows: a smaller remainder is stored as waiting, in no batch, and
joins the next extract's rows. Rows with a bad identifier are quarantined with the reason, never
fatal; an extract with more than MAX_QUARANTINE_SHARE of its rows failing is refused whole
(nothing stored but the record of the refusal). An ingest is one transaction, serialised with any
other (PostgreSQL: an advisory lock; SQLite: BEGIN IMMEDIATE), so a killed ingest leaves nothing
and two at once store every row once. It works through the extract in chunks (INGEST_CHUNK_ROWS),
storing each as it goes, so memory does not grow with the extract: a batch is closed as soon as
its rows are read when the extract arrives in encounter_id order, else the batches are cut at the
end. On PostgreSQL rows go in with COPY, sent while the next chunk is worked on."""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator
from datetime import UTC, datetime

import pandas as pd
from sqlalchemy.engine import Connection

from readmission.data.database import stored_setting, transaction
from readmission.data.ingest_plan import Plan
from readmission.data.ingest_report import ExtractRefused, IngestReport
from readmission.data.tables import ingests

# Rows of an extract worked on at once: memory follows this, not the extract's size.
DEFAULT_CHUNK_ROWS = 50_000


def ingest(
    url: str,
    source: pd.DataFrame | Iterable[pd.DataFrame],
    batch_size: int,
    holdout_fraction: float,
    max_batches: int | None = None,
    source_name: str = "",
    *,
    min_batch_rows: int = 1,
    max_quarantine_share: float = 1.0,
    chunk_rows: int = DEFAULT_CHUNK_ROWS,
) -> IngestReport:
    """Store what `source` (raw text rows, any order) adds to the warehouse; see the module doc.

    `source` is a frame, or the frames of an extract read in chunks
    (readmission.data.dataset.read_chunks); a frame is worked through `chunk_rows` rows at a time,
    so memory follows the chunk, not the extract. A chunk's new training rows go into the batches
    that close with them (an extract in encounter_id order) or are stored as waiting; the rest
    of the batches are cut at the end from the waiting rows' ids alone, so they come out as if
    the extract had been read at once, in any order.

    `max_batches` caps the new training batches; the training rows beyond them are deferred
    (not stored) and come with the next ingest of the same extract. A training batch holds at
    least `min_batch_rows` clean rows: a smaller remainder is stored as waiting (WAITING_BATCH)
    and cut into a batch with the rows of a later extract. The holdout fraction is pinned by the
    first ingest: a later HOLDOUT_FRACTION cannot move a patient across. An extract whose share
    of rows failing validation exceeds `max_quarantine_share` is refused (ExtractRefused): only
    the record of its refusal is stored, so its corrected file arrives as new. The defaults (no
    minimum, no refusal) are for direct callers; the platform passes its settings
    (readmission.extracts.ingest).
    """
    with transaction(url) as conn:
        # The share of failing rows is known once the last chunk is read, after the others were
        # stored: a refused extract's rows are rolled back to here, its refusal recorded.
        conn.exec_driver_sql("SAVEPOINT extract")
        fraction = float(stored_setting(conn, "holdout_fraction", repr(holdout_fraction)))
        plan = Plan(conn, fraction, batch_size, min_batch_rows, max_batches)
        try:
            for chunk in _chunks(source, chunk_rows):
                plan.add(chunk)
            plan.writer.settle()
        finally:
            plan.writer.close()  # after any COPY in flight: the transaction must not end under it
        if plan.share > max_quarantine_share:
            conn.exec_driver_sql("ROLLBACK TO SAVEPOINT extract")
            report = plan.refusal()
        else:
            conn.exec_driver_sql("RELEASE SAVEPOINT extract")
            report = plan.finish()
        record_ingest(conn, source_name, report)
    if report.refused:  # raised after the commit: the refusal's record stays
        raise ExtractRefused(report, source_name, max_quarantine_share)
    return report


def _chunks(source: pd.DataFrame | Iterable[pd.DataFrame], rows: int) -> Iterator[pd.DataFrame]:
    if not isinstance(source, pd.DataFrame):
        yield from source
        return
    for start in range(0, len(source), rows):
        yield source.iloc[start : start + rows]


def record_ingest(conn: Connection, source_name: str, report: IngestReport) -> None:
    conn.execute(
        ingests.insert().values(
            source=source_name,
            finished_at=datetime.now(UTC),
            rows_in=report.rows_in,
            accepted=report.accepted,
            quarantined=report.quarantined_total,
            already_present=report.already_present,
            deferred=report.deferred,
            corrections=report.corrections,
            normalized=report.normalized_total,
            refused=report.refused,
            quarantine_share=report.quarantine_share,
            report=json.dumps(report_dict(report)),
        )
    )


def report_dict(report: IngestReport) -> dict[str, object]:
    return {
        "rows_in": report.rows_in,
        "accepted": report.accepted,
        "quarantined": report.quarantined,
        "already_present": report.already_present,
        "deferred": report.deferred,
        "corrections": report.corrections,
        "batches": [b.batch_id for b in report.new_batches],
        "normalized": report.normalized,
        "refused": report.refused,
        "quarantine_share": report.quarantine_share,
        "problems": report.problems,
        "waiting": report.waiting,
    }
