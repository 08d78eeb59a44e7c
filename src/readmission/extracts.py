"""What the platform does with an extract of the data set: acquire it (DATA_SOURCE, or a file
or URL named), store what it adds to the warehouse, join the outcomes it brings to the
prediction log; and which of its encounters are not stored yet. The CLI's `ingest`, DAG 01 and
the demo call these."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from readmission.config import Settings
from readmission.data import ingest_report, ingestion, warehouse
from readmission.data.dataset import load, read_chunks
from readmission.data.validation import validate
from readmission.monitoring import prediction_log
from readmission.schema import TARGET


@dataclass(frozen=True)
class Ingested:
    """One ingest: what the extract did to the warehouse, and the logged predictions that
    received their outcome with it."""

    report: ingest_report.IngestReport
    # The prediction log's join runs after the ingest's transaction: counted here, where known.
    outcomes_joined: int

    @property
    def changed(self) -> bool:
        """Whether anything downstream has new input: rows stored, corrections recorded, or
        outcomes joined (an extract may bring nothing but outcomes of encounters the API scored,
        and the realized performance must still be recomputed after it)."""
        return self.report.changed or self.outcomes_joined > 0

    def as_dict(self) -> dict[str, Any]:
        """Ids and counts, never rows: what DAG 01 returns (its XCom)."""
        report = self.report
        return {
            "batch_ids": [b.batch_id for b in report.new_batches],
            "training_batch_ids": report.training_batch_ids,
            "rows_in": report.rows_in,
            "rows_added": report.rows_added,
            "accepted": report.accepted,
            "quarantined": report.quarantined,
            "already_present": report.already_present,
            "corrections": report.corrections,
            "deferred": report.deferred,
            "outcomes_joined": self.outcomes_joined,
            "changed": self.changed,
        }

    def describe(self) -> str:
        """The ingest in one line, as the CLI and the DAG print it."""
        report = self.report
        reasons = ", ".join(f"{n} {code}" for code, n in sorted(report.quarantined.items()))
        batches = [b.batch_id for b in report.new_batches]
        normalized = ", ".join(f"{n} {column}" for column, n in sorted(report.normalized.items()))
        return (
            f"{report.rows_in} rows in: {report.accepted} new accepted, "
            f"{report.quarantined_total} quarantined{f' ({reasons})' if reasons else ''}, "
            f"{report.already_present} already present ({report.corrections} corrections "
            "recorded)"
            + (f", {report.deferred} deferred to a later ingest" if report.deferred else "")
            + f"; batches created: {batches or 'none'}"
            + (
                f"; {report.waiting} stored rows wait for the next extract (fewer clean rows than "
                "MIN_BATCH_ROWS for a batch)"
                if report.waiting
                else ""
            )
            + (f"; blank lab results read as 'None': {normalized}" if normalized else "")
            + f"; {self.outcomes_joined} logged predictions received their outcome"
        )


def acquire(settings: Settings, source: str | None = None) -> pd.DataFrame:
    """The data set from DATA_SOURCE (checksum verified), or from an explicit `source` override,
    whose checksum DATA_SHA256 does not describe."""
    if source:
        return load(source, "", settings.download_dir)
    return load(settings.data_source, settings.data_sha256, settings.download_dir)


def ingest(
    settings: Settings, max_batches: int | None = None, source: str | None = None
) -> Ingested:
    """Acquire an extract and store what it adds (every new batch when `max_batches` is None),
    then join the outcomes it brought to the prediction log.

    Raises ingest_report.ExtractRefused, naming the share and the main reasons, when too many of
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
    report = ingestion.ingest(
        settings.warehouse_url,
        chunks,
        settings.batch_size,
        settings.holdout_fraction,
        max_batches,
        source_name=source or settings.data_source,
        min_batch_rows=settings.min_batch_rows,
        max_quarantine_share=settings.max_quarantine_share,
    )
    # Outcomes of encounters the API scored earlier join the prediction log as they arrive.
    return Ingested(report, prediction_log.join_outcomes(settings.warehouse_url))


def unstored_encounters(settings: Settings, limit: int) -> list[dict[str, Any]]:
    """The first `limit` valid encounters of DATA_SOURCE the warehouse does not hold yet, in
    the source's order and without their outcome: what a hospital would send the API to score
    before the extract carrying those outcomes arrives."""
    source = acquire(settings)
    stored = warehouse.stored_encounter_ids(settings.warehouse_url)
    upcoming = source[~source["encounter_id"].astype(str).isin(stored)].head(limit)
    if upcoming.empty:
        return []
    records: list[dict[str, Any]] = (
        validate(upcoming).clean.drop(columns=[TARGET]).to_dict("records")
    )
    return records


def write_extracts(
    frame: pd.DataFrame, folder: Path, ends: Mapping[str, float]
) -> list[tuple[str, Path]]:
    """`frame` (in encounter_id order) cut into consecutive extracts, written as `<name>.csv`
    in `folder`: each named extract runs from where the one before ended to its end, a share of
    the rows (the demo's {"first": 0.5, "second": 0.65}: the first half, then the next 15%)."""
    folder.mkdir(parents=True, exist_ok=True)
    written, start = [], 0
    for name, share in ends.items():
        end = int(len(frame) * share)
        path = folder / f"{name}.csv"
        frame.iloc[start:end].to_csv(path, index=False)
        written.append((name, path))
        start = end
    return written
