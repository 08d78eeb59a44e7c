"""The form's layout and labels against the schema it is built from."""

from __future__ import annotations

from collections import Counter

from readmission.schema import FEATURES, SPECS, Integer
from streamlit_ui import encounter_form


def test_every_model_input_is_in_exactly_one_group() -> None:
    placed = Counter(c for columns in encounter_form.GROUPS.values() for c in columns)

    assert set(placed) == set(FEATURES)
    assert max(placed.values()) == 1


def test_code_tables_exist_for_every_code_column_and_stay_within_its_bounds() -> None:
    code_columns = {n for n, spec in SPECS.items() if isinstance(spec, Integer) and spec.codes}

    assert set(encounter_form.CODE_TABLES) == code_columns
    for column, table in encounter_form.CODE_TABLES.items():
        spec = SPECS[column]
        assert isinstance(spec, Integer)
        assert all(spec.low <= code <= spec.high for code in table), column


def test_choices_read_as_people_say_them() -> None:
    assert encounter_form.option_label("admission_type_id", 1) == "1 · Emergency"
    assert encounter_form.option_label("admission_source_id", 7) == "7 · Emergency room"
    assert encounter_form.option_label("discharge_disposition_id", 11) == "11 · Expired"
    assert encounter_form.option_label("admission_source_id", 16) == ("16 · not in the code table")
    assert encounter_form.option_label("race", "?") == "Unknown (?)"
    assert encounter_form.option_label("A1Cresult", "None") == "Not measured"
    assert encounter_form.option_label("A1Cresult", ">8") == ">8"
    assert encounter_form.label("glyburide-metformin") == "Glyburide-metformin"
    assert encounter_form.label("number_inpatient") == "Inpatient visits (prior year)"
