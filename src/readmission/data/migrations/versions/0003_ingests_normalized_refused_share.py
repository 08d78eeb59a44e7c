"""Ingests: blank lab results read as None (normalized), refused extracts, their quarantine share.

Revision ID: 0003
Revises: 0002
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("ingests") as batch_op:
        batch_op.add_column(
            sa.Column("normalized", sa.Integer(), server_default="0", nullable=False)
        )
        batch_op.add_column(
            sa.Column("refused", sa.Boolean(), server_default=sa.false(), nullable=False)
        )
        batch_op.add_column(
            sa.Column("quarantine_share", sa.Float(), server_default="0", nullable=False)
        )


def downgrade() -> None:
    with op.batch_alter_table("ingests") as batch_op:
        batch_op.drop_column("quarantine_share")
        batch_op.drop_column("refused")
        batch_op.drop_column("normalized")
