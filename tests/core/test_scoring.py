"""The compiled scorer agrees with the pipeline, and explains each prediction exactly."""

from __future__ import annotations

import math

import numpy as np
import pytest

from readmission.data.dataset import synthetic_sample
from readmission.data.validation import validate
from readmission.features import normalise
from readmission.model import ReadmissionModel, labels
from readmission.schema import FEATURES, TARGET, Encounter, example_encounter
from readmission.scoring import CompiledScoreMismatch, CompiledScorer, PairedScorer, paired


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


def test_feature_and_field_contributions_each_add_up_to_the_logit(
    model: ReadmissionModel,
) -> None:
    scorer = CompiledScorer(model)
    clean = validate(synthetic_sample(50, seed=6)).clean.drop(columns=[TARGET])
    for encounter in clean.to_dict("records"):
        record = Encounter.model_validate(encounter, strict=False).to_record()
        logit = scorer.logit(record)
        by_feature = scorer.feature_contributions(record)
        by_field = scorer.field_contributions(record)
        assert math.isclose(
            scorer.intercept + sum(c.logit for c in by_feature), logit, abs_tol=1e-9
        )
        assert math.isclose(scorer.intercept + sum(c.logit for c in by_field), logit, abs_tol=1e-9)
        assert {c.field for c in by_field} <= set(FEATURES)
        assert all(c.value == str(record[c.field]) for c in by_field)
    assert math.isclose(scorer.probability(record), 1 / (1 + math.exp(-logit)), abs_tol=1e-12)


def test_a_feature_read_from_several_fields_is_shared_equally_among_them(
    model: ReadmissionModel,
) -> None:
    """The rule, checked on one interaction: moving only the interaction's weight moves its two
    fields by half of it each."""
    scorer = CompiledScorer(model)
    record = Encounter(**example_encounter()).to_record()
    position = next(
        i
        for i, (f, _, _) in enumerate(scorer.categorical)
        if f.name == "number_inpatient_bin*discharge_disposition_id"
    )
    before = {c.field: c.logit for c in scorer.field_contributions(record)}
    feature, table, other = scorer.categorical[position]
    level = feature.fn(*[record[c] for c in feature.inputs])
    scorer.categorical[position] = (feature, {**table, level: table[level] + 1.0}, other)
    after = {c.field: c.logit for c in scorer.field_contributions(record)}

    moved = {f: round(after[f] - before[f], 12) for f in after if after[f] != before[f]}
    assert moved == {"number_inpatient": 0.5, "discharge_disposition_id": 0.5}


def test_a_scorer_that_disagrees_with_the_pipeline_is_refused(model: ReadmissionModel) -> None:
    scorer = CompiledScorer(model)
    scorer.bias += 1e-6
    with pytest.raises(CompiledScoreMismatch):
        scorer.verify(model, validate(synthetic_sample(50)).clean)


def test_a_pair_scores_production_and_shadow_exactly_as_each_alone(
    model: ReadmissionModel,
) -> None:
    """The shadow scored in production's pass (the API's hot path) gets the very probabilities
    each scorer gives alone, one record at a time and vectorised."""
    frame = validate(synthetic_sample(600, seed=8)).clean
    later = ReadmissionModel().partial_fit(frame.iloc[:300], labels(frame.iloc[:300]))
    production, shadow = CompiledScorer(model), CompiledScorer(later)
    pair = paired(production, shadow)
    assert pair is not None
    records = normalise(frame).to_dict("records")
    singles = [pair.probability(r) for r in records]
    assert singles == [(production.probability(r), shadow.probability(r)) for r in records]
    assert len({p for p, _ in singles}) > 1 and any(p != s for p, s in singles)
    for rows in (records[:50], records):  # per record below VECTORISE_FROM, vectorised above
        first, second = pair.probabilities(rows)
        assert np.array_equal(first, production.probabilities(rows))
        assert np.array_equal(second, shadow.probabilities(rows))


def test_scorers_of_different_features_are_not_paired(model: ReadmissionModel) -> None:
    production, other = CompiledScorer(model), CompiledScorer(model)
    other.layout = other.layout[:-1]  # as a version of another feature space would read
    assert paired(production, other) is None
    with pytest.raises(ValueError, match="different features"):
        PairedScorer(production, other)
