"""The prediction log's shadow: the version scored beside the answer, its probability and threshold.

Revision ID: 0006
Revises: 0005
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("prediction_log") as batch_op:
        batch_op.add_column(sa.Column("shadow_version", sa.String(length=32), nullable=True))
        batch_op.add_column(sa.Column("shadow_probability", sa.Float(), nullable=True))
        batch_op.add_column(sa.Column("shadow_threshold", sa.Float(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("prediction_log") as batch_op:
        batch_op.drop_column("shadow_threshold")
        batch_op.drop_column("shadow_probability")
        batch_op.drop_column("shadow_version")
