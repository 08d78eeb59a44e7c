"""The extract contract (issue 21): blank lab results read as "None" and counted, an extract with
too many failing rows refused whole, a minimum batch whose remainder waits for the next extract,
and one reading of an encounter or patient id everywhere. Real PostgreSQL throughout."""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
import sqlalchemy as sa

from readmission import extracts
from readmission.config import Settings
from readmission.data import (
    batch_rows,
    database,
    holdout,
    ingest_report,
    ingestion,
    inventory,
    lineage,
    tables,
    warehouse,
)
from readmission.data.dataset import load, synthetic_sample
from readmission.data.validation import parse_ids, validate

from .test_cli import cli


def generated(rows: int, seed: int) -> pd.DataFrame:
    """Synthetic text rows as an extract arrives: about three encounters per patient, 1% of
    rows with an invalid gender, in encounter_id order."""
    frame = synthetic_sample(rows, seed).astype(str)
    rng = np.random.default_rng(seed)
    frame["patient_nbr"] = rng.integers(100_000, 100_000 + rows // 3, rows).astype(str)
    frame.loc[rng.choice(rows, rows // 100, replace=False), "gender"] = "Unknown/Invalid"
    return frame


def holdout_patient(fraction: float = 0.2) -> int:
    return next(p for p in range(1000, 100_000) if holdout.patient_share(p) < fraction)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("12", 12),
        (" 12 ", 12),
        ("0012", 12),
        ("12.0", 12),
        ("12.", 12),
        ("1.5e3", None),  # scientific notation: digits were lost upstream
        ("1e3", None),
        ("12.5", None),
        ("-5", None),
        ("0", None),
        ("", None),
        ("nan", None),
        ("abc", None),
        ("1234567890123456789", None),  # beyond BIGINT
        ("12\u00b2", None),  # a superscript two: str.isdigit's, not a digit
        ("\u0661\u0662", None),  # Arabic-Indic digits
    ],
)
def test_an_id_is_a_positive_integer_written_in_digits(text: str, expected: int | None) -> None:
    (parsed,) = parse_ids(pd.Series([text]))
    assert (None if pd.isna(parsed) else int(parsed)) == expected


def test_validation_the_router_and_the_keys_read_a_patient_id_alike(
    create_database: Callable[[], str],
) -> None:
    url = create_database()
    held = holdout_patient()
    frame = generated(1000, seed=3)
    frame.loc[10, "patient_nbr"] = "1.5e3"  # no patient: quarantined, never routed
    frame.loc[[20, 21], "patient_nbr"] = [f"{held}.0", f" {held} "]  # the holdout patient
    frame.loc[30, "encounter_id"] = f"{frame.loc[30, 'encounter_id']}.0"

    (reason,) = validate(frame.loc[[10]]).quarantined["reason"]
    assert reason == "patient_nbr must be a positive integer written in digits, got '1.5e3'"

    ingestion.ingest(url, frame, 500, 0.2)
    quarantined = warehouse.quarantined_rows(url)
    bad_patient = quarantined[quarantined["encounter_id"] == frame.loc[10, "encounter_id"]]
    assert bad_patient["reason"].str.contains("patient_nbr must be a positive integer").all()
    assert len(bad_patient) == 1
    holdout_rows = warehouse.clean_rows(url, tables.HOLDOUT_BATCH)
    ids = holdout_rows.loc[holdout_rows["patient_nbr"] == held, "encounter_id"]
    assert set(ids) == {int(frame.loc[20, "encounter_id"]), int(frame.loc[21, "encounter_id"])}
    stored = warehouse.stored_encounter_ids(url)
    assert str(int(float(frame.loc[30, "encounter_id"]))) in stored
    assert inventory.holdout_overlap(url) == 0


def test_a_pandas_rewritten_extract_reads_blank_lab_results_as_none_and_counts_them(
    create_database: Callable[[], str], tmp_path: Path
) -> None:
    url = create_database()
    original = generated(1500, seed=5)
    expected = {c: int((original[c] == "None").sum()) for c in ("A1Cresult", "max_glu_serum")}
    assert min(expected.values()) > 100
    first, rest = tmp_path / "first.csv", tmp_path / "rest.csv"
    original.iloc[:1000].to_csv(first, index=False)
    # What a user does: read the file with pandas defaults ("None" becomes NaN), write it back.
    pandas_cut = tmp_path / "pandas.csv"
    original.to_csv(rest, index=False)
    pd.read_csv(rest).iloc[1000:].to_csv(pandas_cut, index=False)
    assert ",," in pandas_cut.read_text()

    ingestion.ingest(url, load(str(first)), 500, 0.2, max_quarantine_share=0.05)
    report = ingestion.ingest(url, load(str(pandas_cut)), 500, 0.2, max_quarantine_share=0.05)
    tail = original.iloc[1000:]
    assert report.normalized == {c: int((tail[c] == "None").sum()) for c in expected}
    bad = int((tail["gender"] == "Unknown/Invalid").sum())
    assert report.quarantined == {ingest_report.INVALID_VALUES: bad}
    assert report.accepted == 500 - bad and report.corrections == 0
    assert (
        "blank lab results read as 'None': "
        in extracts.Ingested(report, outcomes_joined=0).describe()
    )
    with database.engine_for(url).connect() as conn:
        stored = conn.execute(
            sa.select(tables.ingests.c.normalized, tables.ingests.c.report).order_by(
                tables.ingests.c.id
            )
        ).all()
    assert stored[-1][0] == sum(report.normalized.values())
    assert json.loads(stored[-1][1])["normalized"] == report.normalized
    # The original spelling of the same rows is the same content: present, no corrections.
    replay = ingestion.ingest(url, original.iloc[1000:], 500, 0.2)
    assert (replay.already_present, replay.corrections, replay.normalized) == (500, 0, {})


def broken(frame: pd.DataFrame) -> pd.DataFrame:
    """30% of the rows broken in three ways: 15% A1Cresult, 10% gender, 5% encounter_id."""
    frame = frame.copy()
    n = len(frame)
    frame.iloc[: n * 15 // 100, frame.columns.get_loc("A1Cresult")] = "high"
    frame.iloc[n * 15 // 100 : n * 25 // 100, frame.columns.get_loc("gender")] = "Unknown"
    frame.iloc[n * 25 // 100 : n * 30 // 100, frame.columns.get_loc("encounter_id")] = "x"
    return frame


@pytest.mark.slow
def test_an_extract_with_too_many_bad_rows_is_refused_whole_and_its_fix_goes_through(
    configure: Callable[..., Settings], create_database: Callable[[], str], tmp_path: Path
) -> None:
    settings = configure(
        DATABASE_URL=create_database(), BATCH_SIZE="500", MIN_BATCH_ROWS="100", DATA_SHA256=""
    )
    good = synthetic_sample(2000, seed=9).astype(str)
    bad_file, good_file = tmp_path / "broken.csv", tmp_path / "fixed.csv"
    broken(good).to_csv(bad_file, index=False)
    good.to_csv(good_file, index=False)

    refused = cli("ingest", "--source", str(bad_file))
    assert refused.returncode == 2, refused.stdout + refused.stderr
    message = " ".join(refused.stderr.split())
    assert "refused: 30.0% of its 2,000 rows fail validation" in message
    assert "more than MAX_QUARANTINE_SHARE (5.0%)" in message
    assert "A1Cresult must be one of 'None', 'Norm', '>7', '>8' (300 rows)" in message
    assert "gender must be one of 'Female', 'Male' (200 rows)" in message
    assert "encounter_id must be a positive integer written in digits (100 rows)" in message
    url = settings.warehouse_url
    assert set(inventory.row_counts(url).values()) == {0}
    assert inventory.batch_list(url) == []
    (record,) = inventory.ingest_history(url)
    assert record["refused"] is True and record["quarantine_share"] == pytest.approx(0.3)
    problems = record["problems"]
    assert isinstance(problems, dict)
    assert list(problems.values())[:3] == [300, 200, 100]

    fixed = cli("ingest", "--source", str(good_file))
    assert fixed.returncode == 0, fixed.stderr
    assert "2000 rows in: " in fixed.stdout and ", 0 quarantined, " in fixed.stdout
    assert [b.kind for b in inventory.batch_list(url)][:2] == ["holdout", "train"]
    assert inventory.row_counts(url)["raw_encounters"] == 2000


def test_the_share_limit_is_inclusive_and_failing_rows_below_it_are_quarantined(
    create_database: Callable[[], str],
) -> None:
    url = create_database()
    frame = synthetic_sample(1000, seed=2).astype(str)
    frame.iloc[:50, frame.columns.get_loc("gender")] = "Unknown"  # exactly 5%
    report = ingestion.ingest(url, frame, 500, 0.2, max_quarantine_share=0.05)
    assert not report.refused and report.quarantined_total == 50
    assert report.quarantine_share == pytest.approx(0.05)


@pytest.mark.parametrize(
    ("clean", "batch_size", "min_clean", "expected"),
    [
        ([1] * 10, 4, 2, ([4, 8, 10], 10)),  # a remainder of 2 clean rows is a batch
        ([1] * 9, 4, 2, ([4, 8], 8)),  # a remainder of 1 waits
        ([1, 0, 0, 0, 1, 1, 1, 1, 1], 4, 2, ([5, 9], 9)),  # a batch short of clean rows runs on
        ([1] * 9, 2, 4, ([4, 8], 8)),  # a minimum above the batch size makes batches larger
        ([0] * 5, 4, 1, ([], 0)),  # nothing clean: everything waits
        ([], 4, 1, ([], 0)),
    ],
)
def test_batches_close_at_the_batch_size_once_they_hold_the_minimum_of_clean_rows(
    clean: list[int], batch_size: int, min_clean: int, expected: tuple[list[int], int]
) -> None:
    flags = np.array(clean, dtype=bool)
    assert batch_rows.cut_batches(flags, batch_size, min_clean) == expected


def batches_and_rows(url: str) -> list[tuple[object, ...]]:
    """Every batch's bookkeeping and its clean and quarantined encounters."""
    quarantined = warehouse.quarantined_rows(url)
    return [
        (
            b.batch_id,
            b.kind,
            b.first_encounter_id,
            b.last_encounter_id,
            b.rows,
            b.accepted,
            b.quarantined,
            tuple(warehouse.clean_rows(url, b.batch_id)["encounter_id"]),
            tuple(sorted(quarantined.loc[quarantined["batch_id"] == b.batch_id, "encounter_id"])),
        )
        for b in inventory.batch_list(url)
    ]


def test_a_small_remainder_waits_stored_and_joins_the_next_extract_into_the_same_batches(
    create_database: Callable[[], str],
) -> None:
    frame = generated(3000, seed=13)
    first_url, one_shot_url = create_database(), create_database()
    first = ingestion.ingest(first_url, frame.iloc[:1300], 500, 0.2, min_batch_rows=300)
    assert first.training_batch_ids == [1, 2]
    assert 0 < first.deferred <= first.waiting < 300
    in_batches = sum(b.rows for b in first.new_batches)
    assert inventory.row_counts(first_url)["raw_encounters"] == in_batches + first.waiting
    assert first.rows_in == first.accepted + first.quarantined_total + first.deferred
    assert (
        f"{first.deferred} deferred to a later ingest"
        in extracts.Ingested(first, outcomes_joined=0).describe()
    )
    assert (
        f"{first.waiting} stored rows wait for the next extract"
        in extracts.Ingested(first, outcomes_joined=0).describe()
    )
    assert lineage.untrained_batches(first_url, "any") == [1, 2]
    # The waiting rows are stored: a replay of the first extract finds them present.
    replay = ingestion.ingest(first_url, frame.iloc[:1300], 500, 0.2, min_batch_rows=300)
    assert replay.already_present == 1300 and replay.new_batches == []

    second = ingestion.ingest(first_url, frame.iloc[1300:], 500, 0.2, min_batch_rows=300)
    assert second.training_batch_ids[0] == 3
    ingestion.ingest(one_shot_url, frame, 500, 0.2, min_batch_rows=300)
    assert batches_and_rows(first_url) == batches_and_rows(one_shot_url)
    assert inventory.row_counts(first_url) == inventory.row_counts(one_shot_url)
    assert second.waiting == inventory.ingest_history(one_shot_url)[-1]["waiting"]


@pytest.fixture(params=["postgresql", "sqlite"])
def two_warehouses(request: pytest.FixtureRequest, tmp_path: Path) -> tuple[str, str]:
    """Two fresh warehouses on one backend: one fed in chunks, one at once."""
    if request.param == "sqlite":
        chunked, one_shot = (f"sqlite:///{tmp_path / name}.db" for name in ("chunked", "one_shot"))
        return chunked, one_shot
    create: Callable[[], str] = request.getfixturevalue("create_database")
    return create(), create()


def warehouse_state(url: str) -> list[object]:
    """Everything an ingest stores, in an order independent of the order of its inserts."""
    quarantined = warehouse.quarantined_rows(url)
    corrections = warehouse.correction_rows(url)
    corrections["fields"] = corrections["fields"].map(json.dumps)
    with database.engine_for(url).connect() as conn:
        raw = conn.execute(
            sa.select(
                tables.raw_encounters.c.encounter_id,
                tables.raw_encounters.c.batch_id,
                tables.raw_encounters.c.row_hash,
            ).order_by(tables.raw_encounters.c.encounter_id)
        ).all()
        clean = conn.execute(
            sa.select(tables.clean_encounters).order_by(tables.clean_encounters.c.encounter_id)
        ).all()
    return [
        batches_and_rows(url),
        inventory.row_counts(url),
        raw,
        clean,
        sorted(quarantined.astype(str).itertuples(index=False, name=None)),
        sorted(corrections.astype(str).itertuples(index=False, name=None)),
        [{**i, "source": ""} for i in inventory.ingest_history(url)],
    ]


def test_an_extract_ingested_in_chunks_stores_what_it_stores_at_once(
    two_warehouses: tuple[str, str],
) -> None:
    chunked_url, one_shot_url = two_warehouses
    rng = np.random.default_rng(21)
    frame = generated(3000, seed=21)
    first = frame.iloc[:1800].sample(frac=1, random_state=1).reset_index(drop=True)  # any order
    first.loc[5, "encounter_id"] = "not-an-id"
    first.loc[1700, "encounter_id"] = f"{first.loc[3, 'encounter_id']}.0"  # chunks apart
    first.loc[1701] = first.loc[40]  # the same row twice, chunks apart
    first.loc[60, "diag_1"] = "not-a-code"  # fixed by the second extract
    first.loc[rng.choice(1800, 30, replace=False), "A1Cresult"] = ""  # normalised
    second = pd.concat([frame.iloc[1500:], first.iloc[[60, 70]]], ignore_index=True)
    second.loc[len(second) - 2, "diag_1"] = "428"  # the fix: a clean row now
    second.loc[len(second) - 1, "num_medications"] = "39"  # a correction of a stored row
    history = []
    for extract, max_batches in [(first, None), (second, 1), (second, None), (first, None)]:
        reports = [
            ingestion.ingest(
                url, extract, 500, 0.2, max_batches, min_batch_rows=450, chunk_rows=chunk_rows
            )
            for url, chunk_rows in ((chunked_url, 97), (one_shot_url, 10_000))
        ]
        assert reports[0] == reports[1]
        assert warehouse_state(chunked_url) == warehouse_state(one_shot_url)
        history.append(reports[0])
    assert history[0].waiting > 0  # a remainder waited for the second extract
    assert history[1].deferred > 0 and history[1].corrections >= 2  # capped by max_batches
    assert history[3].already_present == len(first) and not history[3].changed  # a replay
    quarantined = warehouse.quarantined_rows(chunked_url)
    assert quarantined["reason_code"].value_counts().to_dict()[ingest_report.DUPLICATE_ID] == 2
    fixes = warehouse.correction_rows(chunked_url)["applied_to_batch"]
    assert fixes.notna().sum() == 1  # the fix landed in a batch, the other correction in none


def test_an_extract_refused_on_its_last_chunk_leaves_only_the_refusal(
    two_warehouses: tuple[str, str],
) -> None:
    url = two_warehouses[0]
    frame = generated(2000, seed=22)
    ingestion.ingest(url, frame.iloc[:1000], 500, 0.2, min_batch_rows=300, chunk_rows=100)
    before = warehouse_state(url)
    later = frame.iloc[1000:].copy()
    later.iloc[-100:, later.columns.get_loc("gender")] = "Unknown"  # 10%, all in the last chunk
    with pytest.raises(ingest_report.ExtractRefused, match="MAX_QUARANTINE_SHARE"):
        ingestion.ingest(
            url, later, 500, 0.2, min_batch_rows=300, max_quarantine_share=0.05, chunk_rows=100
        )
    after = warehouse_state(url)
    history = after[-1]
    assert isinstance(history, list)
    refusal = history.pop()
    assert refusal["refused"] is True and refusal["rows_in"] == 1000
    assert after == before


def test_an_extract_in_encounter_order_closes_batches_as_it_is_read_as_a_shuffled_one_does(
    two_warehouses: tuple[str, str],
) -> None:
    """Batches closed while an ordered extract is read (their rows written once) are the
    batches the end of a shuffled read cuts; a stored remainder joins either way."""
    in_order_url, shuffled_url = two_warehouses
    frame = generated(4000, seed=23)
    later = frame.iloc[1000:]
    later_by_url = {
        in_order_url: later,
        shuffled_url: later.sample(frac=1, random_state=3).reset_index(drop=True),
    }
    reports = []
    for url, extract in later_by_url.items():
        ingestion.ingest(url, frame.iloc[:1000], 500, 0.2, min_batch_rows=450, chunk_rows=97)
        reports.append(ingestion.ingest(url, extract, 500, 0.2, min_batch_rows=450, chunk_rows=97))
    assert reports[0] == reports[1]
    assert len(reports[0].training_batch_ids) >= 4 and reports[0].quarantined_total > 0
    assert warehouse_state(in_order_url) == warehouse_state(shuffled_url)
    newer = generated(3000, seed=24)
    newer["encounter_id"] = (newer["encounter_id"].astype(int) + 10_000_000).astype(str)
    capped = [  # one batch, the rest deferred
        ingestion.ingest(url, extract, 500, 0.2, 1, min_batch_rows=450, chunk_rows=97)
        for url, extract in (
            (in_order_url, newer),
            (shuffled_url, newer.sample(frac=1, random_state=4).reset_index(drop=True)),
        )
    ]
    assert capped[0] == capped[1] and capped[0].deferred > 0
    assert warehouse_state(in_order_url) == warehouse_state(shuffled_url)


@pytest.mark.parametrize("invalid_every", [0, 4])
def test_an_ordered_extracts_rows_wait_unstored_until_their_batch_closes(
    two_warehouses: tuple[str, str], invalid_every: int
) -> None:
    """An extract in encounter_id order, read in chunks smaller than a batch: a row is written
    once, with its batch, not stored as waiting and moved by an UPDATE; only a batch cut at the
    end may be. With every fourth row invalid, a batch runs on to 600 rows for its 450 clean
    ones, past the one batch's worth of rows held back, which are then stored as waiting and
    moved: either way the batches come out as a shuffled extract's."""
    in_order_url, shuffled_url = two_warehouses
    extract = generated(5000, seed=25)
    if invalid_every:
        extract.loc[::invalid_every, "gender"] = "Unknown/Invalid"
    updated = {in_order_url: Counter[str](), shuffled_url: Counter[str]()}
    reports = []
    for url, rows in (
        (in_order_url, extract),
        (shuffled_url, extract.sample(frac=1, random_state=5).reset_index(drop=True)),
    ):

        def count_updates(
            conn: object, cursor: Any, statement: str, *args: object, url: str = url
        ) -> None:  # SQLAlchemy's after_cursor_execute: the rows each UPDATE rewrote
            if statement.lstrip().upper().startswith("UPDATE"):
                updated[url][statement.split()[1].strip('"')] += cursor.rowcount

        engine = database.engine_for(url)
        sa.event.listen(engine, "after_cursor_execute", count_updates)
        try:
            reports.append(ingestion.ingest(url, rows, 500, 0.2, min_batch_rows=450, chunk_rows=97))
        finally:
            sa.event.remove(engine, "after_cursor_execute", count_updates)
    assert reports[0] == reports[1] and len(reports[0].training_batch_ids) >= 5
    assert warehouse_state(in_order_url) == warehouse_state(shuffled_url)
    # The shuffled extract's rows all waited and were moved into their batches.
    training_rows = sum(b.rows for b in reports[1].new_batches if b.kind == "train")
    assert updated[shuffled_url]["raw_encounters"] >= training_rows
    in_order, last = updated[in_order_url], reports[0].new_batches[-1]
    if not invalid_every:
        assert in_order["raw_encounters"] <= last.rows
        assert in_order["clean_encounters"] <= last.rows
    else:
        assert in_order["raw_encounters"] > last.rows
