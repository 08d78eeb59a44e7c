"""Closing the loop on the real data set, on the embedded default, through the CLI and bin/api.

Cuts the file by encounter_id: the first 50% is ingested and trained, the newest version
promoted; bin/api then scores `--encounters` encounters of the next 15% sent without their
outcome (restarted halfway); that 15% is ingested with its outcomes, and `readmission
performance --json` must report, for the served version, n = the encounters answered with 200
and the ROC-AUC scikit-learn computes from the probabilities the API returned. Last line: JSON.

    .venv/bin/python bench/closing_the_loop.py --source ../shared/data/dataset_diabetes.zip
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path
from typing import Any

import httpx
from local_platform import BIN, readmission, train_first_half, use_local_platform
from sklearn.metrics import roc_auc_score

from readmission.processes import free_port, running

ROOT = Path(__file__).resolve().parents[1]


def send(url: str, encounters: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Each encounter to /predict; the answers with status 200."""
    answered = []
    with httpx.Client(base_url=url, timeout=30) as client:
        for encounter in encounters:
            response = client.post("/predict", json=encounter)
            if response.status_code == 200:
                answered.append(response.json())
    return answered


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--source", default="../shared/data/dataset_diabetes.zip")
    parser.add_argument("--encounters", type=int, default=3000)
    args = parser.parse_args()
    home = use_local_platform(args.source, "bench-loop-", MODEL_POLL_SECONDS="2")

    from readmission.data.validation import validate
    from readmission.schema import POSITIVE_LABEL, TARGET

    started = time.perf_counter()
    half = train_first_half(home)
    served = half.versions[-1]
    readmission("promote", served)
    print(
        f"first 50% ({len(half.trained)} rows) trained into {len(half.versions)} versions; "
        f"v{served} "
        f"promoted ({time.perf_counter() - started:.0f} s)",
        flush=True,
    )

    clean = validate(half.next_period).clean.head(args.encounters)
    requests = clean.drop(columns=[TARGET]).to_dict("records")
    url = f"http://127.0.0.1:{free_port()}"
    env = {**os.environ, "API_PORT": url.rsplit(":", 1)[1], "PATH": f"{BIN}:{os.environ['PATH']}"}
    middle = len(requests) // 2
    answers = []
    for part, log in ((requests[:middle], "api-1.log"), (requests[middle:], "api-2.log")):
        with running([str(ROOT / "bin" / "api")], home / log, env, f"{url}/ready", 300):
            answers += send(url, part)
        print(
            f"{len(answers)} of {len(requests)} answered with 200 so far (API stopped)", flush=True
        )

    waiting = json.loads(readmission("performance", "--json"))  # all pending: an estimate
    estimated = next(v for v in waiting["versions"] if v["version"] == served)["estimate"]
    readmission("ingest", "--source", str(half.next_csv))
    report = json.loads(readmission("performance", "--json"))
    version = next(v for v in report["versions"] if v["version"] == served)
    outcome = dict(zip(clean["encounter_id"], clean[TARGET] == POSITIVE_LABEL, strict=True))
    truth = [int(outcome[a["encounter_id"]]) for a in answers]
    expected = roc_auc_score(truth, [a["probability"] for a in answers])
    result = {
        "served_version": served,
        "sent": len(requests),
        "answered_200": len(answers),
        "n": version["n"],
        "pending": version["pending"],
        "roc_auc": version["roc_auc"],
        "sklearn_roc_auc": expected,
        "roc_auc_difference": abs(version["roc_auc"] - expected),
        "holdout_roc_auc": version["holdout_roc_auc"],
        "estimated_roc_auc_before_outcomes": estimated["roc_auc"],
        "estimate_checks": version["estimate_checks"],
        "checks": {
            "n_equals_answered_200": version["n"] == len(answers),
            "roc_auc_within_1e-6": abs(version["roc_auc"] - expected) <= 1e-6,
        },
    }
    print(json.dumps(result))


if __name__ == "__main__":
    main()
