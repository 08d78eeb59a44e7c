"""Promoting a shadow on live evidence (issue 25 item 6): `readmission performance --act` promotes
a shadow shown better than production on enough served outcomes, once, and leaves production
alone when the outcomes are too few or the shadow is not better.

The evidence is real: a lineage trained here (version 1 on the original pattern of the synthetic
sample, 2 and 3 warm-started on batches where readmission follows another pattern), its versions
scored by bin/api on the same new encounters of the drifted pattern, their outcomes ingested
afterwards. Which version is better is what training on those batches made of them, not numbers
written by the test.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
from sklearn.metrics import roc_auc_score

from readmission import extracts, registry, training
from readmission.config import Settings
from readmission.data import ingestion
from readmission.data.dataset import synthetic_sample
from readmission.release import ledger, production_changes
from readmission.schema import POSITIVE_LABEL, TARGET
from tests.api.serving import MAX_BATCH_ROWS, running_api
from tests.api.test_prediction_log import encounters, logged, metric
from tests.api.test_shadow import cli
from tests.conftest import copy_lineage, platform_settings, version_number

pytestmark = pytest.mark.slow

OLD_PATTERN, NEW_PATTERN = "1", "3"  # version 1: trained before the drift; 3: on two batches after
SERVED = 800  # encounters of the new pattern served while both versions score
ENOUGH = {"LIVE_MIN_OUTCOMES": "200"}


def drifted_sample(rows: int, seed: int, id_offset: int) -> pd.DataFrame:
    """Synthetic encounters whose readmission follows another pattern than `synthetic_sample`'s
    (emergency visits and a respiratory primary diagnosis, not inpatient visits and heart
    failure), with encounter ids above `id_offset` so that each extract is new."""
    frame = synthetic_sample(rows, seed=seed)
    frame["encounter_id"] = frame["encounter_id"].astype(int) + id_offset
    rng = np.random.default_rng(seed + 1)
    logit = (
        -2.6
        + 1.6 * frame["number_emergency"].astype(int)
        + 0.2 * frame["number_inpatient"].astype(int)
        + 1.2 * (frame["diag_1"] == "786")
    )
    positive = rng.random(rows) < 1 / (1 + np.exp(-logit))
    frame[TARGET] = np.where(positive, "<30", rng.choice(np.array(["NO", ">30"]), rows))
    return frame


@pytest.fixture(scope="module")
def drift_lineage(
    create_database: Callable[[], str],
    mlflow_server: str,
    sample: pd.DataFrame,
    tmp_path_factory: pytest.TempPathFactory,
) -> Settings:
    """Version 1 trained on one batch of the original sample, 2 and 3 warm-started from it on
    two batches of the drifted pattern."""
    settings = platform_settings(
        create_database(), mlflow_server, tmp_path_factory.mktemp("drift-lineage")
    )
    url = settings.warehouse_url
    ingestion.ingest(url, sample, settings.batch_size, settings.holdout_fraction, 1)
    training.train_pending(settings)
    later = drifted_sample(1500, seed=13, id_offset=1_000_000)
    ingestion.ingest(url, later, settings.batch_size, settings.holdout_fraction, 2)
    training.train_pending(settings)
    assert version_number(registry.newest_version(settings)) == NEW_PATTERN
    return settings


@dataclass(frozen=True)
class Served:
    settings: Settings
    answers: list[dict[str, Any]]


def serve_with_shadow(
    lineage: Settings,
    database_url: str,
    production: str,
    shadow: str,
    tmp: Path,
) -> Served:
    """A copy of the lineage with `production` served and `shadow` scored beside it on SERVED new
    encounters of the drifted pattern (batches through bin/api), then their outcomes ingested."""
    settings = copy_lineage(lineage).model_copy(update={"database_url": database_url})
    production_changes.change_production(settings, production, "test", "by hand", ledger.MANUAL)
    done = cli(settings, "shadow", shadow)
    assert done.returncode == 0, done.stderr
    arriving = drifted_sample(SERVED, seed=17, id_offset=2_000_000)
    requests = encounters(arriving)
    answers: list[dict[str, Any]] = []
    with running_api(settings, tmp) as api:
        api.wait_until(
            lambda: (
                (m := api.get("/model").json())["version"] == production
                and m["shadow_version"] == shadow
            ),
            f"version {production} served and {shadow} in shadow",
        )
        for start in range(0, len(requests), MAX_BATCH_ROWS):
            answer = api.post(
                "/predict/batch", json={"encounters": requests[start : start + MAX_BATCH_ROWS]}
            )
            assert answer.status_code == 200, answer.text
            answers += answer.json()["predictions"]
        api.wait_until(
            lambda: metric(api, "readmission_prediction_log_written_total") == len(requests),
            "every score to be written",
        )
    outcomes = tmp / "outcomes.csv"
    arriving.to_csv(outcomes, index=False)
    extracts.ingest(settings, source=str(outcomes))  # the outcomes arrive after the scoring
    return Served(settings, answers)


@pytest.fixture(scope="module")
def better_in_shadow(
    drift_lineage: Settings,
    create_database: Callable[[], str],
    tmp_path_factory: pytest.TempPathFactory,
) -> Served:
    """Version 1 (the old pattern) in production, 3 (the new one) in shadow."""
    return serve_with_shadow(
        drift_lineage,
        create_database(),
        OLD_PATTERN,
        NEW_PATTERN,
        tmp_path_factory.mktemp("better-in-shadow"),
    )


@pytest.fixture(scope="module")
def worse_in_shadow(
    drift_lineage: Settings,
    create_database: Callable[[], str],
    tmp_path_factory: pytest.TempPathFactory,
) -> Served:
    """Version 3 (the new pattern) in production, 1 (the old one) in shadow."""
    return serve_with_shadow(
        drift_lineage,
        create_database(),
        NEW_PATTERN,
        OLD_PATTERN,
        tmp_path_factory.mktemp("worse-in-shadow"),
    )


def sklearn_delta(settings: Settings) -> tuple[int, float]:
    """How many logged pairs have an outcome, and scikit-learn's AUC of the shadow's logged
    probabilities minus production's on them."""
    rows = logged(settings)
    pairs = rows[rows["shadow_probability"].notna() & rows["outcome"].notna()]
    y = (pairs["outcome"] == POSITIVE_LABEL).astype(int)
    shadow = roc_auc_score(y, pairs["shadow_probability"])
    return len(pairs), shadow - roc_auc_score(y, pairs["probability"])


def act(settings: Settings, **env: str) -> dict[str, Any]:
    done = cli(settings, "performance", "--act", "--json", **env)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


def test_a_better_shadow_is_not_promoted_on_fewer_outcomes_than_live_min_outcomes(
    better_in_shadow: Served,
) -> None:
    settings = better_in_shadow.settings
    before = ledger.entries(settings.warehouse_url, settings.model_name)
    report = act(settings, LIVE_MIN_OUTCOMES=str(SERVED + 1))
    (comparison,) = report["comparisons"]
    assert comparison["n"] == SERVED and comparison["delta_roc_auc_ci"][0] > 0
    assert report["actions"] == []
    assert version_number(registry.production_version(settings)) == OLD_PATTERN
    assert version_number(registry.shadow_version(settings)) == NEW_PATTERN
    assert ledger.entries(settings.warehouse_url, settings.model_name) == before


def test_a_shadow_shown_better_on_enough_outcomes_is_promoted_once_with_its_numbers(
    better_in_shadow: Served,
) -> None:
    settings = better_in_shadow.settings
    assert {a["model_version"] for a in better_in_shadow.answers} == {OLD_PATTERN}
    n, delta = sklearn_delta(settings)
    report = act(settings, **ENOUGH)
    (comparison,) = report["comparisons"]
    assert (comparison["production"], comparison["shadow"]) == (OLD_PATTERN, NEW_PATTERN)
    assert comparison["n"] == n == SERVED
    assert comparison["delta_roc_auc"] == pytest.approx(delta, abs=1e-9)
    low, high = comparison["delta_roc_auc_ci"]
    assert 0 < low < delta < high
    (action,) = report["actions"]
    assert action["kind"] == "live_promotion" and action["made"]
    assert (action["from_version"], action["to_version"]) == (OLD_PATTERN, NEW_PATTERN)
    assert (action["outcome"], action["rule"]) == ("automatic", "live-promotion")
    assert version_number(registry.production_version(settings)) == NEW_PATTERN
    assert registry.shadow_version(settings) is None  # it answers now
    last = ledger.entries(settings.warehouse_url, settings.model_name)[-1]
    assert (last.from_version, last.to_version, last.action) == (
        OLD_PATTERN,
        NEW_PATTERN,
        ledger.AUTO,
    )
    assert "performance --act" in last.by
    assert f"{delta:+.4f} [95% {low:+.4f}, {high:+.4f}] on {n} paired outcomes" in last.reason
    assert last.evidence is not None and last.evidence.holdout_fingerprint is None
    assert last.evidence.delta_roc_auc == pytest.approx(delta, abs=1e-9)
    assert last.evidence.delta_roc_auc_ci == pytest.approx((low, high), abs=1e-12)

    again = cli(settings, "performance", "--act", **ENOUGH)  # idempotent: nothing more to do
    assert again.returncode == 0, again.stderr
    assert "no change called for" in again.stdout
    assert ledger.entries(settings.warehouse_url, settings.model_name)[-1].id == last.id
    assert version_number(registry.production_version(settings)) == NEW_PATTERN


def test_a_shadow_worse_than_production_is_not_promoted(worse_in_shadow: Served) -> None:
    settings = worse_in_shadow.settings
    before = ledger.entries(settings.warehouse_url, settings.model_name)
    n, delta = sklearn_delta(settings)
    report = act(settings, **ENOUGH)
    (comparison,) = report["comparisons"]
    assert (comparison["production"], comparison["shadow"]) == (NEW_PATTERN, OLD_PATTERN)
    assert comparison["n"] == n == SERVED
    assert comparison["delta_roc_auc"] == pytest.approx(delta, abs=1e-9)
    assert comparison["delta_roc_auc_ci"][0] <= 0
    assert report["actions"] == []
    assert version_number(registry.production_version(settings)) == NEW_PATTERN
    assert version_number(registry.shadow_version(settings)) == OLD_PATTERN
    assert ledger.entries(settings.warehouse_url, settings.model_name) == before
