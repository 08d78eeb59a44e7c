"""Several processes opening the same fresh warehouse at the same moment all succeed: schema
creation is serialised, on SQLite and on PostgreSQL."""

from __future__ import annotations

import multiprocessing
from collections.abc import Callable
from multiprocessing.synchronize import Barrier
from pathlib import Path

import pytest
import sqlalchemy as sa

from readmission.data import database

PROCESSES = 4
ROUNDS = 8


def open_warehouse(url: str, start: Barrier) -> None:
    """In a child process: wait for the others, then open the warehouse and read its tables."""
    start.wait(timeout=60)
    engine = database.engine_for(url)
    assert "raw_encounters" in sa.inspect(engine).get_table_names()


def open_at_once(url: str) -> list[int | None]:
    # Forked children start with the package already imported, so they reach the barrier
    # together and race on the schema as two services starting side by side do.
    context = multiprocessing.get_context("fork")
    start = context.Barrier(PROCESSES)
    children = [context.Process(target=open_warehouse, args=(url, start)) for _ in range(PROCESSES)]
    for child in children:
        child.start()
    for child in children:
        child.join(timeout=120)
    return [child.exitcode for child in children]


@pytest.mark.slow
@pytest.mark.parametrize("backend", ["sqlite", "postgresql"])
def test_processes_opening_a_fresh_warehouse_at_once_all_succeed(
    backend: str, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    for round_ in range(ROUNDS):
        if backend == "sqlite":
            url = f"sqlite:///{tmp_path / f'warehouse-{round_}.db'}"
        else:
            create_database: Callable[[], str] = request.getfixturevalue("create_database")
            url = create_database()
        assert open_at_once(url) == [0] * PROCESSES, f"round {round_}"
