"""The shared schema: the data set's 50 columns and the Encounter input model."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from readmission.schema import COLUMNS, FEATURES, Encounter, example_encounter


def test_schema_has_the_data_sets_fifty_columns_in_file_order() -> None:
    assert len(COLUMNS) == 50
    assert COLUMNS[:3] == ("encounter_id", "patient_nbr", "race")
    assert COLUMNS[-1] == "readmitted"
    assert len(FEATURES) == 47


def test_encounter_accepts_the_example_and_returns_data_set_column_names() -> None:
    record = Encounter(**example_encounter()).to_record()
    assert set(record) == set(FEATURES)
    assert record["glyburide-metformin"] == "No"


def test_encounter_rejects_an_unknown_value_naming_the_field_and_the_allowed_values() -> None:
    with pytest.raises(ValidationError) as error:
        Encounter(**{**example_encounter(), "age": "[100-110)"})
    (problem,) = error.value.errors()
    assert problem["loc"] == ("age",)
    assert "[90-100)" in problem["msg"]


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("time_in_hospital", 15),
        ("num_medications", -1),
        ("diag_1", "ABC"),
        ("admission_type_id", 9),
        ("insulin", "Lots"),
    ],
)
def test_encounter_rejects_out_of_range_values(field: str, value: object) -> None:
    with pytest.raises(ValidationError) as error:
        Encounter(**{**example_encounter(), field: value})
    assert error.value.errors()[0]["loc"] == (field,)


def test_encounter_requires_every_feature_and_forbids_unknown_fields() -> None:
    incomplete = example_encounter()
    del incomplete["insulin"]
    with pytest.raises(ValidationError, match="insulin"):
        Encounter(**incomplete)
    with pytest.raises(ValidationError, match="insulinn"):
        Encounter(**{**example_encounter(), "insulinn": "No"})
