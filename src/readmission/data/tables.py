"""Every table of the warehouse (the promotion ledger's too), what a batch id means, and what the
API's login may do on each table. SQLAlchemy only: `readmission status`
and the API read them without the ingest's pandas and numpy."""

from __future__ import annotations

import sqlalchemy as sa

from readmission.schema import COLUMNS, ID_COLUMNS, INTEGER_COLUMNS

HOLDOUT_BATCH = 0
# Where the rows of a remainder too small for a batch (MIN_BATCH_ROWS) wait, stored, for the
# next extract: in raw_encounters, clean_encounters and the quarantine, in no batch yet.
WAITING_BATCH = -1

# The serving API's own PostgreSQL login (postgres_init creates it; compose and k3d give it to the
# API). It owns nothing and may only do what the API does: each table the API uses names, in its
# `info[API_PRIVILEGES]`, what this login may do there, and the tables' owner grants exactly that
# whenever it opens the warehouse (create_schema). Grants name tables, and none exists yet when
# postgres_init runs; default privileges (ALTER DEFAULT PRIVILEGES) cannot single tables out, so
# they would open every future table, patients' encounters included.
API_ROLE = "readmission_api"
API_PRIVILEGES = "api_privileges"
# Every table privilege there is: what `api_privileges` reports the login holds.
TABLE_PRIVILEGES = ("SELECT", "INSERT", "UPDATE", "DELETE", "TRUNCATE", "REFERENCES", "TRIGGER")

metadata = sa.MetaData()


def _typed_columns() -> list[sa.Column]:
    integers = {*ID_COLUMNS, *INTEGER_COLUMNS}
    return [
        sa.Column(c, sa.BigInteger if c in integers else sa.Text, nullable=False)
        for c in COLUMNS
        if c != "encounter_id"
    ]


raw_encounters = sa.Table(
    "raw_encounters",
    metadata,
    sa.Column("encounter_id", sa.BigInteger, primary_key=True),
    sa.Column("batch_id", sa.Integer, nullable=False, index=True),
    sa.Column("row_hash", sa.String(64), nullable=False),
    *(sa.Column(c, sa.Text, nullable=False) for c in COLUMNS if c != "encounter_id"),
)
clean_encounters = sa.Table(
    "clean_encounters",
    metadata,
    sa.Column("encounter_id", sa.BigInteger, primary_key=True),
    sa.Column("batch_id", sa.Integer, nullable=False, index=True),
    *_typed_columns(),
)
quarantine = sa.Table(
    "quarantined_encounters",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("encounter_id", sa.Text, nullable=False, index=True),  # as received
    sa.Column("batch_id", sa.Integer, index=True),  # none: rejected before batching (its id)
    sa.Column("reason_code", sa.String(32), nullable=False),
    sa.Column("reason", sa.Text, nullable=False),
    sa.Column("row_hash", sa.String(64), nullable=False),
    sa.Column("raw", sa.Text, nullable=False),
    sa.UniqueConstraint("row_hash", "reason_code"),  # a replayed bad row is stored once
)
corrections = sa.Table(
    "corrections",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("encounter_id", sa.BigInteger, nullable=False, index=True),
    sa.Column("row_hash", sa.String(64), nullable=False, unique=True),
    sa.Column("fields", sa.Text, nullable=False),  # {column: [stored, received]}
    sa.Column("raw", sa.Text, nullable=False),
    sa.Column("applied_to_batch", sa.Integer),  # a fixed quarantined row, now a clean row
    sa.Column("received_at", sa.DateTime(timezone=True), nullable=False),
)
batches = sa.Table(
    "batches",
    metadata,
    sa.Column("batch_id", sa.Integer, primary_key=True, autoincrement=False),
    sa.Column("kind", sa.String(8), nullable=False),
    sa.Column("first_encounter_id", sa.Text, nullable=False),
    sa.Column("last_encounter_id", sa.Text, nullable=False),
    sa.Column("rows", sa.Integer, nullable=False),
    sa.Column("accepted", sa.Integer, nullable=False),
    sa.Column("quarantined", sa.Integer, nullable=False),
    sa.Column("ingested_at", sa.DateTime(timezone=True), nullable=False),
)
trainings = sa.Table(
    "trainings",
    metadata,
    sa.Column("model_name", sa.String(256), primary_key=True),
    sa.Column("batch_id", sa.Integer, primary_key=True),  # once per lineage, by construction
    sa.Column("model_version", sa.String(32), nullable=False),
    sa.Column("run_id", sa.String(64), nullable=False),
    sa.Column("trained_at", sa.DateTime(timezone=True), nullable=False),
)
ingests = sa.Table(
    "ingests",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("source", sa.Text, nullable=False),
    sa.Column("finished_at", sa.DateTime(timezone=True), nullable=False),
    sa.Column("rows_in", sa.Integer, nullable=False),
    sa.Column("accepted", sa.Integer, nullable=False),
    sa.Column("quarantined", sa.Integer, nullable=False),
    sa.Column("already_present", sa.Integer, nullable=False),
    sa.Column("deferred", sa.Integer, nullable=False),
    sa.Column("corrections", sa.Integer, nullable=False),
    sa.Column("report", sa.Text, nullable=False),  # the whole IngestReport as JSON
    # Blank "not measured" lab cells read as "None" (readmission.data.validation.normalize).
    sa.Column("normalized", sa.Integer, nullable=False, server_default="0"),
    # Refused whole (MAX_QUARANTINE_SHARE): nothing else of the extract was stored.
    sa.Column("refused", sa.Boolean, nullable=False, server_default=sa.false()),
    sa.Column("quarantine_share", sa.Float, nullable=False, server_default="0"),
)
leases = sa.Table(
    "leases",
    metadata,
    sa.Column("name", sa.String(32), primary_key=True),
    sa.Column("holder", sa.Text, nullable=False),
    sa.Column("acquired_at", sa.DateTime(timezone=True), nullable=False),
    # One higher at each acquisition: a run whose token is no longer the row's lost the lease.
    sa.Column("fencing_token", sa.BigInteger, nullable=False, server_default="0"),
)
settings_table = sa.Table(
    "warehouse_settings",
    metadata,
    sa.Column("key", sa.String(64), primary_key=True),
    sa.Column("value", sa.Text, nullable=False),
)

# Every prediction the API served (readmission.monitoring.prediction_log); `outcome` is the
# encounter's `readmitted` value, copied in once an ingested extract carries it.
prediction_log_table = sa.Table(
    "prediction_log",
    metadata,
    sa.Column("id", sa.BigInteger().with_variant(sa.Integer, "sqlite"), primary_key=True),
    sa.Column("encounter_id", sa.BigInteger, index=True),
    sa.Column("patient_nbr", sa.BigInteger),
    sa.Column("model_name", sa.String(256), nullable=False),
    sa.Column("model_version", sa.String(32), nullable=False),
    sa.Column("probability", sa.Float, nullable=False),
    sa.Column("threshold", sa.Float, nullable=False),
    sa.Column("predicted_label", sa.Boolean, nullable=False),
    sa.Column("risk_band", sa.String(8), nullable=False),
    sa.Column("scored_at", sa.DateTime(timezone=True), nullable=False),
    sa.Column("outcome", sa.Text),
    sa.Column("labelled_at", sa.DateTime(timezone=True)),
    # The shadow version scored beside the answer on the same request (never returned), null
    # without one: in the same row, so that shadow scoring adds no row to write (the COPY is
    # most of what logging costs the API) and the live comparison's pairs need no join.
    sa.Column("shadow_version", sa.String(32)),
    sa.Column("shadow_probability", sa.Float),
    sa.Column("shadow_threshold", sa.Float),
    sa.Index("ix_prediction_log_model_outcome", "model_name", "outcome"),
    # The API only appends; the platform reads the log and copies outcomes in (join_outcomes).
    info={API_PRIVILEGES: ("INSERT",)},
)
# Each computation of the realized performance (readmission.monitoring.realized), as JSON.
performance_reports = sa.Table(
    "performance_reports",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("model_name", sa.String(256), nullable=False, index=True),
    sa.Column("computed_at", sa.DateTime(timezone=True), nullable=False),
    sa.Column("last_prediction_id", sa.BigInteger, nullable=False),
    sa.Column("report", sa.Text, nullable=False),
    # The API exports the latest report to Prometheus and serves it (GET /performance).
    info={API_PRIVILEGES: ("SELECT",)},
)


# MLflow registry webhook deliveries the API accepted (readmission.release.webhooks).
webhook_deliveries = sa.Table(
    "webhook_deliveries",
    metadata,
    sa.Column("delivery_id", sa.String(64), primary_key=True),
    sa.Column("received_at", sa.DateTime(timezone=True), nullable=False),
    sa.Column("sent_at", sa.DateTime(timezone=True), nullable=False),
    sa.Column("event", sa.String(64), nullable=False),
    sa.Column("model_name", sa.Text),
    sa.Column("alias", sa.Text),
    sa.Column("version", sa.String(32)),
    sa.Column("received_by", sa.Text, nullable=False),
    # The API records each delivery it accepts, the evidence of the registry check it started;
    # it needs no other right: a replay is an INSERT that adds nothing.
    info={API_PRIVILEGES: ("INSERT",)},
)


# The promotion ledger (readmission.release.ledger): every change of the production version.
promotions = sa.Table(
    "promotions",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("changed_at", sa.DateTime(timezone=True), nullable=False),
    sa.Column("model_name", sa.Text, nullable=False, index=True),
    sa.Column("from_version", sa.String(32)),  # null: nothing was in production
    sa.Column("to_version", sa.String(32)),  # null: production was removed
    sa.Column("changed_by", sa.Text, nullable=False),
    sa.Column("reason", sa.Text, nullable=False),
    # What kind of change: a person's decision must be told from the gate's, and a rollback is
    # final for the gate (null on rows written before the column existed).
    sa.Column("action", sa.String(16)),
    # The gate's evidence for an automatic promotion: challenger minus champion AUC on the same
    # holdout, its paired bootstrap interval, and which holdout (null for any other change).
    sa.Column("delta_roc_auc", sa.Float),
    sa.Column("delta_roc_auc_ci_low", sa.Float),
    sa.Column("delta_roc_auc_ci_high", sa.Float),
    sa.Column("holdout_fingerprint", sa.String(32)),
    # Who decided under which plan: the change control plan's sha256 in force, the id of its rule
    # that let the platform make the change (null: a person's decision or a change outside), and
    # the comment a person wrote with their decision (null on rows written before these columns).
    sa.Column("plan_sha256", sa.String(64)),
    sa.Column("rule", sa.Text),
    sa.Column("comment", sa.Text),
    # The API shows the ledger (GET /model/history) and adds the production changes it notices
    # (made in the MLflow UI); it never changes a row (nothing does: rows are only added).
    info={API_PRIVILEGES: ("SELECT", "INSERT")},
)
