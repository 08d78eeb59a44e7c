"""The data set's columns and value sets, and the `Encounter` input model built from them.

One definition serves row validation at ingest, the model's fixed feature space, the API's request
model, the UI's form choices and the load test's payloads.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Annotated, Any, Literal

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, create_model

MISSING = "?"
TARGET = "readmitted"
POSITIVE_LABEL = "<30"
ID_COLUMNS = ("encounter_id", "patient_nbr")

MEDICATIONS = (
    "metformin",
    "repaglinide",
    "nateglinide",
    "chlorpropamide",
    "glimepiride",
    "acetohexamide",
    "glipizide",
    "glyburide",
    "tolbutamide",
    "pioglitazone",
    "rosiglitazone",
    "acarbose",
    "miglitol",
    "troglitazone",
    "tolazamide",
    "examide",
    "citoglipton",
    "insulin",
    "glyburide-metformin",
    "glipizide-metformin",
    "glimepiride-pioglitazone",
    "metformin-rosiglitazone",
    "metformin-pioglitazone",
)
DOSAGE = ("No", "Steady", "Up", "Down")

# ICD-9 code as written in the data set: 3-digit numeric, V-codes or E-codes, optional decimals.
# [0-9], not \d: pydantic's regex engine would take any Unicode digit.
ICD9_PATTERN = r"^([0-9]{1,3}(\.[0-9]{1,2})?|V[0-9]{2}(\.[0-9]{1,2})?|E[0-9]{3}(\.[0-9])?|\?)$"

SPECIALTIES = (
    "?",
    "AllergyandImmunology",
    "Anesthesiology",
    "Anesthesiology-Pediatric",
    "Cardiology",
    "Cardiology-Pediatric",
    "DCPTEAM",
    "Dentistry",
    "Dermatology",
    "Emergency/Trauma",
    "Endocrinology",
    "Endocrinology-Metabolism",
    "Family/GeneralPractice",
    "Gastroenterology",
    "Gynecology",
    "Hematology",
    "Hematology/Oncology",
    "Hospitalist",
    "InfectiousDiseases",
    "InternalMedicine",
    "Nephrology",
    "Neurology",
    "Neurophysiology",
    "Obsterics&Gynecology-GynecologicOnco",
    "Obstetrics",
    "ObstetricsandGynecology",
    "Oncology",
    "Ophthalmology",
    "Orthopedics",
    "Orthopedics-Reconstructive",
    "Osteopath",
    "Otolaryngology",
    "OutreachServices",
    "Pathology",
    "Pediatrics",
    "Pediatrics-AllergyandImmunology",
    "Pediatrics-CriticalCare",
    "Pediatrics-EmergencyMedicine",
    "Pediatrics-Endocrinology",
    "Pediatrics-Hematology-Oncology",
    "Pediatrics-InfectiousDiseases",
    "Pediatrics-Neurology",
    "Pediatrics-Pulmonology",
    "Perinatology",
    "PhysicalMedicineandRehabilitation",
    "PhysicianNotFound",
    "Podiatry",
    "Proctology",
    "Psychiatry",
    "Psychiatry-Addictive",
    "Psychiatry-Child/Adolescent",
    "Psychology",
    "Pulmonology",
    "Radiologist",
    "Radiology",
    "Resident",
    "Rheumatology",
    "Speech",
    "SportsMedicine",
    "Surgeon",
    "Surgery-Cardiovascular",
    "Surgery-Cardiovascular/Thoracic",
    "Surgery-Colon&Rectal",
    "Surgery-General",
    "Surgery-Maxillofacial",
    "Surgery-Neuro",
    "Surgery-Pediatric",
    "Surgery-Plastic",
    "Surgery-PlasticwithinHeadandNeck",
    "Surgery-Thoracic",
    "Surgery-Vascular",
    "SurgicalSpecialty",
    "Urology",
)
PAYER_CODES = (
    "?",
    "MC",
    "HM",
    "SP",
    "BC",
    "MD",
    "CP",
    "UN",
    "CM",
    "OG",
    "PO",
    "DM",
    "CH",
    "WC",
    "OT",
    "MP",
    "SI",
    "FR",
)


@dataclass(frozen=True)
class Categorical:
    """A text column. `open` columns accept unseen values matching `pattern` (scored as "other")."""

    name: str
    values: tuple[str, ...]
    description: str
    default: str
    open: bool = False
    pattern: str | None = None


@dataclass(frozen=True)
class Integer:
    name: str
    low: int
    high: int
    description: str
    default: int
    codes: bool = False  # an id into a code table (IDs_mapping.csv): categorical for the model


def _ids(n: int) -> tuple[str, ...]:
    return tuple(str(i) for i in range(1, n + 1))


FEATURE_COLUMNS: tuple[Categorical | Integer, ...] = (
    Categorical(
        "race",
        ("Caucasian", "AfricanAmerican", "Hispanic", "Asian", "Other", MISSING),
        "Race; '?' when unknown.",
        "Caucasian",
    ),
    Categorical("gender", ("Female", "Male"), "Gender.", "Female"),
    Categorical(
        "age", tuple(f"[{a}-{a + 10})" for a in range(0, 100, 10)), "Age band in years.", "[60-70)"
    ),
    Categorical(
        "weight",
        (
            "[0-25)",
            "[25-50)",
            "[50-75)",
            "[75-100)",
            "[100-125)",
            "[125-150)",
            "[150-175)",
            "[175-200)",
            ">200",
            MISSING,
        ),
        "Weight band in pounds; '?' when not recorded (97% of encounters).",
        MISSING,
    ),
    Integer(
        "admission_type_id",
        1,
        8,
        "Admission type (1 Emergency, 2 Urgent, 3 Elective, ...).",
        1,
        codes=True,
    ),
    Integer(
        "discharge_disposition_id",
        1,
        30,
        "Discharge disposition (1 home, 3 SNF, 6 home health, 11 expired, ...).",
        1,
        codes=True,
    ),
    Integer(
        "admission_source_id",
        1,
        26,
        "Admission source (1 physician referral, 7 emergency room, ...).",
        7,
        codes=True,
    ),
    Integer("time_in_hospital", 1, 14, "Days between admission and discharge.", 3),
    Categorical(
        "payer_code",
        PAYER_CODES,
        "Payer code (MC Medicare, ...); '?' when unknown.",
        MISSING,
        open=True,
        pattern=r"^[A-Z]{2}$|^\?$",
    ),
    Categorical(
        "medical_specialty",
        SPECIALTIES,
        "Specialty of the admitting physician; '?' when unknown.",
        "InternalMedicine",
        open=True,
        pattern=r"^[A-Za-z][A-Za-z&/\-]{1,59}$|^\?$",
    ),
    Integer("num_lab_procedures", 0, 200, "Lab tests performed during the encounter.", 44),
    Integer("num_procedures", 0, 20, "Procedures (other than lab tests) performed.", 1),
    Integer("num_medications", 0, 150, "Distinct generic medications administered.", 15),
    Integer("number_outpatient", 0, 100, "Outpatient visits in the year before the encounter.", 0),
    Integer("number_emergency", 0, 100, "Emergency visits in the year before the encounter.", 0),
    Integer("number_inpatient", 0, 100, "Inpatient visits in the year before the encounter.", 0),
    Categorical(
        "diag_1",
        (),
        "Primary diagnosis, ICD-9 code (e.g. 428, 250.83, V57, E909).",
        "428",
        open=True,
        pattern=ICD9_PATTERN,
    ),
    Categorical(
        "diag_2",
        (),
        "Secondary diagnosis, ICD-9 code; '?' when none.",
        "250",
        open=True,
        pattern=ICD9_PATTERN,
    ),
    Categorical(
        "diag_3",
        (),
        "Additional secondary diagnosis, ICD-9 code; '?' when none.",
        "401",
        open=True,
        pattern=ICD9_PATTERN,
    ),
    Integer("number_diagnoses", 1, 20, "Diagnoses entered into the system.", 7),
    Categorical(
        "max_glu_serum",
        ("None", "Norm", ">200", ">300"),
        "Glucose serum test result; 'None' when not measured.",
        "None",
    ),
    Categorical(
        "A1Cresult",
        ("None", "Norm", ">7", ">8"),
        "HbA1c test result; 'None' when not measured.",
        "None",
    ),
    *(Categorical(m, DOSAGE, f"{m}: prescribed and dosage change.", "No") for m in MEDICATIONS),
    Categorical("change", ("No", "Ch"), "Any change in diabetic medications ('Ch').", "No"),
    Categorical("diabetesMed", ("Yes", "No"), "Any diabetic medication prescribed.", "Yes"),
)

SPECS: dict[str, Categorical | Integer] = {spec.name: spec for spec in FEATURE_COLUMNS}
FEATURES = tuple(SPECS)
TARGET_VALUES = ("NO", ">30", "<30")
COLUMNS = (*ID_COLUMNS, *FEATURES, TARGET)  # the 50 columns of diabetic_data.csv, in file order
INTEGER_COLUMNS = tuple(name for name, spec in SPECS.items() if isinstance(spec, Integer))


def _integral(value: Any) -> Any:
    """3.0 as 3: JSON Schema counts a number without a fraction as an integer, and pandas'
    `to_json` writes an integer column with gaps that way."""
    return int(value) if type(value) is float and value.is_integer() else value


def json_integer(low: int, high: int) -> Any:
    """A JSON integer from `low` to `high`, or a number without a fraction; not `true` (Python's
    bool is an int), not "3", not 3.5. Callers holding text (a CSV row) validate the Encounter
    with `strict=False`. (The bounds sit inside the conversion, so that the JSON schema keeps
    them as minimum and maximum.)"""
    return Annotated[
        Annotated[int, Field(strict=True, ge=low, le=high)], BeforeValidator(_integral)
    ]


# The warehouse keeps ids as 64-bit signed integers (PostgreSQL bigint, SQLite INTEGER): a larger
# id could be scored but never logged, and would block the log's writes behind it.
ID_MIN, ID_MAX = -(2**63), 2**63 - 1
WarehouseId = Annotated[
    Annotated[int, Field(strict=True, ge=ID_MIN, le=ID_MAX)], BeforeValidator(_integral)
]  # json_integer(ID_MIN, ID_MAX), spelled out as a type the type checker reads


def field_name(column: str) -> str:
    """Python identifier for a data set column (`glyburide-metformin` -> `glyburide_metformin`)."""
    return column.replace("-", "_")


def allowed(column: str) -> str:
    """Human-readable description of what a column accepts, for error messages."""
    spec = SPECS[column]
    if isinstance(spec, Integer):
        return f"an integer from {spec.low} to {spec.high}"
    if spec.open:
        return f"a value matching {spec.pattern}"
    return "one of " + ", ".join(repr(v) for v in spec.values)


def is_valid(column: str, value: Any) -> bool:
    spec = SPECS[column]
    if isinstance(spec, Integer):
        return isinstance(value, int) and spec.low <= value <= spec.high
    if spec.open:
        return isinstance(value, str) and re.match(spec.pattern or "", value) is not None
    return value in spec.values


def _pydantic_field(spec: Categorical | Integer) -> tuple[Any, Any]:
    alias = spec.name if field_name(spec.name) != spec.name else None
    if isinstance(spec, Integer):
        kind: Any = json_integer(spec.low, spec.high)
    elif spec.open:
        kind = Annotated[str, Field(pattern=spec.pattern)]
    else:
        kind = Literal[spec.values]
    return kind, Field(description=spec.description, alias=alias, examples=[spec.default])


class _EncounterBase(BaseModel):
    model_config = ConfigDict(populate_by_name=True, extra="forbid")

    encounter_id: WarehouseId | None = Field(
        None, description="Optional, echoed back; not a feature."
    )
    patient_nbr: WarehouseId | None = Field(None, description="Optional; not a feature.")

    def to_record(self) -> dict[str, Any]:
        """The encounter keyed by the data set's column names, as the model expects."""
        return self.model_dump(by_alias=True, exclude={"encounter_id", "patient_nbr"})


# create_model's overloads cannot type field definitions unpacked from a dict built at import.
Encounter: type[_EncounterBase] = create_model(  # type: ignore[call-overload]
    "Encounter",
    __base__=_EncounterBase,
    __doc__="One hospital encounter of a diabetic patient, in the data set's columns.",
    **{field_name(spec.name): _pydantic_field(spec) for spec in FEATURE_COLUMNS},
)


def example_encounter() -> dict[str, Any]:
    """A typical valid encounter, keyed by data set column names."""
    return {spec.name: spec.default for spec in FEATURE_COLUMNS}
