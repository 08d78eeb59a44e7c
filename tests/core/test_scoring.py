"""The compiled scorer agrees with the pipeline, and explains each prediction exactly."""

from __future__ import annotations

import math

import numpy as np
import pytest

from readmission.dataset import synthetic_sample
from readmission.features import normalise
from readmission.model import ReadmissionModel, labels
from readmission.schema import Encounter, example_encounter
from readmission.scoring import CompiledScoreMismatch, CompiledScorer
from readmission.validation import validate


@pytest.fixture(scope="module")
def model() -> ReadmissionModel:
    frame = validate(synthetic_sample(1500, seed=4)).clean
    return ReadmissionModel().partial_fit(frame, labels(frame))


def test_compiled_probabilities_equal_the_pipelines(model: ReadmissionModel) -> None:
    frame = validate(synthetic_sample(400, seed=5)).clean
    scorer = CompiledScorer(model)
    assert scorer.verify(model, frame) <= 1e-9
    records = normalise(frame).to_dict("records")
    expected = model.predict_proba(frame)
    assert np.allclose(scorer.probabilities(records), expected, atol=1e-12)  # vectorised
    assert np.allclose(scorer.probabilities(records[:20]), expected[:20], atol=1e-12)


def test_contributions_add_up_to_the_logit(model: ReadmissionModel) -> None:
    scorer = CompiledScorer(model)
    record = Encounter(**example_encounter()).to_record()
    total = scorer.intercept + sum(c.logit for c in scorer.contributions(record))
    assert math.isclose(total, scorer.logit(record), abs_tol=1e-9)
    assert math.isclose(scorer.probability(record), 1 / (1 + math.exp(-total)), abs_tol=1e-12)


def test_a_scorer_that_disagrees_with_the_pipeline_is_refused(model: ReadmissionModel) -> None:
    scorer = CompiledScorer(model)
    scorer.bias += 1e-6
    with pytest.raises(CompiledScoreMismatch):
        scorer.verify(model, validate(synthetic_sample(50)).clean)
