"""Live evidence on the real data set (issue 25, "What it must show"), through the CLI and bin/api.

Cuts the file by encounter_id: the first 50% is ingested and trained (the embedded default, or
`--database-url`), the newest version promoted and the one before it put in shadow. bin/api
then gets `/predict` with `encounter_id` 10**19 (must be 422, naming the field), and
`--encounters` real encounters of the next period sent one by one without their outcome (every
answer must be logged: dropped 0, rejected 0, one row per answer). That period is ingested with
its outcomes; `readmission performance --json` must give each version's realized AUC equal to
scikit-learn's `roc_auc_score` on the probabilities in the log (1e-9) and the paired comparison
with its interval. Last, `REALIZED_AUC_FLOOR=0.99 readmission performance --act` must roll
production back, the ledger's row saying why. Each step prints its numbers; last line: JSON.

    .venv/bin/python bench/live_evidence.py --source ../shared/data/dataset_diabetes.zip
    .venv/bin/python bench/live_evidence.py --database-url postgresql+psycopg://.../EMPTY
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path
from typing import Any

import httpx
import pandas as pd
from local_platform import BIN, readmission, train_first_half, use_local_platform
from serving import metrics
from sklearn.metrics import roc_auc_score

from readmission.processes import free_port, running

ROOT = Path(__file__).resolve().parents[1]
TOLERANCE = 1e-9


def step(message: str) -> None:
    print(message, flush=True)


def logged_rows(url: str, model_name: str) -> pd.DataFrame:
    """The prediction log of `model_name`, as the warehouse holds it."""
    import sqlalchemy as sa

    from readmission.data.database import engine_for
    from readmission.data.tables import prediction_log_table

    query = sa.select(prediction_log_table).where(prediction_log_table.c.model_name == model_name)
    with engine_for(url).connect() as conn:
        return pd.read_sql(query.order_by(prediction_log_table.c.id), conn)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--source", default="../shared/data/dataset_diabetes.zip")
    parser.add_argument("--encounters", type=int, default=3000)
    parser.add_argument(
        "--database-url",
        default="",
        help="an empty PostgreSQL database as the warehouse (default: the embedded SQLite)",
    )
    args = parser.parse_args()
    home = use_local_platform(args.source, "bench-live-", MODEL_POLL_SECONDS="2")
    os.environ["DATABASE_URL"] = args.database_url

    from readmission.config import get_settings
    from readmission.data.validation import validate
    from readmission.schema import POSITIVE_LABEL, TARGET

    settings = get_settings()
    started = time.perf_counter()
    half = train_first_half(home)
    versions = half.versions
    if len(versions) < 2:
        sys.exit(f"the first 50% gave {len(versions)} version(s): a shadow needs 2 (BATCH_SIZE)")
    # Version 1 served first, so that a rollback has somewhere to return to; then the newest,
    # with the one before it in shadow.
    earlier, production, shadow = versions[0], versions[-1], versions[-2]
    readmission("promote", earlier, "--reason", "bench/live_evidence.py: the earlier production")
    readmission("promote", production, "--reason", "bench/live_evidence.py: the newest version")
    readmission("shadow", shadow)
    step(
        f"1. first 50% ({len(half.trained)} rows, encounter_id <= "
        f"{half.trained['encounter_id'].iloc[-1]}) "
        f"trained into versions {versions} in {time.perf_counter() - started:.0f} s; "
        f"production v{earlier}, then v{production}, shadow v{shadow}; "
        f"warehouse {settings.warehouse_url}"
    )

    clean = validate(half.next_period).clean.head(args.encounters)
    requests = clean.drop(columns=[TARGET]).to_dict("records")
    url = f"http://127.0.0.1:{free_port()}"
    env = {**os.environ, "API_PORT": url.rsplit(":", 1)[1], "PATH": f"{BIN}:{os.environ['PATH']}"}
    answers: list[dict[str, Any]] = []
    with running([str(ROOT / "bin" / "api")], home / "api.log", env, f"{url}/ready", 300):
        with httpx.Client(base_url=url, timeout=30) as client:
            while client.get("/model").json()["shadow_version"] != shadow:
                time.sleep(0.2)
            too_big = client.post("/predict", json={**requests[0], "encounter_id": 10**19})
            step(f"2. /predict with encounter_id 10**19: {too_big.status_code} {too_big.text}")
            started = time.perf_counter()
            for encounter in requests:
                response = client.post("/predict", json=encounter)
                if response.status_code == 200:
                    answers.append(response.json())
            seconds = time.perf_counter() - started
        drained = time.monotonic() + 60
        while (counts := metrics(url))["buffered"] and time.monotonic() < drained:
            time.sleep(0.2)
    rows = logged_rows(settings.warehouse_url, settings.model_name)
    served_ids = {a["encounter_id"] for a in answers}
    log_counts = {
        "sent": len(requests),
        "answered_200": len(answers),
        "answered_by_metrics": int(counts["answered"]),
        "written": int(counts["written_total"]),
        "dropped": int(counts["dropped_total"]),
        "rejected": int(counts["rejected_total"]),
        "rows_in_log": len(rows),
        "rows_with_shadow": int(rows["shadow_probability"].notna().sum()),
        "every_answer_logged": set(rows["encounter_id"]) == served_ids
        and len(rows) == len(answers),
    }
    step(
        f"3. {len(requests)} real encounters of the next period sent in {seconds:.1f} s, after "
        f"the 422: {json.dumps(log_counts)}"
    )

    readmission("ingest", "--source", str(half.next_csv))
    report = json.loads(readmission("performance", "--json"))
    outcome = dict(zip(clean["encounter_id"], clean[TARGET] == POSITIVE_LABEL, strict=True))
    rows["y"] = rows["encounter_id"].map(outcome).astype(int)
    probabilities = {
        production: rows["probability"],
        shadow: rows["shadow_probability"],
    }
    realized = []
    for version in report["versions"]:
        probability = probabilities[version["version"]]
        mine = probability.notna()
        expected = roc_auc_score(rows.loc[mine, "y"], probability[mine])
        realized.append(
            {
                "version": version["version"],
                "role": version["role"],
                "n": version["n"],
                "logged_n": int(mine.sum()),
                "excluded": version["excluded"],
                "roc_auc": version["roc_auc"],
                "sklearn_roc_auc": expected,
                "difference": abs(version["roc_auc"] - expected),
            }
        )
    largest = max(r["difference"] for r in realized)
    step("4. outcomes ingested; realized AUC per version against scikit-learn on the log:")
    for r in realized:
        step(f"   {json.dumps(r)}")
    step(f"   largest difference: {largest:.3g} (tolerance {TOLERANCE})")
    (comparison,) = report["comparisons"]
    pairs = rows[rows["shadow_probability"].notna()]
    paired_delta = roc_auc_score(pairs["y"], pairs["shadow_probability"]) - roc_auc_score(
        pairs["y"], pairs["probability"]
    )
    step(
        f"   paired comparison: {json.dumps(comparison)}; scikit-learn's difference on the same "
        f"pairs {paired_delta:+.6f}"
    )

    acted = json.loads(readmission("performance", "--act", "--json", REALIZED_AUC_FLOOR="0.99"))
    ledger = json.loads(readmission("promotions", "--json"))
    now = json.loads(readmission("status", "--json"))
    served = next(v for v in acted["versions"] if v["version"] == production)["recent"]
    step(
        f"5. REALIZED_AUC_FLOOR=0.99 performance --act: recent realized AUC of v{production} "
        f"{served['roc_auc']:.4f} {served['roc_auc_ci']} over {served['n']}; actions "
        f"{json.dumps(acted['actions'])}"
    )
    step(f"   ledger's last row: {json.dumps(ledger[-1])}")
    again = json.loads(readmission("performance", "--act", "--json", REALIZED_AUC_FLOOR="0.99"))
    step(
        f"   a second --act: actions {again['actions']}, ledger rows {len(ledger)} -> "
        f"{len(json.loads(readmission('promotions', '--json')))}"
    )

    rolled_back = (
        len(acted["actions"]) == 1
        and acted["actions"][0]["kind"] == "live_rollback"
        and acted["actions"][0]["made"]
        and ledger[-1]["action"] == "rollback"
        and (ledger[-1]["from_version"], ledger[-1]["to_version"]) == (production, earlier)
        and "REALIZED_AUC_FLOOR 0.99" in ledger[-1]["reason"]
    )
    result = {
        "warehouse": settings.warehouse_url.split(":", 1)[0],
        "versions": versions,
        "production": production,
        "shadow": shadow,
        "encounter_id_10e19_status": too_big.status_code,
        "prediction_log": log_counts,
        "realized": realized,
        "max_auc_difference": largest,
        "comparison": comparison,
        "sklearn_paired_delta": paired_delta,
        "act": acted["actions"],
        "ledger_last": ledger[-1],
        "production_after": now.get("production_version"),
        "checks": {
            "10e19_is_422": too_big.status_code == 422,
            "every_answer_logged": log_counts["every_answer_logged"]
            and log_counts["dropped"] == 0
            and log_counts["rejected"] == 0,
            "realized_auc_within_1e-9": largest <= TOLERANCE,
            "n_equals_logged": all(r["n"] == r["logged_n"] for r in realized),
            "paired_delta_within_1e-9": comparison["delta_roc_auc"] is not None
            and abs(comparison["delta_roc_auc"] - paired_delta) <= TOLERANCE,
            "rolled_back_with_reason": rolled_back,
            "second_act_changes_nothing": again["actions"] == [],
            "production_after_is_earlier": str(now.get("production_version")) == earlier,
        },
    }
    print(json.dumps(result))
    if not all(result["checks"].values()):
        sys.exit(1)


if __name__ == "__main__":
    main()
