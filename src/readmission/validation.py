"""Row-level validation: raw text rows become typed clean rows or quarantined rows with a reason."""

from __future__ import annotations

from dataclasses import dataclass

import pandas as pd

from readmission.schema import (
    COLUMNS,
    ID_COLUMNS,
    SPECS,
    TARGET,
    TARGET_VALUES,
    Categorical,
    Integer,
    allowed,
)


@dataclass(frozen=True)
class Validated:
    clean: pd.DataFrame  # typed rows, COLUMNS order, integer ids
    quarantined: pd.DataFrame  # the raw rows that failed, plus a `reason` column

    @property
    def rows(self) -> int:
        return len(self.clean) + len(self.quarantined)


def validate(raw: pd.DataFrame) -> Validated:
    """Check every row against the schema. Rows in = clean rows + quarantined rows, always."""
    raw = raw[list(COLUMNS)].astype(str)
    problems = pd.DataFrame(index=raw.index)
    typed: dict[str, pd.Series] = {}
    for column in ID_COLUMNS:
        values = pd.to_numeric(raw[column], errors="coerce")
        bad = values.isna() | (values <= 0) | (values % 1 != 0)
        problems[column] = _reason(raw[column], bad, f"{column} must be a positive integer")
        typed[column] = values
    for name, spec in SPECS.items():
        text = raw[name]
        if isinstance(spec, Integer):
            values = pd.to_numeric(text, errors="coerce")
            bad = values.isna() | (values % 1 != 0) | ~values.between(spec.low, spec.high)
            typed[name] = values
        else:
            assert isinstance(spec, Categorical)
            bad = ~text.str.fullmatch(spec.pattern) if spec.open else ~text.isin(spec.values)
            typed[name] = text
        problems[name] = _reason(text, bad, f"{name} must be {allowed(name)}")
    bad_target = ~raw[TARGET].isin(TARGET_VALUES)
    problems[TARGET] = _reason(raw[TARGET], bad_target, f"{TARGET} must be one of {TARGET_VALUES}")
    typed[TARGET] = raw[TARGET]

    duplicate = raw["encounter_id"].duplicated(keep="first")
    problems["duplicate"] = _reason(
        raw["encounter_id"], duplicate, "duplicate encounter_id (an earlier row has it)"
    )
    failed = (problems != "").any(axis=1)
    reasons = pd.Series(
        ["; ".join(r for r in row if r) for row in problems[failed].itertuples(index=False)],
        index=problems.index[failed],
        dtype=str,
    )

    clean = pd.DataFrame(typed)[~failed]
    for name in (*ID_COLUMNS, *(n for n, s in SPECS.items() if isinstance(s, Integer))):
        clean[name] = clean[name].astype("int64")
    quarantined = raw[failed].assign(reason=reasons)
    return Validated(clean=clean[list(COLUMNS)], quarantined=quarantined)


def _reason(values: pd.Series, bad: pd.Series, message: str) -> pd.Series:
    reasons = pd.Series("", index=values.index, dtype=object)
    if bad.any():
        reasons[bad] = [f"{message}, got {v!r}" for v in values[bad]]
    return reasons
