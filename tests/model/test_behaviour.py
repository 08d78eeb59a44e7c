"""Behavioural checks of the model: minimum functionality, invariance and direction."""

from __future__ import annotations

import itertools

import numpy as np
import pandas as pd
import pytest
from sklearn.metrics import roc_auc_score

from readmission.data.dataset import synthetic_sample
from readmission.data.validation import validate
from readmission.model import ReadmissionModel, labels


@pytest.fixture(scope="module")
def data() -> tuple[list[pd.DataFrame], pd.DataFrame]:
    frame = validate(synthetic_sample(6000, seed=11)).clean
    train, holdout = frame.iloc[:5000], frame.iloc[5000:]
    return [train.iloc[i : i + 1000] for i in range(0, 5000, 1000)], holdout


@pytest.fixture(scope="module")
def model(data: tuple[list[pd.DataFrame], pd.DataFrame]) -> ReadmissionModel:
    model = ReadmissionModel()
    for batch in data[0]:
        model.partial_fit(batch, labels(batch))
    return model


def test_learns_the_signal_well_above_chance(model: ReadmissionModel, data) -> None:
    holdout = data[1]
    assert roc_auc_score(labels(holdout), model.predict_proba(holdout)) > 0.7


def test_warm_start_does_not_get_worse_batch_after_batch(data) -> None:
    batches, holdout = data
    model, aucs = ReadmissionModel(), []
    for batch in batches:
        model.partial_fit(batch, labels(batch))
        aucs.append(roc_auc_score(labels(holdout), model.predict_proba(holdout)))
    assert aucs[-1] > aucs[0]
    assert all(b > a - 0.02 for a, b in itertools.pairwise(aucs))


def test_identifiers_and_outcome_do_not_change_the_prediction(
    model: ReadmissionModel, data
) -> None:
    holdout = data[1].head(50)
    shuffled = holdout.assign(
        encounter_id=holdout["encounter_id"] + 1, patient_nbr=np.arange(50), readmitted="NO"
    )
    assert np.array_equal(model.predict_proba(holdout), model.predict_proba(shuffled))


def test_more_prior_inpatient_visits_raise_the_risk(model: ReadmissionModel, data) -> None:
    holdout = data[1].head(200)
    none = model.predict_proba(holdout.assign(number_inpatient=0))
    several = model.predict_proba(holdout.assign(number_inpatient=4))
    assert (several > none).mean() > 0.95


def test_probabilities_are_probabilities(model: ReadmissionModel, data) -> None:
    p = model.predict_proba(data[1])
    assert ((p > 0) & (p < 1)).all()
    assert 0.5 * labels(data[1]).mean() < p.mean() < 2 * labels(data[1]).mean()
