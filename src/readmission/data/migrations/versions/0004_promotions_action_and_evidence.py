"""Promotions: what kind of change each row is, and the gate's evidence (the paired AUC
difference, its interval and the holdout it was measured on). Rows written before stay NULL.

Revision ID: 0004
Revises: 0003
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("promotions") as batch_op:
        batch_op.add_column(sa.Column("action", sa.String(length=16), nullable=True))
        batch_op.add_column(sa.Column("delta_roc_auc", sa.Float(), nullable=True))
        batch_op.add_column(sa.Column("delta_roc_auc_ci_low", sa.Float(), nullable=True))
        batch_op.add_column(sa.Column("delta_roc_auc_ci_high", sa.Float(), nullable=True))
        batch_op.add_column(sa.Column("holdout_fingerprint", sa.String(length=32), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("promotions") as batch_op:
        batch_op.drop_column("holdout_fingerprint")
        batch_op.drop_column("delta_roc_auc_ci_high")
        batch_op.drop_column("delta_roc_auc_ci_low")
        batch_op.drop_column("delta_roc_auc")
        batch_op.drop_column("action")
