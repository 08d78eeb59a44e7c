"""Row validation: every row is either clean or quarantined with a readable reason."""

from __future__ import annotations

from readmission.data.dataset import synthetic_sample
from readmission.data.validation import validate


def test_rows_in_equal_rows_accepted_plus_rows_quarantined() -> None:
    raw = synthetic_sample(200)
    raw.loc[3, "gender"] = "Unknown/Invalid"
    raw.loc[7, "diag_2"] = "XYZ"
    raw.loc[9, "num_lab_procedures"] = "many"
    raw.loc[11, "encounter_id"] = raw.loc[10, "encounter_id"]
    result = validate(raw)
    assert len(result.clean) + len(result.quarantined) == len(raw) == result.rows
    assert sorted(result.quarantined.index) == [3, 7, 9, 11]


def test_quarantine_reasons_name_the_field_the_value_and_what_is_allowed() -> None:
    raw = synthetic_sample(20)
    raw.loc[2, "gender"] = "Unknown/Invalid"
    raw.loc[4, "time_in_hospital"] = "40"
    raw.loc[5, "readmitted"] = "maybe"
    reasons = validate(raw).quarantined["reason"].tolist()
    assert reasons == [
        "gender must be one of 'Female', 'Male', got 'Unknown/Invalid'",
        "time_in_hospital must be an integer from 1 to 14, got '40'",
        "readmitted must be one of ('NO', '>30', '<30'), got 'maybe'",
    ]


def test_several_problems_in_one_row_are_all_reported() -> None:
    raw = synthetic_sample(3)
    raw.loc[1, ["age", "insulin"]] = ["old", "Lots"]
    (reason,) = validate(raw).quarantined["reason"]
    assert "age must be" in reason and "insulin must be" in reason


def test_clean_rows_are_typed() -> None:
    clean = validate(synthetic_sample(10)).clean
    assert clean["encounter_id"].dtype == "int64"
    assert clean["number_inpatient"].dtype == "int64"
    assert clean["A1Cresult"].isin(["None", "Norm", ">7", ">8"]).all()


def test_the_level_none_is_a_value_not_missing() -> None:
    raw = synthetic_sample(10).assign(A1Cresult="None", max_glu_serum="None")
    assert len(validate(raw).clean) == 10
