"""Alembic's entry point: runs the revisions on the connection readmission.data.migrations
passes."""

from __future__ import annotations

from alembic import context

from readmission.data.tables import metadata

connection = context.config.attributes.get("connection")
if connection is None:  # offline SQL scripts: the warehouse upgrades itself, in code
    raise SystemExit("run migrations through readmission.data.migrations, on a connection")
context.configure(
    connection=connection,
    target_metadata=metadata,
    render_as_batch=True,  # SQLite cannot ALTER most things: autogenerate writes batch ops
    compare_type=True,
)
with context.begin_transaction():
    context.run_migrations()
