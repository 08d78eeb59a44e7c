"""Scoring without the pipeline: a fitted model folded into weight look-ups and one dot product.

For a linear model over one-hot levels and standardised numerics, the logit of a record is the
intercept plus one weight per categorical feature (the weight of its level) plus a folded linear
term per numeric. `CompiledScorer` precomputes those tables once per model version; a version
whose compiled probabilities differ from the pipeline's by more than `TOLERANCE` is refused.

Explanations are exact shares of the log-odds, relative to an average training encounter, per
engineered feature or per input field. A feature read from one field belongs to that field;
one read from several (an interaction such as number_inpatient_bin*discharge_disposition_id, the
medication counts, total visits) is shared equally among the fields it reads. Either way the
intercept plus every share is the record's log-odds.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from functools import partial
from operator import itemgetter
from typing import Annotated, Any, TypeVar

import numpy as np
import pandas as pd
from pydantic import Field

from readmission.features import OTHER, normalise
from readmission.model import ReadmissionModel

TOLERANCE = 1e-9
VECTORISE_FROM = 200  # rows; measured: per-record scoring wins below about this size
MEMO_LIMIT = 20_000  # memoised weights per field or multi-field feature
Weight = TypeVar("Weight", float, tuple[float, float])  # one scorer's, or a pair's


class CompiledScoreMismatch(RuntimeError):
    """The compiled scorer disagrees with the pipeline: the version must not be served."""


# The API returns these as they are: docstrings and Field descriptions are their OpenAPI schema.
@dataclass(frozen=True)
class FeatureContribution:
    """One engineered feature's share of the encounter's log-odds."""

    feature: str
    value: Annotated[
        str, Field(description="The encounter's level of the feature (or numeric value).")
    ]
    logit: Annotated[
        float, Field(description="How much the feature moved the log-odds (+: more risk).")
    ]


@dataclass(frozen=True)
class FieldContribution:
    """One input field's share of the encounter's log-odds."""

    field: Annotated[
        str, Field(description="An input field: a column of the data set, as in `Encounter`.")
    ]
    value: Annotated[str, Field(description="The encounter's value of the field.")]
    logit: Annotated[
        float, Field(description="How much the field moved the log-odds (+: more risk).")
    ]


class CompiledScorer:
    """P(readmitted within 30 days) for plain records (data set column names -> values)."""

    def __init__(self, model: ReadmissionModel) -> None:
        space, weights = model.space, model.classifier.coef_[0]
        self.threshold = float(model.threshold)
        self.categorical = []
        typical = []  # each feature's average weight over the encounters trained on
        for position, feature in enumerate(space.features):
            offset = space.offsets[position]
            table = {
                level: float(weights[offset + i]) for i, level in enumerate(feature.vocabulary)
            }
            other = float(weights[offset + len(feature.vocabulary)])
            self.categorical.append((feature, table, other))
            counts = model.reference_counts[position]
            block = weights[offset : offset + len(counts)]
            typical.append(float(counts @ block / counts.sum()) if counts.sum() else 0.0)
        numeric_weights = weights[space.n_onehot :]
        mean, scale = model.scaler.mean_, model.scaler.scale_
        self.numeric = [
            (n, float(w / s), float(m))
            for n, w, s, m in zip(space.numeric, numeric_weights, scale, mean, strict=True)
        ]
        self.bias = float(model.classifier.intercept_[0] - np.sum(numeric_weights * mean / scale))
        # Explanations start from the log-odds of an average training encounter: one-hot weights
        # are only defined up to a shared offset, so raw weights would read as effects of "No".
        self.typical = typical
        self.intercept = float(model.classifier.intercept_[0]) + sum(typical)
        self._inputs = [f.inputs for f, _, _ in self.categorical] + [
            n.inputs for n, _, _ in self.numeric
        ]
        # Which features, read from which fields, in which order: two scorers with the same
        # layout (versions of one feature space) can be scored together (PairedScorer).
        self.layout = tuple((f.name, f.inputs) for f, _, _ in self.categorical) + tuple(
            (n.name, n.inputs) for n, _, _ in self.numeric
        )
        # For one record at a time, every feature read from a single field is folded into that
        # field's weight, and each weight is memoised by the value it was computed for: a record
        # costs one look-up per field plus one per multi-field feature (keyed by its inputs),
        # instead of a feature function call each.
        by_field: dict[str, list[Callable[[Any], float]]] = {}
        combined: list[tuple[Callable[[Mapping[str, Any]], Any], Callable[..., float]]] = []
        weighers: list[tuple[tuple[str, ...], Callable[..., float]]] = [
            (f.inputs, partial(_level_weight, f.fn, table, other))
            for f, table, other in self.categorical
        ]
        weighers += [(n.inputs, partial(_numeric_weight, n.fn, w)) for n, w, _ in self.numeric]
        for inputs, weigh in weighers:
            if len(inputs) == 1:
                by_field.setdefault(inputs[0], []).append(weigh)
            else:
                combined.append((itemgetter(*inputs), weigh))
        self._by_field: list[tuple[str, dict[Any, float], Callable[[Any], float]]] = [
            (name, {}, partial(_summed, tuple(weighs))) for name, weighs in by_field.items()
        ]
        self._combined: list[
            tuple[Callable[[Mapping[str, Any]], Any], dict[Any, float], Callable[..., float]]
        ] = [(key, {}, weigh) for key, weigh in combined]

    def logit(self, record: Mapping[str, Any]) -> float:
        total = self.bias
        for name, memo, weigh in self._by_field:
            value = record[name]
            weight = memo.get(value)
            if weight is None:
                weight = _remember(memo, value, weigh(value))
            total += weight
        for inputs, memo, weigh in self._combined:
            values = inputs(record)
            weight = memo.get(values)
            if weight is None:
                weight = _remember(memo, values, weigh(*values))
            total += weight
        return total

    def probability(self, record: Mapping[str, Any]) -> float:
        return _sigmoid(self.logit(record))

    def probabilities(self, records: Sequence[Mapping[str, Any]]) -> np.ndarray:
        """Many records at once: each input column is factorised once, each feature function
        runs once per distinct input, and the weights are gathered with array indexing.
        Small batches go record by record, which costs less than the set-up."""
        if len(records) < VECTORISE_FROM:
            return np.array([self.probability(r) for r in records], dtype=float)
        (found,) = _vectorised((self,), records)
        return found

    def feature_contributions(self, record: Mapping[str, Any]) -> list[FeatureContribution]:
        """Each feature's exact share of the log-odds relative to an average training encounter
        (`self.intercept`, the base they move from): base + contributions = the record's logit.
        Largest magnitude first."""
        found = []
        for (feature, table, other), typical in zip(self.categorical, self.typical, strict=True):
            level = feature.fn(*[record[c] for c in feature.inputs])
            known = level if level in table else OTHER
            share = table.get(level, other) - typical
            found.append(FeatureContribution(feature.name, known, share))
        for numeric, weight, mean in self.numeric:
            value = numeric.fn(*[record[c] for c in numeric.inputs])
            found.append(FeatureContribution(numeric.name, f"{value:g}", weight * (value - mean)))
        return sorted(found, key=lambda c: abs(c.logit), reverse=True)

    def field_contributions(self, record: Mapping[str, Any]) -> list[FieldContribution]:
        """Each input field's exact share of the log-odds (see the module's doc for the rule on
        features read from several fields); the fields with a non-zero share, largest first."""
        shares: dict[str, float] = {}
        for feature, contribution in zip(self._inputs, self._by_position(record), strict=True):
            for field in feature:
                shares[field] = shares.get(field, 0.0) + contribution / len(feature)
        found = [FieldContribution(f, str(record[f]), s) for f, s in shares.items() if s != 0.0]
        return sorted(found, key=lambda c: abs(c.logit), reverse=True)

    def _by_position(self, record: Mapping[str, Any]) -> list[float]:
        """Every feature's share, in the order of `self._inputs`."""
        shares = []
        for (feature, table, other), typical in zip(self.categorical, self.typical, strict=True):
            shares.append(
                table.get(feature.fn(*[record[c] for c in feature.inputs]), other) - typical
            )
        for numeric, weight, mean in self.numeric:
            shares.append(weight * (numeric.fn(*[record[c] for c in numeric.inputs]) - mean))
        return shares

    def verify(self, model: ReadmissionModel, frame: pd.DataFrame) -> float:
        """Largest probability difference from the pipeline on `frame`; raises past TOLERANCE."""
        expected = model.predict_proba(frame)
        records = normalise(frame).to_dict("records")
        single = np.array([self.probability(r) for r in records])
        gap = float(
            max(
                np.max(np.abs(single - expected)),
                np.max(np.abs(self.probabilities(records) - expected)),
            )
        )
        if not gap <= TOLERANCE:
            raise CompiledScoreMismatch(f"compiled scorer differs from the pipeline by {gap:.3g}")
        return gap


class PairedScorer:
    """Production's and a shadow's probabilities of the same records, in one pass: each field of
    a record is read, and each memo searched, once for both, and a batch's columns are factorised
    once. Only for two scorers of the same layout (`paired` checks); the probabilities are each
    scorer's own, to the last bit."""

    def __init__(self, first: CompiledScorer, second: CompiledScorer) -> None:
        if first.layout != second.layout:
            raise ValueError("the two scorers read different features: score them apart")
        self.first, self.second = first, second
        self._by_field: list[
            tuple[
                str, dict[Any, tuple[float, float]], Callable[[Any], float], Callable[[Any], float]
            ]
        ] = [
            (name, {}, a, b)
            for (name, _, a), (_, _, b) in zip(first._by_field, second._by_field, strict=True)
        ]
        self._combined: list[
            tuple[
                Callable[[Mapping[str, Any]], Any],
                dict[Any, tuple[float, float]],
                Callable[..., float],
                Callable[..., float],
            ]
        ] = [
            (key, {}, a, b)
            for (key, _, a), (_, _, b) in zip(first._combined, second._combined, strict=True)
        ]

    def logits(self, record: Mapping[str, Any]) -> tuple[float, float]:
        first, second = self.first.bias, self.second.bias
        for name, memo, weigh_first, weigh_second in self._by_field:
            value = record[name]
            weights = memo.get(value)
            if weights is None:
                weights = _remember(memo, value, (weigh_first(value), weigh_second(value)))
            first += weights[0]
            second += weights[1]
        for inputs, memo, weigh_first, weigh_second in self._combined:
            values = inputs(record)
            weights = memo.get(values)
            if weights is None:
                weights = _remember(memo, values, (weigh_first(*values), weigh_second(*values)))
            first += weights[0]
            second += weights[1]
        return first, second

    def probability(self, record: Mapping[str, Any]) -> tuple[float, float]:
        first, second = self.logits(record)
        return _sigmoid(first), _sigmoid(second)

    def probabilities(self, records: Sequence[Mapping[str, Any]]) -> tuple[np.ndarray, np.ndarray]:
        if len(records) < VECTORISE_FROM:
            pairs = [self.probability(r) for r in records]
            return (
                np.array([p[0] for p in pairs], dtype=float),
                np.array([p[1] for p in pairs], dtype=float),
            )
        first, second = _vectorised((self.first, self.second), records)
        return first, second


def paired(first: CompiledScorer, second: CompiledScorer) -> PairedScorer | None:
    """A PairedScorer of the two, or None when they read different features."""
    return PairedScorer(first, second) if first.layout == second.layout else None


def _vectorised(
    scorers: Sequence[CompiledScorer], records: Sequence[Mapping[str, Any]]
) -> list[np.ndarray]:
    """Each scorer's probabilities of `records` (scorers of one layout): every input column
    factorised once, every feature function run once per distinct input, for all of them."""
    columns: dict[str, tuple[np.ndarray, np.ndarray]] = {}

    def factorised(name: str) -> tuple[np.ndarray, np.ndarray]:
        if name not in columns:
            columns[name] = pd.factorize(np.array([r[name] for r in records], dtype=object))
        return columns[name]

    totals = [np.full(len(records), scorer.bias) for scorer in scorers]
    for position, (feature, _, _) in enumerate(scorers[0].categorical):
        codes, inputs = _distinct_inputs([factorised(c) for c in feature.inputs])
        levels = [feature.fn(*x) for x in inputs]
        for scorer, total in zip(scorers, totals, strict=True):
            _, table, other = scorer.categorical[position]
            total += np.array([table.get(level, other) for level in levels], dtype=float)[codes]
    for position, (numeric, _, _) in enumerate(scorers[0].numeric):
        codes, inputs = _distinct_inputs([factorised(c) for c in numeric.inputs])
        values = np.array([numeric.fn(*x) for x in inputs], dtype=float)[codes]
        for scorer, total in zip(scorers, totals, strict=True):
            total += scorer.numeric[position][1] * values
    return [1.0 / (1.0 + np.exp(-total)) for total in totals]


def _distinct_inputs(
    factorised: list[tuple[np.ndarray, np.ndarray]],
) -> tuple[np.ndarray, list[tuple[Any, ...]]]:
    """Row codes into the distinct input tuples of one feature, and those tuples."""
    if len(factorised) == 1:
        codes, uniques = factorised[0]
        return codes, [(u,) for u in uniques]
    row_codes = np.zeros(len(factorised[0][0]), dtype=np.int64)
    for codes, uniques in factorised:  # one small integer per combination seen so far
        row_codes = pd.factorize(row_codes * len(uniques) + codes)[0]
    first = np.zeros(row_codes.max() + 1 if len(row_codes) else 0, dtype=np.int64)
    first[row_codes[::-1]] = np.arange(len(row_codes))[::-1]  # a row showing each combination
    return row_codes, [tuple(u[c[row]] for c, u in factorised) for row in first]


def _level_weight(
    fn: Callable[..., str], table: dict[str, float], other: float, *values: Any
) -> float:
    return table.get(fn(*values), other)


def _numeric_weight(fn: Callable[..., float], weight: float, *values: Any) -> float:
    return weight * fn(*values)


def _summed(weighs: tuple[Callable[[Any], float], ...], value: Any) -> float:
    return sum(weigh(value) for weigh in weighs)


def _remember(memo: dict[Any, Weight], key: Any, weight: Weight) -> Weight:
    """Store `weight` unless the memo is full: open fields (diagnosis codes, payer, specialty)
    could otherwise grow it without bound."""
    if len(memo) < MEMO_LIMIT:
        memo[key] = weight
    return weight


def _sigmoid(z: float) -> float:
    return 1.0 / (1.0 + math.exp(-z)) if z >= 0 else math.exp(z) / (1.0 + math.exp(z))
