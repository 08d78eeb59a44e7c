"""The platform's steps as plain functions: what the CLI, the DAGs and the demo call."""

from __future__ import annotations

import logging
from dataclasses import asdict, dataclass
from typing import Any

import pandas as pd

from readmission import evaluation, registry, warehouse
from readmission.config import Settings
from readmission.dataset import load
from readmission.holdout import fingerprint
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
    """Acquire an extract and store what it adds (every new batch when `max_batches` is None)."""
    frame = acquire(settings, source)
    report = warehouse.ingest(
        settings.warehouse_url,
        frame,
        settings.batch_size,
        settings.holdout_fraction,
        max_batches,
        source_name=source or settings.data_source,
    )
    log.info("ingest: %s", describe(report))
    return report


def describe(report: warehouse.IngestReport) -> str:
    """The ingest report in one line, as the CLI and the DAG print it."""
    reasons = ", ".join(f"{n} {code}" for code, n in sorted(report.quarantined.items()))
    batches = [b.batch_id for b in report.new_batches]
    return (
        f"{report.rows_in} rows in: {report.accepted} new accepted, "
        f"{report.quarantined_total} quarantined{f' ({reasons})' if reasons else ''}, "
        f"{report.already_present} already present ({report.corrections} corrections recorded)"
        + (f", {report.deferred} deferred to a later ingest" if report.deferred else "")
        + f"; batches created: {batches or 'none'}"
    )


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
        # A re-run (or a retry after the alias moved): finish the promotion if a crash cut it
        # short, keep the verdict as recorded, change nothing else.
        if challenger.current_stage != registry.PRODUCTION_STAGE:
            registry.promote(settings, challenger.version)
        reason = f"version {challenger.version} is already in production: nothing changed"
        log.info("challenger v%s: %s", challenger.version, reason)
        recorded = {
            k.removeprefix("challenger_"): float(v)
            for k, v in challenger.tags.items()
            if k in ("challenger_roc_auc", "challenger_log_loss")
        }
        return Verdict(challenger.version, champion.version, recorded, None, True, False, reason)
    holdout = warehouse.clean_rows(settings.warehouse_url, warehouse.HOLDOUT_BATCH)
    y = labels(holdout)

    def holdout_scores(version: str) -> dict[str, float]:
        probability = registry.pyfunc_probability(settings, version, holdout)
        return evaluation.scores(y, probability, 0.5)

    # Champion and challenger on exactly the same rows: today's holdout, named by its print.
    ours = holdout_scores(challenger.version)
    theirs = holdout_scores(champion.version) if champion else None
    passed, reason = _judge(settings, ours, theirs, margin)
    promoted = passed and auto_promote
    client = registry.connect(settings)
    tags = {
        "validation_status": "passed" if passed else "rejected",
        "validation_reason": reason,
        "challenger_roc_auc": f"{ours['roc_auc']:.6f}",
        "challenger_log_loss": f"{ours['log_loss']:.6f}",
        "champion_version": champion.version if champion else "none",
        "champion_roc_auc": f"{theirs['roc_auc']:.6f}" if theirs else "none",
        "validation_holdout_rows": str(len(holdout)),
        "validation_holdout_fingerprint": fingerprint(holdout["encounter_id"]),
        "promoted_by": "auto" if promoted else "manual",
    }
    # The verdict first, the promotion last: a retry after a crash in between finds the same
    # verdict to record again and then promotes; one after the promotion changes nothing.
    for key, value in tags.items():
        client.set_model_version_tag(settings.model_name, challenger.version, key, value)
    if promoted:
        registry.promote(settings, challenger.version)
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
    """Batches, ingests, corrections, the holdout, versions and the production version."""
    url = settings.warehouse_url
    production = registry.production_version(settings)
    holdout = warehouse.clean_rows(url, warehouse.HOLDOUT_BATCH)
    return {
        "warehouse": warehouse.row_counts(url),
        "holdout": {
            "rows": len(holdout),
            "patients": int(holdout["patient_nbr"].nunique()),
            "fingerprint": fingerprint(holdout["encounter_id"]),
            "fraction": warehouse.holdout_fraction(url),
            "patients_also_in_training": warehouse.holdout_overlap(url),
        },
        "ingests": warehouse.ingest_history(url),
        "corrections": len(warehouse.correction_rows(url)),
        "batches": [asdict(b) for b in warehouse.batch_list(url, settings.model_name)],
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
                "holdout_rows": v.tags.get("holdout_rows"),
                "holdout_fingerprint": v.tags.get("holdout_fingerprint"),
            }
            for v in registry.version_summaries(settings)
        ],
    }
