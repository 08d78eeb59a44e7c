"""One engine per warehouse URL, its schema brought to the newest migration, the API login's
grants, and the write transaction that excludes every other."""

from __future__ import annotations

import fcntl
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from functools import cache
from pathlib import Path

import sqlalchemy as sa
from sqlalchemy.engine import Connection, Engine

from readmission.data import migrations
from readmission.data.tables import API_PRIVILEGES, API_ROLE, TABLE_PRIVILEGES, settings_table

_LOCK_ID = 7_296_001  # PostgreSQL advisory lock serialising ingests
_SCHEMA_LOCK_ID = 7_296_002  # ... and schema migrations


class WarehouseNotReady(RuntimeError):
    """The warehouse lacks tables and this login may not create them (the API's login)."""


@cache
def engine_for(url: str) -> Engine:
    """One engine per URL per process, its warehouse brought to the newest schema on first use."""
    ensure_sqlite_directory(url)
    # SQLite: wait for another process's write transaction instead of failing at once.
    connect_args = {"timeout": 60} if url.startswith("sqlite") else {}
    engine = sa.create_engine(url, pool_pre_ping=True, connect_args=connect_args)
    try:
        create_schema(engine)
    except BaseException:  # not cached: the next call tries again (WarehouseNotReady)
        engine.dispose()  # so close its connection now, not when it is garbage
        raise
    return engine


def create_schema(engine: Engine) -> None:
    """Bring the warehouse to the newest revision of readmission.data.migrations, safe when several
    processes open it at once; a warehouse of the release before migrations is upgraded in place.

    Migrations check, then change: two processes could both see a revision missing. PostgreSQL
    serialises them with a transaction-scoped advisory lock (and its DDL is transactional: a
    failed upgrade leaves the schema as it was); SQLite with an exclusive lock on a file beside
    the database (its own locking does not cover the check), so the second process finds the
    schema at head and changes nothing. A login that may not change the schema (the API's)
    changes nothing: it only needs the tables there.
    """
    if engine.dialect.name == "postgresql":
        with engine.begin() as conn:
            conn.execute(sa.text("SELECT pg_advisory_xact_lock(:id)"), {"id": _SCHEMA_LOCK_ID})
            may_change = conn.execute(
                sa.text("SELECT has_schema_privilege(current_schema(), 'CREATE')")
            ).scalar()
            if not may_change:
                _require_tables(conn, engine.url.username)
                return
            migrations.upgrade(conn)
            grant_api_privileges(conn, migrations.tables())
        return
    database = engine.url.database
    if engine.dialect.name != "sqlite" or database in (None, "", ":memory:"):
        with engine.begin() as conn:
            migrations.upgrade(conn)
        return
    with open(f"{database}.schema-lock", "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # released when the file is closed
        with engine.begin() as conn:
            migrations.upgrade(conn)


def _require_tables(conn: Connection, login: str | None) -> None:
    missing = [t.name for t in migrations.tables() if not sa.inspect(conn).has_table(t.name)]
    if missing:
        raise WarehouseNotReady(
            f"the warehouse lacks tables ({', '.join(missing)}) and {login} may not create them: "
            "its owner creates them (compose: warehouse-init; `readmission init-warehouse`, or "
            "any Airflow task, as the owner)"
        )


def grant_api_privileges(conn: Connection, tables: list[sa.Table]) -> None:
    """Grant API_ROLE what each of `tables` declares (`info[API_PRIVILEGES]`), and the use of
    the sequence numbering the rows it inserts, where it lacks them.

    Only the tables' owner (or a superuser) grants: for any other login, the API's included,
    this does nothing, as it does on a server without API_ROLE (a test database, a warehouse no
    API uses). Re-checked whenever the owner opens the warehouse, so a login created after the
    tables (an existing volume) gets its rights at the owner's next start. The caller holds the
    schema lock: two GRANTs on one table at once fail ("tuple concurrently updated").
    """
    if not _api_role_exists(conn):
        return
    quote = conn.dialect.identifier_preparer.quote
    role = quote(API_ROLE)
    owns = sa.text(
        "SELECT pg_has_role(relowner, 'USAGE') FROM pg_class WHERE oid = to_regclass(:t)"
    )
    held = sa.text("SELECT has_table_privilege(:role, :t, :privilege)")
    for table in tables:
        wanted = table.info.get(API_PRIVILEGES, ())
        name = quote(table.name)
        if not wanted or not conn.execute(owns, {"t": name}).scalar():
            continue
        missing = [
            p
            for p in wanted
            if not conn.execute(held, {"role": API_ROLE, "t": name, "privilege": p}).scalar()
        ]
        if missing:  # privilege words and names from this module, quoted: no outside input
            conn.execute(sa.text(f"GRANT {', '.join(missing)} ON TABLE {name} TO {role}"))
        if "INSERT" not in wanted:
            continue
        for column in table.primary_key.columns:  # a serial key: INSERT calls its nextval()
            sequence = conn.execute(
                sa.text("SELECT pg_get_serial_sequence(:t, :c)"), {"t": name, "c": column.name}
            ).scalar()
            usage = sa.text("SELECT has_sequence_privilege(:role, :s, 'USAGE')")
            if sequence and not conn.execute(usage, {"role": API_ROLE, "s": sequence}).scalar():
                # pg_get_serial_sequence returns the name quoted and schema-qualified
                conn.execute(sa.text(f"GRANT USAGE ON SEQUENCE {sequence} TO {role}"))


def _api_role_exists(conn: Connection) -> bool:
    exists = sa.text("SELECT 1 FROM pg_roles WHERE rolname = :role")
    return conn.execute(exists, {"role": API_ROLE}).scalar() is not None


def api_privileges(url: str) -> dict[str, list[str]] | None:
    """What API_ROLE may do on each table of the warehouse's schema where it may do anything
    (its effective privileges, PUBLIC's included); None on SQLite or without the login."""
    engine = engine_for(url)
    if engine.dialect.name != "postgresql":
        return None
    with engine.connect() as conn:
        if not _api_role_exists(conn):
            return None
        rows = conn.execute(
            sa.text(
                "SELECT c.relname, p.privilege FROM pg_class c, unnest(CAST(:privileges AS text[]))"
                " WITH ORDINALITY AS p(privilege, rank)"
                " WHERE c.relnamespace = to_regnamespace(current_schema())"
                " AND c.relkind IN ('r', 'p', 'v', 'm', 'f')"
                " AND has_table_privilege(:role, c.oid, p.privilege)"
                " ORDER BY c.relname, p.rank"
            ),
            {"privileges": list(TABLE_PRIVILEGES), "role": API_ROLE},
        )
        found: dict[str, list[str]] = {}
        for table, privilege in rows:
            found.setdefault(table, []).append(privilege)
        return found


@dataclass(frozen=True)
class WarehouseReady:
    """A warehouse after `init_warehouse`: where (password hidden), at which schema revision,
    and what the serving API's login may do there."""

    address: str
    postgresql: bool
    revision: str | None
    api_privileges: dict[str, list[str]] | None  # None: SQLite, or no API login on the server


def init_warehouse(url: str) -> WarehouseReady:
    """Create or upgrade the warehouse's schema (readmission.data.migrations) and read back its
    revision and the API login's privileges: `readmission init-warehouse`, run as the owner
    before the API starts (the API's login may not change the schema). Safe to re-run."""
    engine = engine_for(url)  # upgrades on first use
    with engine.connect() as conn:
        revision = migrations.current(conn)
    return WarehouseReady(
        address=engine.url.render_as_string(hide_password=True),
        postgresql=engine.dialect.name == "postgresql",
        revision=revision,
        api_privileges=api_privileges(url),
    )


def ensure_sqlite_directory(url: str) -> None:
    """SQLite creates the file but not its folder: make the folder of a file URL exist."""
    parsed = sa.make_url(url)
    if parsed.drivername.startswith("sqlite") and parsed.database not in (None, "", ":memory:"):
        Path(parsed.database).parent.mkdir(parents=True, exist_ok=True)


@contextmanager
def transaction(url: str) -> Iterator[Connection]:
    """A write transaction that excludes every other one, in this process or another."""
    with engine_for(url).begin() as conn:
        if conn.dialect.name == "postgresql":
            conn.execute(sa.text("SELECT pg_advisory_xact_lock(:id)"), {"id": _LOCK_ID})
        else:  # take SQLite's write lock now, before reading what the writes depend on
            conn.exec_driver_sql("BEGIN IMMEDIATE")
        yield conn


def stored_setting(conn: Connection, key: str, default: object) -> str:
    """The stored value of `key`; the first call stores `default` (a callable is called)."""
    stored = conn.execute(
        sa.select(settings_table.c.value).where(settings_table.c.key == key)
    ).scalar()
    if stored is not None:
        return str(stored)
    value = str(default() if callable(default) else default)
    conn.execute(settings_table.insert().values(key=key, value=value))
    return value
