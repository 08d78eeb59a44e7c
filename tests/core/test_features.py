"""The fixed feature space: ICD-9 grouping and vocabularies known before the first batch."""

from __future__ import annotations

import pandas as pd
import pytest

from readmission.data.dataset import synthetic_sample
from readmission.data.validation import validate
from readmission.features import OTHER, FeatureSpace, icd9_category, icd9_group


@pytest.mark.parametrize(
    ("code", "group"),
    [
        ("428", "circulatory"),
        ("414.01", "circulatory"),
        ("785", "circulatory"),
        ("786", "respiratory"),
        ("486", "respiratory"),
        ("250.83", "diabetes"),
        ("250", "diabetes"),
        ("38", "infectious"),
        ("996", "injury"),
        ("715", "musculoskeletal"),
        ("V57", "supplementary_v"),
        ("E909", "external_e"),
        ("?", "missing"),
        ("174", "neoplasms"),
        ("599", "genitourinary"),
    ],
)
def test_icd9_codes_fall_into_strack_et_al_groups(code: str, group: str) -> None:
    assert icd9_group(code) == group


def test_icd9_categories_are_three_digit_heads() -> None:
    assert [icd9_category(c) for c in ("250.83", "38", "V57.1", "E909", "?")] == [
        "250",
        "038",
        "V57",
        "E909",
        "?",
    ]


def test_feature_space_is_the_same_whatever_the_first_batch_contains() -> None:
    first = validate(synthetic_sample(300, seed=1)).clean.assign(payer_code="?")
    cols, nums = FeatureSpace().encode(first)
    space = FeatureSpace()
    payer = next(i for i, f in enumerate(space.features) if f.name == "payer_code")
    assert space.level_column(payer, "MC") != space.level_column(payer, "?")
    assert cols.shape == (300, len(space.features)) and nums.shape == (300, len(space.numeric))
    assert cols.max() < space.n_onehot


def test_unseen_levels_of_open_columns_map_to_the_other_bucket() -> None:
    frame = validate(synthetic_sample(5)).clean.assign(medical_specialty="Astrology")
    space = FeatureSpace()
    cols, _ = space.encode(frame)
    position = next(i for i, f in enumerate(space.features) if f.name == "medical_specialty")
    assert set(cols[:, position]) == {space.level_column(position, OTHER)}


def test_encoding_accepts_text_or_typed_columns_alike() -> None:
    raw = synthetic_sample(50)
    typed = validate(raw).clean
    a, x = FeatureSpace().encode(raw)
    b, y = FeatureSpace().encode(typed)
    assert (a == b).all() and (x == y).all()


def test_encoding_names_missing_input_columns() -> None:
    with pytest.raises(ValueError, match="insulin"):
        FeatureSpace().encode(pd.DataFrame({"age": ["[60-70)"]}))
