"""The warm-start training step: one batch, one MLflow run, one registered model version."""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, replace

import matplotlib.pyplot as plt
import mlflow
import numpy as np
import pandas as pd
from mlflow.models import infer_signature

from readmission import evaluation, registry, warehouse
from readmission.config import Settings
from readmission.model import ModelParams, ReadmissionModel, labels
from readmission.schema import FEATURES

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class TrainResult:
    batch_id: int
    version: str
    parent_version: str | None
    run_id: str
    holdout: dict[str, float]
    recovered: bool = False  # registered by an earlier step that died before its bookkeeping


def train_batch(
    settings: Settings, batch_id: int, params: ModelParams | None = None
) -> TrainResult:
    """Update the newest model version with one batch and register the result.

    Test-then-train: the parent scores the batch before learning from it. Registration is the
    last step, so a failure leaves the registry and the batch bookkeeping as they were.
    """
    url = settings.warehouse_url
    batch = next((b for b in warehouse.batch_list(url) if b.batch_id == batch_id), None)
    if batch is None or batch.kind != "train":
        raise ValueError(f"batch {batch_id} is not an ingested training batch")
    if batch.trained:
        raise ValueError(f"batch {batch_id} is already trained (version {batch.model_version})")
    existing = registry.version_for_batch(settings, batch_id)
    if existing is not None:
        warehouse.mark_trained(url, batch_id, existing.version, existing.run_id or "")
        return TrainResult(
            batch_id,
            existing.version,
            existing.tags.get("parent_version"),
            existing.run_id or "",
            {},
            recovered=True,
        )

    parent = registry.latest_version(settings)
    model = (
        registry.load_readmission_model(settings, parent.version)
        if parent
        else ReadmissionModel(params or initial_params(settings))
    )
    frame = warehouse.clean_rows(url, batch_id)
    holdout = warehouse.clean_rows(url, warehouse.HOLDOUT_BATCH)
    y, y_holdout = labels(frame), labels(holdout)
    if len(frame) == 0 or len(holdout) == 0:
        raise ValueError(f"batch {batch_id} or the holdout has no clean rows to train on")

    with mlflow.start_run(
        experiment_id=registry.experiment_id(settings),
        run_name=f"warm-start-batch-{batch_id}",
        nested=mlflow.active_run() is not None,  # under `mlflow run` (see cli.train)
    ) as run:
        mlflow.set_tags(
            {
                "batch_id": batch_id,
                "parent_version": parent.version if parent else "",
                "warm_start": str(parent is not None).lower(),
            }
        )
        mlflow.log_params(
            {
                **model.params.as_dict(),
                "batch_id": batch_id,
                "first_encounter_id": batch.first_encounter_id,
                "last_encounter_id": batch.last_encounter_id,
                "parent_version": parent.version if parent else "none",
                "n_features": model.space.n_features,
            }
        )
        if model.is_fitted:
            before = model.predict_proba(frame)
            prequential = evaluation.scores(y, before, model.threshold)
            mlflow.log_metrics({f"prequential_{k}": v for k, v in prequential.items()})

        model.partial_fit(frame, y)
        model.threshold = evaluation.best_f1_threshold(y, model.predict_proba(frame))
        metrics = _evaluate_and_log(model, holdout, y_holdout)
        mlflow.log_metrics(
            {
                "samples_seen": model.samples_seen,
                "batch_rows": len(frame),
                "batches_seen": model.batches_seen,
                "threshold": model.threshold,
            }
        )
        example = holdout[list(FEATURES)].head(5)
        pyfunc = registry.ReadmissionPyfunc(model)
        with _no_uv_project_files():
            info = mlflow.pyfunc.log_model(
                name="model",
                python_model=pyfunc,
                signature=infer_signature(example, pyfunc.predict(None, example)),
                input_example=example,
                pip_requirements=_requirements(),
            )
        tags = {
            "batch_id": str(batch_id),
            "parent_version": parent.version if parent else "",
            "first_encounter_id": batch.first_encounter_id,
            "last_encounter_id": batch.last_encounter_id,
            "holdout_roc_auc": f"{metrics['roc_auc']:.6f}",
            "holdout_log_loss": f"{metrics['log_loss']:.6f}",
        }
        version = mlflow.register_model(info.model_uri, settings.model_name, tags=tags)
    warehouse.mark_trained(url, batch_id, version.version, run.info.run_id)
    log.info(
        "batch %s -> %s v%s (holdout AUC %.4f)",
        batch_id,
        settings.model_name,
        version.version,
        metrics["roc_auc"],
    )
    return TrainResult(
        batch_id, version.version, parent.version if parent else None, run.info.run_id, metrics
    )


@contextmanager
def _no_uv_project_files() -> Iterator[None]:
    """Run from the repo, MLflow would copy uv.lock and pyproject.toml into every version and
    derive requirements from them; the model pins its own (`_requirements`)."""
    saved = {k: os.environ.get(k) for k in ("MLFLOW_UV_AUTO_DETECT", "MLFLOW_LOG_UV_FILES")}
    os.environ.update(dict.fromkeys(saved, "false"))
    try:
        yield
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


def initial_params(settings: Settings) -> ModelParams:
    """Hyperparameters for the first version of a lineage: SGD_* settings over the defaults."""
    defaults = ModelParams()
    return replace(
        defaults,
        alpha=defaults.alpha if settings.sgd_alpha is None else settings.sgd_alpha,
        eta0=defaults.eta0 if settings.sgd_eta0 is None else settings.sgd_eta0,
        epochs=defaults.epochs if settings.sgd_epochs is None else settings.sgd_epochs,
    )


def _evaluate_and_log(
    model: ReadmissionModel, holdout: pd.DataFrame, y_holdout: np.ndarray
) -> dict[str, float]:
    probability = model.predict_proba(holdout)
    metrics = evaluation.scores(y_holdout, probability, model.threshold)
    mlflow.log_metrics({f"holdout_{k}": v for k, v in metrics.items()})
    for name, figure in (
        ("roc", evaluation.roc_figure(y_holdout, probability, "Holdout ROC")),
        ("calibration", evaluation.calibration_figure(y_holdout, probability, "Calibration")),
    ):
        mlflow.log_figure(figure, f"plots/{name}.png")
        plt.close(figure)
    return metrics


def _requirements() -> list[str]:
    from importlib.metadata import version

    return [f"{p}=={version(p)}" for p in ("mlflow", "scikit-learn", "pandas", "numpy", "scipy")]


def train_pending(
    settings: Settings, max_batches: int | None = None, params: ModelParams | None = None
) -> list[TrainResult]:
    """Train every ingested but untrained batch in order (or the first `max_batches`)."""
    pending = warehouse.untrained_batches(settings.warehouse_url)[:max_batches]
    return [train_batch(settings, batch_id, params) for batch_id in pending]
