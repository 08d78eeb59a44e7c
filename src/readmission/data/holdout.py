"""Which patients form the holdout: a fixed function of `patient_nbr`, valid for all future data.

A patient is in the holdout when a hash of their `patient_nbr` falls below the holdout fraction.
The assignment needs no state and no ordering, so every extract, whenever it arrives and
whatever it overlaps, routes a patient's encounters to the same side: no patient is ever both
scored on and trained on. The warehouse, tuning and the benchmarks all split through here.
"""

from __future__ import annotations

import hashlib
from array import array
from collections.abc import Iterable, Sequence
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import numpy as np
    import pandas as pd

_SALT = b"readmission-holdout-v1"  # changing it would reshuffle every patient: never do


def patient_share(patient_nbr: str | int) -> float:
    """A patient's fixed position in [0, 1): uniform over patients, stable across runs."""
    return float(_shares([patient_nbr])[0])


def _shares(patient_nbrs: Sequence[str | int]) -> np.ndarray:
    """`patient_share` of each patient. The keyed hash is set up once and copied per patient
    (setting up a key costs as much as hashing an id); the digests are read as big-endian
    integers in one step."""
    import numpy as np  # here: `readmission status` imports this module without numpy

    keyed = hashlib.blake2b(digest_size=8, key=_SALT)

    def digest(patient_nbr: str | int) -> bytes:
        hashed = keyed.copy()
        hashed.update(str(patient_nbr).encode())
        return hashed.digest()

    digests = b"".join([digest(p) for p in patient_nbrs])
    return np.frombuffer(digests, dtype=">u8") / 2**64


def in_holdout(patient_nbrs: pd.Series, fraction: float) -> pd.Series:
    """True for the rows whose patient belongs to the holdout (`patient_nbrs` as integers)."""
    # Imported here: `readmission status` fingerprints the holdout without pandas and numpy.
    import pandas as pd

    codes, uniques = pd.factorize(patient_nbrs.astype("int64"))
    shares = _shares(uniques.tolist())
    return pd.Series(shares[codes] < fraction, index=patient_nbrs.index)


def split(clean: pd.DataFrame, fraction: float) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(training rows, holdout rows) of typed clean rows, each in its original order."""
    mask = in_holdout(clean["patient_nbr"], fraction)
    return clean[~mask], clean[mask]


def fingerprint(encounter_ids: Iterable[int]) -> str:
    """Short digest of a set of encounters, so metrics say exactly which rows they come from:
    of their ids, sorted, as 64-bit integers in the machine's byte order (as numpy's int64)."""
    ordered = array("q", sorted(int(e) for e in encounter_ids))
    return hashlib.sha256(ordered.tobytes()).hexdigest()[:16]
