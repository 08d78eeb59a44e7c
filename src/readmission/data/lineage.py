"""The training lineage in the warehouse: which batches are trained into which version of each
model, the lineage's head, this warehouse's id, and the training lease that lets one training
run at a time."""

from __future__ import annotations

import fcntl
import logging
import os
import socket
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from datetime import UTC, datetime

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from readmission.data.database import engine_for, stored_setting, transaction
from readmission.data.inventory import trained_versions
from readmission.data.tables import (
    batches,
    leases,
    trainings,
)

log = logging.getLogger(__name__)

_LEASE_ID = 7_296_003  # PostgreSQL advisory lock held for as long as a training run lives


def warehouse_id(url: str) -> str:
    """This warehouse's id, created once: model versions carry it, so a version registered
    from another warehouse (or by hand) is never taken for one of this lineage's."""
    with transaction(url) as conn:
        return stored_setting(conn, "warehouse_id", lambda: uuid.uuid4().hex)


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
