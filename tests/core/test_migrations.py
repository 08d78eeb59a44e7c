"""The migrations build exactly the code's tables, on PostgreSQL and SQLite: a table or column
added in the code without a revision fails here, with the difference."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
import sqlalchemy as sa
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory

from readmission.data import database, migrations, tables


@pytest.fixture(params=["postgresql", "sqlite"])
def url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'warehouse.db'}"
    create: Callable[[], str] = request.getfixturevalue("create_database")
    return create()


def test_the_newest_revision_is_exactly_the_codes_tables(url: str) -> None:
    engine = database.engine_for(url)
    try:
        with engine.connect() as conn:
            assert migrations.current(conn) == migrations.head()
            context = MigrationContext.configure(
                conn, opts={"compare_type": True, "compare_server_default": True}
            )
            assert compare_metadata(context, tables.metadata) == []
    finally:
        engine.dispose()


def test_the_revisions_form_one_line() -> None:
    """One head, each revision after the one before: no branch left unmerged."""
    scripts = ScriptDirectory.from_config(migrations.config())
    assert scripts.get_heads() == [migrations.head()]
    chain = [s.revision for s in scripts.walk_revisions()]
    assert chain == sorted(chain, reverse=True)


def test_an_unversioned_warehouse_keeps_its_tables_and_gets_those_it_lacks(tmp_path: Path) -> None:
    """The release before migrations created the ledger's table on the ledger's first use: a
    warehouse it made may lack it (a whole one: tests/migrations/test_previous_release.py)."""
    url = f"sqlite:///{tmp_path / 'warehouse.db'}"
    plain = sa.create_engine(url)
    try:
        with plain.begin() as conn:
            conn.execute(sa.text("CREATE TABLE raw_encounters (encounter_id BIGINT PRIMARY KEY)"))
            conn.execute(sa.text("INSERT INTO raw_encounters VALUES (42)"))
    finally:
        plain.dispose()
    engine = database.engine_for(url)
    try:
        with engine.connect() as conn:
            assert migrations.current(conn) == migrations.head()
            assert sa.inspect(conn).has_table("promotions")
            kept = conn.execute(sa.text("SELECT encounter_id FROM raw_encounters")).scalars()
            assert list(kept) == [42]
    finally:
        engine.dispose()
