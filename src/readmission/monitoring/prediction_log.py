"""The prediction log: every prediction served, written to the warehouse in the background, and
joined to the encounter's outcome once an ingested extract carries it.

A request only appends to a bounded in-memory buffer (`PredictionLogWriter.enqueue`, O(1)). A
task on the event loop hands batches to a worker thread that inserts them, so neither a slow nor a
dead warehouse blocks a request or fails it: while the warehouse does not answer, the buffer holds
what it can, the overflow is dropped and counted, and writing resumes by itself, oldest first.
A row the warehouse refuses (a value out of its range) is set aside and counted, never retried,
and never holds up the rows after it.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import sqlite3
from collections import deque
from collections.abc import Callable, Iterable
from datetime import UTC, datetime
from itertools import islice
from pathlib import Path
from typing import TYPE_CHECKING, Any, NamedTuple

import psycopg
import sqlalchemy as sa
from sqlalchemy.engine import Dialect

from readmission.data.database import engine_for, transaction
from readmission.data.tables import clean_encounters, prediction_log_table
from readmission.schema import TARGET

if TYPE_CHECKING:  # thresholds imports scikit-learn, which the log's writer never needs
    from readmission.evaluation.thresholds import RiskBand

log = logging.getLogger(__name__)
BATCH_ROWS = 2000  # rows per write: few transactions at full load, still cheap to retry
FLUSH_SECONDS = 0.5  # a quiet API still writes what it served within about this long
MAX_RETRY_SECONDS = 30.0  # longest pause between attempts while the warehouse is down
PRODUCTION = "production"  # the role of the answer returned to the caller
SHADOW = "shadow"  # the role of the challenger's score of the same request, logged only


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
    risk_band: RiskBand
    scored_at: datetime
    # The shadow scored on the same request (None: none); a spill line of the previous release
    # has none of these fields.
    shadow_version: str | None = None
    shadow_probability: float | None = None
    shadow_threshold: float | None = None


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
            with cursor.copy(f"COPY {prediction_log_table.name} ({columns}) FROM STDIN") as copy:
                for record in records:
                    copy.write_row(record)
            return
        marks = ", ".join(["?" if engine.dialect.paramstyle == "qmark" else "%s"] * len(COLUMNS))
        stamp = _timestamp_converter(engine.dialect)
        conn.exec_driver_sql(
            f"INSERT INTO {prediction_log_table.name} ({columns}) VALUES ({marks})",
            [r._replace(scored_at=stamp(r.scored_at)) for r in records],
        )


def _timestamp_converter(dialect: Dialect) -> Callable[[datetime], Any]:
    convert = prediction_log_table.c.scored_at.type.bind_processor(dialect)
    return convert if convert is not None else (lambda value: value)


class Isolated(NamedTuple):
    """What `write_isolating` did with a batch."""

    consumed: int  # rows from the front of the batch written or rejected, in order
    rejected: list[tuple[LoggedPrediction, str]]  # each with the warehouse's reason
    error: Exception | None  # the failure that stopped it (the rest stays buffered)


def refused(error: BaseException) -> bool:
    """Whether the warehouse refused the rows themselves (a value out of range, a constraint),
    as opposed to failing to take any (down, unreachable): only then does retrying the same rows
    never succeed."""
    cause = getattr(error, "orig", None) or error  # SQLAlchemy wraps the driver's error
    return isinstance(
        cause,
        OverflowError  # sqlite3 binding an int beyond 64 bits
        | ValueError
        | sqlite3.DataError
        | sqlite3.IntegrityError
        | psycopg.DataError
        | psycopg.IntegrityError,
    )


def write_isolating(url: str, records: list[LoggedPrediction]) -> Isolated:
    """`write` the batch; when the warehouse refuses it, bisect it until each refused row stands
    alone, write every other row and return the refused ones: one bad row costs about
    2 log2(len) extra writes, never the rows after it. Stops at the first failure that is not a
    refusal, reporting how far it got."""
    consumed, rejected = 0, list[tuple[LoggedPrediction, str]]()
    pending = [records]  # chunks still to write; the last is the oldest
    while pending:
        chunk = pending.pop()
        try:
            write(url, chunk)
        except Exception as error:
            if not refused(error):
                return Isolated(consumed, rejected, error)
            if len(chunk) == 1:
                rejected.append((chunk[0], f"{type(error).__name__}: {error}"[:500]))
                consumed += 1
            else:
                middle = len(chunk) // 2
                pending += [chunk[middle:], chunk[:middle]]
            continue
        consumed += len(chunk)
    return Isolated(consumed, rejected, None)


class PredictionLogWriter:
    """A bounded buffer of served predictions and the loop that writes it to the warehouse.

    `enqueue` and `run` must be called on the same event loop: the buffer is only touched there,
    the worker thread gets a copy.

    With a `spill` directory, nothing is lost silently across a restart: what is still buffered
    at shutdown is written there and logged at the next start, and the loop keeps a small state
    file there, so the predictions a crash took with it are counted at the next start (at least
    those buffered at the last check, FLUSH_SECONDS before the crash at most).
    """

    def __init__(self, url: str, capacity: int, spill: Path | None = None) -> None:
        self.url = url
        self.capacity = capacity
        self.spill = spill
        self.dropped = 0  # predictions lost because the buffer was full
        self.written = 0
        self.rejected = 0  # predictions the warehouse refused (isolated, never retried)
        self.replayed = 0  # predictions buffered at the last shutdown, written after this start
        self.lost = 0  # predictions the previous run lost (a crash, a failed spill), found at start
        self.failed_writes = 0
        self.up = True  # the last write attempt succeeded
        self.last_error: str | None = None
        self.last_rejection: str | None = None
        self._buffer: deque[LoggedPrediction] = deque()
        self._wake = asyncio.Event()  # a full batch is buffered, or stop
        self._room = asyncio.Event()  # a write finished (or failed): callers may find room
        self._stopped = asyncio.Event()
        self._stopping = False
        self._checkpointed: int | None = None  # buffered count last written to the state file
        self._in_flight = 0  # rows at the front of the buffer a worker thread is writing

    @property
    def buffered(self) -> int:
        return len(self._buffer)

    def enqueue(self, records: Iterable[LoggedPrediction]) -> None:
        for record in records:
            if len(self._buffer) >= self.capacity:
                self.dropped += 1
            else:
                self._buffer.append(record)
        if len(self._buffer) >= min(BATCH_ROWS, self.capacity):
            self._wake.set()

    @property
    def full(self) -> bool:
        return len(self._buffer) >= self.capacity

    async def wait_for_room(self, rows: int, timeout: float) -> None:
        """Backpressure: while the warehouse takes writes, hold the caller until the buffer has
        room for `rows` (at most `timeout`), so that a burst faster than the writer slows the
        answers instead of losing their log. While writes fail, return at once: the answers go
        on, and what does not fit is dropped and counted."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        needed = min(rows, self.capacity)
        while self.up and len(self._buffer) + needed > self.capacity:
            left = deadline - loop.time()
            if left <= 0:
                return
            self._wake.set()  # a full buffer is worth a write now, not at the next flush
            self._room.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._room.wait(), left)

    def stop(self) -> None:
        """Ask `run` to write what is left and return (at shutdown)."""
        self._stopping = True
        self._wake.set()
        self._stopped.set()

    async def run(self) -> None:
        """Write the buffer until `stop`; after a failed write, wait longer each time. Stopping
        never interrupts a write (an interrupted insert could land twice): the current one
        finishes, then one last pass writes what is left, unless the warehouse fails."""
        self.recover()
        pause = 0.0  # after a failed write: how long until the next attempt
        while not self._stopping:
            self._checkpoint()
            await self._next_attempt(pause)
            while self._buffer and not self._stopping:
                if not await self.write_some():
                    pause = min(2 * pause or 1.0, MAX_RETRY_SECONDS)
                    break
            else:
                pause = 0.0
        while self._buffer and await self.write_some():
            pass
        self.spill_rest()

    def recover(self) -> None:
        """At start: buffer what the last shutdown spilled (oldest first, before anything served
        now) and count what a crash lost."""
        if self.spill is None:
            return
        state = self.spill / STATE_FILE
        if state.is_file():
            previous = json.loads(state.read_text())
            if previous["buffered"]:
                self.lost += previous["buffered"]
                log.warning(
                    "prediction log: the previous run stopped without writing %d predictions "
                    "(a crash, at %s): they are lost",
                    previous["buffered"],
                    previous["at"],
                )
        spilled = self.spill / SPILL_FILE
        if spilled.exists():
            records = [_from_json(line) for line in spilled.read_text().splitlines() if line]
            self._buffer.extendleft(reversed(records))
            self.replayed += len(records)
            log.info("prediction log: %d predictions spilled at the last shutdown", len(records))
        # The spilled records are in memory now: from here, a crash loses them like any other
        # buffered ones, and the state file counts them.
        self._checkpoint(force=True)
        if self.spill is not None:  # else it could not be written: nothing was spilled either
            spilled.unlink(missing_ok=True)

    def spill_rest(self) -> None:
        """At shutdown: keep what is still buffered for the next start (counted as lost if even
        that fails)."""
        if self.spill is None:
            if self._buffer:
                log.warning("prediction log: %d predictions not written at shutdown", self.buffered)
            return
        # A write still running in its thread (the shutdown's wait ran out) may land yet: its
        # rows are left out, since spilling them could log them twice.
        for _ in range(self._in_flight):
            self._buffer.popleft()
        if self._in_flight:
            log.warning(
                "prediction log: %d predictions were being written at shutdown", self._in_flight
            )
        if self._buffer:
            spilled = self.spill / SPILL_FILE
            try:
                spilled.write_text("".join(_to_json(r) + "\n" for r in self._buffer))
            except OSError as error:  # the state file then counts them as lost
                log.error("prediction log: %d predictions lost: %s", self.buffered, error)
            else:
                log.warning(
                    "prediction log: %d predictions not written at shutdown, kept in %s for "
                    "the next start",
                    self.buffered,
                    spilled,
                )
                self._buffer.clear()
        self._checkpoint(force=True)  # 0 after a spill: a clean stop

    def _checkpoint(self, force: bool = False) -> None:
        """Record how many predictions only this process holds, for the next start to count if
        it crashes (a few bytes, at most once per loop)."""
        if self.spill is None or (not force and self._checkpointed == self.buffered):
            return
        state = self.spill / STATE_FILE
        temporary = state.with_suffix(".tmp")
        try:
            self.spill.mkdir(parents=True, exist_ok=True)
            temporary.write_text(
                json.dumps({"buffered": self.buffered, "at": datetime.now(UTC).isoformat()})
            )
            temporary.replace(state)  # a crash mid-write leaves the previous state, never half
        except OSError as error:  # e.g. a read-only home: log on, without the spill
            log.error("prediction log: no spill or crash count in %s: %s", self.spill, error)
            self.spill = None
            return
        self._checkpointed = self.buffered

    async def _next_attempt(self, pause: float) -> None:
        """Return when a full batch is buffered or FLUSH_SECONDS have passed; after a failed
        write, when `pause` has passed; at once on `stop`."""
        self._wake.clear()
        if self._stopping or (not pause and len(self._buffer) >= BATCH_ROWS):
            return
        if not pause:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), FLUSH_SECONDS)
            return
        # New records must not cut the back-off short; the state file follows them meanwhile.
        deadline = asyncio.get_running_loop().time() + pause
        while (left := deadline - asyncio.get_running_loop().time()) > 0 and not self._stopping:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stopped.wait(), min(left, FLUSH_SECONDS))
            self._checkpoint()

    async def write_some(self) -> bool:
        """Write the oldest BATCH_ROWS buffered predictions, isolating the ones the warehouse
        refuses; False if the warehouse failed (what was not written stays)."""
        batch = list(islice(self._buffer, BATCH_ROWS))
        self._in_flight = len(batch)
        try:
            done = await asyncio.to_thread(write_isolating, self.url, batch)
        except Exception as error:  # e.g. the engine cannot be created: the warehouse is down
            done = Isolated(0, [], error)
        self._in_flight = 0
        for _ in range(done.consumed):  # only `run` removes records, so these are the oldest
            self._buffer.popleft()
        self._room.set()
        self.written += done.consumed - len(done.rejected)
        for record, reason in done.rejected:
            self.rejected += 1
            self.last_rejection = reason
            log.error("prediction log: the warehouse refused %s: %s", record, reason)
        if done.error is not None:
            self.failed_writes += 1
            if self.up:
                log.warning("prediction log: warehouse write failed, buffering: %s", done.error)
            self.up = False
            self.last_error = f"{type(done.error).__name__}: {done.error}"[:500]
            return False
        if not self.up:
            log.info("prediction log: warehouse writes resumed (%d dropped so far)", self.dropped)
        self.up, self.last_error = True, None
        return True


SPILL_FILE = "spilled.jsonl"  # what the last shutdown could not write
STATE_FILE = "state.json"  # how many predictions only the running process holds


SCORED_AT = COLUMNS.index("scored_at")


def _to_json(record: LoggedPrediction) -> str:
    fields: list[Any] = list(record)
    fields[SCORED_AT] = record.scored_at.isoformat()
    return json.dumps(fields)


def _from_json(line: str) -> LoggedPrediction:
    fields = json.loads(line)
    fields[SCORED_AT] = datetime.fromisoformat(fields[SCORED_AT])
    return LoggedPrediction(*fields)


def join_outcomes(url: str) -> int:
    """Copy the outcome of every logged, still unlabelled encounter the warehouse now holds a
    clean row for; return how many predictions got one. Idempotent."""
    outcome = (
        sa.select(clean_encounters.c[TARGET])
        .where(clean_encounters.c.encounter_id == prediction_log_table.c.encounter_id)
        .scalar_subquery()
    )
    known = sa.exists().where(
        clean_encounters.c.encounter_id == prediction_log_table.c.encounter_id
    )
    with transaction(url) as conn:
        done = conn.execute(
            prediction_log_table.update()
            .where(prediction_log_table.c.outcome.is_(None), known)
            .values(outcome=outcome, labelled_at=datetime.now(UTC))
        )
    return done.rowcount
