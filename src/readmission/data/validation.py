"""Row-level validation: raw text rows become typed clean rows or quarantined rows with a reason.

Also the extract contract's two rules every reader of an extract shares: how an identifier is
read (`parse_ids`), and how a re-exported file's blank "not measured" cells are read
(`normalize`).
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass

import numpy as np
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

# The lab results whose level "None" means "not measured". pandas reads that level as NaN and
# writes it back as an empty cell, so a file re-exported with pandas defaults carries "" (or
# "nan") there; both mean the data set's "None".
NOT_MEASURED_COLUMNS = ("max_glu_serum", "A1Cresult")
NOT_MEASURED = "None"
_NOT_MEASURED_SPELLINGS = ("", "nan", "NaN", "NAN")
ID_RULE = "must be a positive integer written in digits"


@dataclass(frozen=True)
class Validated:
    clean: pd.DataFrame  # typed rows, COLUMNS order, integer ids
    quarantined: pd.DataFrame  # the raw rows that failed, plus a `reason` column
    # How many rows broke each rule ("column must be ..."), most frequent first: a row breaking
    # two rules counts under both.
    problems: dict[str, int]

    @property
    def rows(self) -> int:
        return len(self.clean) + len(self.quarantined)


def as_text(frame: pd.DataFrame) -> pd.DataFrame:
    """`frame`'s COLUMNS with every cell a str, as `astype(str)` writes it. A column already all
    text (the extract's reader gives only those) is kept as it is: `astype(str)` walks every cell
    even when there is nothing to convert, a tenth of an ingest's time when done twice."""
    columns = frame[list(COLUMNS)]
    to_convert = {
        c: str
        for c in COLUMNS
        if columns[c].dtype != object
        or pd.api.types.infer_dtype(columns[c], skipna=False) != "string"
    }
    return columns.astype(to_convert) if to_convert else columns


def parse_ids(values: pd.Series) -> pd.Series:
    """The integer identity (Int64) of each encounter_id / patient_nbr text; NA when the text is
    not a positive integer written in digits.

    The one reading of an id: the holdout router, validation and the warehouse keys all call it.
    `N`, ` N `, `00N` and `N.0` (how pandas writes an integer column holding a blank) are N;
    anything else, `1.5e3` included, is no id: a number in scientific notation has lost digits
    somewhere upstream, and guessing which patient it meant could put a holdout patient's
    encounter into training.
    """
    text = values.astype(str)
    # Nearly every id is plain digits: those skip the regular expression, the slow path. The
    # string methods are mapped over the values (a C loop each, a fifth of a generator's time);
    # non-ASCII digits are ruled out for all values at once when the joined text is ASCII.
    texts = text.tolist()
    count = len(texts)
    plain = np.fromiter(map(str.isdigit, texts), dtype=bool, count=count) & (
        np.fromiter(map(len, texts), dtype=np.int64, count=count) <= 18
    )
    if not "".join(texts).isascii():
        plain &= np.fromiter(map(str.isascii, texts), dtype=bool, count=count)
    keys = pd.Series(pd.NA, index=values.index, dtype="Int64")
    if plain.any():
        keys[plain] = text[plain].astype("int64").to_numpy()
    if not plain.all():
        digits = text[~plain].str.extract(r"^\s*0*(\d{1,18})(?:\.0*)?\s*$")[0]
        keys[~plain] = pd.to_numeric(digits, errors="coerce").astype("Int64").to_numpy()
    return keys.where(keys > 0)


def normalize(raw: pd.DataFrame) -> tuple[pd.DataFrame, dict[str, int]]:
    """`raw` with blank or NaN cells of the not-measured lab columns read as "None", and how
    many cells of each column were rewritten (the ingest report's normalizations)."""
    counts: dict[str, int] = {}
    for column in NOT_MEASURED_COLUMNS:
        blank = raw[column].str.strip().isin(_NOT_MEASURED_SPELLINGS)
        if blank.any():
            raw = raw.assign(**{column: raw[column].mask(blank, NOT_MEASURED)})
            counts[column] = int(blank.sum())
    return raw, counts


def validate(
    raw: pd.DataFrame,
    repeated: np.ndarray | None = None,
    ids: dict[str, pd.Series] | None = None,
) -> Validated:
    """Check every row against the schema. Rows in = clean rows + quarantined rows, always.

    `repeated` flags the rows whose encounter an earlier chunk of the same extract had: they
    are duplicates too (an extract read in chunks). `ids`: the ID_COLUMNS as `parse_ids` reads
    them, when the caller has them already (the warehouse keys and routes rows by them).
    """
    raw = as_text(raw)
    # Each rule's message and the rows breaking it, as boolean masks: reason texts are written
    # only for the failing rows, the few.
    broken: list[tuple[str, pd.Series, np.ndarray]] = []  # (message, text, mask)
    typed: dict[str, pd.Series] = {}
    for column in ID_COLUMNS:
        values = ids[column] if ids is not None else parse_ids(raw[column])
        broken.append((f"{column} {ID_RULE}", raw[column], values.isna().to_numpy()))
        typed[column] = values
    for name, spec in SPECS.items():
        text = raw[name]
        # A column holds few distinct values: each is checked (and converted) once.
        codes, distinct = pd.factorize(text)
        if isinstance(spec, Integer):
            numbers = pd.to_numeric(pd.Series(distinct), errors="coerce")
            bad_value = numbers.isna() | (numbers % 1 != 0) | ~numbers.between(spec.low, spec.high)
            typed[name] = pd.Series(numbers.to_numpy()[codes], index=text.index)
        else:
            assert isinstance(spec, Categorical)
            values = pd.Series(distinct)
            ok = values.str.fullmatch(spec.pattern) if spec.open else values.isin(spec.values)
            bad_value = ~ok.astype(bool)
            typed[name] = text
        broken.append((f"{name} must be {allowed(name)}", text, bad_value.to_numpy()[codes]))
    bad_target = ~raw[TARGET].isin(TARGET_VALUES)
    broken.append((f"{TARGET} must be one of {TARGET_VALUES}", raw[TARGET], bad_target.to_numpy()))
    typed[TARGET] = raw[TARGET]

    # Duplicates by identity, not by text: `5` and `5.0` are one encounter.
    keys = typed["encounter_id"]
    duplicate = keys.notna() & keys.duplicated(keep="first")
    if repeated is not None:
        duplicate |= repeated
    broken.append(
        (
            "duplicate encounter_id (an earlier row has it)",
            raw["encounter_id"],
            duplicate.to_numpy(),
        )
    )
    failed = np.logical_or.reduce([mask for _, _, mask in broken])
    parts: list[list[str]] = [[] for _ in range(int(failed.sum()))]
    position = np.cumsum(failed) - 1  # each failing row's place among the failing rows
    counts: Counter[str] = Counter()
    for message, text, mask in broken:
        if not mask.any():
            continue
        for at, value in zip(position[mask], text[mask], strict=True):
            parts[at].append(f"{message}, got {value!r}")
        counts[message] = int(mask.sum())
    reasons = pd.Series(["; ".join(p) for p in parts], index=raw.index[failed], dtype=str)

    clean = pd.DataFrame(typed)[~failed]
    for name in (*ID_COLUMNS, *(n for n, s in SPECS.items() if isinstance(s, Integer))):
        clean[name] = clean[name].astype("int64")
    quarantined = raw[failed].assign(reason=reasons)
    return Validated(
        clean=clean[list(COLUMNS)], quarantined=quarantined, problems=dict(counts.most_common())
    )
