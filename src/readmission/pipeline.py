"""The platform's steps as plain functions: what the CLI, the DAGs and the demo call."""

from __future__ import annotations

import logging
from dataclasses import asdict, dataclass
from typing import Any

import pandas as pd

from readmission import evaluation, registry, training, warehouse
from readmission.config import Settings
from readmission.dataset import load
from readmission.model import labels

log = logging.getLogger(__name__)


def acquire(settings: Settings, source: str | None = None) -> pd.DataFrame:
    """The data set from DATA_SOURCE (checksum verified), or from an explicit `source` override,
    whose checksum DATA_SHA256 does not describe."""
    if source:
        return load(source, "", settings.download_dir)
    return load(settings.data_source, settings.data_sha256, settings.download_dir)


def ingest(
    settings: Settings, max_batches: int | None = None, source: str | None = None
) -> warehouse.IngestReport:
    """Acquire the source and store its next batches (all when `max_batches` is None)."""
    frame = acquire(settings, source)
    report = warehouse.ingest(
        settings.warehouse_url, frame, settings.batch_size, settings.holdout_fraction, max_batches
    )
    log.info(
        "ingested %d rows in %d batches (%d already present)",
        report.rows_added,
        len(report.new_batches),
        report.already_present,
    )
    return report


def train(settings: Settings, batch_id: int) -> training.TrainResult:
    return training.train_batch(settings, batch_id)


@dataclass(frozen=True)
class Verdict:
    challenger_version: str
    champion_version: str | None
    challenger: dict[str, float]
    champion: dict[str, float] | None
    passed: bool
    promoted: bool
    reason: str


def evaluate_and_promote(
    settings: Settings, auto_promote: bool | None = None, margin: float | None = None
) -> Verdict | None:
    """Score the newest version (challenger) and the production one (champion) on the holdout,
    record the verdict as tags on the challenger, and promote it if it wins and promotion is on."""
    auto_promote = settings.auto_promote if auto_promote is None else auto_promote
    margin = settings.promotion_margin if margin is None else margin
    challenger = registry.latest_version(settings)
    if challenger is None:
        return None
    champion = registry.production_version(settings)
    if champion is not None and champion.version == challenger.version:
        # Re-running is safe: the verdict that promoted this version stays as recorded.
        reason = f"version {challenger.version} is already in production"
        log.info("challenger v%s: nothing to do (%s)", challenger.version, reason)
        return Verdict(challenger.version, champion.version, {}, None, True, False, reason)
    holdout = warehouse.clean_rows(settings.warehouse_url, warehouse.HOLDOUT_BATCH)
    y = labels(holdout)

    def holdout_scores(version: str) -> dict[str, float]:
        probability = registry.pyfunc_probability(settings, version, holdout)
        return evaluation.scores(y, probability, 0.5)

    ours = holdout_scores(challenger.version)
    theirs = holdout_scores(champion.version) if champion else None
    passed, reason = _judge(settings, ours, theirs, margin)
    promoted = passed and auto_promote
    if promoted:
        registry.promote(settings, challenger.version)
    client = registry.connect(settings)
    tags = {
        "validation_status": "passed" if passed else "rejected",
        "validation_reason": reason,
        "challenger_roc_auc": f"{ours['roc_auc']:.6f}",
        "challenger_log_loss": f"{ours['log_loss']:.6f}",
        "champion_version": champion.version if champion else "none",
        "champion_roc_auc": f"{theirs['roc_auc']:.6f}" if theirs else "none",
        "promoted_by": "auto" if promoted else "manual",
    }
    for key, value in tags.items():
        client.set_model_version_tag(settings.model_name, challenger.version, key, value)
    log.info("challenger v%s: %s (%s)", challenger.version, tags["validation_status"], reason)
    return Verdict(
        challenger.version,
        champion.version if champion else None,
        ours,
        theirs,
        passed,
        promoted,
        reason,
    )


def _judge(
    settings: Settings, ours: dict[str, float], theirs: dict[str, float] | None, margin: float
) -> tuple[bool, str]:
    if ours["roc_auc"] < settings.min_auc:
        return False, f"holdout AUC {ours['roc_auc']:.4f} is below MIN_AUC {settings.min_auc}"
    if ours["log_loss"] > settings.max_log_loss:
        return False, (
            f"holdout log-loss {ours['log_loss']:.4f} is above MAX_LOG_LOSS {settings.max_log_loss}"
        )
    if theirs is None:
        return True, "no production model yet; quality floors met"
    if ours["roc_auc"] < theirs["roc_auc"] + margin:
        return False, (
            f"holdout AUC {ours['roc_auc']:.4f} does not beat the champion's "
            f"{theirs['roc_auc']:.4f} by the margin {margin}"
        )
    return True, (
        f"holdout AUC {ours['roc_auc']:.4f} beats the champion's "
        f"{theirs['roc_auc']:.4f} by at least {margin}"
    )


def status(settings: Settings) -> dict[str, Any]:
    """Batches, versions and the production version, as plain data."""
    production = registry.production_version(settings)
    return {
        "warehouse": warehouse.row_counts(settings.warehouse_url),
        "batches": [asdict(b) for b in warehouse.batch_list(settings.warehouse_url)],
        "model_name": settings.model_name,
        "production_version": production.version if production else None,
        "versions": [
            {
                "version": v.version,
                "parent_version": v.parent_version,
                "aliases": v.aliases,
                "stage": v.stage,
                "batch_id": v.batch_id,
                "holdout_roc_auc": v.metrics.get("holdout_roc_auc", float("nan")),
                "holdout_log_loss": v.metrics.get("holdout_log_loss", float("nan")),
            }
            for v in registry.version_summaries(settings)
        ],
    }
