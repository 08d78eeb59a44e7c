"""The prediction form: every model input, grouped like a clinical admission record, with the
choices, bounds and defaults of `readmission.schema`."""

from __future__ import annotations

from functools import partial
from typing import Any

import streamlit as st

from readmission.schema import MEDICATIONS, MISSING, SPECS, Integer, example_encounter

GROUPS: dict[str, tuple[str, ...]] = {
    "Patient": ("race", "gender", "age", "weight"),
    "Admission": (
        "admission_type_id",
        "admission_source_id",
        "discharge_disposition_id",
        "time_in_hospital",
        "payer_code",
        "medical_specialty",
    ),
    "Diagnoses": ("diag_1", "diag_2", "diag_3", "number_diagnoses"),
    "Utilisation": (
        "number_outpatient",
        "number_emergency",
        "number_inpatient",
        "num_lab_procedures",
        "num_procedures",
        "num_medications",
    ),
    "Labs": ("max_glu_serum", "A1Cresult"),
    "Medications": (*MEDICATIONS, "change", "diabetesMed"),
}

LABELS = {
    "race": "Race",
    "gender": "Gender",
    "age": "Age (years)",
    "weight": "Weight (lb)",
    "admission_type_id": "Admission type",
    "admission_source_id": "Admission source",
    "discharge_disposition_id": "Discharge disposition",
    "time_in_hospital": "Days in hospital",
    "payer_code": "Payer",
    "medical_specialty": "Admitting specialty",
    "diag_1": "Primary diagnosis (ICD-9)",
    "diag_2": "Secondary diagnosis (ICD-9)",
    "diag_3": "Additional diagnosis (ICD-9)",
    "number_diagnoses": "Number of diagnoses",
    "number_outpatient": "Outpatient visits (prior year)",
    "number_emergency": "Emergency visits (prior year)",
    "number_inpatient": "Inpatient visits (prior year)",
    "num_lab_procedures": "Lab tests",
    "num_procedures": "Procedures (non-lab)",
    "num_medications": "Medications administered",
    "max_glu_serum": "Glucose serum test",
    "A1Cresult": "HbA1c test",
    "change": "Diabetic medication changed",
    "diabetesMed": "Diabetic medication prescribed",
}

# The code tables of IDs_mapping.csv, shipped with the UCI data set.
CODE_TABLES: dict[str, dict[int, str]] = {
    "admission_type_id": {
        1: "Emergency",
        2: "Urgent",
        3: "Elective",
        4: "Newborn",
        5: "Not available",
        6: "NULL",
        7: "Trauma center",
        8: "Not mapped",
    },
    "discharge_disposition_id": {
        1: "Discharged to home",
        2: "Transferred to another short-term hospital",
        3: "Transferred to SNF",
        4: "Transferred to ICF",
        5: "Transferred to another type of inpatient care institution",
        6: "Home with home health service",
        7: "Left AMA",
        8: "Home under care of home IV provider",
        9: "Admitted as inpatient to this hospital",
        10: "Neonate transferred for neonatal aftercare",
        11: "Expired",
        12: "Still patient or expected to return for outpatient services",
        13: "Hospice / home",
        14: "Hospice / medical facility",
        15: "Medicare-approved swing bed in this institution",
        16: "Referred to another institution for outpatient services",
        17: "Referred to this institution for outpatient services",
        18: "NULL",
        19: "Expired at home (Medicaid only, hospice)",
        20: "Expired in a medical facility (Medicaid only, hospice)",
        21: "Expired, place unknown (Medicaid only, hospice)",
        22: "Transferred to another rehab facility",
        23: "Transferred to a long-term care hospital",
        24: "Transferred to a Medicaid-only nursing facility",
        25: "Not mapped",
        26: "Unknown/invalid",
        27: "Transferred to a federal health care facility",
        28: "Transferred to a psychiatric hospital or unit",
        29: "Transferred to a critical access hospital",
        30: "Transferred to another type of health care institution",
    },
    "admission_source_id": {
        1: "Physician referral",
        2: "Clinic referral",
        3: "HMO referral",
        4: "Transfer from a hospital",
        5: "Transfer from a skilled nursing facility",
        6: "Transfer from another health care facility",
        7: "Emergency room",
        8: "Court/law enforcement",
        9: "Not available",
        10: "Transfer from a critical access hospital",
        11: "Normal delivery",
        12: "Premature delivery",
        13: "Sick baby",
        14: "Extramural birth",
        15: "Not available",
        17: "NULL",
        18: "Transfer from another home health agency",
        19: "Readmission to same home health agency",
        20: "Not mapped",
        21: "Unknown/invalid",
        22: "Transfer from hospital inpatient (separate claim)",
        23: "Born inside this hospital",
        24: "Born outside this hospital",
        25: "Transfer from ambulatory surgery center",
        26: "Transfer from hospice",
    },
}

VALUE_LABELS: dict[str, dict[str, str]] = {
    "max_glu_serum": {"None": "Not measured", "Norm": "Normal"},
    "A1Cresult": {"None": "Not measured", "Norm": "Normal"},
    "change": {"No": "No", "Ch": "Yes"},
    **{m: {"No": "Not prescribed"} for m in MEDICATIONS},
}


def label(column: str) -> str:
    return LABELS.get(column, column.capitalize())


def option_label(column: str, value: Any) -> str:
    """How a choice reads in a selectbox: code tables spelled out, '?' as unknown."""
    if column in CODE_TABLES:
        return f"{value} · {CODE_TABLES[column].get(value, 'not in the code table')}"
    if value == MISSING:
        return "Unknown (?)"
    return VALUE_LABELS.get(column, {}).get(value, str(value))


def widget_key(column: str) -> str:
    return f"encounter.{column}"


def field(column: str, default: Any) -> Any:
    """The input widget of one column, by the kind of values the schema allows."""
    spec = SPECS[column]
    key, hint = widget_key(column), spec.description
    if isinstance(spec, Integer) and spec.codes:
        codes = list(range(spec.low, spec.high + 1))
        return st.selectbox(
            label(column),
            codes,
            index=codes.index(default),
            format_func=partial(option_label, column),
            key=key,
            help=hint,
        )
    if isinstance(spec, Integer):
        return st.number_input(
            label(column),
            min_value=spec.low,
            max_value=spec.high,
            value=default,
            step=1,
            key=key,
            help=hint,
        )
    if spec.values:
        return st.selectbox(
            label(column),
            spec.values,
            index=spec.values.index(default),
            format_func=partial(option_label, column),
            key=key,
            help=hint,
        )
    return st.text_input(
        label(column),
        value=default,
        max_chars=8,
        placeholder="e.g. 428, 250.83, V57",
        key=key,
        help=hint,
    )


def render() -> dict[str, Any] | None:
    """Draw the form; the encounter (data set column names) when submitted, else None."""
    defaults = example_encounter()
    record: dict[str, Any] = {}
    with st.form("encounter"):
        for group, columns in GROUPS.items():
            area = (
                st.expander(f"{group} ({len(columns)} fields)")
                if group == "Medications"
                else st.container(border=True)
            )
            with area:
                if group != "Medications":
                    st.markdown(f"**{group}**")
                cells = st.columns(4 if group == "Medications" else 3)
                for position, column in enumerate(columns):
                    with cells[position % len(cells)]:
                        record[column] = field(column, defaults[column])
        submitted = st.form_submit_button("Predict readmission risk", type="primary")
    return record if submitted else None
