"""Batch scoring of an uploaded CSV in the data set's format: row checks and the scored file."""

from __future__ import annotations

import io
from dataclasses import dataclass
from typing import Any

import pandas as pd

from readmission.schema import FEATURES, ID_COLUMNS
from streamlit_ui import encounter_payload

APPENDED = ("probability", "risk_band", "readmitted_within_30d", "model_version")


class UnreadableCsv(ValueError):
    """The upload is not a CSV in the data set's format; the message says what is wrong."""


@dataclass(frozen=True)
class CheckedRows:
    good: pd.DataFrame  # valid rows as uploaded, indexed by 1-based data row number
    payloads: list[dict[str, Any]]  # the same rows as API encounters
    bad: pd.DataFrame  # columns `row` (1-based data row number) and `reason`


def read_csv(data: bytes) -> pd.DataFrame:
    """Every value as text, like the ingest: 'None' and '?' are values, not missing data."""
    try:
        frame = pd.read_csv(
            io.BytesIO(data), dtype=str, keep_default_na=False, encoding="utf-8-sig"
        )
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as error:
        raise UnreadableCsv(f"the file is not a readable CSV ({error})") from error
    missing = [c for c in FEATURES if c not in frame.columns]
    if missing:
        raise UnreadableCsv(
            f"the file lacks the columns {', '.join(missing)}: upload a CSV with "
            "the header of the data set's diabetic_data.csv"
        )
    if frame.empty:
        raise UnreadableCsv("the file has a header but no data rows")
    return frame


def check_rows(frame: pd.DataFrame) -> CheckedRows:
    """Validate each row with the shared `Encounter` model; other columns are kept, not sent."""
    columns = [c for c in (*ID_COLUMNS, *FEATURES) if c in frame.columns]
    frame = frame.set_axis(range(1, len(frame) + 1))
    payloads, good_rows, bad = [], [], []
    for row, values in zip(frame.index, frame[columns].to_dict("records"), strict=True):
        for column in ID_COLUMNS:  # optional: an empty id is no id
            if values.get(column) == "":
                del values[column]
        payload, reasons = encounter_payload.from_record(values)
        if payload is None:
            bad.append({"row": row, "reason": "; ".join(reasons)})
        else:
            payloads.append(payload)
            good_rows.append(row)
    return CheckedRows(
        good=frame.loc[good_rows],
        payloads=payloads,
        bad=pd.DataFrame(bad, columns=["row", "reason"]),
    )


def scored(good: pd.DataFrame, predictions: list[dict[str, Any]]) -> pd.DataFrame:
    """The valid rows with the API's probability, risk band, label and model version appended."""
    if len(predictions) != len(good):
        raise ValueError(f"{len(predictions)} predictions for {len(good)} rows")
    answers = pd.DataFrame(predictions, index=good.index)
    return good.assign(**{column: answers[column] for column in APPENDED})


def to_csv(frame: pd.DataFrame) -> bytes:
    return frame.to_csv(index=False).encode()
