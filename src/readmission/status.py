"""What `readmission status` shows: the warehouse's batches, ingests, corrections and holdout,
the registry's versions, the production version and the ledger of its changes.

Read with SQLAlchemy Core (readmission.data.inventory) and MLflow's REST API
(readmission.registry_reader): no pandas, scikit-learn or MLflow to import, which took most of
its time (bench/cli_latency.py times it; tests/core/test_cli_imports.py keeps them out).
"""

from __future__ import annotations

from dataclasses import asdict
from typing import Any

from readmission.config import Settings
from readmission.data import inventory
from readmission.release.history import VersionRow, version_history


def report(settings: Settings) -> dict[str, Any]:
    """Batches, ingests, corrections, the holdout, versions, the production version and the
    ledger of its changes."""
    url = settings.warehouse_url
    history = version_history(settings)
    holdout = inventory.holdout_summary(url)
    return {
        "warehouse": inventory.row_counts(url),
        "holdout": {
            "rows": holdout.rows,
            "patients": holdout.patients,
            "fingerprint": holdout.fingerprint,
            "fraction": inventory.holdout_fraction(url),
            "patients_also_in_training": inventory.holdout_overlap(url),
        },
        "ingests": inventory.ingest_history(url),
        "corrections": inventory.correction_count(url),
        "batches": [asdict(b) for b in inventory.batch_list(url, settings.model_name)],
        "model_name": history.model_name,
        "production_version": history.production_version,
        # Compared on today's holdout, as the gate scored them (None until it has); the
        # output's name for that number is `current_holdout_roc_auc`.
        "versions": [
            {**row.as_dict(), "current_holdout_roc_auc": row.compared_roc_auc}
            for row in (VersionRow.of(v, holdout.fingerprint) for v in history.versions)
        ],
        "promotions": [p.as_dict() for p in history.promotions],
    }
