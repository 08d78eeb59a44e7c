"""The model's fixed feature space: what each encounter becomes before the linear model sees it.

Every feature is a small scalar function of one encounter record, with a vocabulary known before
the first batch (from the schema's value sets and the ICD-9 coding system), so warm-starting never
meets a column it did not have and serving can score one record without pandas. Training encodes
whole frames with the same functions, memoised on distinct inputs.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from functools import cache
from typing import Any

import numpy as np
import pandas as pd

from readmission.schema import MEDICATIONS, MISSING, SPECS, Categorical, Integer

OTHER = "__other__"


@dataclass(frozen=True)
class Feature:
    """A categorical feature: `fn(*record[inputs])` gives a level of `vocabulary` (else OTHER)."""

    name: str
    inputs: tuple[str, ...]
    fn: Callable[..., str]
    vocabulary: tuple[str, ...]


@dataclass(frozen=True)
class Numeric:
    """A numeric feature, standardised by the model with incrementally updated statistics."""

    name: str
    inputs: tuple[str, ...]
    fn: Callable[..., float]


# --- ICD-9 -------------------------------------------------------------------------------------

# (label, first, last) over the numeric part of 3-digit ICD-9 codes: the chapters of ICD-9-CM,
# with the groups of Strack et al. 2014 (diabetes 250, circulatory 785, respiratory 786,
# digestive 787, genitourinary 788) kept apart where the paper does.
_ICD9_CHAPTERS = (
    ("infectious", 1, 139),
    ("neoplasms", 140, 239),
    ("endocrine", 240, 279),
    ("blood", 280, 289),
    ("mental", 290, 319),
    ("nervous", 320, 389),
    ("circulatory", 390, 459),
    ("respiratory", 460, 519),
    ("digestive", 520, 579),
    ("genitourinary", 580, 629),
    ("pregnancy", 630, 679),
    ("skin", 680, 709),
    ("musculoskeletal", 710, 739),
    ("congenital", 740, 759),
    ("perinatal", 760, 779),
    ("symptoms", 780, 799),
    ("injury", 800, 999),
)
_STRACK_SYMPTOMS = {785: "circulatory", 786: "respiratory", 787: "digestive", 788: "genitourinary"}
ICD9_GROUPS = (
    *(label for label, _, _ in _ICD9_CHAPTERS),
    "diabetes",
    "supplementary_v",
    "external_e",
    "missing",
)
ICD9_CATEGORIES = (
    *(f"{n:03d}" for n in range(1, 1000)),
    *(f"V{n:02d}" for n in range(1, 92)),
    *(f"E{n:03d}" for n in range(800, 1000)),
    MISSING,
)  # every 3-digit category of ICD-9-CM, fixed by the coding system, not by the data


@cache
def icd9_category(code: str) -> str:
    """3-digit ICD-9 category: '250.83' -> '250', '38' -> '038', 'V57.1' -> 'V57'."""
    head = code.split(".", 1)[0]
    if head[:1] in ("V", "E") or head == MISSING:
        return head
    return head.zfill(3) if head.isdigit() else OTHER


@cache
def icd9_group(code: str) -> str:
    if code == MISSING:
        return "missing"
    if code.startswith("V"):
        return "supplementary_v"
    if code.startswith("E"):
        return "external_e"
    category = icd9_category(code)
    if not category.isdigit():
        return OTHER
    number = int(category)
    if number == 250:
        return "diabetes"
    if number in _STRACK_SYMPTOMS:
        return _STRACK_SYMPTOMS[number]
    return next((label for label, lo, hi in _ICD9_CHAPTERS if lo <= number <= hi), OTHER)


@cache
def diabetes_detail(code: str) -> str:
    """The 4th and 5th digits of a 250.xx code: complication and type/control, else 'none'."""
    if not code.startswith("250"):
        return "none"
    digits = code[4:6] if "." in code else ""
    return f"250.{digits}" if digits else "250"


DIABETES_DETAILS = ("none", "250", *(f"250.{a}{b}" for a in range(10) for b in ("", *"0123")))

# --- binned counts: linear in the bins, so the model can bend where the risk bends -------------


def _capped(cap: int) -> tuple[Callable[[int], str], tuple[str, ...]]:
    labels = (*(str(i) for i in range(cap)), f"{cap}+")
    return (lambda value: labels[min(int(value), cap)]), labels


def _banded(width: int, cap: int) -> tuple[Callable[[int], str], tuple[str, ...]]:
    labels = (*tuple(f"{lo}-{lo + width - 1}" for lo in range(0, cap, width)), f"{cap}+")
    return (lambda value: labels[min(int(value), cap) // width]), labels


def _identity(value: Any) -> str:
    return str(value)


def _column(name: str) -> Feature:
    spec = SPECS[name]
    if isinstance(spec, Integer):  # a code table id: one level per id
        vocabulary = tuple(str(i) for i in range(spec.low, spec.high + 1))
    else:
        assert isinstance(spec, Categorical)
        vocabulary = spec.values
    return Feature(name, (name,), _identity, vocabulary)


def _binned(name: str, binner: tuple[Callable[[int], str], tuple[str, ...]]) -> Feature:
    fn, labels = binner
    return Feature(f"{name}_bin", (name,), fn, labels)


def cross(a: Feature, b: Feature) -> Feature:
    """Interaction of two features: one level per pair of levels."""
    split = len(a.inputs)

    def fn(*values: Any) -> str:
        return f"{a.fn(*values[:split])}|{b.fn(*values[split:])}"

    vocabulary = tuple(f"{x}|{y}" for x in (*a.vocabulary, OTHER) for y in (*b.vocabulary, OTHER))
    return Feature(f"{a.name}*{b.name}", a.inputs + b.inputs, fn, vocabulary)


def _count_meds(*dosages: str) -> str:
    return str(min(sum(d != "No" for d in dosages), 4))


def _count_changes(*dosages: str) -> str:
    return str(min(sum(d in ("Up", "Down") for d in dosages), 3))


def _total_visits(outpatient: int, emergency: int, inpatient: int) -> float:
    return math.log1p(int(outpatient) + int(emergency) + int(inpatient))


def _log1p(value: int) -> float:
    return math.log1p(int(value))


def _as_float(value: int) -> float:
    return float(value)


def _weight_recorded(weight: str) -> str:
    return "no" if weight == MISSING else "yes"


_COUNTS = ("number_outpatient", "number_emergency", "number_inpatient")
_INPATIENT = _binned("number_inpatient", _capped(6))
_DISCHARGE = _column("discharge_disposition_id")
_AGE = _column("age")
_EMERGENCY = _binned("number_emergency", _capped(4))
_DIAG_1_GROUP = Feature("diag_1_group", ("diag_1",), icd9_group, ICD9_GROUPS)
_ADMISSION_SOURCE = _column("admission_source_id")

CATEGORICAL: tuple[Feature, ...] = (
    *(
        _column(name)
        for name in (
            "race",
            "gender",
            "age",
            "admission_type_id",
            "discharge_disposition_id",
            "admission_source_id",
            "payer_code",
            "medical_specialty",
            "max_glu_serum",
            "A1Cresult",
            "change",
            "diabetesMed",
            *MEDICATIONS,
        )
    ),
    Feature("weight_recorded", ("weight",), _weight_recorded, ("no", "yes")),
    *(Feature(f"{d}_group", (d,), icd9_group, ICD9_GROUPS) for d in ("diag_1", "diag_2", "diag_3")),
    *(
        Feature(f"{d}_category", (d,), icd9_category, ICD9_CATEGORIES)
        for d in ("diag_1", "diag_2", "diag_3")
    ),
    Feature("diag_1_diabetes", ("diag_1",), diabetes_detail, DIABETES_DETAILS),
    _INPATIENT,
    _EMERGENCY,
    _binned("number_outpatient", _capped(4)),
    _binned("time_in_hospital", _capped(14)),
    _binned("num_procedures", _capped(6)),
    _binned("number_diagnoses", _capped(10)),
    _binned("num_medications", _banded(5, 50)),
    _binned("num_lab_procedures", _banded(10, 100)),
    Feature("diabetes_meds_prescribed", MEDICATIONS, _count_meds, tuple("01234")),
    Feature("diabetes_meds_changed", MEDICATIONS, _count_changes, tuple("0123")),
    cross(_INPATIENT, _DISCHARGE),
    cross(_INPATIENT, _AGE),
    cross(_INPATIENT, _DIAG_1_GROUP),
    cross(_DISCHARGE, _AGE),
    cross(_ADMISSION_SOURCE, _INPATIENT),
    cross(_EMERGENCY, _INPATIENT),
    cross(_column("admission_type_id"), _ADMISSION_SOURCE),
    cross(_AGE, _DIAG_1_GROUP),
    cross(_column("A1Cresult"), _column("change")),
    cross(_column("medical_specialty"), _INPATIENT),
    cross(_DISCHARGE, _DIAG_1_GROUP),
)

NUMERIC: tuple[Numeric, ...] = (
    *(
        Numeric(name, (name,), _as_float)
        for name in (
            "time_in_hospital",
            "num_lab_procedures",
            "num_procedures",
            "num_medications",
            "number_diagnoses",
            *_COUNTS,
        )
    ),
    *(Numeric(f"log1p_{name}", (name,), _log1p) for name in _COUNTS),
    Numeric("log1p_total_visits", _COUNTS, _total_visits),
)

INPUT_COLUMNS = tuple(dict.fromkeys(c for f in CATEGORICAL + NUMERIC for c in f.inputs))


class FeatureSpace:
    """Index of every one-hot level; level i of feature f sits at `offsets[f] + i`, OTHER last."""

    def __init__(
        self, features: Sequence[Feature] = CATEGORICAL, numeric: Sequence[Numeric] = NUMERIC
    ) -> None:
        self.features = tuple(features)
        self.numeric = tuple(numeric)
        self.offsets: list[int] = []
        self.index: list[dict[str, int]] = []
        width = 0
        for feature in self.features:
            self.offsets.append(width)
            self.index.append({level: i for i, level in enumerate(feature.vocabulary)})
            width += len(feature.vocabulary) + 1
        self.n_onehot = width

    @property
    def n_features(self) -> int:
        return self.n_onehot + len(self.numeric)

    def column_names(self) -> list[str]:
        """Every column of the design matrix, in order: what a model's coefficients refer to."""
        return [*self.onehot_names(), *(n.name for n in self.numeric)]

    @property
    def fingerprint(self) -> str:
        """Digest of the column names: two spaces with the same one encode alike column for
        column, so a model trained on one can be warm-started under the other."""
        return hashlib.sha256("\n".join(self.column_names()).encode()).hexdigest()[:16]

    def onehot_names(self) -> list[str]:
        return [f"{f.name}={level}" for f in self.features for level in (*f.vocabulary, OTHER)]

    def level_column(self, position: int, level: str) -> int:
        """Column of `level` in feature `position` (OTHER's column when the level is unknown)."""
        index = self.index[position]
        return self.offsets[position] + index.get(level, len(index))

    def encode(self, frame: pd.DataFrame) -> tuple[np.ndarray, np.ndarray]:
        """One-hot column indices (n_rows x n_categorical) and raw numeric values of a frame."""
        frame = normalise(frame)
        columns = {name: frame[name].tolist() for name in INPUT_COLUMNS}
        cols = np.empty((len(frame), len(self.features)), dtype=np.int32)
        for position, feature in enumerate(self.features):
            levels = map_distinct(feature.fn, [columns[c] for c in feature.inputs])
            cols[:, position] = [self.level_column(position, level) for level in levels]
        nums = np.empty((len(frame), len(self.numeric)), dtype=np.float64)
        for position, numeric in enumerate(self.numeric):
            nums[:, position] = map_distinct(numeric.fn, [columns[c] for c in numeric.inputs])
        return cols, nums


def map_distinct(fn: Callable[..., Any], columns: list[list[Any]]) -> list[Any]:
    """`fn` over the rows of `columns`, computed once per distinct input."""
    memo: dict[Any, Any] = {}
    if len(columns) == 1:
        return [memo[v] if v in memo else memo.setdefault(v, fn(v)) for v in columns[0]]
    return [
        memo[k] if k in memo else memo.setdefault(k, fn(*k)) for k in zip(*columns, strict=False)
    ]


def normalise(frame: pd.DataFrame) -> pd.DataFrame:
    """The feature columns as the feature functions expect them: ints and stripped strings."""
    missing = [c for c in INPUT_COLUMNS if c not in frame.columns]
    if missing:
        raise ValueError(f"missing input columns: {', '.join(missing)}")
    out = {}
    for name in INPUT_COLUMNS:
        column = frame[name]
        if isinstance(SPECS[name], Integer):
            out[name] = pd.to_numeric(column, errors="raise").astype("int64")
        else:
            out[name] = column.astype(str).str.strip()
    return pd.DataFrame(out, index=frame.index)


def record_levels(record: Mapping[str, Any]) -> Iterable[tuple[int, str]]:
    """(feature position, level) of one already-normalised record, for explanations."""
    for position, feature in enumerate(CATEGORICAL):
        yield position, feature.fn(*(record[c] for c in feature.inputs))
