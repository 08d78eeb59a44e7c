"""Baseline: the warehouse as the release before migrations made it with `create_all`.

Revision ID: 0001
Revises:
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


TABLES = [
    "batches",
    "clean_encounters",
    "corrections",
    "ingests",
    "leases",
    "performance_reports",
    "prediction_log",
    "quarantined_encounters",
    "raw_encounters",
    "trainings",
    "warehouse_settings",
    "promotions",
]


def _create(name: str, *elements: sa.schema.SchemaItem) -> None:
    """Create the table, unless the warehouse has it: one made by `create_all` before
    migrations has them all but `promotions` if the ledger was never used, and is adopted."""
    if not sa.inspect(op.get_bind()).has_table(name):
        op.create_table(name, *elements)


def upgrade() -> None:
    _create(
        "batches",
        sa.Column("batch_id", sa.Integer(), autoincrement=False, nullable=False),
        sa.Column("kind", sa.String(length=8), nullable=False),
        sa.Column("first_encounter_id", sa.Text(), nullable=False),
        sa.Column("last_encounter_id", sa.Text(), nullable=False),
        sa.Column("rows", sa.Integer(), nullable=False),
        sa.Column("accepted", sa.Integer(), nullable=False),
        sa.Column("quarantined", sa.Integer(), nullable=False),
        sa.Column("ingested_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("batch_id"),
    )
    _create(
        "clean_encounters",
        sa.Column("encounter_id", sa.BigInteger(), nullable=False),
        sa.Column("batch_id", sa.Integer(), nullable=False, index=True),
        sa.Column("patient_nbr", sa.BigInteger(), nullable=False),
        sa.Column("race", sa.Text(), nullable=False),
        sa.Column("gender", sa.Text(), nullable=False),
        sa.Column("age", sa.Text(), nullable=False),
        sa.Column("weight", sa.Text(), nullable=False),
        sa.Column("admission_type_id", sa.BigInteger(), nullable=False),
        sa.Column("discharge_disposition_id", sa.BigInteger(), nullable=False),
        sa.Column("admission_source_id", sa.BigInteger(), nullable=False),
        sa.Column("time_in_hospital", sa.BigInteger(), nullable=False),
        sa.Column("payer_code", sa.Text(), nullable=False),
        sa.Column("medical_specialty", sa.Text(), nullable=False),
        sa.Column("num_lab_procedures", sa.BigInteger(), nullable=False),
        sa.Column("num_procedures", sa.BigInteger(), nullable=False),
        sa.Column("num_medications", sa.BigInteger(), nullable=False),
        sa.Column("number_outpatient", sa.BigInteger(), nullable=False),
        sa.Column("number_emergency", sa.BigInteger(), nullable=False),
        sa.Column("number_inpatient", sa.BigInteger(), nullable=False),
        sa.Column("diag_1", sa.Text(), nullable=False),
        sa.Column("diag_2", sa.Text(), nullable=False),
        sa.Column("diag_3", sa.Text(), nullable=False),
        sa.Column("number_diagnoses", sa.BigInteger(), nullable=False),
        sa.Column("max_glu_serum", sa.Text(), nullable=False),
        sa.Column("A1Cresult", sa.Text(), nullable=False),
        sa.Column("metformin", sa.Text(), nullable=False),
        sa.Column("repaglinide", sa.Text(), nullable=False),
        sa.Column("nateglinide", sa.Text(), nullable=False),
        sa.Column("chlorpropamide", sa.Text(), nullable=False),
        sa.Column("glimepiride", sa.Text(), nullable=False),
        sa.Column("acetohexamide", sa.Text(), nullable=False),
        sa.Column("glipizide", sa.Text(), nullable=False),
        sa.Column("glyburide", sa.Text(), nullable=False),
        sa.Column("tolbutamide", sa.Text(), nullable=False),
        sa.Column("pioglitazone", sa.Text(), nullable=False),
        sa.Column("rosiglitazone", sa.Text(), nullable=False),
        sa.Column("acarbose", sa.Text(), nullable=False),
        sa.Column("miglitol", sa.Text(), nullable=False),
        sa.Column("troglitazone", sa.Text(), nullable=False),
        sa.Column("tolazamide", sa.Text(), nullable=False),
        sa.Column("examide", sa.Text(), nullable=False),
        sa.Column("citoglipton", sa.Text(), nullable=False),
        sa.Column("insulin", sa.Text(), nullable=False),
        sa.Column("glyburide-metformin", sa.Text(), nullable=False),
        sa.Column("glipizide-metformin", sa.Text(), nullable=False),
        sa.Column("glimepiride-pioglitazone", sa.Text(), nullable=False),
        sa.Column("metformin-rosiglitazone", sa.Text(), nullable=False),
        sa.Column("metformin-pioglitazone", sa.Text(), nullable=False),
        sa.Column("change", sa.Text(), nullable=False),
        sa.Column("diabetesMed", sa.Text(), nullable=False),
        sa.Column("readmitted", sa.Text(), nullable=False),
        sa.PrimaryKeyConstraint("encounter_id"),
    )
    _create(
        "corrections",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("encounter_id", sa.BigInteger(), nullable=False, index=True),
        sa.Column("row_hash", sa.String(length=64), nullable=False),
        sa.Column("fields", sa.Text(), nullable=False),
        sa.Column("raw", sa.Text(), nullable=False),
        sa.Column("applied_to_batch", sa.Integer(), nullable=True),
        sa.Column("received_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("row_hash"),
    )
    _create(
        "ingests",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("source", sa.Text(), nullable=False),
        sa.Column("finished_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("rows_in", sa.Integer(), nullable=False),
        sa.Column("accepted", sa.Integer(), nullable=False),
        sa.Column("quarantined", sa.Integer(), nullable=False),
        sa.Column("already_present", sa.Integer(), nullable=False),
        sa.Column("deferred", sa.Integer(), nullable=False),
        sa.Column("corrections", sa.Integer(), nullable=False),
        sa.Column("report", sa.Text(), nullable=False),
        sa.PrimaryKeyConstraint("id"),
    )
    _create(
        "leases",
        sa.Column("name", sa.String(length=32), nullable=False),
        sa.Column("holder", sa.Text(), nullable=False),
        sa.Column("acquired_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("name"),
    )
    _create(
        "performance_reports",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("model_name", sa.String(length=256), nullable=False, index=True),
        sa.Column("computed_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("last_prediction_id", sa.BigInteger(), nullable=False),
        sa.Column("report", sa.Text(), nullable=False),
        sa.PrimaryKeyConstraint("id"),
    )
    _create(
        "prediction_log",
        sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column("encounter_id", sa.BigInteger(), nullable=True, index=True),
        sa.Column("patient_nbr", sa.BigInteger(), nullable=True),
        sa.Column("model_name", sa.String(length=256), nullable=False),
        sa.Column("model_version", sa.String(length=32), nullable=False),
        sa.Column("probability", sa.Float(), nullable=False),
        sa.Column("threshold", sa.Float(), nullable=False),
        sa.Column("predicted_label", sa.Boolean(), nullable=False),
        sa.Column("risk_band", sa.String(length=8), nullable=False),
        sa.Column("scored_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("outcome", sa.Text(), nullable=True),
        sa.Column("labelled_at", sa.DateTime(timezone=True), nullable=True),
        sa.PrimaryKeyConstraint("id"),
        sa.Index("ix_prediction_log_model_outcome", "model_name", "outcome"),
    )
    _create(
        "quarantined_encounters",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("encounter_id", sa.Text(), nullable=False, index=True),
        sa.Column("batch_id", sa.Integer(), nullable=True, index=True),
        sa.Column("reason_code", sa.String(length=32), nullable=False),
        sa.Column("reason", sa.Text(), nullable=False),
        sa.Column("row_hash", sa.String(length=64), nullable=False),
        sa.Column("raw", sa.Text(), nullable=False),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("row_hash", "reason_code"),
    )
    _create(
        "raw_encounters",
        sa.Column("encounter_id", sa.BigInteger(), nullable=False),
        sa.Column("batch_id", sa.Integer(), nullable=False, index=True),
        sa.Column("row_hash", sa.String(length=64), nullable=False),
        sa.Column("patient_nbr", sa.Text(), nullable=False),
        sa.Column("race", sa.Text(), nullable=False),
        sa.Column("gender", sa.Text(), nullable=False),
        sa.Column("age", sa.Text(), nullable=False),
        sa.Column("weight", sa.Text(), nullable=False),
        sa.Column("admission_type_id", sa.Text(), nullable=False),
        sa.Column("discharge_disposition_id", sa.Text(), nullable=False),
        sa.Column("admission_source_id", sa.Text(), nullable=False),
        sa.Column("time_in_hospital", sa.Text(), nullable=False),
        sa.Column("payer_code", sa.Text(), nullable=False),
        sa.Column("medical_specialty", sa.Text(), nullable=False),
        sa.Column("num_lab_procedures", sa.Text(), nullable=False),
        sa.Column("num_procedures", sa.Text(), nullable=False),
        sa.Column("num_medications", sa.Text(), nullable=False),
        sa.Column("number_outpatient", sa.Text(), nullable=False),
        sa.Column("number_emergency", sa.Text(), nullable=False),
        sa.Column("number_inpatient", sa.Text(), nullable=False),
        sa.Column("diag_1", sa.Text(), nullable=False),
        sa.Column("diag_2", sa.Text(), nullable=False),
        sa.Column("diag_3", sa.Text(), nullable=False),
        sa.Column("number_diagnoses", sa.Text(), nullable=False),
        sa.Column("max_glu_serum", sa.Text(), nullable=False),
        sa.Column("A1Cresult", sa.Text(), nullable=False),
        sa.Column("metformin", sa.Text(), nullable=False),
        sa.Column("repaglinide", sa.Text(), nullable=False),
        sa.Column("nateglinide", sa.Text(), nullable=False),
        sa.Column("chlorpropamide", sa.Text(), nullable=False),
        sa.Column("glimepiride", sa.Text(), nullable=False),
        sa.Column("acetohexamide", sa.Text(), nullable=False),
        sa.Column("glipizide", sa.Text(), nullable=False),
        sa.Column("glyburide", sa.Text(), nullable=False),
        sa.Column("tolbutamide", sa.Text(), nullable=False),
        sa.Column("pioglitazone", sa.Text(), nullable=False),
        sa.Column("rosiglitazone", sa.Text(), nullable=False),
        sa.Column("acarbose", sa.Text(), nullable=False),
        sa.Column("miglitol", sa.Text(), nullable=False),
        sa.Column("troglitazone", sa.Text(), nullable=False),
        sa.Column("tolazamide", sa.Text(), nullable=False),
        sa.Column("examide", sa.Text(), nullable=False),
        sa.Column("citoglipton", sa.Text(), nullable=False),
        sa.Column("insulin", sa.Text(), nullable=False),
        sa.Column("glyburide-metformin", sa.Text(), nullable=False),
        sa.Column("glipizide-metformin", sa.Text(), nullable=False),
        sa.Column("glimepiride-pioglitazone", sa.Text(), nullable=False),
        sa.Column("metformin-rosiglitazone", sa.Text(), nullable=False),
        sa.Column("metformin-pioglitazone", sa.Text(), nullable=False),
        sa.Column("change", sa.Text(), nullable=False),
        sa.Column("diabetesMed", sa.Text(), nullable=False),
        sa.Column("readmitted", sa.Text(), nullable=False),
        sa.PrimaryKeyConstraint("encounter_id"),
    )
    _create(
        "trainings",
        sa.Column("model_name", sa.String(length=256), nullable=False),
        sa.Column("batch_id", sa.Integer(), nullable=False),
        sa.Column("model_version", sa.String(length=32), nullable=False),
        sa.Column("run_id", sa.String(length=64), nullable=False),
        sa.Column("trained_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("model_name", "batch_id"),
    )
    _create(
        "warehouse_settings",
        sa.Column("key", sa.String(length=64), nullable=False),
        sa.Column("value", sa.Text(), nullable=False),
        sa.PrimaryKeyConstraint("key"),
    )
    _create(
        "promotions",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("changed_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("model_name", sa.Text(), nullable=False, index=True),
        sa.Column("from_version", sa.String(length=32), nullable=True),
        sa.Column("to_version", sa.String(length=32), nullable=True),
        sa.Column("changed_by", sa.Text(), nullable=False),
        sa.Column("reason", sa.Text(), nullable=False),
        sa.PrimaryKeyConstraint("id"),
    )


def downgrade() -> None:
    for name in reversed(TABLES):
        op.drop_table(name)
