"""Hyperparameter tuning on a validation slice of the training data, logged to MLflow.

The procedure: drop the holdout patients (`readmission.data.holdout`, as the warehouse does)
entirely; of the remaining training rows, the last `validation_fraction` become the validation
slice and the rest stream through warm-start updates in BATCH_SIZE batches, exactly as in
production. Each grid point is scored on the validation slice after every batch. The winner has
the best final validation AUC among the *stable* candidates (AUC never drops more than
`max_drop` from one batch to the next); ties go to the lower log-loss. Every candidate is a
nested MLflow run.
"""

from __future__ import annotations

import itertools
import json
import logging
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, replace

import mlflow
import pandas as pd
from sklearn.metrics import log_loss, roc_auc_score

from readmission import extracts, registry
from readmission.config import Settings
from readmission.data import holdout, inventory
from readmission.data.validation import validate
from readmission.model import ModelParams, ReadmissionModel, labels

log = logging.getLogger(__name__)
GRID: dict[str, tuple] = {
    "alpha": (1e-4, 3e-4, 1e-3),
    "eta0": (0.0025, 0.005, 0.01),
    "epochs": (5, 10),
}


@dataclass(frozen=True)
class Candidate:
    params: ModelParams
    aucs: list[float]  # validation AUC after each batch
    log_loss: float

    @property
    def stable(self) -> bool:
        return all(b >= a - 0.005 for a, b in itertools.pairwise(self.aucs))


def training_rows(settings: Settings, source: str | None = None) -> pd.DataFrame:
    """The clean rows of DATA_SOURCE (or `source`) outside the holdout: the warehouse's holdout
    patients, pinned by its first ingest, or HOLDOUT_FRACTION's before any. Raises
    dataset.DatasetError naming the source when it cannot be read."""
    frame = validate(extracts.acquire(settings, source))
    fraction = inventory.holdout_fraction(settings.warehouse_url) or settings.holdout_fraction
    rows, _ = holdout.split(frame.clean, fraction)
    return rows


def split(
    train_rows: pd.DataFrame, validation_fraction: float
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(stream, validation): the validation slice is the latest part of the training rows."""
    cut = int(len(train_rows) * (1 - validation_fraction))
    return train_rows.iloc[:cut], train_rows.iloc[cut:]


def evaluate(
    params: ModelParams, stream: pd.DataFrame, validation: pd.DataFrame, batch_size: int
) -> Candidate:
    model, aucs = ReadmissionModel(params), []
    y_val = labels(validation)
    for start in range(0, len(stream), batch_size):
        batch = stream.iloc[start : start + batch_size]
        model.partial_fit(batch, labels(batch))
        aucs.append(float(roc_auc_score(y_val, model.predict_proba(validation))))
    return Candidate(params, aucs, float(log_loss(y_val, model.predict_proba(validation))))


def grid(base: ModelParams, space: Mapping[str, Iterable] = GRID) -> list[ModelParams]:
    keys = list(space)
    return [
        replace(base, **dict(zip(keys, values, strict=True)))
        for values in itertools.product(*(space[k] for k in keys))
    ]


def best(candidates: list[Candidate]) -> Candidate:
    pool = [c for c in candidates if c.stable] or candidates
    return max(pool, key=lambda c: (round(c.aucs[-1], 4), -c.log_loss))


def tune(
    settings: Settings,
    train_rows: pd.DataFrame,
    validation_fraction: float = 0.2,
    space: Mapping[str, Iterable] = GRID,
    progress: Callable[[int, int], None] | None = None,
) -> Candidate:
    """Run the grid on `train_rows` (clean, holdout excluded) and log everything to MLflow;
    `progress(done, total)` is called after each candidate."""
    stream, validation = split(train_rows, validation_fraction)
    points = grid(ModelParams(), space)
    candidates = []
    experiment = registry.experiment_id(settings)
    with mlflow.start_run(experiment_id=experiment, run_name="tune") as run:
        mlflow.log_params(
            {
                "grid": json.dumps({k: list(v) for k, v in space.items()}),
                "validation_fraction": validation_fraction,
                "batch_size": settings.batch_size,
                "stream_rows": len(stream),
                "validation_rows": len(validation),
            }
        )
        for number, params in enumerate(points, 1):
            candidate = evaluate(params, stream, validation, settings.batch_size)
            candidates.append(candidate)
            log.info(
                "candidate %d/%d alpha=%g eta0=%g epochs=%d: validation AUC %.4f, log-loss %.4f%s",
                number,
                len(points),
                params.alpha,
                params.eta0,
                params.epochs,
                candidate.aucs[-1],
                candidate.log_loss,
                "" if candidate.stable else " (unstable: AUC dropped between batches)",
            )
            with mlflow.start_run(
                experiment_id=experiment,
                nested=True,
                run_name=f"tune-{params.alpha}-{params.eta0}-{params.epochs}",
                parent_run_id=run.info.run_id,
            ):
                mlflow.log_params(params.as_dict())
                for step, auc in enumerate(candidate.aucs, 1):
                    mlflow.log_metric("validation_roc_auc", auc, step=step)
                mlflow.log_metrics(
                    {
                        "final_validation_roc_auc": candidate.aucs[-1],
                        "validation_log_loss": candidate.log_loss,
                        "stable": float(candidate.stable),
                    }
                )
            if progress is not None:
                progress(number, len(points))
        winner = best(candidates)
        mlflow.log_params({f"best_{k}": v for k, v in winner.params.as_dict().items()})
        mlflow.log_metrics(
            {
                "best_validation_roc_auc": winner.aucs[-1],
                "best_validation_log_loss": winner.log_loss,
            }
        )
        mlflow.log_dict(
            {
                "best": winner.params.as_dict(),
                "candidates": [
                    {
                        **c.params.as_dict(),
                        "aucs": c.aucs,
                        "log_loss": c.log_loss,
                        "stable": c.stable,
                    }
                    for c in candidates
                ],
            },
            "tuning.json",
        )
    return winner
