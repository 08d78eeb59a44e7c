"""One ingest worked out chunk by chunk inside its transaction: each chunk validated, hashed,
routed (new, stored before, a correction, quarantined), its rows stored, training batches closed
as their rows are read or cut at the end."""

from __future__ import annotations

import json
from collections import Counter
from datetime import UTC, datetime

import numpy as np
import pandas as pd
import sqlalchemy as sa
from sqlalchemy.engine import Connection

from readmission.data import holdout
from readmission.data.batch_rows import (
    Cut,
    Tally,
    batch_of,
    cut_batches,
    drop_waiting,
    move_waiting,
    move_waiting_quarantine,
    record_batch,
    waiting_rows,
)
from readmission.data.ingest_report import (
    DUPLICATE_ID,
    INVALID_ID,
    INVALID_VALUES,
    IngestReport,
)
from readmission.data.inventory import Batch
from readmission.data.row_copy import (
    Chunk,
    HeldRows,
    RowWriter,
    numbers_as_written,
    plain_texts,
    quarantine_record,
    row_hashes,
    row_texts,
)
from readmission.data.tables import (
    HOLDOUT_BATCH,
    WAITING_BATCH,
    batches,
    clean_encounters,
    corrections,
    quarantine,
    raw_encounters,
)
from readmission.data.validation import ID_RULE, as_text, normalize, parse_ids, validate
from readmission.data.warehouse import stored_clean_ids, stored_hashes, stored_raw_rows
from readmission.schema import COLUMNS


class Plan:
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
        self.holdout = Tally()
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
        self.cuts: list[Cut] = []
        self.cut_quarantined: Counter[int] = Counter()  # rows quarantined straight into a cut
        # The queue not cut yet: the stored waiting rows, then this extract's training rows.
        self.queue_keys, self.queue_clean = waiting_rows(self.conn, np.empty(0, dtype=np.int64))
        self.highest = -1  # this extract's highest training key so far
        # Held back while batches close early: at most one batch's worth, then they wait.
        self.held = HeldRows(max(batch_size, min_batch_rows))

        self.writer = RowWriter(conn)  # COPY on PostgreSQL, in the background

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
        texts = row_texts(raw, keys)
        plain = plain_texts(texts)
        chunk = Chunk(
            raw,
            keys,
            patients,
            texts,
            plain,
            plain and numbers_as_written(raw, checked.clean),
            row_hashes(texts),
            checked,
            pd.Series(False, index=raw.index),
        )
        self.writer.settle()  # the previous chunk's rows are in: the connection is free
        self._route(chunk, repeated)
        self.writer.send()

    def _route(self, chunk: Chunk, repeated: np.ndarray) -> None:
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
            records.append(quarantine_record(chunk, index, None, code, reason))
        if records:
            self.conn.execute(quarantine.insert(), records)

        unique = raw.index[~bad_id & ~duplicate]
        stored = stored_hashes(self.conn, [int(k) for k in keys[unique]])
        seen = keys[unique].map(stored)
        same = seen.notna() & (seen == hashes[unique])
        self.present += int(same.sum())
        changed = unique[(seen.notna() & ~same).to_numpy()]
        if len(changed):
            self._corrections(chunk, changed)
        fresh = unique[seen.isna().to_numpy()].append(raw.index[chunk.fixes.to_numpy()])
        self._store_fresh(chunk, fresh.sort_values())

    def _corrections(self, chunk: Chunk, changed: pd.Index) -> None:
        """Rows of stored encounters with new content: recorded once each, never rewriting a
        batch; a fix of a quarantined encounter that now validates becomes a new clean row."""
        ids = [int(k) for k in chunk.keys[changed]]
        stored = stored_raw_rows(self.conn, ids)
        clean_ids = stored_clean_ids(self.conn, ids)
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

    def _store_fresh(self, chunk: Chunk, fresh: pd.Index) -> None:
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
            hold = (batch_ids == WAITING_BATCH) if self.early else np.zeros(len(keys), bool)
            self._store_rows(chunk, batch_ids[~hold], training[~hold])
            if self.held.add(chunk, training[hold]):
                self._release(WAITING_BATCH)
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
            cut = Cut(
                self.first_batch + len(self.cuts),
                int(queue_keys[start]),
                int(queue_keys[end - 1]),
                end - start,
                int(queue_clean[start:end].sum()),
            )
            self.cuts.append(cut)
            inside = (keys >= cut.low) & (keys <= cut.high)
            batch_ids[inside] = cut.batch_id
            released = self._release(cut.batch_id, cut.low, cut.high)
            if int(inside.sum()) + released < cut.rows:  # rows stored waiting join the batch
                move_waiting(self.conn, cut.batch_id, cut.low, cut.high)
            start = end
        self.queue_keys, self.queue_clean = queue_keys[start:], queue_clean[start:]
        return batch_ids

    def _reopen(self) -> None:
        """Undo the early batches: their rows wait again, for `finish` to cut."""
        self._release(WAITING_BATCH)
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

    def _release(self, batch_id: int, low: int = -(2**63), high: int = 2**63 - 1) -> int:
        """Store the held rows with keys from `low` to `high` under `batch_id`: how many."""
        released = 0
        for part, rows in self.held.take(low, high):
            _, failed = self._store_rows(part, batch_id, rows)
            if batch_id != WAITING_BATCH:
                self.cut_quarantined[batch_id] += failed
            released += len(rows)
        return released

    def _store_rows(self, chunk: Chunk, batch: int | np.ndarray, rows: pd.Index) -> tuple[int, int]:
        """Store the chunk's `rows` (raw, clean, quarantined) under `batch` (one for all, or
        one per row): the counts (clean, quarantined)."""
        batch_of = pd.Series(batch, index=rows, dtype="int64")
        fixes = chunk.fixes[rows].to_numpy()
        new = rows[~fixes]
        clean = chunk.checked.clean.loc[rows.intersection(chunk.checked.clean.index)]
        failed = chunk.checked.quarantined.loc[rows.intersection(chunk.checked.quarantined.index)]
        self.writer.insert_raw(chunk, new, batch_of)
        self.writer.insert_clean(chunk, clean, batch_of)
        records = [
            quarantine_record(chunk, index, int(batch_of[index]), INVALID_VALUES, reason)
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
        # The rows still held wait, stored, for the cut below; sent from this thread, since
        # `ingest` closed the writer before it knew the extract was not refused.
        self._release(WAITING_BATCH)
        self.writer.flush()
        new_batches: list[Batch] = []
        if self.holdout.rows:
            new_batches.append(record_batch(self.conn, HOLDOUT_BATCH, "holdout", self.holdout))
        keys, clean, fixes = (
            (np.concatenate(parts) for parts in zip(*self.training, strict=True))
            if self.training
            else (np.empty(0, dtype=np.int64), np.empty(0, dtype=bool), np.empty(0, dtype=bool))
        )
        queue_keys, queue_clean = waiting_rows(self.conn, keys[fixes])
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
        drop_waiting(self.conn, keys[dropped], keys[dropped & ~fixes])
        ranges = [(c.batch_id, c.low, c.high) for c in self.cuts] + [
            (batch_id, int(queue_keys[start]), int(queue_keys[end - 1]))
            for batch_id, start, end in cuts
        ]
        quarantined_in = move_waiting_quarantine(self.conn, ranges, keys[dropped])
        for cut in self.cuts:
            quarantined = self.cut_quarantined[cut.batch_id] + quarantined_in.get(cut.batch_id, 0)
            tally = Tally(cut.low, cut.high, cut.rows, cut.accepted, quarantined)
            new_batches.append(record_batch(self.conn, cut.batch_id, "train", tally))
        for batch_id, start, end in cuts:
            low, high = int(queue_keys[start]), int(queue_keys[end - 1])
            move_waiting(self.conn, batch_id, low, high)
            accepted = int(queue_clean[start:end].sum())
            tally = Tally(low, high, end - start, accepted, quarantined_in.get(batch_id, 0))
            new_batches.append(record_batch(self.conn, batch_id, "train", tally))
        for key in keys[fixes & ~later]:
            self.fix_records[int(key)]["applied_to_batch"] = batch_of(int(key), ranges)
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
