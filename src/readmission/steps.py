"""The platform's steps as plain functions: what the CLI, the DAGs and the demo call."""

from __future__ import annotations

from dataclasses import replace

import pandas as pd

from readmission import prediction_log, warehouse
from readmission.config import Settings
from readmission.dataset import load, read_chunks


def acquire(settings: Settings, source: str | None = None) -> pd.DataFrame:
    """The data set from DATA_SOURCE (checksum verified), or from an explicit `source` override,
    whose checksum DATA_SHA256 does not describe."""
    if source:
        return load(source, "", settings.download_dir)
    return load(settings.data_source, settings.data_sha256, settings.download_dir)


def ingest(
    settings: Settings, max_batches: int | None = None, source: str | None = None
) -> warehouse.IngestReport:
    """Acquire an extract and store what it adds (every new batch when `max_batches` is None).

    Raises warehouse.ExtractRefused, naming the share and the main reasons, when too many of
    its rows fail validation (MAX_QUARANTINE_SHARE): then nothing of it is stored.
    """
    if source:  # an explicit source, whose checksum DATA_SHA256 does not describe
        chunks = read_chunks(source, "", settings.download_dir, settings.ingest_chunk_rows)
    else:
        chunks = read_chunks(
            settings.data_source,
            settings.data_sha256,
            settings.download_dir,
            settings.ingest_chunk_rows,
        )
    report = warehouse.ingest(
        settings.warehouse_url,
        chunks,
        settings.batch_size,
        settings.holdout_fraction,
        max_batches,
        source_name=source or settings.data_source,
        min_batch_rows=settings.min_batch_rows,
        max_quarantine_share=settings.max_quarantine_share,
    )
    # Outcomes of encounters the API scored earlier join the prediction log as they arrive. The
    # count is part of the report: an extract may bring nothing but such outcomes (holdout rows,
    # or rows of encounters scored after they were stored), and the realized performance must
    # still be recomputed after it.
    joined = prediction_log.join_outcomes(settings.warehouse_url)
    report = replace(report, outcomes_joined=joined)
    return report


def describe(report: warehouse.IngestReport) -> str:
    """The ingest report in one line, as the CLI and the DAG print it."""
    reasons = ", ".join(f"{n} {code}" for code, n in sorted(report.quarantined.items()))
    batches = [b.batch_id for b in report.new_batches]
    normalized = ", ".join(f"{n} {column}" for column, n in sorted(report.normalized.items()))
    return (
        f"{report.rows_in} rows in: {report.accepted} new accepted, "
        f"{report.quarantined_total} quarantined{f' ({reasons})' if reasons else ''}, "
        f"{report.already_present} already present ({report.corrections} corrections recorded)"
        + (f", {report.deferred} deferred to a later ingest" if report.deferred else "")
        + f"; batches created: {batches or 'none'}"
        + (
            f"; {report.waiting} stored rows wait for the next extract (fewer clean rows than "
            "MIN_BATCH_ROWS for a batch)"
            if report.waiting
            else ""
        )
        + (f"; blank lab results read as 'None': {normalized}" if normalized else "")
        + f"; {report.outcomes_joined} logged predictions received their outcome"
    )
