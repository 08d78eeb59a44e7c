"""The warm-start training step: one batch, one MLflow run, one registered model version."""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, replace
from typing import Any

import matplotlib.pyplot as plt
import mlflow
import numpy as np
import pandas as pd
from mlflow.entities.model_registry import ModelVersion

from readmission import registry
from readmission.config import Settings
from readmission.data import inventory, lineage, tables, warehouse
from readmission.data.holdout import fingerprint
from readmission.evaluation import holdout_evaluation, model_card
from readmission.features import FeatureSpace
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

    def as_dict(self) -> dict[str, Any]:
        """The result as DAG 02 returns it (its XCom): ids and the holdout AUC, never rows."""
        return {
            "batch_id": self.batch_id,
            "version": self.version,
            "parent_version": self.parent_version,
            "holdout_roc_auc": self.holdout.get("roc_auc", float("nan")),
        }


class LineageError(RuntimeError):
    """The warehouse and the registry disagree about the lineage; the message says what to do."""


def train_pending(
    settings: Settings,
    max_batches: int | None = None,
    params: ModelParams | None = None,
    holder: str = "readmission train",
    on_step: Callable[[int, int, int], None] | None = None,
) -> list[TrainResult]:
    """The training loop of the CLI, the DAG and the MLproject entry point: under the
    warehouse's training lease, train this lineage's untrained batches in order (at most
    `max_batches`), each continuing the version the previous one registered.

    The lease makes every other run (any process, any host) wait, so no batch is trained twice
    and the lineage never forks; past TRAINING_LEASE_WAIT seconds it raises
    `lineage.LeaseBusy` naming the holder. Batches ingested while the loop runs are trained
    too. `on_step(number, total, batch_id)` is called before each batch.
    """
    url, name = settings.warehouse_url, settings.model_name
    results: list[TrainResult] = []
    with lineage.training_lease(url, f"{holder} for {name}", settings.training_lease_wait) as lease:
        while max_batches is None or len(results) < max_batches:
            pending = lineage.untrained_batches(url, name)
            if not pending:
                break
            total = len(results) + len(pending)
            if on_step is not None:
                on_step(len(results) + 1, min(total, max_batches or total), pending[0])
            results.append(_train_batch(settings, pending[0], params, lease))
    return results


def _train_batch(
    settings: Settings, batch_id: int, params: ModelParams | None, lease: lineage.Lease
) -> TrainResult:
    """Update the lineage's head version with one batch and register the result.

    Test-then-train: the parent scores the batch before learning from it. The model card is in
    the run before the version is registered, and the lease is checked just before: a version
    is visible only once it is whole, and never from a run that lost the lease. A run that died
    after registering is recognised by the version's tags (this warehouse, this batch, this
    parent) and its version adopted instead of retrained, if it has its card (a version without
    one is unfinished: the batch is trained again and that version removed, `_converge`).
    """
    url = settings.warehouse_url
    batch = next((b for b in inventory.batch_list(url) if b.batch_id == batch_id), None)
    if batch is None or batch.kind != "train":
        raise ValueError(f"batch {batch_id} is not an ingested training batch")
    warehouse_id = lineage.warehouse_id(url)
    head = lineage.lineage_head(url, settings.model_name)
    parent = _parent_version(settings, head, warehouse_id)
    parent_tag = parent.version if parent else ""
    existing = registry.version_for_batch(settings, batch_id, warehouse_id, parent_tag)
    card = model_card.load(existing.run_id) if existing and existing.run_id else None
    if existing is not None and card is None:
        log.warning(
            "batch %s: version %s was registered without a model card: unfinished, trained again",
            batch_id,
            existing.version,
        )
    elif existing is not None and card is not None:
        if card["model"]["version"] is None:  # died between registering and completing it
            _complete_card(settings, existing.run_id or "", card, existing.version)
        _record(settings, batch_id, existing.version, existing.run_id or "", lease, warehouse_id)
        log.info("batch %s: adopting version %s registered before", batch_id, existing.version)
        return TrainResult(
            batch_id,
            existing.version,
            parent.version if parent else None,
            existing.run_id or "",
            {},
            recovered=True,
        )

    model = (
        registry.load_readmission_model(settings, parent.version)
        if parent
        else ReadmissionModel(params or initial_params(settings))
    )
    check_feature_space(model, parent.version if parent else None, settings.model_name)
    frame = warehouse.clean_rows(url, batch_id)
    holdout = warehouse.clean_rows(url, tables.HOLDOUT_BATCH)
    holdout_print = fingerprint(holdout["encounter_id"])
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
                "feature_space": model.space.fingerprint,
                "holdout_rows": len(holdout),
                "holdout_fingerprint": holdout_print,
            }
        )
        if model.is_fitted:
            before = model.predict_proba(frame)
            prequential = holdout_evaluation.scores(y, before, model.threshold)
            mlflow.log_metrics({f"prequential_{k}": v for k, v in prequential.items()})

        model.partial_fit(frame, y)
        evaluated = _evaluate_and_log(settings, model, holdout, y_holdout)
        model.threshold = evaluated.threshold.value
        metrics = evaluated.scores
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
                signature=registry.signature(),
                input_example=example,
                pip_requirements=_requirements(),
            )
        # Written before the version exists: a version is never visible without its card. Its
        # number is known only once registered (_complete_card).
        card = model_card.build(
            settings,
            evaluated,
            version=None,
            run_id=run.info.run_id,
            parent_version=parent.version if parent else None,
            batches=_lineage_batches(url, settings.model_name, batch_id),
            parameters=model.params.as_dict(),
            samples_seen=model.samples_seen,
        )
        model_card.write(card)
        tags = {
            "batch_id": str(batch_id),
            "parent_version": parent.version if parent else "",
            "first_encounter_id": batch.first_encounter_id,
            "last_encounter_id": batch.last_encounter_id,
            "holdout_roc_auc": f"{metrics['roc_auc']:.6f}",
            "holdout_log_loss": f"{metrics['log_loss']:.6f}",
            "holdout_rows": str(len(holdout)),
            "holdout_fingerprint": holdout_print,
            "warehouse_id": warehouse_id,
            "feature_space": model.space.fingerprint,
            "lease_token": str(lease.token),  # the fencing token checked just before
        }
        lease.check()
        version = mlflow.register_model(info.model_uri, settings.model_name, tags=tags)
    _complete_card(settings, run.info.run_id, card, version.version)
    _record(settings, batch_id, version.version, run.info.run_id, lease, warehouse_id)
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


def _complete_card(settings: Settings, run_id: str, card: dict[str, Any], version: str) -> None:
    """Write the version's number into the card its run holds (both forms)."""
    card = model_card.numbered(card, str(version))
    client = registry.connect(settings)
    client.log_dict(run_id, card, model_card.JSON_PATH)
    client.log_text(run_id, model_card.markdown(card), model_card.MARKDOWN_PATH)


def _record(
    settings: Settings,
    batch_id: int,
    version: str,
    run_id: str,
    lease: lineage.Lease,
    warehouse_id: str,
) -> None:
    """Record the batch's version in the warehouse under the lease, then remove any other
    version registered for the batch (a run that lost the lease, an unfinished version).
    A run that lost the lease records nothing: LeaseLost, after removing its own version when
    the batch already has another (left alone, it is the next run's to adopt)."""
    url = settings.warehouse_url
    try:
        lineage.mark_trained(url, settings.model_name, batch_id, version, run_id, lease)
    except lineage.LeaseLost:
        _converge(settings, batch_id, warehouse_id)
        raise
    _converge(settings, batch_id, warehouse_id)


def _converge(settings: Settings, batch_id: int, warehouse_id: str) -> None:
    """Leave one version for the batch: the one the warehouse records. Another one tagged for
    this batch of this warehouse's lineage was registered by a run that lost the lease or died
    before its card; it is deleted (its run stays) unless a person gave it an alias or stage."""
    recorded = lineage.recorded_version(settings.warehouse_url, settings.model_name, batch_id)
    if recorded is None:
        return
    client = registry.connect(settings)
    for found in client.search_model_versions(f"name = '{settings.model_name}'"):
        tags = found.tags
        if (
            str(found.version) == recorded
            or tags.get("batch_id") != str(batch_id)
            or tags.get("warehouse_id") != warehouse_id
        ):
            continue
        rival = client.get_model_version(settings.model_name, str(found.version))
        if rival.aliases or rival.current_stage not in (None, "None"):
            log.warning(
                "batch %s: version %s duplicates recorded version %s but has alias %s, stage "
                "%s: left for a person to retire",
                batch_id,
                rival.version,
                recorded,
                rival.aliases,
                rival.current_stage,
            )
            continue
        client.delete_model_version(settings.model_name, str(rival.version))
        log.warning(
            "batch %s: deleted version %s (run %s, lease token %s): the warehouse records version "
            "%s for the batch",
            batch_id,
            rival.version,
            rival.run_id,
            tags.get("lease_token", "none"),
            recorded,
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
    settings: Settings, model: ReadmissionModel, holdout: pd.DataFrame, y_holdout: np.ndarray
) -> holdout_evaluation.HoldoutEvaluation:
    """Score the holdout, choose the threshold there (never on the batch just trained on), log
    the metrics and plots."""
    probability = model.predict_proba(holdout)
    result = holdout_evaluation.evaluate_holdout(settings, holdout, y_holdout, probability)
    mlflow.log_metrics({f"holdout_{k}": v for k, v in result.metrics().items()})
    mlflow.log_params(
        {"threshold_policy": result.threshold.policy, "threshold_chosen_on": "holdout"}
    )
    for path, figure in (
        (model_card.ROC_PLOT, holdout_evaluation.roc_figure(y_holdout, probability, "Holdout ROC")),
        (
            model_card.CALIBRATION_PLOT,
            holdout_evaluation.calibration_figure(
                y_holdout, probability, "Calibration on the holdout"
            ),
        ),
    ):
        mlflow.log_figure(figure, path)
        plt.close(figure)
    return result


def _lineage_batches(url: str, model_name: str, batch_id: int) -> list[inventory.Batch]:
    """The batches a version has learned from: those its lineage trained before, and this one."""
    return [
        b
        for b in inventory.batch_list(url, model_name)
        if b.kind == "train" and (b.trained or b.batch_id == batch_id)
    ]


def _requirements() -> list[str]:
    from importlib.metadata import version

    return [f"{p}=={version(p)}" for p in ("mlflow", "scikit-learn", "pandas", "numpy", "scipy")]


def _parent_version(
    settings: Settings, head: tuple[int, str] | None, warehouse_id: str
) -> ModelVersion | None:
    """The version the warehouse recorded for the lineage's last trained batch, checked
    against the registry: a version registered by other means is never a parent."""
    if head is None:
        return None
    batch_id, version = head
    found = registry.model_version(settings, version)
    if (
        found is None
        or found.tags.get("warehouse_id") != warehouse_id
        or found.tags.get("batch_id") != str(batch_id)
    ):
        raise LineageError(
            f"the warehouse records {settings.model_name} version {version} as trained on batch "
            f"{batch_id}, but the registry's version {version} "
            + ("does not exist" if found is None else "was not registered by this warehouse")
            + ". The registry was reset or replaced under this warehouse: point "
            "MLFLOW_TRACKING_URI back at its registry, or set MODEL_NAME to a new name to start "
            "a new lineage from the first batch."
        )
    return found


def check_feature_space(model: ReadmissionModel, version: str | None, model_name: str) -> None:
    """Refuse to warm-start a parent whose feature space is not the code's: its coefficients
    would be read against the wrong columns."""
    code = FeatureSpace()
    if version is None or model.space.fingerprint == code.fingerprint:
        return
    theirs, ours = set(model.space.column_names()), set(code.column_names())
    added, removed = sorted(ours - theirs), sorted(theirs - ours)
    raise LineageError(
        f"{model_name} version {version} was trained on feature space {model.space.fingerprint} "
        f"({model.space.n_features} columns); this code's is {code.fingerprint} "
        f"({code.n_features} columns): {len(added)} added (e.g. {added[:3]}), {len(removed)} "
        f"removed (e.g. {removed[:3]})"
        + (", same columns in another order" if not added and not removed else "")
        + ". A warm start cannot carry coefficients across feature spaces. To start a new "
        "lineage on purpose, set MODEL_NAME to a new name: its first version trains from "
        "scratch on every batch in order."
    )
