"""What one ingest did: its report, the reasons a row is quarantined, and the refusal of an
extract with too many failing rows."""

from __future__ import annotations

from dataclasses import dataclass, field

from readmission.data.inventory import Batch

# Quarantine reasons, as counted in ingest reports.
INVALID_ID = "invalid_encounter_id"


DUPLICATE_ID = "duplicate_encounter_id"


INVALID_VALUES = "invalid_values"


@dataclass(frozen=True)
class IngestReport:
    """What one extract did. rows_in = accepted + quarantined + already_present + deferred,
    unless the extract was refused (then nothing was accepted, quarantined or deferred)."""

    rows_in: int
    accepted: int  # new clean rows (new encounters, and fixes of quarantined ones)
    quarantined: dict[str, int]  # new quarantined rows by reason code
    already_present: int  # encounters stored before (identical, or recorded as a correction)
    # New clean training rows in no batch yet: left for a later ingest of the extract
    # (`max_batches`, not stored) or waiting, stored, for the next extract (MIN_BATCH_ROWS).
    deferred: int
    corrections: int  # rows whose content differs from the stored encounter's, recorded
    new_batches: list[Batch] = field(default_factory=list)  # holdout additions: batch 0
    normalized: dict[str, int] = field(default_factory=dict)  # blank lab cells read as "None"
    quarantine_share: float = 0.0  # of rows_in, failing validation (stored before or not)
    problems: dict[str, int] = field(default_factory=dict)  # rows breaking each rule
    refused: bool = False  # the share exceeded MAX_QUARANTINE_SHARE: nothing stored
    waiting: int = 0  # rows in the warehouse waiting for a batch after this ingest

    @property
    def normalized_total(self) -> int:
        return sum(self.normalized.values())

    @property
    def rows_added(self) -> int:
        return sum(b.rows for b in self.new_batches)

    @property
    def changed(self) -> bool:
        """Whether the ingest changed what the warehouse holds: rows stored (in the holdout, a
        training batch or the quarantine) or corrections recorded. False for a replay; the
        outcomes it joins to the prediction log are counted by readmission.extracts.ingest."""
        return bool(self.new_batches or self.quarantined or self.corrections)

    @property
    def quarantined_total(self) -> int:
        return sum(self.quarantined.values())

    @property
    def training_batch_ids(self) -> list[int]:
        return [b.batch_id for b in self.new_batches if b.kind == "train"]


class ExtractRefused(RuntimeError):
    """An extract whose share of failing rows exceeds the limit: nothing of it was stored."""

    def __init__(self, report: IngestReport, source_name: str, limit: float) -> None:
        top = "; ".join(f"{rule} ({n:,} rows)" for rule, n in list(report.problems.items())[:3])
        super().__init__(
            f"extract {source_name or '(unnamed)'} refused: {report.quarantine_share:.1%} of its "
            f"{report.rows_in:,} rows fail validation, more than MAX_QUARANTINE_SHARE "
            f"({limit:.1%}). Most frequent reasons: {top}. Nothing of it was stored (the "
            "refusal is recorded in the ingests table): correct the file and ingest it again."
        )
        self.report = report
