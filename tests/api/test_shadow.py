"""A shadow challenger behind bin/api: scored on every request beside production, logged with its
role, never answered; then compared live with production, and acted on (issue 25 items 4-6)."""

from __future__ import annotations

import json
import subprocess
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
from sklearn.metrics import roc_auc_score

from readmission import extracts, registry, registry_reader
from readmission.config import Settings
from readmission.data.validation import validate
from readmission.release import ledger, production_changes
from readmission.schema import POSITIVE_LABEL
from tests.api.serving import running_api
from tests.api.test_prediction_log import encounters, logged, metric
from tests.conftest import copy_lineage, version_number
from tests.services import service_env

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[2]
PRODUCTION, SHADOW = "2", "3"


@dataclass(frozen=True)
class Shadowed:
    settings: Settings
    served: pd.DataFrame  # the encounters served while the shadow was set, outcomes included
    answers: list[dict[str, Any]]
    after_clear: dict[str, Any]  # the answer to a request made once the shadow was cleared


def cli(settings: Settings, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
    environment = service_env(
        DATABASE_URL=settings.warehouse_url,
        MLFLOW_TRACKING_URI=settings.tracking_uri,
        MODEL_NAME=settings.model_name,
        READMISSION_HOME=str(settings.home),
        **env,
    )
    return subprocess.run(
        [str(ROOT / ".venv" / "bin" / "readmission"), *args],
        env=environment,
        capture_output=True,
        text=True,
        timeout=300,
    )


@pytest.fixture(scope="module")
def shadowed(
    trained_lineage: Settings,
    create_database: Callable[[], str],
    sample: pd.DataFrame,
    sample_csv: Path,
    tmp_path_factory: pytest.TempPathFactory,
) -> Shadowed:
    """Version 2 in production (after 1), 3 in shadow (`readmission shadow 3`), 300 encounters
    served (singles and batches), then the shadow cleared and one more served; outcomes
    ingested."""
    settings = copy_lineage(trained_lineage, versions=3).model_copy(
        update={"database_url": create_database()}
    )
    for version in ("1", PRODUCTION):  # v1 before: somewhere for a rollback to return to
        production_changes.change_production(settings, version, "test", "by hand", ledger.MANUAL)
    done = cli(settings, "shadow", SHADOW)
    assert done.returncode == 0, done.stderr
    chosen = sample.sort_values("encounter_id").iloc[600:901]
    requests = encounters(chosen)
    answers: list[dict[str, Any]] = []
    with running_api(settings, tmp_path_factory.mktemp("shadow")) as api:
        api.wait_until(
            lambda: (
                (m := api.get("/model").json())["version"] == PRODUCTION
                and m["shadow_version"] == SHADOW
            ),
            "version 2 served and 3 in shadow",
        )
        answers += [api.post("/predict", json=e).json() for e in requests[:100]]
        for start in range(100, 300, 50):
            answer = api.post("/predict/batch", json={"encounters": requests[start : start + 50]})
            answers += answer.json()["predictions"]
        done = cli(settings, "shadow", "--clear")
        assert done.returncode == 0, done.stderr
        api.wait_until(lambda: api.get("/model").json()["shadow_version"] is None, "no shadow")
        after_clear = api.post("/predict", json=requests[300]).json()
        api.wait_until(
            lambda: metric(api, "readmission_prediction_log_written_total") == 300 + 1,
            "every score to be written",
        )
    extracts.ingest(settings, source=str(sample_csv))  # the outcomes arrive
    served = validate(chosen).clean
    served = served[served["encounter_id"].isin([a["encounter_id"] for a in answers])]
    return Shadowed(settings, served, answers, after_clear)


def test_the_shadow_is_scored_and_logged_beside_production_and_never_answers(
    shadowed: Shadowed,
) -> None:
    answers = shadowed.answers
    assert {a["model_version"] for a in answers} == {PRODUCTION}
    rows = logged(shadowed.settings).set_index("encounter_id")
    served = [a["encounter_id"] for a in answers]
    assert sorted(rows.index) == sorted([*served, shadowed.after_clear["encounter_id"]])
    assert set(rows["model_version"]) == {PRODUCTION}
    for answer in answers:  # the answer is production's, logged as given
        assert rows.loc[answer["encounter_id"], "probability"] == answer["probability"]
    with_shadow = rows.loc[served]
    assert set(with_shadow["shadow_version"]) == {SHADOW}
    threshold = registry.load_readmission_model(shadowed.settings, SHADOW).threshold
    assert (with_shadow["shadow_threshold"] == threshold).all()
    # The shadow's probabilities are version 3's own, not a copy of production's.
    frame = shadowed.served
    expected = registry.load_readmission_model(shadowed.settings, SHADOW).predict_proba(frame)
    logged_shadow = rows.loc[frame["encounter_id"], "shadow_probability"].to_numpy()
    np.testing.assert_allclose(logged_shadow, expected, rtol=0, atol=1e-9)
    assert not np.allclose(logged_shadow, rows.loc[frame["encounter_id"], "probability"])
    after = rows.loc[shadowed.after_clear["encounter_id"]]  # cleared: no shadow scored
    assert pd.isna(after["shadow_version"]) and pd.isna(after["shadow_probability"])


def test_performance_json_compares_the_shadow_with_production_on_the_same_encounters(
    shadowed: Shadowed,
) -> None:
    done = cli(shadowed.settings, "performance", "--json")
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout)
    rows = logged(shadowed.settings)
    truth = (rows["outcome"] == POSITIVE_LABEL).astype(int)
    roles = {v["version"]: v["role"] for v in report["versions"]}
    assert roles == {PRODUCTION: "production", SHADOW: "shadow"}
    scores = {PRODUCTION: rows["probability"], SHADOW: rows["shadow_probability"]}
    for version in report["versions"]:  # scikit-learn's AUC on what was logged
        probability = scores[version["version"]]
        mine = probability.notna()
        assert version["n"] == mine.sum()
        expected = roc_auc_score(truth[mine], probability[mine])
        assert version["roc_auc"] == pytest.approx(expected, abs=1e-9)
    assert report["versions"][0]["n"] == len(shadowed.answers) + 1  # v2 answered one more
    (comparison,) = report["comparisons"]
    assert (comparison["production"], comparison["shadow"]) == (PRODUCTION, SHADOW)
    assert comparison["n"] == len(shadowed.answers)  # the request after the clear has no pair
    pairs = rows[rows["shadow_probability"].notna()]
    y = (pairs["outcome"] == POSITIVE_LABEL).astype(int)
    delta = roc_auc_score(y, pairs["shadow_probability"]) - roc_auc_score(y, pairs["probability"])
    assert comparison["delta_roc_auc"] == pytest.approx(delta, abs=1e-9)
    low, high = comparison["delta_roc_auc_ci"]
    assert low < delta < high


def test_act_rolls_production_back_below_the_realized_floor_once_and_says_why(
    shadowed: Shadowed,
) -> None:
    settings = shadowed.settings
    floor = {"REALIZED_AUC_FLOOR": "0.99", "LIVE_MIN_OUTCOMES": "100"}
    done = cli(settings, "performance", "--act", "--json", **floor)
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout)
    (served,) = [v for v in report["versions"] if v["version"] == PRODUCTION]
    low, high = served["recent"]["roc_auc_ci"]
    assert high < 0.99 and served["recent"]["n"] == len(shadowed.answers) + 1
    (action,) = report["actions"]
    assert action["kind"] == "live_rollback" and action["made"]
    assert (action["from_version"], action["to_version"]) == (PRODUCTION, "1")
    assert (action["outcome"], action["rule"]) == ("automatic", "live-rollback")
    assert version_number(registry.production_version(settings)) == "1"
    last = ledger.entries(settings.warehouse_url, settings.model_name)[-1]
    assert (last.from_version, last.to_version, last.action) == (PRODUCTION, "1", ledger.ROLLBACK)
    assert "performance --act" in last.by
    assert f"{served['recent']['roc_auc']:.4f} [95% {low:.4f}, {high:.4f}]" in last.reason
    assert "upper end below REALIZED_AUC_FLOOR 0.99" in last.reason
    rolled_back = registry.model_version(settings, PRODUCTION)
    assert rolled_back is not None and registry_reader.ROLLED_BACK_TAG in rolled_back.tags

    again = cli(settings, "performance", "--act", **floor)  # idempotent: nothing more to do
    assert again.returncode == 0, again.stderr
    assert "no change called for" in again.stdout
    assert ledger.entries(settings.warehouse_url, settings.model_name)[-1].id == last.id
    assert version_number(registry.production_version(settings)) == "1"
