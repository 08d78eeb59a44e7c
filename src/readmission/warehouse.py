"""The data warehouse: raw, clean and quarantined encounters, corrections, batch bookkeeping,
the record of every ingest, which version each batch was trained into, and the training lease.

The same SQLAlchemy code runs on PostgreSQL and SQLite. An encounter is identified by its
`encounter_id` (as an integer: `N` and `N.0` are the same encounter). Every extract, in any
order, overlapping or replayed, is reduced to what is new: a new encounter goes to the holdout
(batch 0) when its patient is a holdout patient (`readmission.data.holdout`), else into a new
training batch, in `encounter_id` order; an encounter stored before is skipped, or, when its content
differs, recorded as a correction. A stored batch is never rewritten. A training batch holds
at least MIN_BATCH_ROWS clean rows: a smaller remainder is stored as waiting, in no batch, and
joins the next extract's rows. Rows with a bad identifier are quarantined with the reason, never
fatal; an extract with more than MAX_QUARANTINE_SHARE of its rows failing is refused whole
(nothing stored but the record of the refusal). An ingest is one transaction, serialised with any
other (PostgreSQL: an advisory lock; SQLite: BEGIN IMMEDIATE), so a killed ingest leaves nothing
and two at once store every row once. It works through the extract in chunks (INGEST_CHUNK_ROWS),
storing each as it goes, so memory does not grow with the extract: a batch is closed as soon as
its rows are read when the extract arrives in encounter_id order, else the batches are cut at the
end. On PostgreSQL rows go in with COPY, sent while the next chunk is worked on.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import logging
import os
import socket
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import numpy as np
import pandas as pd
import psycopg
import sqlalchemy as sa
from sqlalchemy.engine import Connection

from readmission.data import holdout
from readmission.data.database import WarehouseNotReady as WarehouseNotReady
from readmission.data.database import api_privileges as api_privileges
from readmission.data.database import engine_for, transaction
from readmission.data.inventory import Batch, trained_versions
from readmission.data.inventory import batch_list as batch_list
from readmission.data.inventory import holdout_fraction as holdout_fraction
from readmission.data.inventory import holdout_overlap as holdout_overlap
from readmission.data.inventory import ingest_history as ingest_history
from readmission.data.inventory import row_counts as row_counts
from readmission.data.tables import API_ROLE as API_ROLE
from readmission.data.tables import (
    HOLDOUT_BATCH,
    WAITING_BATCH,
    batches,
    clean_encounters,
    corrections,
    ingests,
    leases,
    quarantine,
    raw_encounters,
    settings_table,
    trainings,
)
from readmission.data.tables import prediction_log_table as prediction_log_table
from readmission.data.validation import (
    ID_RULE,
    Validated,
    as_text,
    normalize,
    parse_ids,
    validate,
)
from readmission.schema import COLUMNS, ID_COLUMNS, INTEGER_COLUMNS

# The tables, the engine and what status reads live in readmission.data.tables, .database and
# .inventory, which import no pandas: `readmission status` answers in a second without it. The
# names callers know as warehouse.X stay importable from here until the package is grouped by
# stage (issue 24).
log = logging.getLogger(__name__)
# Rows of an extract worked on at once: memory follows this, not the extract's size.
DEFAULT_CHUNK_ROWS = 50_000
# Between a row's cells in the text its hash digests. Stored hashes are compared on replay with
# those of earlier releases: never change it.
_UNIT_SEPARATOR = "\x1f"
_LEASE_ID = 7_296_003  # PostgreSQL advisory lock held for as long as a training run lives
# Quarantine reasons, as counted in ingest reports.
INVALID_ID = "invalid_encounter_id"
DUPLICATE_ID = "duplicate_encounter_id"
INVALID_VALUES = "invalid_values"


@dataclass(frozen=True)
class IngestReport:
    """What one extract did. rows_in = accepted + quarantined + already_present + deferred,
    unless the extract was refused (then nothing was accepted, quarantined or deferred)."""

    rows_in: int
    accepted: int  # new clean rows (new encounters, and fixes of quarantined ones)
    quarantined: dict[str, int]  # new quarantined rows by reason code
    already_present: int  # encounters stored before (identical, or recorded as a correction)
    # New clean training rows in no batch yet: left for a later ingest of the extract
    # (`max_batches`, not stored) or waiting, stored, for the next extract (MIN_BATCH_ROWS).
    deferred: int
    corrections: int  # rows whose content differs from the stored encounter's, recorded
    new_batches: list[Batch] = field(default_factory=list)  # holdout additions: batch 0
    normalized: dict[str, int] = field(default_factory=dict)  # blank lab cells read as "None"
    quarantine_share: float = 0.0  # of rows_in, failing validation (stored before or not)
    problems: dict[str, int] = field(default_factory=dict)  # rows breaking each rule
    refused: bool = False  # the share exceeded MAX_QUARANTINE_SHARE: nothing stored
    waiting: int = 0  # rows in the warehouse waiting for a batch after this ingest

    @property
    def normalized_total(self) -> int:
        return sum(self.normalized.values())

    @property
    def rows_added(self) -> int:
        return sum(b.rows for b in self.new_batches)

    @property
    def changed(self) -> bool:
        """Whether the ingest changed what the warehouse holds: rows stored (in the holdout, a
        training batch or the quarantine) or corrections recorded. False for a replay; the
        outcomes it joins to the prediction log are counted by readmission.extracts.ingest."""
        return bool(self.new_batches or self.quarantined or self.corrections)

    @property
    def quarantined_total(self) -> int:
        return sum(self.quarantined.values())

    @property
    def training_batch_ids(self) -> list[int]:
        return [b.batch_id for b in self.new_batches if b.kind == "train"]


def warehouse_id(url: str) -> str:
    """This warehouse's id, created once: model versions carry it, so a version registered
    from another warehouse (or by hand) is never taken for one of this lineage's."""
    with transaction(url) as conn:
        return _setting(conn, "warehouse_id", lambda: uuid.uuid4().hex)


def _setting(conn: Connection, key: str, default: object) -> str:
    """The stored value of `key`; the first call stores `default` (a callable is called)."""
    stored = conn.execute(
        sa.select(settings_table.c.value).where(settings_table.c.key == key)
    ).scalar()
    if stored is not None:
        return str(stored)
    value = str(default() if callable(default) else default)
    conn.execute(settings_table.insert().values(key=key, value=value))
    return value


def _row_texts(raw: pd.DataFrame, keys: pd.Series) -> pd.Series:
    """Each row's cells (COLUMNS order) joined by the unit separator, its encounter_id written
    canonically: the text its hash digests."""
    ids = keys.astype(str).where(keys.notna(), raw["encounter_id"])
    # Columns as lists zipped into rows: a third faster than itertuples' boxing per cell.
    columns = [(ids if c == "encounter_id" else raw[c]).tolist() for c in raw.columns]
    return pd.Series(
        list(map(_UNIT_SEPARATOR.join, zip(*columns, strict=True))), index=raw.index, dtype=object
    )


def _row_hashes(texts: pd.Series) -> pd.Series:
    """Content digest of each row, from its `_row_texts`."""
    sha256 = hashlib.sha256
    return pd.Series(
        [sha256(text.encode()).hexdigest() for text in texts.tolist()],
        index=texts.index,
        dtype=object,
    )


def _plain_texts(texts: pd.Series) -> bool:
    """True when no cell of these `_row_texts` holds a character COPY's text format reserves or
    the unit separator: the texts are then COPY lines once their separators are tabs."""
    joined = "".join(texts.tolist())
    return joined.count(_UNIT_SEPARATOR) == len(texts) * (len(COLUMNS) - 1) and not any(
        c in joined for c in "\\\t\n\r"
    )


class ExtractRefused(RuntimeError):
    """An extract whose share of failing rows exceeds the limit: nothing of it was stored."""

    def __init__(self, report: IngestReport, source_name: str, limit: float) -> None:
        top = "; ".join(f"{rule} ({n:,} rows)" for rule, n in list(report.problems.items())[:3])
        super().__init__(
            f"extract {source_name or '(unnamed)'} refused: {report.quarantine_share:.1%} of its "
            f"{report.rows_in:,} rows fail validation, more than MAX_QUARANTINE_SHARE "
            f"({limit:.1%}). Most frequent reasons: {top}. Nothing of it was stored (the "
            "refusal is recorded in the ingests table): correct the file and ingest it again."
        )
        self.report = report


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
        fraction = float(_setting(conn, "holdout_fraction", repr(holdout_fraction)))
        plan = _Plan(conn, fraction, batch_size, min_batch_rows, max_batches)
        try:
            for chunk in _chunks(source, chunk_rows):
                plan.add(chunk)
            plan.settle()
        finally:
            plan.close()  # after any COPY in flight: the transaction must not end under it
        if plan.share > max_quarantine_share:
            conn.exec_driver_sql("ROLLBACK TO SAVEPOINT extract")
            report = plan.refusal()
        else:
            conn.exec_driver_sql("RELEASE SAVEPOINT extract")
            report = plan.finish()
        _record_ingest(conn, source_name, report)
    if report.refused:  # raised after the commit: the refusal's record stays
        raise ExtractRefused(report, source_name, max_quarantine_share)
    return report


def _chunks(source: pd.DataFrame | Iterable[pd.DataFrame], rows: int) -> Iterator[pd.DataFrame]:
    if not isinstance(source, pd.DataFrame):
        yield from source
        return
    for start in range(0, len(source), rows):
        yield source.iloc[start : start + rows]


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


def _numbers_as_written(raw: pd.DataFrame, clean: pd.DataFrame) -> bool:
    """True when each number of the `clean` rows is written in `raw` as str() writes the typed
    value (no "5.0", " 5" or "05"): a clean row's COPY text is then its raw row's text."""
    for column in (*ID_COLUMNS, *INTEGER_COLUMNS):
        if column == "encounter_id":  # written canonically in _row_texts
            continue
        codes, written = pd.factorize(raw.loc[clean.index, column])
        _, first = np.unique(codes, return_index=True)  # each distinct text's first row
        typed = clean[column].to_numpy()[first].tolist()
        if written.tolist() != list(map(str, typed)):
            return False
    return True


@dataclass
class _Chunk:
    """One chunk of the extract, in encounter_id order, as the plan works through it."""

    raw: pd.DataFrame
    keys: pd.Series
    patients: pd.Series  # patient_nbr as parse_ids reads it
    texts: pd.Series  # _row_texts
    plain: bool  # _plain_texts: raw rows are COPYed from their texts
    clean_plain: bool  # and clean rows too: _plain_texts and _numbers_as_written
    hashes: pd.Series
    checked: Validated
    fixes: pd.Series  # corrections turning quarantined encounters into clean rows


@dataclass(frozen=True)
class _Cut:
    """A training batch closed while the extract is read: its key range and counts."""

    batch_id: int
    low: int
    high: int
    rows: int
    accepted: int


@dataclass
class _Tally:
    """This extract's rows stored into one batch so far: the batch's record and report line."""

    first: int = 2**63
    last: int = 0
    rows: int = 0
    accepted: int = 0
    quarantined: int = 0


class _Plan:
    """One ingest, worked out chunk by chunk inside the ingest's transaction."""

    def __init__(
        self,
        conn: Connection,
        fraction: float,
        batch_size: int,
        min_batch_rows: int,
        max_batches: int | None,
    ) -> None:
        self.conn, self.fraction = conn, fraction
        self.batch_size, self.min_batch_rows, self.max_batches = (
            batch_size,
            min_batch_rows,
            max_batches,
        )
        self.rows_in = self.failing = self.present = 0
        self.normalized: Counter[str] = Counter()
        self.problems: Counter[str] = Counter()
        self.quarantined: Counter[str] = Counter()
        quarantined = conn.execute(sa.select(quarantine.c.row_hash, quarantine.c.reason_code))
        self.known_quarantine = {(str(h), str(code)) for h, code in quarantined}
        self.known_corrections = set(conn.execute(sa.select(corrections.c.row_hash)).scalars())
        self.correction_rows: list[dict[str, object]] = []
        # The records of corrections that fix a quarantined encounter, by encounter: applied to
        # the batch their clean row lands in, or left out when it waits unstored.
        self.fix_records: dict[int, dict[str, object]] = {}
        self.holdout = _Tally()
        # Keys of the extract's rows read so far, sorted: a later row repeating one is a
        # duplicate (an int64 array: 16 MB for two million rows).
        self.seen = np.empty(0, dtype=np.int64)
        # This extract's rows stored as waiting: key, clean, a fix (its raw row is elsewhere).
        self.training: list[tuple[np.ndarray, np.ndarray, np.ndarray]] = []
        # Batches closed early. An extract arriving in encounter_id order (as extracts are cut)
        # lets a batch close as soon as its rows are read: its rows are written once, with
        # their batch, instead of as waiting rows moved by an UPDATE at the end (which cost as
        # much as writing them). The first row arriving below a closed batch (or a fix of an
        # older encounter) reopens them all: from then on every training row waits until
        # `finish`, which cuts the same batches either way.
        self.first_batch = (
            conn.execute(
                sa.select(sa.func.max(batches.c.batch_id)).where(batches.c.batch_id > 0)
            ).scalar()
            or 0
        ) + 1
        self.early = True
        self.cuts: list[_Cut] = []
        self.cut_quarantined: Counter[int] = Counter()  # rows quarantined straight into a cut
        # The queue not cut yet: the stored waiting rows, then this extract's training rows.
        self.queue_keys, self.queue_clean = self._waiting(np.empty(0, dtype=np.int64))
        self.highest = -1  # this extract's highest training key so far
        # PostgreSQL: a chunk's rows are sent (COPY) by a thread while the next chunk is read,
        # validated and hashed, so the server's work overlaps the client's; anything else on
        # the connection waits for it (`settle`). SQLite's connection stays in its thread.
        self.copier = (
            ThreadPoolExecutor(max_workers=1) if conn.dialect.name == "postgresql" else None
        )
        self.copies: list[_Copy] = []  # this chunk's, sent at its end
        self.copying: Future[None] | None = None

    def settle(self) -> None:
        """Wait for the chunk being sent (its error raised here)."""
        if self.copying is not None:
            copying, self.copying = self.copying, None
            copying.result()

    def close(self) -> None:
        if self.copier is not None:
            self.copier.shutdown(wait=True)

    def _insert(self, table: sa.Table, frame: pd.DataFrame) -> None:
        """Store `frame`'s rows into `table`: SQLite at once, PostgreSQL with the chunk's COPY."""
        if frame.empty:
            return
        frame = frame[[c.name for c in table.columns]]
        if self.copier is None:
            _sqlite_insert(self.conn, table, frame)
        else:
            self.copies.append(_Copy(table.name, list(frame.columns), _copy_text(frame)))

    def _copy_texts(
        self, table: sa.Table, chunk: _Chunk, rows: pd.Index, after: dict[str, np.ndarray]
    ) -> None:
        """COPY the chunk's `rows` into `table` from their `_row_texts` (COLUMNS) followed by
        the columns `after` (str objects). The hashed texts are COPY lines once the separators
        are tabs: half the time of joining each row's fifty cells again (`_copy_text`), which
        took the biggest share of the client's time."""
        lines = chunk.texts[rows].to_numpy()
        for values in after.values():
            lines = lines + _UNIT_SEPARATOR + values
        text = "\n".join(lines.tolist()).replace(_UNIT_SEPARATOR, "\t") + "\n"
        self.copies.append(_Copy(table.name, [*COLUMNS, *after], text))

    def _insert_raw(self, chunk: _Chunk, rows: pd.Index, batch_of: pd.Series) -> None:
        """Store the chunk's `rows` into raw_encounters, with their hashes and batches."""
        if rows.empty:
            return
        if self.copier is not None and chunk.plain:
            batch_ids = batch_of[rows].to_numpy().astype(str).astype(object)
            hashes = chunk.hashes[rows].to_numpy()
            self._copy_texts(
                raw_encounters, chunk, rows, {"row_hash": hashes, "batch_id": batch_ids}
            )
            return
        raw = chunk.raw.loc[rows].assign(
            encounter_id=chunk.keys[rows].astype("int64"),
            row_hash=chunk.hashes[rows],
            batch_id=batch_of[rows].to_numpy(),
        )
        self._insert(raw_encounters, raw)

    def _insert_clean(self, chunk: _Chunk, clean: pd.DataFrame, batch_of: pd.Series) -> None:
        """Store the chunk's typed `clean` rows into clean_encounters, with their batches."""
        if self.copier is not None and chunk.clean_plain and not clean.empty:
            batch_ids = batch_of[clean.index].to_numpy().astype(str).astype(object)
            self._copy_texts(clean_encounters, chunk, clean.index, {"batch_id": batch_ids})
            return
        self._insert(clean_encounters, clean.assign(batch_id=batch_of[clean.index].to_numpy()))

    def _send(self) -> None:
        """Start sending this chunk's rows (PostgreSQL), in the background."""
        if self.copier is None or not self.copies:
            return
        copies, self.copies = self.copies, []
        cursor = self.conn.connection.driver_connection.cursor()  # type: ignore[union-attr]
        self.copying = self.copier.submit(_copy_all, cursor, copies)

    @property
    def share(self) -> float:
        """Of the rows read, the share failing validation (stored before or not)."""
        return self.failing / self.rows_in if self.rows_in else 0.0

    def add(self, frame: pd.DataFrame) -> None:
        raw, normalized = normalize(as_text(frame))
        keys = parse_ids(raw["encounter_id"])
        order = keys.astype("float64").fillna(float("inf")).to_numpy().argsort(kind="stable")
        if (order == np.arange(len(order))).all():  # in order already, as extracts are cut:
            raw, keys = raw.reset_index(drop=True), keys.reset_index(drop=True)  # no gather
        else:
            raw = raw.iloc[order].reset_index(drop=True)
            keys = keys.iloc[order].reset_index(drop=True)
        known = keys.notna().to_numpy()
        ids = keys.to_numpy(dtype="int64", na_value=0)
        at = np.searchsorted(self.seen, ids).clip(max=max(len(self.seen) - 1, 0))
        repeated = known & (self.seen[at] == ids) if len(self.seen) else np.zeros_like(known)
        patients = parse_ids(raw["patient_nbr"])
        checked = validate(raw, repeated, {"encounter_id": keys, "patient_nbr": patients})
        self.seen = np.sort(np.concatenate([self.seen, ids[known]]))
        self.rows_in += len(raw)
        self.failing += len(checked.quarantined)
        self.normalized.update(normalized)
        self.problems.update(checked.problems)
        texts = _row_texts(raw, keys)
        plain = _plain_texts(texts)
        chunk = _Chunk(
            raw,
            keys,
            patients,
            texts,
            plain,
            plain and _numbers_as_written(raw, checked.clean),
            _row_hashes(texts),
            checked,
            pd.Series(False, index=raw.index),
        )
        self.settle()  # the previous chunk's rows are in: the connection is free
        self._route(chunk, repeated)
        self._send()

    def _route(self, chunk: _Chunk, repeated: np.ndarray) -> None:
        raw, keys, hashes = chunk.raw, chunk.keys, chunk.hashes
        bad_id = keys.isna()
        duplicate = ~bad_id & (keys.duplicated(keep="first") | repeated)
        records = []
        for index in raw.index[bad_id | duplicate]:
            text = raw.at[index, "encounter_id"]
            if bad_id[index]:
                code, reason = INVALID_ID, f"encounter_id {ID_RULE}, got {text!r}"
            else:
                code = DUPLICATE_ID
                reason = f"duplicate encounter_id {keys[index]} in this extract (as {text!r})"
            if (hashes[index], code) in self.known_quarantine:  # the same row, quarantined before
                self.present += 1
                continue
            self.known_quarantine.add((hashes[index], code))
            self.quarantined[code] += 1
            records.append(_quarantine_record(chunk, index, None, code, reason))
        if records:
            self.conn.execute(quarantine.insert(), records)

        unique = raw.index[~bad_id & ~duplicate]
        stored = self._stored_hashes([int(k) for k in keys[unique]])
        seen = keys[unique].map(stored)
        same = seen.notna() & (seen == hashes[unique])
        self.present += int(same.sum())
        changed = unique[(seen.notna() & ~same).to_numpy()]
        if len(changed):
            self._corrections(chunk, changed)
        fresh = unique[seen.isna().to_numpy()].append(raw.index[chunk.fixes.to_numpy()])
        self._store_fresh(chunk, fresh.sort_values())

    def _stored_hashes(self, ids: list[int]) -> dict[int, str]:
        """The stored row hash of each of the encounters `ids` stored before."""
        columns = sa.select(raw_encounters.c.encounter_id, raw_encounters.c.row_hash)
        if self.conn.dialect.name == "postgresql":
            # One array parameter for the whole chunk: a thousand-parameter IN is rewritten by
            # the driver on every call, which took as long as storing the rows. Sent as the
            # array's text: the driver's dumping of a list of ints is Python per element.
            # Untyped, so the server reads it as the array itself, a constant: typed as text,
            # its cast runs per row and the array is scanned per row (minutes for a chunk).
            keys = sa.bindparam(
                "keys", "{" + ",".join(map(str, ids)) + "}", type_=sa.types.NullType()
            )
            query = columns.where(
                sa.text("encounter_id = ANY(CAST(:keys AS bigint[]))").bindparams(keys)
            )
            return {int(k): h for k, h in self.conn.execute(query)}
        found: dict[int, str] = {}
        for start in range(0, len(ids), 1000):
            query = columns.where(raw_encounters.c.encounter_id.in_(ids[start : start + 1000]))
            found.update((int(k), h) for k, h in self.conn.execute(query))
        return found

    def _corrections(self, chunk: _Chunk, changed: pd.Index) -> None:
        """Rows of stored encounters with new content: recorded once each, never rewriting a
        batch; a fix of a quarantined encounter that now validates becomes a new clean row."""
        ids = [int(k) for k in chunk.keys[changed]]
        stored = self._raw_rows(ids)
        clean_ids = self._clean_ids(ids)
        fixable = changed.intersection(chunk.checked.clean.index)
        for index in changed:
            self.present += 1
            if chunk.hashes[index] in self.known_corrections:
                continue
            self.known_corrections.add(chunk.hashes[index])
            key = int(chunk.keys[index])
            before = stored.loc[key]
            fields = {
                c: [before[c], chunk.raw.at[index, c]]
                for c in COLUMNS
                if c != "encounter_id" and before[c] != chunk.raw.at[index, c]
            }
            record = {
                "encounter_id": key,
                "row_hash": chunk.hashes[index],
                "fields": json.dumps(fields),
                "raw": json.dumps(chunk.raw.loc[index].to_dict()),
                "applied_to_batch": None,
                "received_at": datetime.now(UTC),
            }
            self.correction_rows.append(record)
            if key not in clean_ids and index in fixable:
                self.present -= 1  # a fix counts as the new clean row it becomes
                chunk.fixes[index] = True
                self.fix_records[key] = record

    def _raw_rows(self, ids: list[int]) -> pd.DataFrame:
        frames = []
        for start in range(0, len(ids), 1000):
            query = sa.select(raw_encounters).where(
                raw_encounters.c.encounter_id.in_(ids[start : start + 1000])
            )
            frames.append(pd.read_sql(query, self.conn))
        return pd.concat(frames).set_index("encounter_id")

    def _clean_ids(self, ids: list[int]) -> set[int]:
        found: set[int] = set()
        for start in range(0, len(ids), 1000):
            query = sa.select(clean_encounters.c.encounter_id).where(
                clean_encounters.c.encounter_id.in_(ids[start : start + 1000])
            )
            found.update(int(k) for k in self.conn.execute(query).scalars())
        return found

    def _store_fresh(self, chunk: _Chunk, fresh: pd.Index) -> None:
        """Holdout rows into the holdout; training rows into the batches their arrival closes
        (`_cut_early`), the rest as waiting, cut into batches once the whole extract is read
        (`finish`)."""
        # The router reads the patients validation read: a patient_nbr that is no id routes
        # nowhere and its row is quarantined in whichever batch it lands.
        patients = chunk.patients[fresh]
        known = patients.notna().to_numpy()
        to_holdout = np.zeros(len(fresh), dtype=bool)
        to_holdout[known] = holdout.in_holdout(patients[known], self.fraction).to_numpy()
        held = fresh[to_holdout]
        if len(held):
            accepted, failed = self._store_rows(chunk, HOLDOUT_BATCH, held)
            tally, keys = self.holdout, chunk.keys[held]
            tally.first, tally.last = (
                min(tally.first, int(keys.min())),
                max(tally.last, int(keys.max())),
            )
            tally.rows += len(held)
            tally.accepted += accepted
            tally.quarantined += failed
            self.quarantined[INVALID_VALUES] += failed
            for key in chunk.keys[held[chunk.fixes[held].to_numpy()]]:
                self.fix_records[int(key)]["applied_to_batch"] = HOLDOUT_BATCH
        training = fresh[~to_holdout]
        if len(training):
            keys = chunk.keys[training].to_numpy(dtype="int64")
            clean = training.isin(chunk.checked.clean.index)
            fixes = chunk.fixes[training].to_numpy()
            batch_ids = self._cut_early(keys, clean, fixes)
            self._store_rows(chunk, batch_ids, training)
            self.cut_quarantined.update(batch_ids[~clean & (batch_ids != WAITING_BATCH)].tolist())
            self.training.append((keys, clean, fixes))

    def _cut_early(self, keys: np.ndarray, clean: np.ndarray, fixes: np.ndarray) -> np.ndarray:
        """The batch of each of a chunk's training rows (`keys` ascending): the batches the
        queue closes now that they are read, WAITING_BATCH for the rest."""
        if self.early and (fixes.any() or (self.cuts and keys[0] <= self.cuts[-1].high)):
            self._reopen()
        batch_ids = np.full(len(keys), WAITING_BATCH, dtype=np.int64)
        if not self.early:
            return batch_ids
        merged = np.concatenate([self.queue_keys, keys])
        order = np.argsort(merged, kind="stable")
        queue_keys, queue_clean = merged[order], np.concatenate([self.queue_clean, clean])[order]
        self.highest = max(self.highest, int(keys[-1]))
        # Rows up to this extract's highest key so far are all read (it arrives in order).
        ready = int(np.searchsorted(queue_keys, self.highest, side="right"))
        ends, _ = cut_batches(
            queue_clean[:ready], self.batch_size, self.min_batch_rows, final=False
        )
        if self.max_batches is not None:
            ends = ends[: max(self.max_batches - len(self.cuts), 0)]
        start = 0
        for end in ends:
            cut = _Cut(
                self.first_batch + len(self.cuts),
                int(queue_keys[start]),
                int(queue_keys[end - 1]),
                end - start,
                int(queue_clean[start:end].sum()),
            )
            self.cuts.append(cut)
            inside = (keys >= cut.low) & (keys <= cut.high)
            batch_ids[inside] = cut.batch_id
            if int(inside.sum()) < cut.rows:  # rows stored waiting before join the batch
                self._move_waiting(cut.batch_id, cut.low, cut.high)
            start = end
        self.queue_keys, self.queue_clean = queue_keys[start:], queue_clean[start:]
        return batch_ids

    def _move_waiting(self, batch_id: int, low: int, high: int) -> None:
        """Stored waiting rows (raw and clean) with keys from `low` to `high` into a batch."""
        for table in (raw_encounters, clean_encounters):
            self.conn.execute(
                table.update()
                .where(table.c.batch_id == WAITING_BATCH, table.c.encounter_id.between(low, high))
                .values(batch_id=batch_id)
            )

    def _reopen(self) -> None:
        """Undo the early batches: their rows wait again, for `finish` to cut."""
        if self.cuts:
            for table in (raw_encounters, clean_encounters, quarantine):
                self.conn.execute(
                    table.update()
                    .where(table.c.batch_id >= self.first_batch)
                    .values(batch_id=WAITING_BATCH)
                )
        self.early = False
        self.cuts.clear()
        self.cut_quarantined.clear()
        self.queue_keys = np.empty(0, dtype=np.int64)
        self.queue_clean = np.empty(0, dtype=bool)

    def _store_rows(
        self, chunk: _Chunk, batch: int | np.ndarray, rows: pd.Index
    ) -> tuple[int, int]:
        """Store the chunk's `rows` (raw, clean, quarantined) under `batch` (one for all, or
        one per row): the counts (clean, quarantined)."""
        batch_of = pd.Series(batch, index=rows, dtype="int64")
        fixes = chunk.fixes[rows].to_numpy()
        new = rows[~fixes]
        clean = chunk.checked.clean.loc[rows.intersection(chunk.checked.clean.index)]
        failed = chunk.checked.quarantined.loc[rows.intersection(chunk.checked.quarantined.index)]
        self._insert_raw(chunk, new, batch_of)
        self._insert_clean(chunk, clean, batch_of)
        records = [
            _quarantine_record(chunk, index, int(batch_of[index]), INVALID_VALUES, reason)
            for index, reason in failed["reason"].items()
        ]
        if records:
            self.conn.execute(quarantine.insert(), records)
        return len(clean), len(failed)

    def refusal(self) -> IngestReport:
        return IngestReport(
            rows_in=self.rows_in,
            accepted=0,
            quarantined={},
            already_present=0,
            deferred=0,
            corrections=0,
            normalized=dict(self.normalized),
            quarantine_share=self.share,
            problems=dict(self.problems.most_common()),
            refused=True,
        )

    def finish(self) -> IngestReport:
        """Cut the waiting rows (this extract's and earlier ones') into training batches, in
        encounter_id order, so batches come out as if the extracts had arrived as one (after
        the batches closed early, which took the queue's first rows)."""
        conn = self.conn
        new_batches: list[Batch] = []
        if self.holdout.rows:
            new_batches.append(self._record_batch(HOLDOUT_BATCH, "holdout", self.holdout))
        keys, clean, fixes = (
            (np.concatenate(parts) for parts in zip(*self.training, strict=True))
            if self.training
            else (np.empty(0, dtype=np.int64), np.empty(0, dtype=bool), np.empty(0, dtype=bool))
        )
        queue_keys, queue_clean = self._waiting(keys[fixes])
        ends, rest = cut_batches(queue_clean, self.batch_size, self.min_batch_rows)
        room = None if self.max_batches is None else self.max_batches - len(self.cuts)
        kept = ends if room is None else ends[:room]
        next_id = self.first_batch + len(self.cuts)
        starts = [0, *kept][: len(kept)]
        cuts = [
            (next_id + n, start, end)
            for n, (start, end) in enumerate(zip(starts, kept, strict=True))
        ]
        stop = kept[-1] if kept else 0
        capped = len(kept) < len(ends)
        assert capped or stop == rest
        boundary = int(queue_keys[stop]) if stop < len(queue_keys) else 2**63 - 1
        later = keys >= boundary
        # Rows of this extract past the batches that do not wait: all of them when capped by
        # `max_batches` (they come with the next ingest of the extract), else the fixes (a fix
        # waits unstored: its encounter's raw row is stored already, in its old batch).
        dropped = later if capped else later & fixes
        self._drop(keys[dropped], keys[dropped & ~fixes])
        ranges = [(c.batch_id, c.low, c.high) for c in self.cuts] + [
            (batch_id, int(queue_keys[start]), int(queue_keys[end - 1]))
            for batch_id, start, end in cuts
        ]
        quarantined_in = self._move_quarantine(ranges, keys[dropped])
        for cut in self.cuts:
            quarantined = self.cut_quarantined[cut.batch_id] + quarantined_in.get(cut.batch_id, 0)
            tally = _Tally(cut.low, cut.high, cut.rows, cut.accepted, quarantined)
            new_batches.append(self._record_batch(cut.batch_id, "train", tally))
        for batch_id, start, end in cuts:
            low, high = int(queue_keys[start]), int(queue_keys[end - 1])
            self._move_waiting(batch_id, low, high)
            accepted = int(queue_clean[start:end].sum())
            tally = _Tally(low, high, end - start, accepted, quarantined_in.get(batch_id, 0))
            new_batches.append(self._record_batch(batch_id, "train", tally))
        for key in keys[fixes & ~later]:
            self.fix_records[int(key)]["applied_to_batch"] = _batch_of(int(key), ranges)
        stored = ~later
        self.quarantined[INVALID_VALUES] += int((~clean & (stored | ~capped)).sum())
        deferred = int(later.sum()) if capped else int((later & clean).sum())
        accepted = self.holdout.accepted + int((clean & stored).sum())
        unstored = {id(r) for r in self.fix_records.values() if r["applied_to_batch"] is None}
        records = [r for r in self.correction_rows if id(r) not in unstored]
        if records:
            conn.execute(corrections.insert(), records)
        waiting_now = conn.execute(
            sa.select(sa.func.count())
            .select_from(raw_encounters)
            .where(raw_encounters.c.batch_id == WAITING_BATCH)
        ).scalar_one()
        return IngestReport(
            rows_in=self.rows_in,
            accepted=accepted,
            quarantined={code: n for code, n in self.quarantined.items() if n},
            already_present=self.present,
            deferred=deferred,
            corrections=len(records),
            new_batches=new_batches,
            normalized=dict(self.normalized),
            quarantine_share=self.share,
            problems=dict(self.problems.most_common()),
            waiting=int(waiting_now),
        )

    def _waiting(self, fixes: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
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
        for part in self.conn.execute(query).partitions():
            keys.append(np.fromiter((int(k) for k, _ in part), dtype=np.int64, count=len(part)))
            clean.append(np.fromiter((bool(c) for _, c in part), dtype=bool, count=len(part)))
        all_keys, all_clean = np.concatenate(keys), np.concatenate(clean)
        order = np.argsort(all_keys, kind="stable")
        return all_keys[order], all_clean[order]

    def _drop(self, keys: np.ndarray, raw_keys: np.ndarray) -> None:
        """Delete this extract's waiting rows `keys` (clean rows; raw rows of `raw_keys`)."""
        for table, which in ((clean_encounters, keys), (raw_encounters, raw_keys)):
            for start in range(0, len(which), 1000):
                part = [int(k) for k in which[start : start + 1000]]
                self.conn.execute(
                    table.delete().where(
                        table.c.batch_id == WAITING_BATCH, table.c.encounter_id.in_(part)
                    )
                )

    def _move_quarantine(
        self, ranges: list[tuple[int, int, int]], dropped: np.ndarray
    ) -> dict[int, int]:
        """Waiting quarantined rows into the batch (batch, lowest key, highest key) their key
        falls in (the rows of `dropped` keys deleted): how many each batch received."""
        conn = self.conn
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

    def _record_batch(self, batch_id: int, kind: str, tally: _Tally) -> Batch:
        """Record the batch (the holdout grows with every extract's holdout patients)."""
        conn = self.conn
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


def _batch_of(key: int, ranges: list[tuple[int, int, int]]) -> int | None:
    """The batch among `ranges` (batch, lowest key, highest key) whose range holds `key`."""
    for batch_id, low, high in ranges:
        if low <= key <= high:
            return batch_id
    return None


def _quarantine_record(
    chunk: _Chunk, index: int, batch_id: int | None, code: str, reason: str
) -> dict[str, object]:
    return {
        "encounter_id": chunk.raw.at[index, "encounter_id"],
        "batch_id": batch_id,
        "reason_code": code,
        "reason": reason,
        "row_hash": chunk.hashes[index],
        "raw": json.dumps(chunk.raw.loc[index].to_dict()),
    }


def _record_ingest(conn: Connection, source_name: str, report: IngestReport) -> None:
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
            report=json.dumps(_report_dict(report)),
        )
    )


def _report_dict(report: IngestReport) -> dict[str, object]:
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


def _sqlite_insert(conn: Connection, table: sa.Table, frame: pd.DataFrame) -> None:
    """`frame`'s rows (its columns those of `table`) into `table`, on SQLite."""
    # A checked-out connection always holds its DBAPI connection (None only once invalidated).
    cursor = conn.connection.dbapi_connection.cursor()  # type: ignore[union-attr]
    # Tuples straight to sqlite3 (a Series yields Python ints and str): SQLAlchemy's
    # executemany of dicts spent four fifths of an ingest building parameters.
    columns = ", ".join(f'"{c}"' for c in frame.columns)
    marks = ", ".join("?" * len(frame.columns))
    cursor.executemany(
        f'INSERT INTO "{table.name}" ({columns}) VALUES ({marks})',
        frame.itertuples(index=False, name=None),
    )


@dataclass(frozen=True)
class _Copy:
    """Rows for one COPY: the table, its columns in the text's order, the text (COPY's text
    format)."""

    table: str
    columns: list[str]
    text: str


def _copy_all(cursor: psycopg.Cursor[Any], copies: list[_Copy]) -> None:
    """COPY each text into its table."""
    for rows in copies:
        columns = ", ".join(f'"{c}"' for c in rows.columns)
        with cursor.copy(f'COPY "{rows.table}" ({columns}) FROM STDIN') as copy:
            copy.write(rows.text)


def _copy_text(frame: pd.DataFrame) -> str:
    """`frame` (no missing values) in COPY's text format, sent whole, for rows whose texts are
    no COPY lines (`_Plan._copy_texts`): psycopg's write_row is Python per row, and pandas'
    to_csv took three times as long as joining the columns' texts (a column is escaped only
    when it holds a character the format reserves)."""
    columns = []
    for name in frame.columns:
        column = frame[name]
        if column.dtype == object:
            values = column.tolist()
        else:  # numbers: each distinct value written once (a column holds few)
            codes, distinct = pd.factorize(column)
            values = np.array(list(map(str, distinct.tolist())), dtype=object)[codes].tolist()
        joined = "".join(values)
        if any(c in joined for c in "\\\t\n\r"):
            values = [v.translate(_COPY_ESCAPES) for v in values]
        columns.append(values)
    return "\n".join(map("\t".join, zip(*columns, strict=True))) + "\n"


_COPY_ESCAPES = str.maketrans({"\\": "\\\\", "\t": "\\t", "\n": "\\n", "\r": "\\r"})


def training_batches(url: str) -> list[int]:
    with engine_for(url).connect() as conn:
        query = sa.select(batches.c.batch_id).where(batches.c.kind == "train")
        return sorted(int(b) for b in conn.execute(query).scalars())


def untrained_batches(url: str, model_name: str) -> list[int]:
    """Training batches lineage `model_name` has not trained yet, in training order."""
    with engine_for(url).connect() as conn:
        trained = trained_versions(conn, model_name)
    return [b for b in training_batches(url) if b not in trained]


def lineage_head(url: str, model_name: str) -> tuple[int, str] | None:
    """(batch, version) of the last batch lineage `model_name` trained: the next step's parent."""
    with engine_for(url).connect() as conn:
        trained = trained_versions(conn, model_name)
    if not trained:
        return None
    last = max(trained)
    return last, trained[last]


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


def mark_trained(
    url: str, model_name: str, batch_id: int, model_version: str, run_id: str, lease: Lease
) -> None:
    """Record that lineage `model_name` trained a batch into a version, if `lease` still holds
    the training lease (LeaseLost otherwise, and nothing recorded). Recording the version already
    recorded does nothing; another version for the batch raises AlreadyTrained."""
    with transaction(url) as conn:
        lease.check(conn)
        done = conn.execute(
            sa.select(trainings.c.model_version).where(
                trainings.c.model_name == model_name, trainings.c.batch_id == batch_id
            )
        ).scalar()
        if done is not None:
            if str(done) != model_version:
                raise AlreadyTrained(model_name, batch_id, str(done), model_version)
            return
        conn.execute(
            trainings.insert().values(
                model_name=model_name,
                batch_id=batch_id,
                model_version=model_version,
                run_id=run_id,
                trained_at=datetime.now(UTC),
            )
        )


class AlreadyTrained(RuntimeError):
    """The warehouse records another version for the batch: this one must not be adopted."""

    def __init__(self, model_name: str, batch_id: int, recorded: str, offered: str) -> None:
        super().__init__(
            f"{model_name} batch {batch_id} is recorded as trained into version {recorded}, "
            f"not {offered}"
        )
        self.recorded = recorded


def recorded_version(url: str, model_name: str, batch_id: int) -> str | None:
    """The version lineage `model_name` recorded for a batch, if any."""
    with engine_for(url).connect() as conn:
        return trained_versions(conn, model_name).get(batch_id)


def stored_encounter_ids(url: str) -> set[str]:
    """The encounter_id of every encounter stored so far, as text (`N`, its canonical form)."""
    with engine_for(url).connect() as conn:
        return {str(k) for k in conn.execute(sa.select(raw_encounters.c.encounter_id)).scalars()}


class LeaseBusy(RuntimeError):
    """Another run holds the training lease."""

    def __init__(self, holder: str) -> None:
        super().__init__(f"the training lease is held by {holder}")
        self.holder = holder


class LeaseLost(RuntimeError):
    """This run no longer holds the training lease: it must not register or record anything."""


@dataclass
class Lease:
    """The training lease a run holds, and the fencing token it took when acquiring it."""

    url: str
    token: int
    holding: Callable[[], bool]  # whether the lock (PostgreSQL: its session) is still ours

    def check(self, conn: Connection | None = None) -> None:
        """Raise LeaseLost unless the lock is still held and no later run took a token.
        Within `conn`'s transaction (mark_trained), the token cannot move before its commit."""
        if not self.holding():
            raise LeaseLost(
                f"the training lease (token {self.token}) was lost: its database session ended"
            )
        if conn is None:
            with engine_for(self.url).connect() as own:
                current = _fencing_token(own)
        else:
            current = _fencing_token(conn)
        if current != self.token:
            raise LeaseLost(
                f"the training lease was taken over: token {current} is current, this run holds "
                f"{self.token}"
            )


def _fencing_token(conn: Connection) -> int | None:
    query = sa.select(leases.c.fencing_token).where(leases.c.name == "training")
    return conn.execute(query).scalar()


@contextmanager
def training_lease(url: str, holder: str, wait_seconds: float) -> Iterator[Lease]:
    """Hold the warehouse's training lease: one training run at a time, whoever starts it.

    PostgreSQL: a session advisory lock; SQLite: an exclusive flock on a file beside the
    database. Both die with the process, so a killed run never leaves the lease taken. Waits
    up to `wait_seconds`, then raises LeaseBusy naming the holder. Acquiring takes the next
    fencing token: the run checks it (`Lease.check`) before it registers a version and when it
    records one, so a run that lost its session, or whose lease another run took over, stops.
    """
    deadline = time.monotonic() + wait_seconds
    with _lease_lock(url) as (try_lock, holding):
        while not try_lock():
            if time.monotonic() >= deadline:
                raise LeaseBusy(_lease_holder(url))
            time.sleep(0.5)
        description = f"{holder} (pid {os.getpid()} on {socket.gethostname()})"
        with transaction(url) as conn:
            token = (_fencing_token(conn) or 0) + 1
            values = {
                "holder": description,
                "acquired_at": datetime.now(UTC),
                "fencing_token": token,
            }
            taken = conn.execute(
                leases.update().where(leases.c.name == "training").values(**values)
            )
            if taken.rowcount == 0:
                conn.execute(leases.insert().values(name="training", **values))
        log.info("training lease taken by %s, fencing token %s", description, token)
        yield Lease(url, token, holding)


@contextmanager
def _lease_lock(url: str) -> Iterator[tuple[Callable[[], bool], Callable[[], bool]]]:
    """A non-blocking `try_lock()` and a `holding()` check; the lock (if taken) is released on
    exit."""
    engine = engine_for(url)
    if engine.dialect.name == "postgresql":
        with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:

            def try_pg() -> bool:
                query = sa.text("SELECT pg_try_advisory_lock(:id)")
                return bool(conn.execute(query, {"id": _LEASE_ID}).scalar())

            def holding_pg() -> bool:
                held = sa.text(
                    "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND granted"
                    " AND pid = pg_backend_pid() AND classid = 0 AND objid = :id"
                )
                try:
                    return bool(conn.execute(held, {"id": _LEASE_ID}).scalar())
                except sa.exc.DBAPIError:  # the session is gone (terminated, server restart)
                    return False

            try:
                yield try_pg, holding_pg
            finally:
                # A lost session holds no lock: nothing to release.
                with suppress(sa.exc.DBAPIError, sa.exc.PendingRollbackError):
                    conn.execute(sa.text("SELECT pg_advisory_unlock_all()"))
        return
    database = sa.make_url(url).database or "warehouse"
    with open(f"{database}.training.lock", "a") as handle:

        def try_file() -> bool:
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                return False
            return True

        yield try_file, lambda: True  # closing the file releases the flock; only we close it


def _lease_holder(url: str) -> str:
    with engine_for(url).connect() as conn:
        holder = conn.execute(
            sa.select(leases.c.holder).where(leases.c.name == "training")
        ).scalar()
    return str(holder) if holder else "another run"
