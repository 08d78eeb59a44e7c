"""Alembic's entry point: runs the revisions on the connection readmission.migrations passes."""

from __future__ import annotations

from alembic import context

from readmission import migrations

connection = context.config.attributes.get("connection")
if connection is None:  # offline SQL scripts: the warehouse upgrades itself, in code
    raise SystemExit("run migrations through readmission.migrations, on a connection")
context.configure(
    connection=connection,
    target_metadata=migrations.metadatas(),
    render_as_batch=True,  # SQLite cannot ALTER most things: autogenerate writes batch ops
    compare_type=True,
)
with context.begin_transaction():
    context.run_migrations()
