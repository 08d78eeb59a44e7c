"""Performance by patient group (race, gender, age band): who the model serves less well.

Every row belongs to exactly one group of each attribute, so each table's counts add up to the
rows evaluated. A group with too few readmissions (or too few non-readmissions) for a stable AUC
keeps its row, with its counts and rates, and says so instead of an AUC.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import pandas as pd

from readmission.evaluation.calibration import calibration_intercept
from readmission.evaluation.uncertainty import cluster_bootstrap_auc
from readmission.schema import MISSING

UNKNOWN = "Unknown"
AGE_BANDS = ((0, 40), (40, 60), (60, 80), (80, 100))


def _race(frame: pd.DataFrame) -> pd.Series:
    return frame["race"].astype(str).replace({MISSING: UNKNOWN})


def _gender(frame: pd.DataFrame) -> pd.Series:
    gender = frame["gender"].astype(str)
    return gender.where(gender.isin(["Female", "Male"]), UNKNOWN)


def _age_band(frame: pd.DataFrame) -> pd.Series:
    """The data set's ten-year bands merged into four, so each holds enough readmissions."""
    low = pd.to_numeric(frame["age"].astype(str).str.extract(r"^\[(\d+)-")[0], errors="coerce")
    bands = pd.Series(UNKNOWN, index=frame.index)
    for start, end in AGE_BANDS:
        bands[(low >= start) & (low < end)] = f"[{start}-{end})"
    return bands


ATTRIBUTES: dict[str, Callable[[pd.DataFrame], pd.Series]] = {
    "race": _race,
    "gender": _gender,
    "age": _age_band,
}


@dataclass(frozen=True)
class GroupRow:
    group: str
    n: int
    positives: int
    prevalence: float
    mean_predicted: float
    calibration_in_the_large: float | None
    roc_auc: float | None
    roc_auc_ci: list[float] | None
    selection_rate: float  # share flagged at the threshold
    ppv: float | None  # of those flagged, the share readmitted
    sensitivity: float | None  # of those readmitted, the share flagged
    reliable: bool
    note: str

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def subgroup_tables(
    frame: pd.DataFrame,
    y: np.ndarray,
    probability: np.ndarray,
    threshold: float,
    min_events: int,
    resamples: int,
    seed: int,
) -> dict[str, list[GroupRow]]:
    """One table per attribute: groups by size (largest first), age bands in age order."""
    patients = frame["patient_nbr"].to_numpy()
    flagged = probability >= threshold
    tables = {}
    for attribute, group_of in ATTRIBUTES.items():
        groups = group_of(frame).to_numpy()
        names = list(pd.Series(groups).value_counts().index)
        if attribute == "age":
            names.sort()  # "[0-40)" < "[40-60)" < ... < "Unknown"
        tables[attribute] = [
            _row(
                str(name),
                groups == name,
                y,
                probability,
                flagged,
                patients,
                min_events,
                resamples,
                seed,
            )
            for name in names
        ]
    return tables


def _row(
    name: str,
    member: np.ndarray,
    y: np.ndarray,
    probability: np.ndarray,
    flagged: np.ndarray,
    patients: np.ndarray,
    min_events: int,
    resamples: int,
    seed: int,
) -> GroupRow:
    y_g, p_g, flagged_g = y[member], probability[member], flagged[member]
    n, positives = len(y_g), int(y_g.sum())
    negatives = n - positives
    reliable = min(positives, negatives) >= min_events
    auc = ci = intercept = None
    if reliable:
        interval = cluster_bootstrap_auc(y_g, p_g, patients[member], resamples, seed)
        auc, ci = interval.roc_auc, interval.as_list()
        intercept = calibration_intercept(y_g, p_g)
        note = ""
    else:
        note = (
            f"too few {'readmissions' if positives < negatives else 'non-readmissions'} "
            f"({min(positives, negatives)} < {min_events}) for a stable AUC or calibration"
        )
    return GroupRow(
        group=name,
        n=n,
        positives=positives,
        prevalence=positives / n,
        mean_predicted=float(p_g.mean()),
        calibration_in_the_large=intercept,
        roc_auc=auc,
        roc_auc_ci=ci,
        selection_rate=float(flagged_g.mean()),
        ppv=float(y_g[flagged_g].mean()) if flagged_g.any() else None,
        sensitivity=float(flagged_g[y_g == 1].mean()) if positives else None,
        reliable=reliable,
        note=note,
    )
