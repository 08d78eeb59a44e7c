"""The platform fed a stream of extracts: a first extract, then monthly-like ones, one by one.

Cuts the real data set by `encounter_id` into a first extract of 50% and then extracts of about
6% each, and feeds them one after the other through the platform's own path (`extracts.ingest`
of an extract file, then the training loop `training.train_pending`) on the embedded default
(SQLite warehouse, local MLflow store) in a fresh folder. For each extract it prints the rows,
the seconds to ingest and to train, and the new version's holdout AUC (the holdout grows with
every extract's holdout patients; each version records which one it was scored on). Last line:
a JSON object.

    .venv/bin/python bench/stream.py --source ../shared/data/dataset_diabetes.zip
"""

from __future__ import annotations

import argparse
import itertools
import json
import time
from typing import TypedDict

from local_platform import use_local_platform


class Extract(TypedDict):
    """What one extract measured: a line of the JSON's "extracts"."""

    extract: int
    rows: int
    accepted: int
    batches: list[int]
    ingest_seconds: float
    train_seconds: float
    versions: list[str]
    holdout_rows: int
    holdout_roc_auc: float


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--source", default="../shared/data/dataset_diabetes.zip")
    parser.add_argument("--first", type=float, default=0.5, help="share of the first extract")
    parser.add_argument("--step", type=float, default=0.06, help="share of each later extract")
    args = parser.parse_args()
    home = use_local_platform(args.source, "bench-stream-")

    from readmission import extracts, training
    from readmission.config import get_settings
    from readmission.data import inventory, warehouse
    from readmission.data.dataset import load

    settings = get_settings()
    frame = load(settings.data_source)
    cuts = [0, int(len(frame) * args.first)]
    while cuts[-1] < len(frame):
        cuts.append(min(len(frame), cuts[-1] + int(len(frame) * args.step)))
    measured: list[Extract] = []
    for number, (start, stop) in enumerate(itertools.pairwise(cuts), 1):
        path = home / f"extract-{number:02d}.csv"
        frame.iloc[start:stop].to_csv(path, index=False)
        began = time.perf_counter()
        report = extracts.ingest(settings, source=str(path)).report
        ingest_seconds = time.perf_counter() - began
        began = time.perf_counter()
        results = training.train_pending(settings, holder="bench/stream.py")
        train_seconds = time.perf_counter() - began
        newest = results[-1] if results else None
        auc = newest.holdout["roc_auc"] if newest else float("nan")
        measured.append(
            {
                "extract": number,
                "rows": report.rows_in,
                "accepted": report.accepted,
                "batches": report.training_batch_ids,
                "ingest_seconds": round(ingest_seconds, 2),
                "train_seconds": round(train_seconds, 2),
                "versions": [r.version for r in results],
                "holdout_rows": len(warehouse.clean_rows(settings.warehouse_url, 0)),
                "holdout_roc_auc": round(auc, 4),
            }
        )
        print(
            f"extract {number:2d}: {report.rows_in:6d} rows, ingest {ingest_seconds:6.2f} s, "
            f"train {train_seconds:6.2f} s ({len(results)} batch(es) -> versions "
            f"{[r.version for r in results]}), holdout AUC {auc:.4f} "
            f"on {measured[-1]['holdout_rows']} rows",
            flush=True,
        )
    print(
        json.dumps(
            {
                "extracts": measured,
                "rows": int(sum(e["rows"] for e in measured)),
                "ingest_seconds": round(sum(e["ingest_seconds"] for e in measured), 2),
                "train_seconds": round(sum(e["train_seconds"] for e in measured), 2),
                "final_holdout_roc_auc": measured[-1]["holdout_roc_auc"],
                "holdout_patient_overlap": inventory.holdout_overlap(settings.warehouse_url),
            }
        )
    )


if __name__ == "__main__":
    main()
