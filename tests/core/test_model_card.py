"""The model card the training step writes into each version's run (real MLflow server)."""

from __future__ import annotations

import uuid
from collections.abc import Callable

import pandas as pd
import pytest

from readmission import model_card, registry, training, warehouse
from readmission.config import Settings


@pytest.fixture(scope="module")
def card_of_version_2(
    create_database: Callable[[], str], mlflow_server: str, sample: pd.DataFrame
) -> tuple[Settings, dict, str]:
    """Two versions trained once for the module's tests (training is the slow part)."""
    platform = Settings(
        _env_file=None,
        DATABASE_URL=create_database(),
        MLFLOW_TRACKING_URI=mlflow_server,
        MODEL_NAME=f"readmission-card-{uuid.uuid4().hex[:8]}",
        BATCH_SIZE=500,
        MIN_BATCH_ROWS=100,
    )
    warehouse.ingest(platform.warehouse_url, sample, 500, 0.2, 2)
    training.train_pending(platform)
    version = registry.version_summaries(platform)[-1]
    client = registry.connect(platform)
    markdown = client.download_artifacts(version.run_id, model_card.MARKDOWN_PATH)
    with open(markdown, encoding="utf-8") as file:
        return platform, model_card.load(version.run_id), file.read()


def test_the_card_describes_the_version_its_data_and_its_holdout(card_of_version_2) -> None:
    settings, card, _ = card_of_version_2
    holdout = warehouse.clean_rows(settings.warehouse_url, warehouse.HOLDOUT_BATCH)

    assert card["model"]["version"] == "2" and card["model"]["parent_version"] == "1"
    assert [b["batch_id"] for b in card["data"]["batches"]] == [1, 2]
    assert card["data"]["training_rows"] == 1000
    assert card["holdout"]["n"] == len(holdout)
    low, high = card["holdout"]["roc_auc_ci"]
    assert low < card["holdout"]["roc_auc"] < high
    assert card["holdout"]["bootstrap"]["resamples"] >= 500
    assert {"intercept", "slope", "ece", "brier", "curve"} <= set(card["calibration"])
    assert card["published_range"]["roc_auc"] == [0.64, 0.674]
    assert card["intended_use"]["users"] and card["limitations"]


def test_subgroup_counts_add_up_and_every_auc_lies_in_its_interval(card_of_version_2) -> None:
    _, card, _ = card_of_version_2
    for attribute in ("race", "gender", "age"):
        rows = card["subgroups"][attribute]
        assert sum(row["n"] for row in rows) == card["holdout"]["n"], attribute
        for row in rows:
            if row["reliable"]:
                assert row["roc_auc_ci"][0] <= row["roc_auc"] <= row["roc_auc_ci"][1]
            else:
                assert row["roc_auc"] is None and "too few" in row["note"]


def test_the_threshold_is_chosen_on_the_holdout_and_served_with_the_version(
    card_of_version_2,
) -> None:
    settings, card, _ = card_of_version_2
    model = registry.load_readmission_model(settings, 2)

    assert card["threshold"]["chosen_on"] == "holdout"
    assert card["threshold"]["policy"] == "f1"
    assert card["threshold"]["value"] == pytest.approx(model.threshold)


def test_the_markdown_card_and_the_calibration_plot_are_in_the_run(card_of_version_2) -> None:
    settings, card, markdown = card_of_version_2
    client = registry.connect(settings)
    plots = {a.path for a in client.list_artifacts(card["model"]["run_id"], "plots")}

    assert model_card.CALIBRATION_PLOT in plots
    assert markdown.startswith(f"# Model card: {settings.model_name} version 2")
    for heading in ("## Calibration", "### Race", "### Gender", "### Age", "## Known limitations"):
        assert heading in markdown
    assert f"{card['holdout']['roc_auc']:.3f}" in markdown
