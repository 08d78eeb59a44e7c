"""Acquiring the UCI data set (download, local .zip or .csv), and a synthetic sample for tests."""

from __future__ import annotations

import hashlib
import io
import zipfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO

import httpx
import numpy as np
import pandas as pd

from readmission.schema import (
    COLUMNS,
    FEATURE_COLUMNS,
    MEDICATIONS,
    SPECIALTIES,
    Categorical,
    Integer,
)

CSV_NAME = "diabetic_data.csv"


class DatasetError(RuntimeError):
    """The source could not be read; the message names the setting to change."""


def load(source: str, sha256: str = "", download_dir: Path = Path(".")) -> pd.DataFrame:
    """The data set from a URL, a .zip (either UCI layout) or a .csv, as strings, by encounter_id.

    Every value stays text (`keep_default_na=False`): 'None' is a level of A1Cresult and
    max_glu_serum, '?' marks a missing value; validation turns text into types.
    """
    raw = _csv_bytes(_local_path(source, download_dir))
    _check_sha256(hashlib.sha256(raw).hexdigest(), source, sha256)
    frame = pd.read_csv(io.BytesIO(raw), dtype=str, keep_default_na=False)
    return sort_by_encounter(_columns(frame, source))


def read_chunks(
    source: str, sha256: str = "", download_dir: Path = Path("."), chunk_rows: int = 50_000
) -> Iterator[pd.DataFrame]:
    """The data set as `load` reads it, but `chunk_rows` rows at a time, in file order: memory
    follows the chunk, not the file (readmission.data.ingestion.ingest works chunk by chunk).

    The file is found and its checksum verified (a pass over the stream) before this returns,
    so a wrong DATA_SOURCE fails before anything is read into the warehouse.
    """
    path = _local_path(source, download_dir)
    if sha256:
        digest = hashlib.sha256()
        with _open_csv(path) as stream:
            while block := stream.read(1 << 20):
                digest.update(block)
        _check_sha256(digest.hexdigest(), source, sha256)
    with _open_csv(path) as stream:
        _columns(pd.read_csv(stream, dtype=str, keep_default_na=False, nrows=0), source)
    return _chunks(path, source, chunk_rows)


def _chunks(path: Path, source: str, chunk_rows: int) -> Iterator[pd.DataFrame]:
    with _open_csv(path) as stream:
        reader = pd.read_csv(stream, dtype=str, keep_default_na=False, chunksize=chunk_rows)
        for chunk in reader:
            yield _columns(chunk, source)


def _check_sha256(digest: str, source: str, sha256: str) -> None:
    if sha256 and digest != sha256:
        raise DatasetError(
            f"{CSV_NAME} from {source} has sha256 {digest}, expected {sha256}. Point "
            "DATA_SOURCE at the genuine file, or set DATA_SHA256 to the new checksum (empty "
            "skips the check)."
        )


def _columns(frame: pd.DataFrame, source: str) -> pd.DataFrame:
    missing = [c for c in COLUMNS if c not in frame.columns]
    if missing:
        raise DatasetError(f"{source} lacks columns {missing}: is DATA_SOURCE the UCI data set?")
    return frame[list(COLUMNS)]


def sort_by_encounter(frame: pd.DataFrame) -> pd.DataFrame:
    """Rows in arrival order: ascending numeric encounter_id (non-numeric ids last)."""
    order = pd.to_numeric(frame["encounter_id"], errors="coerce")
    return frame.iloc[np.argsort(order.fillna(np.inf).to_numpy(), kind="stable")].reset_index(
        drop=True
    )


def _local_path(source: str, download_dir: Path) -> Path:
    if not source.startswith(("http://", "https://")):
        path = Path(source).expanduser()
        if not path.is_file():
            raise DatasetError(f"DATA_SOURCE {source} is not a file: set it to a .zip or .csv")
        return path
    target = download_dir / Path(source.split("?")[0]).name.replace("+", "_")
    if not target.is_file():
        download_dir.mkdir(parents=True, exist_ok=True)
        partial = target.with_suffix(".part")
        try:
            with httpx.stream("GET", source, follow_redirects=True, timeout=60) as response:
                response.raise_for_status()
                with partial.open("wb") as out:
                    for chunk in response.iter_bytes():
                        out.write(chunk)
        except httpx.HTTPError as error:
            partial.unlink(missing_ok=True)
            raise DatasetError(
                f"could not download {source} ({error}). Set DATA_SOURCE to a local copy "
                "(a .zip or .csv of the UCI data set)."
            ) from error
        partial.rename(target)
    return target


def _csv_bytes(path: Path) -> bytes:
    with _open_csv(path) as stream:
        return stream.read()


@contextmanager
def _open_csv(path: Path) -> Iterator[IO[bytes]]:
    """The CSV's bytes as a stream: the file, or the data set's member of a zip."""
    if path.suffix.lower() != ".zip":
        with path.open("rb") as stream:
            yield stream
        return
    try:
        archive = zipfile.ZipFile(path)
    except zipfile.BadZipFile as error:
        raise DatasetError(f"{path} is not a valid zip: check DATA_SOURCE") from error
    with archive:
        names = [n for n in archive.namelist() if Path(n).name == CSV_NAME]
        if not names:
            raise DatasetError(f"{path} holds no {CSV_NAME}: set DATA_SOURCE to the UCI zip")
        with archive.open(names[0]) as stream:
            yield stream


def synthetic_sample(rows: int = 2000, seed: int = 0) -> pd.DataFrame:
    """A small data set with the real columns and value sets, and a learnable readmission signal.

    Risk rises with prior inpatient visits, emergency visits, age and a circulatory primary
    diagnosis, so warm-started models can be told apart by holdout metrics.
    """
    rng = np.random.default_rng(seed)
    data: dict[str, object] = {
        "encounter_id": np.sort(rng.choice(np.arange(10_000, 10_000 + rows * 20), rows, False)),
        "patient_nbr": rng.integers(100_000, 999_999, rows),
    }
    diagnoses = np.array(
        [
            "428",
            "414",
            "786",
            "410",
            "486",
            "427",
            "250.83",
            "250.02",
            "V57",
            "E909",
            "599",
            "276",
            "38",
            "715",
            "996",
            "?",
        ]
    )
    for spec in FEATURE_COLUMNS:
        if isinstance(spec, Integer):
            high = min(
                spec.high,
                {"num_lab_procedures": 90, "num_medications": 40}.get(spec.name, spec.high),
            )
            values = rng.integers(spec.low, high + 1, rows)
            if spec.name.startswith("number_") and spec.name != "number_diagnoses":
                values = rng.poisson(0.4, rows)
            data[spec.name] = values
        elif spec.name.startswith("diag_"):
            data[spec.name] = rng.choice(diagnoses, rows)
        elif spec.name == "medical_specialty":
            data[spec.name] = rng.choice(np.array(SPECIALTIES[:20]), rows)
        else:
            assert isinstance(spec, Categorical)
            weights = np.array([4.0 if v == spec.default else 1.0 for v in spec.values])
            data[spec.name] = rng.choice(np.array(spec.values), rows, p=weights / weights.sum())
    frame = pd.DataFrame(data)
    age = frame["age"].str.slice(1, 3).str.rstrip("-").astype(int)
    logit = (
        -3.2
        + 1.4 * frame["number_inpatient"]
        + 0.7 * frame["number_emergency"]
        + 0.015 * age
        + 0.9 * (frame["diag_1"] == "428")
    )
    positive = rng.random(rows) < 1 / (1 + np.exp(-logit))
    frame["readmitted"] = np.where(positive, "<30", rng.choice(np.array(["NO", ">30"]), rows))
    frame["change"] = np.where(
        frame[list(MEDICATIONS)].isin(["Up", "Down"]).any(axis=1), "Ch", "No"
    )
    return frame[list(COLUMNS)].astype(str)
