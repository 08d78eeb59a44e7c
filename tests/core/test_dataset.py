"""Acquiring the data set: local .zip in both UCI layouts, .csv, checksum and download errors."""

from __future__ import annotations

import hashlib
import zipfile
from pathlib import Path

import pandas as pd
import pytest

from readmission.data.dataset import DatasetError, load, synthetic_sample
from readmission.processes import free_port
from readmission.schema import COLUMNS


def zipped(csv: Path, target: Path, member: str) -> Path:
    with zipfile.ZipFile(target, "w") as archive:
        archive.write(csv, member)
        archive.writestr("IDs_mapping.csv", "admission_type_id,description\n1,Emergency\n")
    return target


@pytest.mark.parametrize("member", ["dataset_diabetes/diabetic_data.csv", "diabetic_data.csv"])
def test_reads_either_uci_zip_layout(sample_csv: Path, tmp_path: Path, member: str) -> None:
    frame = load(str(zipped(sample_csv, tmp_path / "uci.zip", member)))
    assert list(frame.columns) == list(COLUMNS) and len(frame) == 2500


def test_reads_a_csv_as_text_in_encounter_order_keeping_none_as_a_value(tmp_path: Path) -> None:
    raw = synthetic_sample(30).assign(A1Cresult="None").sample(frac=1, random_state=1)
    path = tmp_path / "data.csv"
    raw.to_csv(path, index=False)
    frame = load(str(path))
    assert (frame["A1Cresult"] == "None").all()
    assert frame["encounter_id"].astype(int).is_monotonic_increasing


def test_checksum_is_verified_and_a_mismatch_names_the_setting(sample_csv: Path) -> None:
    good = hashlib.sha256(sample_csv.read_bytes()).hexdigest()
    assert len(load(str(sample_csv), sha256=good)) == 2500
    with pytest.raises(DatasetError, match="DATA_SHA256"):
        load(str(sample_csv), sha256="0" * 64)


def test_unreachable_source_names_the_setting_to_change(tmp_path: Path) -> None:
    url = f"http://127.0.0.1:{free_port()}/diabetes.zip"
    with pytest.raises(DatasetError, match="DATA_SOURCE"):
        load(url, download_dir=tmp_path)
    assert list(tmp_path.iterdir()) == []  # no half-written download left behind


def test_missing_file_and_wrong_columns_are_clear_errors(tmp_path: Path) -> None:
    with pytest.raises(DatasetError, match="DATA_SOURCE"):
        load(str(tmp_path / "nope.zip"))
    other = tmp_path / "other.csv"
    pd.DataFrame({"a": [1]}).to_csv(other, index=False)
    with pytest.raises(DatasetError, match="lacks columns"):
        load(str(other))


def test_synthetic_sample_has_the_real_columns_and_a_positive_class() -> None:
    sample = synthetic_sample(1000, seed=3)
    assert list(sample.columns) == list(COLUMNS)
    assert sample["encounter_id"].is_unique
    assert 0.05 < (sample["readmitted"] == "<30").mean() < 0.5
