"""The prediction log's role: 'production' (the answer given) or 'shadow' (the challenger's).

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
        batch_op.add_column(
            sa.Column("role", sa.String(length=16), nullable=False, server_default="production")
        )


def downgrade() -> None:
    with op.batch_alter_table("prediction_log") as batch_op:
        batch_op.drop_column("role")
