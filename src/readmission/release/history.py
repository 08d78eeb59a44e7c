"""A model's history in one object: its versions (aliases, stage, metrics, verdict) and the
ledger of production changes. The CLI's `status`, the API's /model/history and the UI read it."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

from readmission import registry_reader
from readmission.config import Settings
from readmission.json_numbers import finite
from readmission.release import ledger


@dataclass(frozen=True)
class VersionHistory:
    model_name: str
    production_version: str | None
    versions: list[registry_reader.VersionSummary]  # oldest first
    promotions: list[ledger.ProductionChange]  # oldest first
    # The holdout the gate last scored versions on: each version's AUC there (`roc_auc_on`)
    # compares with every other's, unlike the AUCs of training day, each on its own holdout.
    compared_holdout: str | None


@dataclass(frozen=True)
class VersionRow:
    """One version as the history shows it (`readmission status`, GET /model/history, the UI):
    metrics a version lacks, or that are not finite, are None (JSON has no NaN)."""

    version: str
    parent_version: str | None
    batch_id: str | None
    aliases: list[str]
    stage: str | None
    # On the holdout compared on (the same rows for every version): these numbers compare.
    compared_roc_auc: float | None
    # On the holdout of its training day, which grew since: each version its own rows.
    holdout_roc_auc: float | None
    holdout_roc_auc_ci: list[float] | None
    holdout_log_loss: float | None
    holdout_rows: str | None
    holdout_fingerprint: str | None
    calibration_slope: float | None
    samples_seen: int | None
    validation_status: str | None
    rolled_back: str | None

    @classmethod
    def of(cls, v: registry_reader.VersionSummary, compared_on: str | None) -> VersionRow:
        low, high = (finite(v.metrics.get(f"holdout_roc_auc_ci_{end}")) for end in ("low", "high"))
        return cls(
            version=v.version,
            parent_version=v.parent_version or None,
            batch_id=v.batch_id,
            aliases=sorted(v.aliases),
            stage=v.stage,
            compared_roc_auc=v.roc_auc_on(compared_on),
            holdout_roc_auc=finite(v.metrics.get("holdout_roc_auc")),
            holdout_roc_auc_ci=[low, high] if low is not None and high is not None else None,
            holdout_log_loss=finite(v.metrics.get("holdout_log_loss")),
            holdout_rows=v.tags.get("holdout_rows"),
            holdout_fingerprint=v.tags.get("holdout_fingerprint"),
            calibration_slope=finite(v.metrics.get("holdout_calibration_slope")),
            samples_seen=int(v.metrics["samples_seen"]) if "samples_seen" in v.metrics else None,
            validation_status=v.tags.get("validation_status"),
            rolled_back=v.tags.get(registry_reader.ROLLED_BACK_TAG),
        )

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def version_history(settings: Settings) -> VersionHistory:
    return VersionHistory(
        model_name=settings.model_name,
        production_version=registry_reader.production_version(settings),
        versions=registry_reader.version_summaries(settings),
        promotions=ledger.entries(settings.warehouse_url, settings.model_name),
        compared_holdout=registry_reader.compared_holdout(settings),
    )
