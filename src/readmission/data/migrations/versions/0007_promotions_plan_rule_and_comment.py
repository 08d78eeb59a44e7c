"""The promotion ledger names who decided under which plan: the change control plan's sha256,
the plan's rule for the platform's changes, a person's comment for theirs.

Revision ID: 0007
Revises: 0006
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # Nullable: rows written before the plan existed name none.
    with op.batch_alter_table("promotions") as batch_op:
        batch_op.add_column(sa.Column("plan_sha256", sa.String(length=64), nullable=True))
        batch_op.add_column(sa.Column("rule", sa.Text(), nullable=True))
        batch_op.add_column(sa.Column("comment", sa.Text(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("promotions") as batch_op:
        batch_op.drop_column("comment")
        batch_op.drop_column("rule")
        batch_op.drop_column("plan_sha256")
