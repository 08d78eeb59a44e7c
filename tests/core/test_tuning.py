"""Hyperparameter tuning: the selection rule, and every candidate logged to the MLflow server."""

from __future__ import annotations

import logging

import mlflow
import pandas as pd
import pytest

from readmission import registry, tuning
from readmission.config import Settings
from readmission.data.validation import validate
from readmission.model import ModelParams


def candidate(aucs: list[float], log_loss: float, alpha: float) -> tuning.Candidate:
    return tuning.Candidate(ModelParams(alpha=alpha), aucs, log_loss)


def test_the_winner_is_the_best_stable_candidate_then_the_lower_log_loss() -> None:
    zigzag = candidate([0.60, 0.70, 0.66, 0.72], 0.30, alpha=1)  # drops .04 after batch 2
    steady = candidate([0.60, 0.64, 0.68, 0.70], 0.33, alpha=2)
    twin = candidate([0.61, 0.65, 0.69, 0.70], 0.32, alpha=3)
    assert not zigzag.stable and steady.stable
    assert tuning.best([zigzag, steady]) is steady
    assert tuning.best([zigzag, steady, twin]) is twin


def test_the_validation_slice_is_the_latest_training_rows() -> None:
    rows = pd.DataFrame({"encounter_id": range(100)})
    stream, validation = tuning.split(rows, 0.2)
    assert stream["encounter_id"].max() < validation["encounter_id"].min()
    assert (len(stream), len(validation)) == (80, 20)


@pytest.mark.slow
def test_tune_logs_every_candidate_as_a_nested_run(
    platform: Settings, sample: pd.DataFrame, caplog: pytest.LogCaptureFixture
) -> None:
    train_rows = validate(sample).clean.iloc[:2000]
    space = {"alpha": (1e-4, 1e-3), "eta0": (0.005,), "epochs": (2,)}
    progress: list[tuple[int, int]] = []
    with caplog.at_level(logging.INFO, logger=tuning.__name__):
        winner = tuning.tune(
            platform, train_rows, 0.25, space, progress=lambda *done: progress.append(done)
        )

    assert winner.params.alpha in space["alpha"] and len(winner.aucs) == 3  # 1500 rows / 500
    assert progress == [(1, 2), (2, 2)]
    lines = [r.getMessage() for r in caplog.records if r.name == tuning.__name__]
    assert [line.split(":")[0] for line in lines] == [
        "candidate 1/2 alpha=0.0001 eta0=0.005 epochs=2",
        "candidate 2/2 alpha=0.001 eta0=0.005 epochs=2",
    ]
    assert any(f"validation AUC {winner.aucs[-1]:.4f}" in line for line in lines)
    registry.connect(platform)
    runs = mlflow.search_runs([registry.experiment_id(platform)], output_format="list")
    parent = next(r for r in runs if r.info.run_name == "tune")
    children = [r for r in runs if r.data.tags.get("mlflow.parentRunId") == parent.info.run_id]
    assert len(children) == 2
    assert float(parent.data.params["best_alpha"]) == winner.params.alpha
