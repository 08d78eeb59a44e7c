"""Row checks and the scored file of the batch page, on synthetic rows in the data set's format."""

from __future__ import annotations

import io

import pandas as pd
import pytest

from readmission.data.dataset import synthetic_sample
from readmission.schema import FEATURES
from streamlit_ui import batch_scoring


def csv_bytes(frame: pd.DataFrame) -> bytes:
    return frame.to_csv(index=False).encode()


@pytest.fixture
def rows() -> pd.DataFrame:
    return synthetic_sample(6, seed=3)


def test_bad_rows_are_listed_by_1_based_data_row_with_every_field_named(rows: pd.DataFrame) -> None:
    rows.loc[2, ["diag_1", "age"]] = ["BAD", "[200-210)"]
    rows.loc[4, "time_in_hospital"] = "15"

    checked = batch_scoring.check_rows(batch_scoring.read_csv(csv_bytes(rows)))

    assert list(checked.bad["row"]) == [3, 5]
    first, second = checked.bad["reason"]
    assert "age must be one of" in first and "'[200-210)'" in first
    assert "diag_1 must be a value matching" in first and "'BAD'" in first
    assert second == "time_in_hospital must be an integer from 1 to 14, got '15'"
    assert list(checked.good.index) == [1, 2, 4, 6]
    assert [p["encounter_id"] for p in checked.payloads] == [
        int(e) for e in rows["encounter_id"].iloc[[0, 1, 3, 5]]
    ]


def test_payloads_hold_the_features_typed_and_not_the_label(rows: pd.DataFrame) -> None:
    checked = batch_scoring.check_rows(batch_scoring.read_csv(csv_bytes(rows)))

    payload = checked.payloads[0]
    assert set(payload) == {*FEATURES, "encounter_id", "patient_nbr"}
    assert payload["glyburide-metformin"] == rows.loc[0, "glyburide-metformin"]
    assert payload["time_in_hospital"] == int(rows.loc[0, "time_in_hospital"])
    assert "readmitted" in checked.good.columns


def test_rows_without_ids_are_scored_without_them(rows: pd.DataFrame) -> None:
    rows["encounter_id"] = ""
    checked = batch_scoring.check_rows(
        batch_scoring.read_csv(csv_bytes(rows.drop(columns="patient_nbr")))
    )

    assert checked.bad.empty
    assert all("encounter_id" not in p and "patient_nbr" not in p for p in checked.payloads)


def test_a_file_without_the_data_sets_columns_is_refused_naming_them(rows: pd.DataFrame) -> None:
    with pytest.raises(batch_scoring.UnreadableCsv, match="lacks the columns A1Cresult, change: "):
        batch_scoring.read_csv(csv_bytes(rows.drop(columns=["A1Cresult", "change"])))
    with pytest.raises(batch_scoring.UnreadableCsv, match="no data rows"):
        batch_scoring.read_csv(csv_bytes(rows.iloc[:0]))
    with pytest.raises(batch_scoring.UnreadableCsv, match="not a readable CSV"):
        batch_scoring.read_csv(b"")


def test_none_and_question_mark_stay_values_not_missing_data(rows: pd.DataFrame) -> None:
    rows.loc[0, ["A1Cresult", "weight"]] = ["None", "?"]
    frame = batch_scoring.read_csv(csv_bytes(rows))

    checked = batch_scoring.check_rows(frame)
    assert checked.bad.empty
    assert (checked.payloads[0]["A1Cresult"], checked.payloads[0]["weight"]) == ("None", "?")


def test_the_scored_file_is_the_valid_rows_with_probability_band_and_label_appended(
    rows: pd.DataFrame,
) -> None:
    checked = batch_scoring.check_rows(batch_scoring.read_csv(csv_bytes(rows)))
    predictions = [
        {
            "encounter_id": p["encounter_id"],
            "probability": 0.1 * n,
            "readmitted_within_30d": n > 3,
            "risk_band": "low",
            "threshold": 0.3,
            "model_name": "m",
            "model_version": "2",
        }
        for n, p in enumerate(checked.payloads)
    ]

    result = batch_scoring.scored(checked.good, predictions)
    written = pd.read_csv(
        io.BytesIO(batch_scoring.to_csv(result)), dtype=str, keep_default_na=False
    )

    assert list(written.columns) == [*rows.columns, *batch_scoring.APPENDED]
    assert list(written["encounter_id"]) == list(rows["encounter_id"])
    assert list(written["probability"].astype(float)) == pytest.approx([0, 0.1, 0.2, 0.3, 0.4, 0.5])
    assert list(written["readmitted_within_30d"]) == ["False"] * 4 + ["True"] * 2


def test_predictions_that_do_not_match_the_rows_are_refused(rows: pd.DataFrame) -> None:
    checked = batch_scoring.check_rows(batch_scoring.read_csv(csv_bytes(rows)))
    with pytest.raises(ValueError, match="5 predictions for 6 rows"):
        batch_scoring.scored(checked.good, [{}] * 5)
