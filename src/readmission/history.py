"""A model's history in one object: its versions (aliases, stage, metrics, verdict) and the
ledger of production changes. The CLI's `status`, the API's /model/history and the UI read it."""

from __future__ import annotations

from dataclasses import dataclass

from readmission import ledger, registry_reader
from readmission.config import Settings


@dataclass(frozen=True)
class VersionHistory:
    model_name: str
    production_version: str | None
    versions: list[registry_reader.VersionSummary]  # oldest first
    promotions: list[ledger.Promotion]  # oldest first
    # The holdout the gate last scored versions on: each version's AUC there (`roc_auc_on`)
    # compares with every other's, unlike the AUCs of training day, each on its own holdout.
    compared_holdout: str | None


def version_history(settings: Settings) -> VersionHistory:
    return VersionHistory(
        model_name=settings.model_name,
        production_version=registry_reader.production_version(settings),
        versions=registry_reader.version_summaries(settings),
        promotions=ledger.entries(settings.warehouse_url, settings.model_name),
        compared_holdout=registry_reader.compared_holdout(settings),
    )
