"""The holdout's fingerprint: the digest versions are tagged with, whatever reads the ids."""

from __future__ import annotations

import hashlib

import numpy as np
import pandas as pd

from readmission.data.holdout import fingerprint


def test_the_fingerprint_is_the_digest_earlier_releases_tagged_versions_with() -> None:
    # Versions registered before carry fingerprints made with numpy (its int64 ids, sorted, as
    # bytes): the ids read without numpy must give the same, or no version would compare.
    ids = pd.Series([2**40 + 7, 12, 99_999_999_999, 3, 64_410], dtype="int64")
    before = hashlib.sha256(np.sort(ids.to_numpy()).tobytes()).hexdigest()[:16]
    assert fingerprint(ids) == before
    assert fingerprint(ids.astype("float64")) == before  # ids read as N.0
    assert fingerprint(reversed(ids.tolist())) == before  # a set: the order does not count
    assert fingerprint(ids.iloc[1:]) != before
