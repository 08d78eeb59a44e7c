"""An explanation in plain words: each input field's share of the risk, labelled as a clinician
reads the admission record ("Inpatient visits (prior year): 0", "Primary diagnosis 428
(circulatory system)"), not as the model's features are named."""

from __future__ import annotations

from readmission.features import icd9_group
from readmission.schema import MISSING, SPECS, Integer
from streamlit_ui.encounter_form import CODE_TABLES, label, option_label

DIAGNOSES = {
    "diag_1": "Primary diagnosis",
    "diag_2": "Secondary diagnosis",
    "diag_3": "Additional diagnosis",
}
# The ICD-9 groups of `readmission.features.icd9_group`, in words.
DIAGNOSIS_GROUPS = {
    "infectious": "infectious disease",
    "neoplasms": "neoplasm",
    "endocrine": "endocrine or metabolic",
    "blood": "blood disorder",
    "mental": "mental disorder",
    "nervous": "nervous system",
    "circulatory": "circulatory system",
    "respiratory": "respiratory system",
    "digestive": "digestive system",
    "genitourinary": "genitourinary system",
    "pregnancy": "pregnancy",
    "skin": "skin",
    "musculoskeletal": "musculoskeletal system",
    "congenital": "congenital anomaly",
    "perinatal": "perinatal condition",
    "symptoms": "symptoms, ill-defined",
    "injury": "injury or poisoning",
    "diabetes": "diabetes",
    "supplementary_v": "supplementary V code",
    "external_e": "external cause",
}


def factor(field: str, value: str) -> str:
    """One field and its value as the explanation shows it."""
    if field in DIAGNOSES:
        if value == MISSING:
            return f"{DIAGNOSES[field]}: none recorded"
        return f"{DIAGNOSES[field]} {value} ({DIAGNOSIS_GROUPS.get(icd9_group(value), 'other')})"
    spec = SPECS.get(field)
    if isinstance(spec, Integer) and spec.codes:
        meaning = CODE_TABLES[field].get(int(value), f"code {value}")
        return f"{label(field)}: {meaning}"
    return f"{label(field)}: {option_label(field, value)}"
