"""The prediction log: every prediction served, written to the warehouse in the background, and
joined to the encounter's outcome once an ingested extract carries it.

A request only appends to a bounded in-memory buffer (`PredictionLogWriter.enqueue`, O(1)). A
task on the event loop hands batches to a worker thread that inserts them, so neither a slow nor a
dead warehouse blocks a request or fails it: while the warehouse does not answer, the buffer holds
what it can, the overflow is dropped and counted, and writing resumes by itself, oldest first.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import deque
from collections.abc import Callable, Iterable
from datetime import UTC, datetime
from itertools import islice
from typing import Any, NamedTuple

import sqlalchemy as sa
from sqlalchemy.engine import Dialect

from readmission.schema import TARGET
from readmission.warehouse import clean_encounters, engine_for, prediction_log, transaction

log = logging.getLogger(__name__)
BATCH_ROWS = 2000  # rows per write: few transactions at full load, still cheap to retry
FLUSH_SECONDS = 0.5  # a quiet API still writes what it served within about this long
MAX_RETRY_SECONDS = 30.0  # longest pause between attempts while the warehouse is down


class LoggedPrediction(NamedTuple):
    """One served prediction, as stored in `prediction_log`: a tuple, since one is made per
    request on the event loop and a frozen dataclass costs several times as much to build."""

    encounter_id: int | None
    patient_nbr: int | None
    model_name: str
    model_version: str
    probability: float
    threshold: float
    predicted_label: bool
    risk_band: str
    scored_at: datetime


COLUMNS = LoggedPrediction._fields


def write(url: str, records: list[LoggedPrediction]) -> None:
    """Insert `records` in one transaction (blocking).

    This runs in a thread of the API's process, so its CPU is taken from serving: PostgreSQL
    gets the rows by COPY (about 4 us a row in this process, against 15 for executemany);
    SQLite by the driver's executemany, skipping SQLAlchemy's per-row parameter processing.
    Only SQLite's timestamp needs the dialect's conversion (it stores text)."""
    engine = engine_for(url)
    columns = ", ".join(COLUMNS)
    with engine.begin() as conn:
        if engine.dialect.name == "postgresql":
            driver = conn.connection.driver_connection  # psycopg's, in this transaction
            assert driver is not None  # an open transaction holds a live connection
            cursor = driver.cursor()
            with cursor.copy(f"COPY {prediction_log.name} ({columns}) FROM STDIN") as copy:
                for record in records:
                    copy.write_row(record)
            return
        marks = ", ".join(["?" if engine.dialect.paramstyle == "qmark" else "%s"] * len(COLUMNS))
        stamp = _timestamp_converter(engine.dialect)
        conn.exec_driver_sql(
            f"INSERT INTO {prediction_log.name} ({columns}) VALUES ({marks})",
            [(*r[:-1], stamp(r[-1])) for r in records],
        )


def _timestamp_converter(dialect: Dialect) -> Callable[[datetime], Any]:
    convert = prediction_log.c.scored_at.type.bind_processor(dialect)
    return convert if convert is not None else (lambda value: value)


class PredictionLogWriter:
    """A bounded buffer of served predictions and the loop that writes it to the warehouse.

    `enqueue` and `run` must be called on the same event loop: the buffer is only touched there,
    the worker thread gets a copy.
    """

    def __init__(self, url: str, capacity: int) -> None:
        self.url = url
        self.capacity = capacity
        self.dropped = 0  # predictions lost because the buffer was full
        self.written = 0
        self.failed_writes = 0
        self.up = True  # the last write attempt succeeded
        self.last_error: str | None = None
        self._buffer: deque[LoggedPrediction] = deque()
        self._wake = asyncio.Event()  # a full batch is buffered, or stop
        self._stopped = asyncio.Event()
        self._stopping = False

    @property
    def buffered(self) -> int:
        return len(self._buffer)

    def enqueue(self, records: Iterable[LoggedPrediction]) -> None:
        for record in records:
            if len(self._buffer) >= self.capacity:
                self.dropped += 1
            else:
                self._buffer.append(record)
        if len(self._buffer) >= BATCH_ROWS:
            self._wake.set()

    def stop(self) -> None:
        """Ask `run` to write what is left and return (at shutdown)."""
        self._stopping = True
        self._wake.set()
        self._stopped.set()

    async def run(self) -> None:
        """Write the buffer until `stop`; after a failed write, wait longer each time. Stopping
        never interrupts a write (an interrupted insert could land twice): the current one
        finishes, then one last pass writes what is left, unless the warehouse fails."""
        pause = 0.0  # after a failed write: how long until the next attempt
        while not self._stopping:
            await self._next_attempt(pause)
            while self._buffer and not self._stopping:
                if not await self.write_some():
                    pause = min(2 * pause or 1.0, MAX_RETRY_SECONDS)
                    break
            else:
                pause = 0.0
        while self._buffer and await self.write_some():
            pass
        if self._buffer:
            log.warning("prediction log: %d predictions not written at shutdown", self.buffered)

    async def _next_attempt(self, pause: float) -> None:
        """Return when a full batch is buffered or FLUSH_SECONDS have passed; after a failed
        write, when `pause` has passed; at once on `stop`."""
        self._wake.clear()
        if self._stopping or (not pause and len(self._buffer) >= BATCH_ROWS):
            return
        with contextlib.suppress(TimeoutError):
            if pause:  # new records must not cut the back-off short
                await asyncio.wait_for(self._stopped.wait(), pause)
            else:
                await asyncio.wait_for(self._wake.wait(), FLUSH_SECONDS)

    async def write_some(self) -> bool:
        """Write the oldest BATCH_ROWS buffered predictions; False (they stay) if that failed."""
        batch = list(islice(self._buffer, BATCH_ROWS))
        try:
            await asyncio.to_thread(write, self.url, batch)
        except Exception as error:  # any warehouse failure: keep the records, try again later
            self.failed_writes += 1
            if self.up:
                log.warning("prediction log: warehouse write failed, buffering: %s", error)
            self.up, self.last_error = False, f"{type(error).__name__}: {error}"[:500]
            return False
        for _ in batch:  # only `run` removes records, so these are still the oldest
            self._buffer.popleft()
        self.written += len(batch)
        if not self.up:
            log.info("prediction log: warehouse writes resumed (%d dropped so far)", self.dropped)
        self.up, self.last_error = True, None
        return True


def join_outcomes(url: str) -> int:
    """Copy the outcome of every logged, still unlabelled encounter the warehouse now holds a
    clean row for; return how many predictions got one. Idempotent."""
    outcome = (
        sa.select(clean_encounters.c[TARGET])
        .where(clean_encounters.c.encounter_id == prediction_log.c.encounter_id)
        .scalar_subquery()
    )
    known = sa.exists().where(clean_encounters.c.encounter_id == prediction_log.c.encounter_id)
    with transaction(url) as conn:
        done = conn.execute(
            prediction_log.update()
            .where(prediction_log.c.outcome.is_(None), known)
            .values(outcome=outcome, labelled_at=datetime.now(UTC))
        )
    return done.rowcount
