"""Model quality of the warm-start path on the real data set, against offline anchors.

Ingests the source into a fresh warehouse (the last 20% by encounter_id is the holdout), trains
the first 80% in 15k batches through `readmission.training` (the platform's own path: MLflow
run + registered version per batch), prints holdout AUC and log-loss after each batch, then fits
LogisticRegression and HistGradientBoosting offline on the same training rows as anchors.
Last line: a JSON object with the final figures.

    .venv/bin/python bench/model_quality.py --source ../shared/data/dataset_diabetes.zip
"""

from __future__ import annotations

import argparse
import itertools
import json
import time
from typing import TypedDict

import numpy as np
import pandas as pd
from local_platform import use_local_platform
from sklearn.ensemble import HistGradientBoostingClassifier
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import log_loss, roc_auc_score

GOAL = {"roc_auc": 0.670, "log_loss": 0.322, "max_drop": 0.005}


class BatchFigures(TypedDict):
    """One trained batch's version and its holdout figures."""

    batch: int
    version: str
    roc_auc: float
    log_loss: float


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--source", default="../shared/data/dataset_diabetes.zip")
    parser.add_argument("--batch-size", type=int, default=15000)
    args = parser.parse_args()
    use_local_platform(
        args.source, "bench-quality-", BATCH_SIZE=str(args.batch_size), HOLDOUT_FRACTION="0.2"
    )

    from readmission import extracts, training
    from readmission.config import get_settings
    from readmission.data import lineage, tables, warehouse
    from readmission.model import ReadmissionModel, labels

    settings = get_settings()
    extracts.ingest(settings)
    url = settings.warehouse_url
    holdout = warehouse.clean_rows(url, tables.HOLDOUT_BATCH)
    print(f"holdout: {len(holdout)} rows; training batches: {lineage.training_batches(url)}")
    started = time.perf_counter()
    history: list[BatchFigures] = []
    for result in training.train_pending(settings, holder="bench/model_quality.py"):
        history.append(
            {
                "batch": result.batch_id,
                "version": result.version,
                "roc_auc": result.holdout["roc_auc"],
                "log_loss": result.holdout["log_loss"],
            }
        )
        print(
            f"batch {result.batch_id}: v{result.version} holdout AUC "
            f"{result.holdout['roc_auc']:.4f} log-loss {result.holdout['log_loss']:.4f}",
            flush=True,
        )
    warm_seconds = time.perf_counter() - started

    train_rows = pd.concat([warehouse.clean_rows(url, b["batch"]) for b in history])
    y, y_holdout = labels(train_rows), labels(holdout)
    anchors = {}
    encoder = ReadmissionModel()
    cols, nums = encoder.space.encode(train_rows)
    encoder.scaler.fit(nums)
    matrix = encoder._matrix(cols, encoder.scaler.transform(nums))
    best_lr = max(
        (LogisticRegression(C=c, max_iter=3000).fit(matrix, y) for c in (0.01, 0.03, 0.1)),
        key=lambda m: roc_auc_score(
            y_holdout, m.predict_proba(encoder.design_matrix(holdout))[:, 1]
        ),
    )  # the anchor is given its best C on the holdout: an upper bound for a linear model
    anchors["logistic_regression"] = _scores(
        y_holdout, best_lr.predict_proba(encoder.design_matrix(holdout))[:, 1]
    )
    anchors["logistic_regression"]["C"] = best_lr.C
    # A fair gradient-boosting anchor: slower learning with early stopping on its own
    # validation split of the training rows (never the holdout).
    hgb = HistGradientBoostingClassifier(
        categorical_features="from_dtype",
        learning_rate=0.05,
        max_iter=600,
        max_leaf_nodes=15,
        l2_regularization=1.0,
        early_stopping=True,
        validation_fraction=0.15,
        random_state=0,
    )
    native_train, categories = _native(train_rows)
    hgb.fit(native_train, y)
    native_holdout, _ = _native(holdout, categories)
    anchors["hist_gradient_boosting"] = _scores(y_holdout, hgb.predict_proba(native_holdout)[:, 1])
    for name, figures in anchors.items():
        print(f"anchor {name}: AUC {figures['roc_auc']:.4f} log-loss {figures['log_loss']:.4f}")

    final = history[-1]
    drops = [a["roc_auc"] - b["roc_auc"] for a, b in itertools.pairwise(history)]
    summary = {
        "warm_start": {
            "roc_auc": round(final["roc_auc"], 4),
            "log_loss": round(final["log_loss"], 4),
            "auc_by_batch": [round(h["roc_auc"], 4) for h in history],
            "largest_auc_drop": round(max([0.0, *drops]), 4),
            "batches": len(history),
            "seconds": round(warm_seconds, 1),
        },
        "anchors": {k: {m: round(v, 4) for m, v in f.items()} for k, f in anchors.items()},
        "goal": GOAL,
        "meets_goal": bool(
            final["roc_auc"] >= GOAL["roc_auc"]
            and final["log_loss"] <= GOAL["log_loss"]
            and max([0.0, *drops]) <= GOAL["max_drop"]
        ),
    }
    print(json.dumps(summary))


def _scores(y: np.ndarray, probability: np.ndarray) -> dict[str, float]:
    return {
        "roc_auc": float(roc_auc_score(y, probability)),
        "log_loss": float(log_loss(y, probability)),
    }


def _native(
    frame: pd.DataFrame, categories: dict[str, list[str]] | None = None
) -> tuple[pd.DataFrame, dict[str, list[str]]]:
    """Raw columns for HistGradientBoosting: categoricals with the training rows' levels (the
    250 most frequent, ICD-9 codes cut to 3 digits), counts as integers."""
    from readmission.schema import SPECS, Categorical

    categories = dict(categories or {})
    out = frame[list(SPECS)].copy()
    for name, spec in SPECS.items():
        if isinstance(spec, Categorical) or getattr(spec, "codes", False):
            text = out[name].astype(str)
            if name.startswith("diag_"):
                text = text.str.split(".").str[0]
            if name not in categories:
                categories[name] = [*text.value_counts().index[:250], "other"]
            known = categories[name]
            out[name] = pd.Categorical(text.where(text.isin(known), "other"), categories=known)
    return out, categories


if __name__ == "__main__":
    main()
