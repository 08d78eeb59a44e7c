"""The data warehouse: raw, clean and quarantined encounters and batch bookkeeping.

The same SQLAlchemy code runs on PostgreSQL and SQLite. Ingest is idempotent, keyed on
`encounter_id`; on PostgreSQL rows go in with COPY. The last `HOLDOUT_FRACTION` of the first
source by `encounter_id` is batch 0, the fixed holdout; the rest arrives in batches 1, 2, ...
"""

from __future__ import annotations

import fcntl
import json
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from functools import cache
from pathlib import Path

import pandas as pd
import sqlalchemy as sa
from sqlalchemy.engine import Connection, Engine

from readmission.schema import COLUMNS, ID_COLUMNS, INTEGER_COLUMNS
from readmission.validation import validate

HOLDOUT_BATCH = 0
_LOCK_ID = 7_296_001  # PostgreSQL advisory lock serialising ingests
_SCHEMA_LOCK_ID = 7_296_002  # ... and schema creation

metadata = sa.MetaData()


def _typed_columns() -> list[sa.Column]:
    integers = {*ID_COLUMNS, *INTEGER_COLUMNS}
    return [
        sa.Column(c, sa.BigInteger if c in integers else sa.Text, nullable=False)
        for c in COLUMNS
        if c != "encounter_id"
    ]


raw_encounters = sa.Table(
    "raw_encounters",
    metadata,
    sa.Column("encounter_id", sa.Text, primary_key=True),
    sa.Column("batch_id", sa.Integer, nullable=False, index=True),
    *(sa.Column(c, sa.Text, nullable=False) for c in COLUMNS if c != "encounter_id"),
)
clean_encounters = sa.Table(
    "clean_encounters",
    metadata,
    sa.Column("encounter_id", sa.BigInteger, primary_key=True),
    sa.Column("batch_id", sa.Integer, nullable=False, index=True),
    *_typed_columns(),
)
quarantine = sa.Table(
    "quarantined_encounters",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("encounter_id", sa.Text, nullable=False, index=True),
    sa.Column("batch_id", sa.Integer, nullable=False, index=True),
    sa.Column("reason", sa.Text, nullable=False),
    sa.Column("raw", sa.Text, nullable=False),
)
batches = sa.Table(
    "batches",
    metadata,
    sa.Column("batch_id", sa.Integer, primary_key=True, autoincrement=False),
    sa.Column("kind", sa.String(8), nullable=False),
    sa.Column("first_encounter_id", sa.Text, nullable=False),
    sa.Column("last_encounter_id", sa.Text, nullable=False),
    sa.Column("rows", sa.Integer, nullable=False),
    sa.Column("accepted", sa.Integer, nullable=False),
    sa.Column("quarantined", sa.Integer, nullable=False),
    sa.Column("ingested_at", sa.DateTime(timezone=True), nullable=False),
    sa.Column("trained_at", sa.DateTime(timezone=True)),
    sa.Column("model_version", sa.String(32)),
    sa.Column("run_id", sa.String(64)),
)
settings_table = sa.Table(
    "warehouse_settings",
    metadata,
    sa.Column("key", sa.String(64), primary_key=True),
    sa.Column("value", sa.Text, nullable=False),
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


@dataclass(frozen=True)
class IngestReport:
    new_batches: list[Batch]
    already_present: int  # source rows skipped because their encounter_id was ingested before

    @property
    def rows_added(self) -> int:
        return sum(b.rows for b in self.new_batches)


@cache
def engine_for(url: str) -> Engine:
    """One engine per URL per process, with the schema created on first use."""
    ensure_sqlite_directory(url)
    engine = sa.create_engine(url, pool_pre_ping=True)
    create_schema(engine)
    return engine


def create_schema(engine: Engine) -> None:
    """Create the missing tables, safe when several processes open a fresh warehouse at once.

    `create_all` checks, then creates: two processes can both see a table missing and the
    second CREATE fails. PostgreSQL serialises them with a transaction-scoped advisory lock;
    SQLite with an exclusive lock on a file beside the database (its own locking does not
    cover the check), so the second process finds the tables there and creates nothing.
    """
    if engine.dialect.name == "postgresql":
        with engine.begin() as conn:
            conn.execute(sa.text("SELECT pg_advisory_xact_lock(:id)"), {"id": _SCHEMA_LOCK_ID})
            metadata.create_all(conn)
        return
    database = engine.url.database
    if engine.dialect.name != "sqlite" or database in (None, "", ":memory:"):
        metadata.create_all(engine)
        return
    with open(f"{database}.schema-lock", "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # released when the file is closed
        metadata.create_all(engine)


def ensure_sqlite_directory(url: str) -> None:
    """SQLite creates the file but not its folder: make the folder of a file URL exist."""
    parsed = sa.make_url(url)
    if parsed.drivername.startswith("sqlite") and parsed.database not in (None, "", ":memory:"):
        Path(parsed.database).parent.mkdir(parents=True, exist_ok=True)


@contextmanager
def transaction(url: str) -> Iterator[Connection]:
    with engine_for(url).begin() as conn:
        if conn.dialect.name == "postgresql":
            conn.execute(sa.text("SELECT pg_advisory_xact_lock(:id)"), {"id": _LOCK_ID})
        yield conn


def ingest(
    url: str,
    source: pd.DataFrame,
    batch_size: int,
    holdout_fraction: float,
    max_batches: int | None = None,
) -> IngestReport:
    """Store the rows of `source` not stored yet: the holdout, then up to `max_batches` batches.

    `source` holds raw text rows sorted by encounter_id. Replaying a source adds nothing.
    """
    with transaction(url) as conn:
        known = set(conn.execute(sa.select(raw_encounters.c.encounter_id)).scalars())
        ids = source["encounter_id"].astype(str)
        fresh = source[~ids.isin(known)]
        holdout_from = _holdout_start(conn, source, holdout_fraction)
        numeric = pd.to_numeric(fresh["encounter_id"], errors="coerce")
        in_holdout = numeric >= holdout_from
        new: list[Batch] = []
        if in_holdout.any():
            new.append(_store_batch(conn, HOLDOUT_BATCH, "holdout", fresh[in_holdout]))
        train = fresh[~in_holdout]
        next_id = (conn.execute(sa.select(sa.func.max(batches.c.batch_id))).scalar() or 0) + 1
        for start in range(0, len(train), batch_size):
            if max_batches is not None and start // batch_size >= max_batches:
                break
            chunk = train.iloc[start : start + batch_size]
            new.append(_store_batch(conn, next_id, "train", chunk))
            next_id += 1
        return IngestReport(new_batches=new, already_present=len(source) - len(fresh))


def _holdout_start(conn: Connection, source: pd.DataFrame, fraction: float) -> float:
    """The encounter_id where the holdout starts, fixed by the first source ever ingested."""
    stored = conn.execute(
        sa.select(settings_table.c.value).where(settings_table.c.key == "holdout_from")
    ).scalar()
    if stored is not None:
        return float(stored)
    ids = pd.to_numeric(source["encounter_id"], errors="coerce").dropna().sort_values()
    cut = int(len(ids) * (1 - fraction))
    start = float(ids.iloc[cut]) if 0 < cut < len(ids) else float("inf")
    conn.execute(settings_table.insert().values(key="holdout_from", value=repr(start)))
    return start


def _store_batch(conn: Connection, batch_id: int, kind: str, rows: pd.DataFrame) -> Batch:
    checked = validate(rows)
    raw = rows.drop_duplicates("encounter_id")
    _bulk_insert(conn, raw_encounters, raw.assign(batch_id=batch_id))
    _bulk_insert(conn, clean_encounters, checked.clean.assign(batch_id=batch_id))
    bad = checked.quarantined
    if len(bad):
        conn.execute(
            quarantine.insert(),
            [
                {
                    "encounter_id": str(r["encounter_id"]),
                    "batch_id": batch_id,
                    "reason": r["reason"],
                    "raw": json.dumps({c: r[c] for c in COLUMNS}),
                }
                for r in bad.to_dict("records")
            ],
        )
    batch = Batch(
        batch_id,
        kind,
        str(rows["encounter_id"].iloc[0]),
        str(rows["encounter_id"].iloc[-1]),
        len(rows),
        len(checked.clean),
        len(bad),
        False,
        None,
    )
    conn.execute(
        batches.insert().values(
            batch_id=batch_id,
            kind=kind,
            first_encounter_id=batch.first_encounter_id,
            last_encounter_id=batch.last_encounter_id,
            rows=batch.rows,
            accepted=batch.accepted,
            quarantined=batch.quarantined,
            ingested_at=datetime.now(UTC),
        )
    )
    return batch


def _bulk_insert(conn: Connection, table: sa.Table, frame: pd.DataFrame) -> None:
    if frame.empty:
        return
    frame = frame[[c.name for c in table.columns]]
    if conn.dialect.name != "postgresql":
        conn.execute(table.insert(), frame.to_dict("records"))
        return
    columns = ", ".join(f'"{c}"' for c in frame.columns)
    cursor = conn.connection.dbapi_connection.cursor()  # type: ignore[union-attr]
    with cursor.copy(f'COPY "{table.name}" ({columns}) FROM STDIN') as copy:
        for row in frame.itertuples(index=False, name=None):
            copy.write_row(row)


def batch_list(url: str) -> list[Batch]:
    with engine_for(url).connect() as conn:
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
                r["trained_at"] is not None,
                r["model_version"],
            )
            for r in rows
        ]


def untrained_batches(url: str) -> list[int]:
    return [b.batch_id for b in batch_list(url) if b.kind == "train" and not b.trained]


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
    query = sa.select(quarantine.c.encounter_id, quarantine.c.batch_id, quarantine.c.reason)
    if batch_id is not None:
        query = query.where(quarantine.c.batch_id == batch_id)
    with engine_for(url).connect() as conn:
        return pd.read_sql(query.order_by(quarantine.c.id), conn)


def mark_trained(url: str, batch_id: int, model_version: str, run_id: str) -> bool:
    """Record that a batch was trained into a version; False if it was already marked."""
    with transaction(url) as conn:
        done = conn.execute(
            batches.update()
            .where(batches.c.batch_id == batch_id, batches.c.trained_at.is_(None))
            .values(trained_at=datetime.now(UTC), model_version=model_version, run_id=run_id)
        )
        return done.rowcount == 1


def row_counts(url: str) -> dict[str, int]:
    with engine_for(url).connect() as conn:
        return {
            t.name: conn.execute(sa.select(sa.func.count()).select_from(t)).scalar_one()
            for t in (raw_encounters, clean_encounters, quarantine)
        }
