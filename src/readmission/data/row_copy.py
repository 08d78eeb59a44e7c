"""An extract's rows as text and on their way into the warehouse: each row's text and content
hash, whether COPY can take those texts as they are, and the writer that stores a chunk's rows
(SQLite at once; PostgreSQL by COPY, sent in the background)."""

from __future__ import annotations

import hashlib
import json
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
import psycopg
import sqlalchemy as sa
from sqlalchemy.engine import Connection

from readmission.data.tables import (
    clean_encounters,
    raw_encounters,
)
from readmission.data.validation import Validated
from readmission.schema import COLUMNS, ID_COLUMNS, INTEGER_COLUMNS

# Between a row's cells in the text its hash digests. Stored hashes are compared on replay with
# those of earlier releases: never change it.
UNIT_SEPARATOR = "\x1f"


def row_texts(raw: pd.DataFrame, keys: pd.Series) -> pd.Series:
    """Each row's cells (COLUMNS order) joined by the unit separator, its encounter_id written
    canonically: the text its hash digests."""
    ids = keys.astype(str).where(keys.notna(), raw["encounter_id"])
    # Columns as lists zipped into rows: a third faster than itertuples' boxing per cell.
    columns = [(ids if c == "encounter_id" else raw[c]).tolist() for c in raw.columns]
    return pd.Series(
        list(map(UNIT_SEPARATOR.join, zip(*columns, strict=True))), index=raw.index, dtype=object
    )


def row_hashes(texts: pd.Series) -> pd.Series:
    """Content digest of each row, from its `row_texts`."""
    sha256 = hashlib.sha256
    return pd.Series(
        [sha256(text.encode()).hexdigest() for text in texts.tolist()],
        index=texts.index,
        dtype=object,
    )


def plain_texts(texts: pd.Series) -> bool:
    """True when no cell of these `row_texts` holds a character COPY's text format reserves or
    the unit separator: the texts are then COPY lines once their separators are tabs."""
    joined = "".join(texts.tolist())
    return joined.count(UNIT_SEPARATOR) == len(texts) * (len(COLUMNS) - 1) and not any(
        c in joined for c in "\\\t\n\r"
    )


def numbers_as_written(raw: pd.DataFrame, clean: pd.DataFrame) -> bool:
    """True when each number of the `clean` rows is written in `raw` as str() writes the typed
    value (no "5.0", " 5" or "05"): a clean row's COPY text is then its raw row's text."""
    for column in (*ID_COLUMNS, *INTEGER_COLUMNS):
        if column == "encounter_id":  # written canonically in row_texts
            continue
        codes, written = pd.factorize(raw.loc[clean.index, column])
        _, first = np.unique(codes, return_index=True)  # each distinct text's first row
        typed = clean[column].to_numpy()[first].tolist()
        if written.tolist() != list(map(str, typed)):
            return False
    return True


@dataclass
class Chunk:
    """One chunk of the extract, in encounter_id order, as the plan works through it."""

    raw: pd.DataFrame
    keys: pd.Series
    patients: pd.Series  # patient_nbr as parse_ids reads it
    texts: pd.Series  # row_texts
    plain: bool  # plain_texts: raw rows are COPYed from their texts
    clean_plain: bool  # and clean rows too: plain_texts and numbers_as_written
    hashes: pd.Series
    checked: Validated
    fixes: pd.Series  # corrections turning quarantined encounters into clean rows

    def take(self, rows: pd.Index) -> Chunk:
        """The chunk's `rows` alone (their labels kept): rows held back keep no more of it."""
        clean, failed = self.checked.clean, self.checked.quarantined
        return Chunk(
            self.raw.loc[rows],
            self.keys[rows],
            self.patients[rows],
            self.texts[rows],
            self.plain,
            self.clean_plain,
            self.hashes[rows],
            Validated(
                clean.loc[rows.intersection(clean.index)],
                failed.loc[rows.intersection(failed.index)],
                self.checked.problems,
            ),
            self.fixes[rows],
        )


class HeldRows:
    """An ordered extract's training rows read but in no closed batch yet, held back unstored
    while batches close early, so that they are written once, with their batch, instead of
    stored as waiting and moved by an UPDATE (at 200k rows those UPDATEs took 0.3-0.5 s of the
    client's wall time and a fifth of the server's CPU)."""

    def __init__(self, limit: int) -> None:
        self.limit = limit  # rows: past it (a batch short of clean rows runs on), all wait
        self.parts: list[Chunk] = []
        self.count = 0  # rows in `parts`

    def add(self, chunk: Chunk, rows: pd.Index) -> bool:
        """Hold the chunk's `rows`: whether more than `limit` rows are held now."""
        if len(rows):
            self.parts.append(chunk.take(rows))
            self.count += len(rows)
        return self.count > self.limit

    def take(self, low: int = -(2**63), high: int = 2**63 - 1) -> list[tuple[Chunk, pd.Index]]:
        """The held rows with keys from `low` to `high`, by part, held no more."""
        taken, kept = [], []
        for part in self.parts:
            keys = part.keys.to_numpy(dtype="int64")
            inside = (keys >= low) & (keys <= high)
            if inside.any():
                taken.append((part, part.raw.index[inside]))
            if not inside.all():
                kept.append(part.take(part.raw.index[~inside]))
        self.parts = kept
        self.count = sum(len(part.raw) for part in kept)
        return taken


def quarantine_record(
    chunk: Chunk, index: int, batch_id: int | None, code: str, reason: str
) -> dict[str, object]:
    return {
        "encounter_id": chunk.raw.at[index, "encounter_id"],
        "batch_id": batch_id,
        "reason_code": code,
        "reason": reason,
        "row_hash": chunk.hashes[index],
        "raw": json.dumps(chunk.raw.loc[index].to_dict()),
    }


class RowWriter:
    """Where an ingest's rows go: SQLite at once; PostgreSQL by COPY, a chunk's rows sent by a
    thread while the plan works on the next chunk."""

    def __init__(self, conn: Connection) -> None:
        self.conn = conn
        # PostgreSQL: a chunk's rows are sent (COPY) by a thread while the next chunk is read,
        # validated and hashed, so the server's work overlaps the client's; anything else on
        # the connection waits for it (`settle`). SQLite's connection stays in its thread.
        self.copier = (
            ThreadPoolExecutor(max_workers=1) if conn.dialect.name == "postgresql" else None
        )
        self.copies: list[Copy] = []  # this chunk's, sent at its end
        self.copying: Future[None] | None = None

    def settle(self) -> None:
        """Wait for the chunk being sent (its error raised here)."""
        if self.copying is not None:
            copying, self.copying = self.copying, None
            copying.result()

    def close(self) -> None:
        if self.copier is not None:
            self.copier.shutdown(wait=True)

    def insert(self, table: sa.Table, frame: pd.DataFrame) -> None:
        """Store `frame`'s rows into `table`: SQLite at once, PostgreSQL with the chunk's COPY."""
        if frame.empty:
            return
        frame = frame[[c.name for c in table.columns]]
        if self.copier is None:
            sqlite_insert(self.conn, table, frame)
        else:
            self.copies.append(Copy(table.name, list(frame.columns), copy_text(frame)))

    def copy_texts(
        self, table: sa.Table, chunk: Chunk, rows: pd.Index, after: dict[str, np.ndarray]
    ) -> None:
        """COPY the chunk's `rows` into `table` from their `row_texts` (COLUMNS) followed by
        the columns `after` (str objects). The hashed texts are COPY lines once the separators
        are tabs: half the time of joining each row's fifty cells again (`copy_text`), which
        took the biggest share of the client's time."""
        lines = chunk.texts[rows].to_numpy()
        for values in after.values():
            lines = lines + UNIT_SEPARATOR + values
        text = "\n".join(lines.tolist()).replace(UNIT_SEPARATOR, "\t") + "\n"
        self.copies.append(Copy(table.name, [*COLUMNS, *after], text))

    def insert_raw(self, chunk: Chunk, rows: pd.Index, batch_of: pd.Series) -> None:
        """Store the chunk's `rows` into raw_encounters, with their hashes and batches."""
        if rows.empty:
            return
        if self.copier is not None and chunk.plain:
            batch_ids = batch_of[rows].to_numpy().astype(str).astype(object)
            hashes = chunk.hashes[rows].to_numpy()
            self.copy_texts(
                raw_encounters, chunk, rows, {"row_hash": hashes, "batch_id": batch_ids}
            )
            return
        raw = chunk.raw.loc[rows].assign(
            encounter_id=chunk.keys[rows].astype("int64"),
            row_hash=chunk.hashes[rows],
            batch_id=batch_of[rows].to_numpy(),
        )
        self.insert(raw_encounters, raw)

    def insert_clean(self, chunk: Chunk, clean: pd.DataFrame, batch_of: pd.Series) -> None:
        """Store the chunk's typed `clean` rows into clean_encounters, with their batches."""
        if self.copier is not None and chunk.clean_plain and not clean.empty:
            batch_ids = batch_of[clean.index].to_numpy().astype(str).astype(object)
            self.copy_texts(clean_encounters, chunk, clean.index, {"batch_id": batch_ids})
            return
        self.insert(clean_encounters, clean.assign(batch_id=batch_of[clean.index].to_numpy()))

    def flush(self) -> None:
        """Send what is queued now, in this thread: after `close`, for the rows `finish`
        stores."""
        if queued := self._take_queued():
            copy_all(*queued)

    def send(self) -> None:
        """Start sending this chunk's rows (PostgreSQL), in the background."""
        if self.copier is not None and (queued := self._take_queued()):
            self.copying = self.copier.submit(copy_all, *queued)

    def _take_queued(self) -> tuple[psycopg.Cursor[Any], list[Copy]] | None:
        """A cursor and the COPYs queued so far, which are then no longer queued."""
        if not self.copies:
            return None
        copies, self.copies = self.copies, []
        return self.conn.connection.driver_connection.cursor(), copies  # type: ignore[union-attr]


def sqlite_insert(conn: Connection, table: sa.Table, frame: pd.DataFrame) -> None:
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
class Copy:
    """Rows for one COPY: the table, its columns in the text's order, the text (COPY's text
    format)."""

    table: str
    columns: list[str]
    text: str


def copy_all(cursor: psycopg.Cursor[Any], copies: list[Copy]) -> None:
    """COPY each text into its table."""
    for rows in copies:
        columns = ", ".join(f'"{c}"' for c in rows.columns)
        with cursor.copy(f'COPY "{rows.table}" ({columns}) FROM STDIN') as copy:
            copy.write(rows.text)


def copy_text(frame: pd.DataFrame) -> str:
    """`frame` (no missing values) in COPY's text format, sent whole, for rows whose texts are
    no COPY lines (`Plan._copy_texts`): psycopg's write_row is Python per row, and pandas'
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
            values = [v.translate(COPY_ESCAPES) for v in values]
        columns.append(values)
    return "\n".join(map("\t".join, zip(*columns, strict=True))) + "\n"


COPY_ESCAPES = str.maketrans({"\\": "\\\\", "\t": "\\t", "\n": "\\n", "\r": "\\r"})
